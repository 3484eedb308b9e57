"""reasoning_effort: the model thinks first, within an enforced budget, and the thought comes back apart."""

import pytest

from serving import BUDGETS, MODEL
from tinythink.engine.batch import LOOP_NGRAM, LOOP_REPEATS, Thinking, answer_reserve
from tinythink.text.reasoning import ReasoningSplitter, reopens_thought

QUESTION = [{"role": "user", "content": "Tom has 3 apples and buys 2 more. How many apples does he have?"}]
CLOSE_TOKENS = 6  # "\n</think>\n\n", written by the engine when the budget runs out


def client_tokens(client, text: str) -> int:
    """The single token id of `text` in the served model's vocabulary."""
    from tinythink.model.load import load_tokenizer

    (token,) = load_tokenizer(MODEL).encode(text, add_special_tokens=False)
    return token


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


@pytest.mark.parametrize("effort", ["low", "medium", "high"])
@pytest.mark.parametrize("limit", [10, 24, 60])
def test_the_thought_always_leaves_the_answer_its_reserve(client, effort, limit):
    r = client.chat.completions.create(model=MODEL, messages=QUESTION, temperature=0, reasoning_effort=effort,
                                       max_completion_tokens=limit)
    thought = r.usage.completion_tokens_details.reasoning_tokens
    assert r.usage.completion_tokens <= limit
    assert thought <= max(limit - answer_reserve(limit), CLOSE_TOKENS)
    assert r.choices[0].message.content  # never an empty answer because the thought took every token


@pytest.mark.parametrize("effort", ["low", "high"])
def test_the_answer_never_stops_before_it_says_something(client, effort):
    # a model pushed to stop at every token: the thought is closed for it, and its answer may not end empty
    from tinythink.model.load import load_tokenizer

    bias = {str(token): 100 for token in load_tokenizer(MODEL).stop_ids}
    r = client.chat.completions.create(model=MODEL, messages=QUESTION, temperature=0, reasoning_effort=effort,
                                       max_completion_tokens=60, logit_bias=bias)
    assert r.choices[0].message.content.strip()


def test_a_looping_thought_is_closed_early(client):
    # a thought forced to repeat one token forever: the loop detector closes it long before the budget
    token = client_tokens(client, " again")
    r = client.chat.completions.create(model=MODEL, messages=QUESTION, temperature=0, reasoning_effort="high",
                                       max_completion_tokens=200, logit_bias={str(token): 100})
    thought = r.usage.completion_tokens_details.reasoning_tokens
    assert thought <= LOOP_NGRAM + LOOP_REPEATS + CLOSE_TOKENS < BUDGETS["high"] - 4
    assert r.choices[0].message.reasoning_content.count("again") >= LOOP_NGRAM


def test_the_loop_detector_counts_repeated_ngrams():
    t = Thinking(100, [0], lambda out: False)
    cycle = list(range(5))  # a 5-token phrase, over and over
    thought, closed_at = [], None
    for i in range(200):
        thought.append(cycle[i % 5])
        if t.looping(thought):
            closed_at = len(thought)
            break
    assert closed_at == LOOP_NGRAM + 5 * LOOP_REPEATS  # its last 12 tokens written a fourth time
    t = Thinking(100, [0], lambda out: False)
    assert not any(t.looping(list(range(n))) for n in range(1, 300))  # a thought that never repeats


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


def test_the_answer_never_opens_another_thought(client):
    # a model pushed to write '<' everywhere: in its thought it may, but its answer may not start a tag
    # ('<' then 'think>'), or it would answer nothing (small models reopen their thought where an answer belongs)
    bias = {str(client_tokens(client, "<")): 30, str(client_tokens(client, "</")): 30}
    r = client.chat.completions.create(model=MODEL, messages=QUESTION, temperature=0, reasoning_effort="low",
                                       max_completion_tokens=60, logit_bias=bias)
    message = r.choices[0].message
    assert r.usage.completion_tokens_details.reasoning_tokens > 0
    assert message.content and not message.content.lstrip().startswith("<")
    assert "<think" not in message.content and "</think" not in message.content


def test_answers_that_would_reopen_a_thought_are_recognised():
    for text in ("<", "\n\n<", " </", "<th", "<think>", "</think>", "B <think", "so </think", "<thinking"):
        assert reopens_thought(text), text
    for text in ("", "\n\n", "B", "B <", "x < y", "<div>", "The answer is B.", "think about it"):
        assert not reopens_thought(text), text


def test_splitter_handles_a_tag_split_across_chunks():
    s = ReasoningSplitter()
    pieces = [s.feed(t) for t in ["Let me think. 3+2", " is 5.</th", "ink>\n\n", "He has 5.", " </thi", "nk> junk"]]
    pieces.append(s.flush())
    assert "".join(r for r, _ in pieces) == "Let me think. 3+2 is 5."
    assert "".join(a for _, a in pieces) == "He has 5. "  # the answer ends at another thought tag
    s = ReasoningSplitter()
    assert s.feed("no closing tag, budget ran out") == ("no closing tag, budget ran out", "")


def test_votes_go_to_the_majority_answer():
    from tinythink.serve.consistency import vote

    v = vote(["The answer is 5.", "It is 4", "The answer is 5.", "5 apples", "no idea at all, really none"])
    assert (v.answer, v.chosen, v.agreement, v.samples) == ("5", 0, 0.6, 5)
    assert vote(["Paris.", "paris", "London"]).answer == "paris"
    tie = vote(["The answer is 3.", "The answer is 4."])
    assert (tie.answer, tie.chosen, tie.agreement) == ("3", 0, 0.5)  # a tie goes to the first sample
    prose = vote(["A long free-form reply that has no short final answer to vote on at all, none whatsoever."])
    assert (prose.answer, prose.chosen, prose.agreement) == (None, 0, None)


@pytest.mark.parametrize("stream", [False, True])
def test_high_effort_answers_by_self_consistency(client, stream):
    from tinythink.serve.consistency import answer_key

    kw = dict(model=MODEL, messages=QUESTION, reasoning_effort="high", max_completion_tokens=60, seed=7)
    if not stream:
        r = client.chat.completions.create(**kw)
        choice, content = r.choices[0], r.choices[0].message.content
    else:
        content, choice = "", None
        for chunk in client.chat.completions.create(**kw, stream=True):
            if chunk.choices and chunk.choices[0].delta.content:
                content += chunk.choices[0].delta.content
            if chunk.choices and chunk.choices[0].finish_reason:
                choice = chunk.choices[0]
    vote = choice.model_extra["self_consistency"]
    assert vote["samples"] == 5 and vote["sampled_tokens"] >= 5
    assert vote["answer"] == answer_key(content)  # the reply returned is one that reached the majority answer
    if vote["answer"] is not None:
        assert vote["agreement"] * 5 == round(vote["agreement"] * 5) and vote["agreement"] >= 0.2
