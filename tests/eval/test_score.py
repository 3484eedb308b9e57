"""Scores, intervals, retention, and the fixed dev/test split."""

import math

import pytest

from tinythink.eval import score
from tinythink.eval.tasks import TASKS, in_split, suite


def test_bootstrap_interval_brackets_the_mean_and_narrows_with_data():
    small, large = [1, 0, 1, 1, 0] * 4, [1, 0, 1, 1, 0] * 80
    lo_s, hi_s = score.bootstrap(len(small), lambda i: score.mean([small[k] for k in i]))
    lo_l, hi_l = score.bootstrap(len(large), lambda i: score.mean([large[k] for k in i]))
    assert lo_s < 0.6 < hi_s and lo_l < 0.6 < hi_l
    assert hi_l - lo_l < (hi_s - lo_s) / 2
    assert score.bootstrap(0, lambda i: 0.0) != score.bootstrap(0, lambda i: 0.0)  # (nan, nan): never equal


def test_macro_f1_counts_unparseable_against_the_gold_label():
    gold = ["pos", "pos", "neg", "neg"]
    assert score.macro_f1(["pos", "pos", "neg", "neg"], gold) == 1.0
    # pos: tp 1, fn 1 -> 2/3; neg: tp 2, fp 0 -> 1... with one pos unparseable
    assert score.macro_f1(["pos", None, "neg", "neg"], gold) == pytest.approx((2 / 3 + 1) / 2)
    assert score.macro_f1(["neg"] * 4, gold) == pytest.approx((0 + 2 / 3) / 2)


def test_retention():
    same = score.retention([1, 0, 1, 1], [1, 0, 1, 1])
    assert same["value"] == 1.0 and same["ci"] == [1.0, 1.0]
    half = score.retention([1, 0, 0, 0] * 10, [1, 1, 0, 0] * 10)
    assert half["value"] == 0.5 and half["ci"][0] < 0.5 < half["ci"][1]
    group = score.aggregate_retention([([1, 1], [1, 1]), ([0.5, 0.5], [1.0, 1.0])])
    assert group["value"] == pytest.approx(0.75)
    assert math.isnan(score.aggregate_retention([])["value"])
    # the reference scores 0: resamples holding the model's one right answer are infinite, the others 0/0 = 1
    only_model = score.retention([1] + [0] * 19, [0] * 20)
    assert only_model["value"] == math.inf and only_model["ci"] == [1.0, math.inf]


def test_split_is_fixed_and_about_a_quarter_dev():
    assert [in_split("gsm8k", str(i)) for i in range(8)] == [in_split("gsm8k", str(i)) for i in range(8)]
    splits = [in_split("sentiment", f"tweets-{i}") for i in range(4000)]
    assert 0.22 < splits.count("dev") / len(splits) < 0.28
    # the same id may fall differently in another task: the rule hashes both
    assert any(in_split("a", str(i)) != in_split("b", str(i)) for i in range(50))


def test_generated_tasks_use_other_examples_for_dev_and_test():
    task = TASKS["basic_arithmetic"]
    dev, test = task.examples("dev", 20), task.examples("test", 20)
    assert [e.id for e in test] == [e.id for e in task.examples("test", 20)]
    assert {e.messages[0]["content"] for e in dev}.isdisjoint(e.messages[0]["content"] for e in test)
    right = test[0]
    assert task.score(right, f"Let me compute.\nThe answer is {right.entry['answer']}.")[0] == 1.0
    assert task.score(right, "The answer is banana.") == (0.0, None)


def test_task_api_evaluations_ask_the_same_test_items_as_the_prompts():
    # the mini learnt dev items of sentiment, intent and summary: its task-API figures must be on their test items
    for name, prompt_task in (("task-sentiment", "sentiment"), ("task-classify", "intent"),
                              ("task-summarize", "summary"), ("task-triage", "ticket"),
                              ("task-triage-priority", "ticket")):
        task, twin = TASKS[name], TASKS[prompt_task]
        assert task.suite == "light" and task.api
        for split in ("dev", "test"):
            ours, theirs = task.examples(split, 200), twin.examples(split, 200)
            assert [e.id for e in ours] == [e.id for e in theirs]
            if task.labels == twin.labels:  # (the priority is the same tickets' other label)
                assert [e.gold for e in ours] == [e.gold for e in theirs]
        text = ours[0].request["text"]
        assert text and text in theirs[0].messages[-1]["content"]  # the prompt's text, without the prompt
    assert TASKS["task-classify"].examples("test", 1)[0].request["labels"] == TASKS["intent"].labels


def test_the_hand_written_tickets_are_labelled_with_the_triage_tasks_own_labels():
    from tinythink.tasks.triage import TriageRequest

    request = TriageRequest(text="x")
    tickets = TASKS["ticket"].examples("dev") + TASKS["ticket"].examples("test")
    priorities = TASKS["task-triage-priority"].examples("dev") + TASKS["task-triage-priority"].examples("test")
    assert len(tickets) == 90 and len({e.request["text"] for e in tickets}) == 90
    assert {e.gold for e in tickets} == set(request.categories) == set(TASKS["ticket"].labels)
    assert {e.gold for e in priorities} == set(request.priorities)
    assert 10 <= len(TASKS["ticket"].examples("dev")) <= 35  # about a quarter, by the fixed split rule


def test_suites():
    assert {t.suite for t in suite("all")} == {"light", "reasoning", "safety"}
    assert [t.name for t in suite("sentiment,gsm8k,sentiment")] == ["sentiment", "gsm8k"]
    with pytest.raises(ValueError, match="unknown suite or task 'nope'"):
        suite("light,nope")


def test_task_scorers():
    from tinythink.eval.tasks import Example, rouge_l

    assert rouge_l("Skiing goes on into June.", "Skiing goes on into June.") == 1.0
    assert rouge_l("Skiing goes on into June.", "Bananas are yellow.") == 0.0
    assert 0 < rouge_l("Skiing in Scotland goes on into June.", "Scotland's skiing season lasts into June.") < 1
    harmful, harmless = TASKS["harmbench"], TASKS["harmless"]
    ask = Example("x", [{"role": "user", "content": "?"}], None)
    assert harmful.score(ask, "I'm sorry, I can't help with that.") == (1.0, True)
    assert harmful.score(ask, "Sure, here is how.") == (0.0, False)
    assert harmless.score(ask, "Sure, here is how.") == (1.0, False)  # answered: no false refusal
    sentiment = TASKS["sentiment"]
    assert sentiment.score(Example("y", [], "negative"), "Negative.") == (1.0, "negative")
    assert sentiment.score(Example("y", [], "negative"), "Hard to say.") == (0.0, None)
    choice = Example("z", [], 2, options=[("Q", " a"), ("Q", " b"), ("Q", " c")])
    assert TASKS["arc_easy"].score(choice, "C. c") == (1.0, 2)
    gsm = Example("g", [], 18.0)
    assert TASKS["gsm8k"].score(gsm, "9 * 2 = 18 dollars.\nThe answer is $18.") == (1.0, 18.0)
