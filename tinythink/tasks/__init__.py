"""Ready-made tasks for the seed's lightweight jobs, each one typed request and response used alike from Python,
the CLI (`tinythink task NAME`) and HTTP (`POST /v1/tasks/NAME`).

    from tinythink.tasks import Tasks
    tasks = Tasks.load("smollm2-135m")
    tasks.classify(text="My card was charged twice", labels=["billing", "technical"])
"""

from __future__ import annotations

import asyncio

from tinythink.tasks import answer, classify, email_reply, extract, keywords, report, sentiment, summarize, triage
from tinythink.tasks.base import Task, TaskRequest, TaskResponse
from tinythink.tasks.model import TaskModel

TASKS: dict[str, Task] = {m.TASK.name: m.TASK for m in (classify, sentiment, keywords, extract, summarize,
                                                        email_reply, triage, report, answer)}


class Tasks:
    """The tasks on one model, as plain (blocking) Python calls: tasks.NAME(**request fields) -> response."""

    def __init__(self, model: TaskModel):
        self.model = model

    @classmethod
    def load(cls, ref: str, docs: str | None = None, **host_options) -> Tasks:
        """The tasks on a model; `docs`: a directory of documents that `answer` answers from."""
        from tinythink.llm import LLM
        from tinythink.model.load import load_model
        from tinythink.retrieval.index import DocumentIndex
        from tinythink.serve.host import ModelHost

        documents = DocumentIndex(docs) if docs else None  # a bad directory is said before minutes of loading
        loaded = load_model(ref)
        return cls(TaskModel(ModelHost(loaded.name, LLM(loaded), **host_options), documents))

    def close(self):
        self.model.host.close()

    def run(self, name: str, request: TaskRequest | dict) -> TaskResponse:
        task = TASKS[name]
        if isinstance(request, dict):
            request = task.Request.model_validate(request)
        return asyncio.run(task.run(self.model, request))

    def __getattr__(self, name: str):
        task = TASKS.get(name.replace("_", "-")) or TASKS.get(name)
        if task is None:
            raise AttributeError(name)
        return lambda **fields: self.run(task.name, fields)


__all__ = ["TASKS", "Task", "TaskModel", "Tasks"]
