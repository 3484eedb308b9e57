"""summarize: the text in a given number of sentences or words, held to it (a longer reply is cut at a sentence,
or at a word, boundary)."""

from __future__ import annotations

import re

from pydantic import ConfigDict, Field, model_validator

from tinythink.tasks.base import Task, TaskRequest, TaskResponse
from tinythink.tasks.model import TaskModel
from tinythink.tasks.prompts import user


class SummarizeRequest(TaskRequest):
    # one_length, as a JSON schema
    model_config = ConfigDict(json_schema_extra={"not": {"required": ["sentences", "words"],
                                                         "properties": {"sentences": {"type": "integer"},
                                                                        "words": {"type": "integer"}}}})
    text: str = Field(min_length=1, description="the text to summarize")
    sentences: int | None = Field(None, ge=1, le=10, description="at most this many sentences (default 2)")
    words: int | None = Field(None, ge=5, le=400, description="at most this many words (instead of sentences)")

    @model_validator(mode="after")
    def one_length(self):
        if self.sentences is not None and self.words is not None:
            raise ValueError("give sentences or words, not both")
        return self


class SummarizeResponse(TaskResponse):
    summary: str
    sentences: int = Field(description="sentences in the summary")
    words: int = Field(description="words in the summary")


def split_sentences(text: str) -> list[str]:
    return [s for s in re.split(r"(?<=[.!?])\s+", text.strip()) if s]


def held_to(text: str, sentences: int | None, words: int | None) -> str:
    """The reply cut to the length asked: whole sentences while they fit, else whole words."""
    parts = split_sentences(" ".join(text.split()))
    if sentences is not None:
        return " ".join(parts[:sentences])
    kept, count = [], 0
    for s in parts:
        n = len(s.split())
        if count + n > words:
            break
        kept.append(s)
        count += n
    return " ".join(kept) if kept else " ".join(" ".join(parts).split()[:words])


async def run(model: TaskModel, r: SummarizeRequest) -> SummarizeResponse:
    sentences = r.sentences if r.words is None else None
    sentences = 2 if sentences is None and r.words is None else sentences
    if r.words is not None:
        ask, room = f"in at most {r.words} words", int(r.words * 2) + 16
    else:
        ask, room = f"in {sentences} sentence{'s' if sentences > 1 else ''}", 48 * sentences + 16
    reply = await model.write(user(f"Summarize this text {ask}.\n\n{r.text}"), room)
    summary = held_to(reply, sentences, r.words)
    return SummarizeResponse(model=model.name, summary=summary, sentences=len(split_sentences(summary)),
                             words=len(summary.split()))


TASK = Task("summarize", "the text in a number of sentences or words, held to it", SummarizeRequest,
            SummarizeResponse, run)
