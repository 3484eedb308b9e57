"""A task: typed request and response (the same types for Python, the CLI and HTTP) and the coroutine that runs it
on a model."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from pydantic import BaseModel, Field

from tinythink.request_body import RequestBody
from tinythink.tasks.model import TaskModel


class TaskRequest(RequestBody):
    """A misspelt option is an error, not silently ignored; JSON types are checked as OpenAI's API does."""
    model: str | None = Field(None, description="the served model to use (default: the server's first)")


class TaskResponse(BaseModel):
    model: str = Field(description="the model that answered")


class Example(RequestBody):
    """A worked example shown to the model before the text (few-shot)."""
    text: str = Field(min_length=1)
    label: str = Field(min_length=1, description="the right label for the text")


@dataclass(frozen=True)
class Task:
    name: str
    summary: str
    Request: type[TaskRequest]
    Response: type[TaskResponse]
    run: Callable[[TaskModel, TaskRequest], Awaitable[TaskResponse]]
