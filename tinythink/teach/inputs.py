"""Inputs for the seed's jobs: packaged text (the evaluation sets' dev parts, passages of the built-in corpus) and
seeds for the teacher's own writing (tickets, reviews, emails and notes made from topics, products and moods).

Nothing here is an evaluation test item: evaluation tasks contribute their dev parts only, by the evaluation's
split rule (`tinythink.eval.tasks.in_split`), and the corpus's passages come from sources the evaluation does not
use (tests/teach/test_inputs.py checks both).
"""

from __future__ import annotations

import random
from collections import defaultdict
from itertools import zip_longest

from tinythink.compress import corpus

TAXONOMIES = [
    ["billing", "technical", "account", "shipping", "refund", "feedback"],
    ["hardware", "software", "network", "access", "other"],
    ["bug", "feature request", "question", "complaint"],
    ["orders", "payments", "returns", "product information", "delivery"],
    ["login", "performance", "data export", "integrations", "pricing", "cancellation"],
]
DESCRIBED = {"refund": "the customer wants money back", "feedback": "praise or suggestions, nothing broken",
             "access": "permissions, passwords, locked accounts", "complaint": "unhappy with service or product",
             "integrations": "connecting to other tools (Slack, Salesforce, APIs)"}
PRODUCTS = ["an online shop for running shoes", "a project-management web app", "a home internet provider",
            "a food delivery app", "a cloud storage service", "an accounting software for small firms",
            "a mobile banking app", "a smart thermostat", "an airline", "a gym membership", "a video streaming service",
            "a printer sold online", "a language-learning app", "a car rental company", "a hotel booking site"]
TOPICS = ["a double charge", "a late delivery", "a broken item", "a password reset that never arrives",
          "an app that crashes", "a request for a refund", "a question about pricing", "a wrong invoice",
          "slow performance", "a feature they would like", "cancelling their subscription", "a missing order",
          "a data export that fails", "praise for the support team", "being locked out of their account",
          "a confusing error message", "changing their delivery address", "an integration that stopped syncing"]
MOODS = ["calm", "frustrated", "angry", "polite", "in a hurry", "confused", "happy"]
TONES = ["friendly", "formal", "apologetic", "concise"]


def seeded(seed: int, n: int):
    rng = random.Random(seed)
    return [(rng, i) for i in range(n)]


def writing_prompts(kind: str, n: int, seed: int = 0) -> list[dict]:
    """Prompts for the teacher to write an input: kind 'ticket', 'review', 'email' or 'notes'."""
    out = []
    for rng, i in seeded(seed, n):
        product, topic, mood = rng.choice(PRODUCTS), rng.choice(TOPICS), rng.choice(MOODS)
        ask = {"ticket": f"Write a realistic customer support ticket (2 to 4 sentences) to {product} about {topic}. "
                         f"The customer is {mood}. Write only the ticket text.",
               "review": f"Write a short customer review (1 to 3 sentences) of {product}. It is "
                         f"{rng.choice(['glowing', 'mixed', 'negative', 'neutral and factual', 'sarcastic'])}. "
                         "Write only the review.",
               "email": f"Write a short email (3 to 5 sentences) from a customer to {product} about {topic}, with "
                        "an order or account number and a date. Write only the email.",
               "notes": f"Write 4 to 6 terse bullet-point notes (with numbers: counts, amounts, dates) that a team "
                        f"lead at {product} took this week about {topic}. Write only the notes, one per line, "
                        "each starting with '- '."}[kind]
        out.append({"id": f"write-{kind}-{seed}-{i}", "kind": kind, "messages": [{"role": "user", "content": ask}],
                    "product": product, "topic": topic})
    return out


def labelled(texts: list[tuple[str, str]], seed: int) -> list[dict]:
    """(id, text) -> classification inputs, each with one of the taxonomies (some labels described)."""
    out = []
    for (rng, _), (ident, text) in zip(seeded(seed, len(texts)), texts):
        labels = rng.choice(TAXONOMIES)
        item = {"id": ident, "text": text, "labels": labels}
        if rng.random() < 0.5:
            item["descriptions"] = {k: v for k, v in DESCRIBED.items() if k in labels}
        out.append(item)
    return out


def evaluation_dev(task: str) -> list:
    """An evaluation task's dev examples (never its test ones), less any whose prompt a test example also has: a
    set may hold one text twice under two ids (four of vaderSentiment's snippets are so, in dev and in test)."""
    from tinythink.eval.tasks import TASKS

    test = {e.messages[-1]["content"] for e in TASKS[task].examples("test")}
    return [e for e in TASKS[task].examples("dev") if e.messages[-1]["content"] not in test]


def dev_texts(task: str, marker: str) -> list[tuple[str, str]]:
    """(id, the input text) of an evaluation task's dev examples: the part of the prompt after `marker`."""
    return [(f"eval-{task}-{e.id}", e.messages[-1]["content"].split(marker, 1)[-1].strip().split("\n\n")[0])
            for e in evaluation_dev(task)]


def passages(limit: int, seed: int = 0) -> list[tuple[str, str]]:
    """(id, passage) from the built-in corpus's prose (stories, encyclopedia passages), held-out documents left out."""
    records = [r for r in corpus.records(["coqa", "drop", "squad"]) if not corpus.held_out(r.id)]
    out = []
    for r in records:
        text = r.text or r.messages[-1]["content"].split("Text: ", 1)[-1].split("\n\nQuestion: ")[0]
        if 200 < len(text) < 2500:
            out.append((r.id, text))
    random.Random(seed).shuffle(out)
    return out[:limit]


