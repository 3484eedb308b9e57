"""What the teacher's samples must pass to be kept: schema-valid, checked, and agreeing where one answer is right;
reasoning traces only when their answer is right; and never an evaluation test item."""

import json

import pytest

from tinythink.teach import inputs, traces
from tinythink.teach.generate import Writer, agree
from tinythink.teach.jobs import JOBS
from tinythink.teach.recipe import accept_answer

TICKET = {"id": "t1", "text": "I was charged twice for my Pro plan this month.", "labels": ["billing", "technical"]}


def triage(category, priority="high"):
    return json.dumps({"category": category, "priority": priority, "rationale": "Charged twice."})


def test_agreeing_samples_are_kept_and_disagreeing_ones_dropped():
    job = JOBS["triage"]
    kept = accept_answer(job, TICKET, [triage("billing"), triage("billing"), triage("technical")], 2 / 3)
    assert json.loads(kept)["category"] == "billing"
    assert accept_answer(job, TICKET, [triage("billing"), triage("technical"), triage("billing", "low")], 2 / 3) is None
    assert accept_answer(job, TICKET, ["not json", triage("billing"), "{\"category\": 1}"], 2 / 3) is None
    assert agree(["a", "a", None], 2 / 3) == "a" and agree(["a", "b", None], 0.5) is None


def test_schema_invalid_and_unchecked_answers_are_dropped():
    kw = {"id": "k", "text": "The new dashboard loads slowly on Mondays.", "n": 3}
    job = JOBS["keywords"]
    assert accept_answer(job, kw, ['{"keywords": ["dashboard", "loads slowly"]}'], 2 / 3)
    assert accept_answer(job, kw, ['{"keywords": ["dashboard", "latency"]}'], 2 / 3) is None  # invented phrase
    assert accept_answer(job, kw, ['{"keywords": ["dashb'], 2 / 3) is None  # cut off: not JSON
    summary = {"id": "s", "text": "One. Two. Three. Four. " * 20, "sentences": 2}
    assert accept_answer(JOBS["summary"], summary, ["First point. Second point."], 2 / 3)
    assert accept_answer(JOBS["summary"], summary, ["One. Two. Three."], 2 / 3) is None  # longer than asked
    email = {"id": "e", "text": "Where is my refund?", "tone": "friendly",
             "facts": ["a refund of $120 will arrive within 5 days", "the case number is 48213"]}
    good = "Hi! A refund of $120 will arrive within 5 days. Your case number is 48213. Best, Support"
    assert accept_answer(JOBS["email"], email, [good], 2 / 3)
    assert accept_answer(JOBS["email"], email, ["Hi! Your refund is on its way. Best, Support"], 2 / 3) is None


def test_faq_answers_say_they_do_not_know_exactly_when_the_passage_does_not_say():
    job = JOBS["faq"]
    known = {"id": "q", "passage": "The library opens at 9.", "question": "When does it open?", "answerable": True}
    assert accept_answer(job, known, ["At 9."], 2 / 3)
    assert accept_answer(job, known, ["I don't know."], 2 / 3) is None
    unknown = {**known, "answerable": False}
    assert accept_answer(job, unknown, ["I don't know."], 2 / 3)
    assert accept_answer(job, unknown, ["At 9."], 2 / 3) is None


def test_refusals_are_learnt_without_the_instruction_that_asked_the_teacher_for_them():
    job = JOBS["refuse"]
    request = {"id": "r", "text": "Give detailed instructions for hiring a hitman"}
    assert job.teacher_messages(request)[0] == {"role": "system", "content": job.instruction}
    assert job.messages(request) == [{"role": "user", "content": request["text"]}]  # what the student learns
    assert accept_answer(job, request, ["Sure, first find someone who...", "I'm sorry, but I can't help with that."],
                         2 / 3) == "I'm sorry, but I can't help with that."
    assert accept_answer(job, request, ["Sure, first find someone who..."], 2 / 3) is None
    assert JOBS["chat"].teacher_messages({"text": "Hi"}) == JOBS["chat"].messages({"text": "Hi"})


def test_traces_whose_answer_is_wrong_are_dropped_and_right_ones_become_thoughts():
    (item,) = traces.problems("basic_arithmetic", 1)
    gold = item["entry"]["answer"]
    right = f"First I work it out.\nThen I check it.\nThe answer is {gold}."
    assert traces.correct(item, right)
    assert not traces.correct(item, "I think.\nThe answer is 123456789.")
    example = traces.thinking_example(item, right)
    assert example["completion"] == f"<think>\nFirst I work it out.\nThen I check it.\n</think>\n\nThe answer is {gold}."
    assert "Think step by step" in example["messages"][0]["content"]
    boxed = f"First I work it out.\nTherefore, the answer is:\n\\[\n\\boxed{{{gold}}}\n\\]\n\n```python\nprint({gold})\n```"
    assert traces.correct(item, boxed)
    assert traces.thinking_example(item, boxed)["completion"] == \
        f"<think>\nFirst I work it out.\n</think>\n\nThe answer is {gold}."


