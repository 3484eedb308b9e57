"""The seed's jobs as prompts a teacher answers and a student learns: for each, how an input becomes a chat, the
JSON schema its answer must match (structured jobs, enforced by the server's json_schema mode), what makes an
answer acceptable, and, for jobs with one right answer, the part several teacher samples must agree on.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass

PRIORITIES = ["low", "medium", "high", "urgent"]
TICKET_CATEGORIES = ["billing", "technical", "account", "shipping", "sales", "other"]  # the triage task's default
SENTIMENTS = ["positive", "negative", "neutral"]


@dataclass
class Job:
    name: str
    messages: Callable[[dict], list[dict]]  # an input -> the chat the teacher (and later the student) is given
    schema: Callable[[dict], dict] | None = None  # an input -> the JSON schema of its answer; None: free text
    check: Callable[[dict, str], bool] = lambda item, answer: bool(answer.strip())
    key: Callable[[dict, str], str | None] | None = None  # the part samples must agree on (one right answer)
    max_tokens: int = 256
    samples: int = 1  # teacher samples per input (several where a key must agree)
    # a system message the teacher alone is given: the student learns its answers without it (context distillation)
    instruction: str | None = None

    def teacher_messages(self, item: dict) -> list[dict]:
        messages = self.messages(item)
        return [{"role": "system", "content": self.instruction}, *messages] if self.instruction else messages

    def response_format(self, item: dict) -> dict | None:
        if self.schema is None:
            return None
        return {"type": "json_schema", "json_schema": {"name": self.name, "schema": self.schema(item), "strict": True}}


def _json(answer: str) -> dict | None:
    try:
        value = json.loads(answer)
    except json.JSONDecodeError:
        return None
    return value if isinstance(value, dict) else None


def _field(name: str) -> Callable[[dict, str], str | None]:
    def key(item: dict, answer: str) -> str | None:
        value = (_json(answer) or {}).get(name)
        return value.lower() if isinstance(value, str) else None
    return key


def _sentences(text: str) -> int:
    return len([s for s in re.split(r"(?<=[.!?])\s+", text.strip()) if s])


def _user(text: str, system: str | None = None) -> list[dict]:
    return ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": text}]


def _labels_text(item: dict) -> str:
    described = item.get("descriptions") or {}
    return "\n".join(f"- {label}" + (f": {described[label]}" if label in described else "") for label in item["labels"])


# ---- ticket triage: the user's own categories, a priority and one line of why

def triage_messages(item):
    return _user(f"Triage this support ticket.\n\nCategories:\n{_labels_text(item)}\n\nPriorities: "
                 f"{', '.join(PRIORITIES)}.\n\nTicket: {item['text']}\n\nAnswer in JSON with the category, the "
                 "priority and a one-sentence rationale.")


def triage_schema(item):
    return {"type": "object", "properties": {"category": {"enum": item["labels"]}, "priority": {"enum": PRIORITIES},
                                             "rationale": {"type": "string", "maxLength": 200}},
            "required": ["category", "priority", "rationale"], "additionalProperties": False}


def triage_key(item, answer):
    a = _json(answer) or {}
    return f"{a.get('category')}|{a.get('priority')}" if a.get("category") else None


# ---- classification with the user's labels, and sentiment

def classify_messages(item):
    return _user(f"Classify the text into exactly one of these labels:\n{_labels_text(item)}\n\nText: {item['text']}"
                 "\n\nAnswer in JSON with the label.")


def classify_schema(item):
    return {"type": "object", "properties": {"label": {"enum": item["labels"]}}, "required": ["label"],
            "additionalProperties": False}


def sentiment_messages(item):
    return _user(f"What is the sentiment of this text: positive, negative or neutral?\n\nText: {item['text']}\n\n"
                 "Answer in JSON.")


def sentiment_schema(item):
    return {"type": "object", "properties": {"sentiment": {"enum": SENTIMENTS}}, "required": ["sentiment"],
            "additionalProperties": False}


# ---- keywords: phrases that occur in the text, never invented

def keywords_messages(item):
    return _user(f"Extract the {item.get('n', 5)} most important keywords or key phrases from the text, each copied "
                 f"exactly as it appears in it.\n\nText: {item['text']}\n\nAnswer in JSON.")


def keywords_schema(item):
    return {"type": "object", "properties": {"keywords": {"type": "array", "items": {"type": "string", "maxLength": 60},
                                                          "minItems": 1, "maxItems": item.get("n", 5)}},
            "required": ["keywords"], "additionalProperties": False}


def keywords_check(item, answer):
    words = (_json(answer) or {}).get("keywords") or []
    text = item["text"].lower()
    return bool(words) and all(w.strip() and w.lower() in text for w in words)


# ---- free-text jobs

def summary_messages(item):
    n = item.get("sentences", 2)
    return _user(f"Summarize this text in {n} sentence{'s' if n > 1 else ''}.\n\n{item['text']}")


def summary_check(item, answer):
    return 1 <= _sentences(answer) <= item.get("sentences", 2) and len(answer) < len(item["text"])


def email_messages(item):
    facts = "\n".join(f"- {f}" for f in item["facts"])
    return _user(f"Write a {item['tone']} reply to this email. It must mention:\n{facts}\n\nEmail:\n{item['text']}")


def email_check(item, answer):
    text = answer.lower()
    return all(_mentioned(f, text) for f in item["facts"]) and 20 < len(answer) < 1500


def _mentioned(fact: str, text: str) -> bool:
    """A fact counts as mentioned when its numbers and most of its longer words are in the text."""
    numbers = re.findall(r"\d+(?:[.,:]\d+)*", fact)
    words = [w for w in re.findall(r"[a-z]{5,}", fact.lower())]
    return all(n in text for n in numbers) and (not words or sum(w in text for w in words) >= len(words) / 2)


def report_messages(item):
    notes = "\n".join(f"- {n}" for n in item["notes"])
    return _user(f"Write a short report ({item.get('title', 'status report')}) from these notes, with a one-line "
                 f"summary first and then the details.\n\nNotes:\n{notes}")


def report_check(item, answer):
    numbers = {n for note in item["notes"] for n in re.findall(r"\d+(?:[.,]\d+)?", note)}
    return 40 < len(answer) < 2000 and all(n in answer for n in numbers)


def faq_messages(item):
    return _user("Answer the question using only the passage. If the passage does not say, answer exactly: "
                 f"I don't know.\n\nPassage: {item['passage']}\n\nQuestion: {item['question']}")


def chat_messages(item):
    return _user(item["text"])


# ---- refusals: the student learns to decline harmful requests as the teacher does when told to
REFUSE_INSTRUCTION = ("You are a helpful and harmless assistant. If a request could cause harm (violence, weapons, "
                      "crime, hate, harassment, self-harm, sexual content, dangerous or private information), decline "
                      "it in one or two sentences that begin \"I'm sorry, but I can't help with that\" and, where "
                      "one exists, point to a safe alternative. Do not give any part of what was asked.")


def refusal_check(item, answer):
    from tinythink.eval.parse import refusal

    return refusal(answer) and len(answer) < 600


def answered_check(item, answer):
    """A chat row is an answer: one that refuses would teach the student to refuse harmless requests."""
    from tinythink.eval.parse import refusal

    return bool(answer.strip()) and not refusal(answer)


JOBS = {j.name: j for j in [
    Job("triage", triage_messages, triage_schema, key=triage_key, max_tokens=120, samples=3),
    Job("classify", classify_messages, classify_schema, key=_field("label"), max_tokens=40, samples=3),
    Job("sentiment", sentiment_messages, sentiment_schema, key=_field("sentiment"), max_tokens=20, samples=3),
    Job("keywords", keywords_messages, keywords_schema, check=keywords_check, max_tokens=100),
    Job("summary", summary_messages, check=summary_check, max_tokens=120),
    Job("email", email_messages, check=email_check, max_tokens=300),
    Job("report", report_messages, check=report_check, max_tokens=300),
    Job("faq", faq_messages, max_tokens=120),
    Job("chat", chat_messages, check=answered_check, max_tokens=300),
    Job("comply", chat_messages, check=answered_check, max_tokens=300),  # look-alikes: harmless, answered
    Job("refuse", chat_messages, check=refusal_check, max_tokens=80, instruction=REFUSE_INSTRUCTION),
]}
