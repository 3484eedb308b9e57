"""The built-in training corpus never holds an evaluation test item: the evaluation tasks give it their dev parts
only (by the evaluation's own split rule), and no other source repeats a test question."""

import pytest

from tinythink.compress import corpus
from tinythink.eval.tasks import TASKS


@pytest.fixture(scope="module")
def records():
    return corpus.records()


def test_evaluation_items_come_from_dev_parts_only(records):
    from_eval = [r for r in records if r.id.startswith("eval-")]
    assert from_eval
    for r in from_eval:
        _, task, example_id = r.id.split("-", 2)
        if not TASKS[task].generated:
            assert TASKS[task].split_of(example_id) == "dev", r.id


def test_no_test_prompt_or_question_appears_anywhere_in_the_corpus(records):
    from collections import Counter

    prompts = {m["content"] for r in records for m in (r.messages or [])}
    text = "\n".join([r.text or "" for r in records] + list(prompts) + [r.completion or "" for r in records])
    checked = 0
    for task in TASKS.values():
        if task.kind in ("refusal", "compliance"):
            continue
        examples = task.examples("test", 150)
        lines = [[line for line in e.messages[-1]["content"].split("\n") if line.strip()] for e in examples]
        template = {line for line, n in Counter(line for ls in lines for line in set(ls)).items() if n > 1}
        for e, ls in zip(examples, lines):
            assert e.messages[-1]["content"] not in prompts, (task.name, e.id)
            for line in ls:  # the item's own text: its lines that are not the task's instruction
                content = line.removeprefix("Text: ").removeprefix("Request: ")
                if line not in template and len(content) >= 40:
                    assert content[:200] not in text, (task.name, e.id, content[:80])
                    checked += 1
    assert checked > 1000