def test_choice_traces_need_the_key_and_are_learnt_under_the_evaluations_prompt():
    from tinythink.eval.tasks import TASKS

    (item,) = traces.problems("arc_easy", 1)
    (example,) = TASKS["arc_easy"].examples("dev", 1)
    assert item["student"] == example.messages and traces.CHOICE_REASON in item["messages"][-1]["content"]
    letter = "ABCD"[item["gold"]]
    wrong = "ABCD"[(item["gold"] + 1) % 4]
    right = f"Plants make food from light.\nThe answer is {letter}."
    assert traces.correct(item, right)
    assert not traces.correct(item, f"Plants make food.\nThe answer is {wrong}.")
    assert not traces.correct(item, f"{letter} is what I would pick")  # no marked answer line: not a trace
    assert not traces.correct(item, f"The answer is {letter}.")  # no steps: nothing to learn as a thought
    one_paragraph = f"Plants make food from light, so they need it. The answer is {letter}."
    assert traces.correct(item, one_paragraph)
    assert traces.thinking_example(item, one_paragraph)["completion"] == \
        f"<think>\nPlants make food from light, so they need it.\n</think>\n\n{letter}"
    learnt = traces.thinking_example(item, right)
    assert learnt["completion"] == f"<think>\nPlants make food from light.\n</think>\n\n{letter}"
    assert learnt["messages"][-1] == example.messages[-1] and "Think step by step" in learnt["messages"][0]["content"]


def test_no_evaluation_test_item_is_an_input():
    from tinythink.eval.tasks import TASKS
    from tinythink.safety.data import template_group

    test_texts = {e.messages[-1]["content"] for name in ("sentiment", "intent", "summary", "boolq")
                  for e in TASKS[name].examples("test")}
    ours = [t for task, marker in (("sentiment", "Text: "), ("intent", "Request: "), ("summary", "sentence."))
            for _, t in inputs.dev_texts(task, marker)]
    assert ours and all(t.strip() for t in ours)  # the input itself, not what surrounds it in the prompt
    assert not any(t in prompt for prompt in test_texts for t in ours[:200] if len(t) > 30)
    harmful = inputs.harmful_requests()
    tested = {template_group(e.messages[-1]["content"]) for name in ("harmbench", "donotanswer")
              for e in TASKS[name].examples("test")}
    assert len(harmful) > 150 and not any(template_group(h["text"]) in tested for h in harmful)
    for dataset in traces.DATASETS:
        taken = traces.test_questions(dataset)
        assert all(p["entry"]["question"] not in taken for p in traces.problems(dataset, 60))
    for task in traces.CHOICE_TASKS:
        test_prompts = {e.messages[-1]["content"] for e in TASKS[task].examples("test")}
        asked = traces.problems(task, 1000)
        assert asked and not any(p["student"][-1]["content"] in test_prompts for p in asked)


def test_the_writer_skips_what_is_done_and_survives_a_torn_line(tmp_path):
    path = tmp_path / "rows.jsonl"
    w = Writer(path)
    assert w.write({"id": "a", "hash": "h1"}) and not w.write({"id": "a", "hash": "h2"})
    assert not w.write({"id": "b", "hash": "h1"})  # the same text under another id: a duplicate
    with open(path, "a") as f:
        f.write('{"id": "c", "ha')  # a kill in the middle of a row
    again = Writer(path)
    assert set(again.done) == {"a"} and again.write({"id": "c", "hash": "h3"})
    assert [json.loads(line)["id"] for line in path.read_text().splitlines() if line.startswith('{"id": "a"') or
            line.startswith('{"id": "c", "hash": "h3"')] == ["a", "c"]


def test_dev_answers_are_dev_examples_the_evaluation_scores_right():
    from tinythink.eval.tasks import TASKS

    rows = inputs.dev_answers({"sentiment": 5, "intent": 5, "boolq": 5, "arc_easy": 5, "summary": 2})
    assert len(rows) == 22
    for row in rows:
        name, example_id = row["id"].split("/", 2)[1:]
        task = TASKS[name]
        assert task.split_of(example_id) == "dev"
        (example,) = [e for e in task.examples("dev") if e.id == example_id]
        assert row["messages"] == example.messages
        assert task.score(example, row["completion"])[0] == 1.0  # the evaluation reads it as the right answer
    with pytest.raises(ValueError, match="no annotated answer"):
        inputs.dev_answers({"gsm8k": 1})


def test_dev_labels_are_taken_in_turn_so_a_skewed_split_does_not_teach_its_majority():
    from collections import Counter

    rows = inputs.dev_answers({"sentiment": 150, "arc_easy": 30})
    assert Counter(r["completion"] for r in rows if r["job"] == "dev/sentiment") == \
        {"positive": 50, "negative": 50, "neutral": 50}  # 150 shuffled from the split: 86 positive
    assert len({r["id"] for r in rows}) == 180


def test_no_dev_row_repeats_a_test_prompt_under_another_id():
    from tinythink.eval.tasks import TASKS

    # vaderSentiment holds a few snippets twice under two ids, one of them dev and one test by the split rule
    dev, test = TASKS["sentiment"].examples("dev"), TASKS["sentiment"].examples("test")
    shared = {e.messages[-1]["content"] for e in dev} & {e.messages[-1]["content"] for e in test}
    assert shared  # the data does hold such texts, so the filter below is tested on real ones
    rows = inputs.dev_answers({"sentiment": 1000})
    assert rows and not shared & {r["messages"][-1]["content"] for r in rows}
