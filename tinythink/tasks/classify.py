"""classify: the text into the user's labels, with each label's probability.

The answer is always one of the labels: each label is scored as the model's whole reply (its log-likelihood, the
turn's end included) in one batch, and the probabilities are those likelihoods normalized over the labels. With
multi_label, each label gets its own yes/no question, and every label whose P(yes) reaches the threshold is kept.
"""

from __future__ import annotations

from pydantic import Field, model_validator

from tinythink.tasks.base import Example, Task, TaskRequest, TaskResponse
from tinythink.tasks.model import TaskModel
from tinythink.tasks.prompts import Label, check_labels, label_list, labels_field, user

NONE = "none"


class ClassifyRequest(TaskRequest):
    text: str = Field(min_length=1, description="the text to classify")
    labels: list[Label] = labels_field(min_length=2, max_length=50, description="the labels to choose from")
    descriptions: dict[str, str] = Field({}, description="what a label means, for labels whose name is not enough")
    multi_label: bool = Field(False, description="every label that applies, each with its own probability")
    allow_none: bool = Field(False, description="the answer may be no label (single-label: a 'none' option)")
    examples: list[Example] = Field([], max_length=20, description="labelled examples shown first (few-shot)")
    threshold: float | None = Field(None, ge=0, le=1, description="single-label: abstain (label null) when the best "
                                    "label's probability is below it; multi-label: the P(yes) a label needs "
                                    "(default 0.5)")

    @model_validator(mode="after")
    def known_labels(self):
        check_labels(self.labels, self.descriptions)
        if self.allow_none and not self.multi_label and NONE in self.labels:
            raise ValueError(f"with allow_none the answer {NONE!r} means no label: it cannot be a label as well")
        for e in self.examples:
            if e.label not in self.labels and not (self.allow_none and e.label == NONE):
                raise ValueError(f"example label {e.label!r} is not among the labels")
        return self


class ClassifyResponse(TaskResponse):
    label: str | None = Field(description="the most probable label; null when abstaining or when no label applies")
    labels: list[str] = Field(description="multi-label: every label that applies; single-label: [label] or []")
    probabilities: dict[str, float] = Field(description="single-label: over the labels (and 'none'), summing to 1; "
                                            "multi-label: each label's own P(yes)")
    abstained: bool = Field(description="the best label's probability was below the threshold")


def question(r: ClassifyRequest, text: str) -> str:
    labels = r.labels + ([NONE] if r.allow_none else [])
    described = {**r.descriptions, **({NONE: "none of the other labels fits"} if r.allow_none else {})}
    return (f"Classify the text into exactly one of these labels:\n{label_list(labels, described)}\n\nText: {text}"
            "\n\nAnswer with the label only.")


def chat(r: ClassifyRequest) -> list[dict]:
    shots = [m for e in r.examples for m in user(question(r, e.text)) + [{"role": "assistant", "content": e.label}]]
    return shots + user(question(r, r.text))


async def single(model: TaskModel, r: ClassifyRequest) -> ClassifyResponse:
    options = r.labels + ([NONE] if r.allow_none else [])
    probabilities = dict(zip(options, await model.probabilities(chat(r), options)))
    best = max(probabilities, key=probabilities.get)
    abstained = r.threshold is not None and probabilities[best] < r.threshold
    label = None if abstained or best == NONE else best
    return ClassifyResponse(model=model.name, label=label, labels=[label] if label else [],
                            probabilities=probabilities, abstained=abstained)


async def multi(model: TaskModel, r: ClassifyRequest) -> ClassifyResponse:
    import asyncio

    def ask(label: str) -> list[dict]:
        meaning = f" ({r.descriptions[label]})" if r.descriptions.get(label) else ""
        def q(text):
            return f"Does the label \"{label}\"{meaning} apply to this text?\n\nText: {text}\n\nAnswer yes or no."
        shots = [m for e in r.examples for m in user(q(e.text)) +
                 [{"role": "assistant", "content": "yes" if e.label == label else "no"}]]
        return shots + user(q(r.text))

    yes = await asyncio.gather(*(model.probabilities(ask(label), ["yes", "no"]) for label in r.labels))
    probabilities = {label: p[0] for label, p in zip(r.labels, yes)}
    cut = 0.5 if r.threshold is None else r.threshold
    chosen = sorted((label for label in r.labels if probabilities[label] >= cut), key=probabilities.get, reverse=True)
    if not chosen and not r.allow_none:  # some label must apply: the likeliest
        chosen = [max(probabilities, key=probabilities.get)]
    return ClassifyResponse(model=model.name, label=chosen[0] if chosen else None, labels=chosen,
                            probabilities=probabilities, abstained=False)


async def run(model: TaskModel, r: ClassifyRequest) -> ClassifyResponse:
    return await (multi if r.multi_label else single)(model, r)


TASK = Task("classify", "the text into your labels, with each label's probability", ClassifyRequest,
            ClassifyResponse, run)
