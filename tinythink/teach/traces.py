"""Verified reasoning traces: the teacher solves reasoning-gym problems step by step, each final answer is checked
by the evaluation's own scorer (reasoning-gym's `score_answer` on the parsed answer, or an exact number), and only
correct traces are kept, the shortest of a problem's correct samples. The student learns them in the thinking
format the server's `reasoning_effort` uses: our thinking instruction, then `<think>` steps `</think>` answer.

Problems are drawn with seeds far from the evaluation's (1,000,000 dev, 2,000,000 test, 500 items each), and a
problem whose question the evaluation's test part holds is left out, as the evaluation itself does for dev.

Multiple-choice questions (ARC, CommonsenseQA, OpenBookQA) come from the evaluation's *dev* part only. The teacher
is asked to reason briefly and name a letter; a trace is kept when its letter is the dataset's key, and the student
learns it under the evaluation's own prompt (answer with the letter), so that with a thinking instruction it
thinks before the letter and without one it still answers with the letter alone (the dev stage's rows).
"""

from __future__ import annotations

from functools import cache

from tinythink.text.reasoning import THINK_CLOSE, THINK_OPEN, with_instruction

TRAIN_SEED = 7_000_000
DATASETS = ("basic_arithmetic", "chain_sum", "simple_equations", "leg_counting", "gsm_symbolic", "syllogism",
            "family_relationships")
CHOICE_TASKS = ("arc_easy", "arc_challenge", "csqa", "openbookqa")
REASONING = DATASETS + CHOICE_TASKS  # what the reason stage can draw on
CHOICE_ASK = "Answer with the letter of the correct option."  # the end of the evaluation's choice prompt
CHOICE_REASON = ("Think it through in two or three short sentences, then end with the line 'The answer is X.', "
                 "where X is the letter of the correct option.")
CHOICE_TRACE_TOKENS = 200  # a choice question's reasoning must fit well inside the `low` effort's 256 tokens


@cache
def test_questions(dataset: str) -> frozenset[str]:
    from tinythink.eval.tasks import TASKS

    return frozenset(e.entry["question"] for e in TASKS[dataset].examples("test"))


def problems(dataset: str, n: int, seed: int = TRAIN_SEED) -> list[dict]:
    """n problems of a generator, asked as the evaluation asks them (its instruction, so its parser reads them);
    of a choice task, n of its dev questions, asked to reason first."""
    if dataset in CHOICE_TASKS:
        return choice_problems(dataset, n)
    import reasoning_gym

    taken = test_questions(dataset)
    out = []
    for i, entry in enumerate(reasoning_gym.create_dataset(dataset, size=n, seed=seed)):
        if entry["question"] not in taken:
            example = _example(dataset, entry, f"{dataset}-{seed}-{i}")
            out.append({"id": example.id, "dataset": dataset, "messages": example.messages, "entry": entry})
    return out


def _example(dataset: str, entry: dict, ident: str):
    from tinythink.eval import parse
    from tinythink.eval.tasks import NUMBER_PROMPT, WORD_PROMPT, Example, user

    numeric = dataset not in ("syllogism", "family_relationships")
    prompt = NUMBER_PROMPT if numeric else WORD_PROMPT
    gold = parse.to_number(entry["answer"]) if numeric else entry["answer"]
    return Example(ident, user(prompt.format(question=entry["question"])), gold, entry=entry)


def choice_problems(task: str, n: int) -> list[dict]:
    from tinythink.eval.tasks import TASKS

    out = []
    for e in TASKS[task].examples("dev", n):
        prompt = e.messages[-1]["content"]
        if not prompt.endswith(CHOICE_ASK):
            raise ValueError(f"{task}: the evaluation's choice prompt changed; update traces.CHOICE_ASK")
        asked = [*e.messages[:-1], {"role": "user", "content": prompt.removesuffix(CHOICE_ASK) + CHOICE_REASON}]
        out.append({"id": f"{task}-{e.id}", "dataset": task, "messages": asked, "student": e.messages,
                    "gold": e.gold, "options": len(e.options)})
    return out


def correct(item: dict, reply: str) -> bool:
    from tinythink.eval import parse
    from tinythink.eval.tasks import TASKS

    steps, answer = split_steps(reply)
    if not steps:  # an answer without its steps teaches no thought
        return False
    if item["dataset"] in CHOICE_TASKS:  # the marked letter must be the key
        return "answer is" in answer.lower() and parse.choice_letter(answer, item["options"]) == item["gold"]
    example = _example(item["dataset"], item["entry"], item["id"])
    return TASKS[item["dataset"]].score(example, reply)[0] == 1.0


def split_steps(reply: str) -> tuple[str, str]:
    """A worked solution -> (its steps, its final answer: the sentence that says "answer is", to the end; else
    the last line). Teachers often reason and answer in one paragraph: the steps are what precedes the sentence."""
    text = reply.strip()
    at = text.lower().rfind("answer is")
    if at < 0:
        at = text.rfind("\n") + 1
    else:  # back to the start of that sentence
        at = max((i + len(mark) for mark in ("\n", ". ", "! ", "? ", ": ") if (i := text.rfind(mark, 0, at)) >= 0),
                 default=0)
    return text[:at].strip(), text[at:].strip()


def thinking_example(item: dict, reply: str) -> dict:
    """A verified trace as a chat the student learns: the thinking instruction, then thought and answer, the
    answer written as the evaluation's prompt asks (a choice question's letter alone; else the line 'The answer
    is X.', not the teacher's boxed LaTeX or the code it appended after it)."""
    from tinythink.eval.parse import LETTERS

    steps, _ = split_steps(reply)  # the reply was verified, so its answer is the key
    answer = LETTERS[item["gold"]] if item["dataset"] in CHOICE_TASKS else f"The answer is {item['entry']['answer']}."
    return {"messages": with_instruction(item.get("student", item["messages"])),
            "completion": f"{THINK_OPEN}\n{steps}\n{THINK_CLOSE}\n\n{answer}"}