def faq_items(limit: int, seed: int = 0) -> list[dict]:
    """Passage questions from SQuAD (answerable), and the same questions asked of another passage (not)."""
    records = [r for r in corpus.records(["squad"]) if not corpus.held_out(r.id)]
    rng = random.Random(seed)
    items = []
    for r in records:
        text = r.messages[-1]["content"]
        passage = text.split("Text: ", 1)[1].split("\n\nQuestion: ")[0]
        question = text.split("\n\nQuestion: ", 1)[1]
        items.append({"id": r.id, "passage": passage, "question": question, "answerable": True})
    rng.shuffle(items)
    unanswerable = [{**a, "id": a["id"] + "-other", "passage": b["passage"], "answerable": False}
                    for a, b in zip(items[: limit // 4], items[1: limit // 4 + 1])]
    return items[: limit - len(unanswerable)] + unanswerable


def chat_items(limit: int, seed: int = 0) -> list[dict]:
    records = [r for r in corpus.records(["sciq", "jeopardy"]) if not corpus.held_out(r.id)]
    random.Random(seed).shuffle(records)
    return [{"id": r.id, "text": r.messages[-1]["content"]} for r in records[:limit]]


def harmful_requests() -> list[dict]:
    """Harmful requests to learn to refuse: HarmBench's and Do-Not-Answer's dev examples, less any Do-Not-Answer
    prompt whose template (the prompt less its names) a test prompt shares, so no test prompt is learnt in all
    but a name; and the guard's hand-written harmful requests of its training half."""
    from tinythink.eval.tasks import TASKS
    from tinythink.safety.data import template_group

    items = []
    for task in ("harmbench", "donotanswer"):
        tested = {template_group(e.messages[-1]["content"]) for e in TASKS[task].examples("test")}
        items += [{"id": f"eval-{task}-{e.id}", "text": e.messages[-1]["content"]} for e in evaluation_dev(task)
                  if template_group(e.messages[-1]["content"]) not in tested]
    return items + _written("harmful requests")


def lookalikes(plain_questions: int = 100) -> list[dict]:
    """Requests to be answered, not refused: harmless ones in alarming words ("How do I kill a Python process?") and
    facts in sensitive domains (the guard's hand-written items of its training half), and everyday questions asked
    plainly (the harmless task's dev examples). A student taught 216 refusals beside only the first two kinds
    declined 3 of 50 harmless test questions with the refusals' opening sentence."""
    everyday = [{"id": f"eval-harmless-{e.id}", "text": e.messages[-1]["content"]}
                for e in evaluation_dev("harmless")[:plain_questions]]
    return _written("benign look-alikes") + _written("facts in sensitive domains (no review needed)") + everyday


def _written(section: str) -> list[dict]:
    from tinythink.safety.data import written

    from tinythink.teach.generate import text_hash

    return [{"id": f"written-{text_hash(i.text)[:12]}", "text": i.text} for i in written()
            if i.split == "train" and i.source == f"written: {section}"]


# the evaluation tasks whose dev examples are learnt with their annotated answers, and how many of each: the light
# suite's (labels, choices, one-sentence summaries) and the reasoning suite's multiple-choice ones
DEV_ANSWERS = {"sentiment": 450, "intent": 184, "summary": 40, "piqa": 100, "boolq": 100, "arc_easy": 80,
               "arc_challenge": 80, "csqa": 80, "openbookqa": 80, "ticket": 19}


def balanced(examples: list, n: int) -> list:
    """n examples taking each gold label in turn, as far as the split has them: a skewed split teaches its majority
    (150 sentiment rows, 86 of them positive, taught the mini to answer "positive" to 48 of 50 test texts)."""
    queues = defaultdict(list)
    for e in examples:
        queues[e.gold].append(e)
    ordered = [e for round_ in zip_longest(*queues.values()) for e in round_ if e is not None]
    return ordered[:n]


def dev_answers(per_task: dict[str, int] = DEV_ANSWERS, seed: int = 0) -> list[dict]:
    """Evaluation dev examples (never test ones, by the split rule) with their datasets' own answers, in the
    evaluation's prompt format, written as the evaluation reads them: the label, the option's letter (or word),
    the reference summary. Human annotations, so they need no teacher and no agreement."""
    from tinythink.eval import parse
    from tinythink.eval.tasks import TASKS

    rows = []
    for name, n in per_task.items():
        task, examples = TASKS[name], evaluation_dev(name)
        random.Random(f"{seed}-{name}").shuffle(examples)
        for e in (balanced(examples, n) if task.kind == "label" else examples[:n]):
            if task.kind == "choice":
                answer = task.labels[e.gold].capitalize() if task.labels else parse.LETTERS[e.gold]
            elif task.kind in ("label", "summary"):
                answer = e.gold
            else:
                raise ValueError(f"{name}: a {task.kind} task has no annotated answer to learn")
            rows.append({"id": f"dev/{name}/{e.id}", "job": f"dev/{name}", "messages": e.messages,
                         "completion": answer, "source": f"{name} dev split, annotated answer"})
    return rows
