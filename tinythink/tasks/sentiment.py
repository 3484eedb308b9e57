"""sentiment: positive, negative or neutral (or the user's own scale), with each one's probability, scored as
classify scores its labels."""

from __future__ import annotations

from pydantic import Field, field_validator

from tinythink.tasks.base import Task, TaskRequest, TaskResponse
from tinythink.tasks.model import TaskModel
from tinythink.tasks.prompts import Label, check_labels, labels_field, user


class SentimentRequest(TaskRequest):
    text: str = Field(min_length=1, description="the text whose sentiment is asked")
    scale: list[Label] = labels_field(["positive", "negative", "neutral"], min_length=2, max_length=10,
                                      description="the answers to choose from, e.g. very negative ... very positive")

    @field_validator("scale")
    @classmethod
    def distinct(cls, scale):
        check_labels(scale, {}, "scale")
        return scale


class SentimentResponse(TaskResponse):
    sentiment: str = Field(description="the most probable point of the scale")
    probabilities: dict[str, float] = Field(description="each point of the scale, summing to 1")


async def run(model: TaskModel, r: SentimentRequest) -> SentimentResponse:
    scale = ", ".join(r.scale[:-1]) + f" or {r.scale[-1]}"
    chat = user(f"What is the sentiment of this text: {scale}?\n\nText: {r.text}\n\nAnswer with one of: {scale}.")
    probabilities = dict(zip(r.scale, await model.probabilities(chat, r.scale)))
    return SentimentResponse(model=model.name, sentiment=max(probabilities, key=probabilities.get),
                             probabilities=probabilities)


TASK = Task("sentiment", "the text's sentiment on a scale, with probabilities", SentimentRequest, SentimentResponse,
            run)
