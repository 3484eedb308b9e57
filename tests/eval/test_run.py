"""The evaluation's endpoint client against a live `tinythink serve`."""

from tinythink.eval.run import Endpoint
from tinythink.eval.tasks import TASKS
from tinythink.text.reasoning import THINKING_BUDGETS


def test_an_effort_leaves_room_for_the_thought_beyond_the_tasks_answer_limit(served):
    # a choice task allows its answer a few tokens; at an effort those must not be all the thought may use
    task = TASKS["arc_easy"]
    (example,) = task.examples("test", 1)
    plain = Endpoint(served.url, "smollm2-135m", served.key).chat(example.messages, task.max_tokens)
    low = Endpoint(served.url, "smollm2-135m", served.key, effort="low").chat(example.messages, task.max_tokens)
    assert plain.error is None and low.error is None
    assert plain.completion_tokens <= task.max_tokens < low.completion_tokens
    assert low.completion_tokens <= task.max_tokens + THINKING_BUDGETS["low"]
