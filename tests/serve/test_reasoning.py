"""reasoning_effort: the model thinks first, within an enforced budget, and the thought comes back apart."""

import pytest

from serving import BUDGETS, MODEL
from tinythink.text.reasoning import ReasoningSplitter

QUESTION = [{"role": "user", "content": "Tom has 3 apples and buys 2 more. How many apples does he have?"}]
CLOSE_TOKENS = 6  # "\n</think>\n\n", written by the engine when the budget runs out


@pytest.mark.parametrize("effort", ["low", "medium", "high"])
def test_budget_is_enforced_and_reasoning_reported(client, effort):
    r = client.chat.completions.create(model=MODEL, messages=QUESTION, temperature=0, reasoning_effort=effort,
                                       max_completion_tokens=120)
    message = r.choices[0].message
    thought = r.usage.completion_tokens_details.reasoning_tokens
    assert 0 < thought <= BUDGETS[effort] + CLOSE_TOKENS  # the budget is a limit, not advice
    assert message.reasoning_content and "</think>" not in message.reasoning_content
    assert message.content and "<think>" not in message.content and "</think>" not in message.content
    assert thought < r.usage.completion_tokens <= 120  # reasoning counts inside completion_tokens


def test_minimal_effort_does_not_think(client):
    r = client.chat.completions.create(model=MODEL, messages=QUESTION, temperature=0, reasoning_effort="minimal")
    assert r.usage.completion_tokens_details.reasoning_tokens == 0
    assert getattr(r.choices[0].message, "reasoning_content", None) is None
    assert r.choices[0].message.content


def test_max_completion_tokens_caps_reasoning_and_answer(client):
    r = client.chat.completions.create(model=MODEL, messages=QUESTION, temperature=0, reasoning_effort="high",
                                       max_completion_tokens=10)
    assert r.choices[0].finish_reason == "length" and r.usage.completion_tokens == 10
    assert r.usage.completion_tokens_details.reasoning_tokens == 10 and r.choices[0].message.content == ""


def test_streamed_reasoning_comes_first_and_matches(client):
    kw = dict(model=MODEL, messages=QUESTION, temperature=0, reasoning_effort="medium", max_completion_tokens=80)
    whole = client.chat.completions.create(**kw).choices[0].message
    kinds, reasoning, content = [], "", ""
    for chunk in client.chat.completions.create(**kw, stream=True):
        delta = chunk.choices[0].delta if chunk.choices else None
        if delta is not None and getattr(delta, "reasoning_content", None):
            kinds.append("r")
            reasoning += delta.reasoning_content
        if delta is not None and delta.content:
            kinds.append("c")
            content += delta.content
    assert kinds == sorted(kinds, reverse=True) and "r" in kinds and "c" in kinds  # all reasoning, then answer
    assert (reasoning, content) == (whole.reasoning_content, whole.content)


def test_splitter_handles_a_tag_split_across_chunks():
    s = ReasoningSplitter()
    pieces = [s.feed(t) for t in ["Let me think. 3+2", " is 5.</th", "ink>\n\n", "He has 5.", " </thi", "nk> junk"]]
    pieces.append(s.flush())
    assert "".join(r for r, _ in pieces) == "Let me think. 3+2 is 5."
    assert "".join(a for _, a in pieces) == "He has 5. "  # the answer ends at another thought tag
    s = ReasoningSplitter()
    assert s.feed("no closing tag, budget ran out") == ("no closing tag, budget ran out", "")
