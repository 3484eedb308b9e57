"""POST /v1/tasks/{name}: the ready-made tasks (tinythink/tasks/), one typed route each, so that the OpenAPI
document gives every task's request and response."""

# no `from __future__ import annotations`: FastAPI reads each route's types from its signature at runtime

from fastapi import APIRouter, Request

from tinythink.engine.constraint import GrammarError
from tinythink.errors import TinythinkError
from tinythink.serve.errors import APIError, errors, served
from tinythink.serve.moderations import screening
from tinythink.tasks import TASKS, Task, TaskModel

MIN_SCREENED_CHARS = 16
ERRORS = errors({400: "the request is not valid for the task (the message says why)",
                 404: "no such model is served", 413: "the body is too large", 429: "the server's queue is full"})


def screened_texts(fields) -> list[str]:
    """The request's own texts (what to classify, summarize, answer from), not its short settings or labels."""
    if isinstance(fields, str):
        return [fields] if len(fields) >= MIN_SCREENED_CHARS else []
    values = fields.values() if isinstance(fields, dict) else fields if isinstance(fields, list) else []
    return [t for v in values for t in screened_texts(v)]


def route(task: Task):
    async def run(body: task.Request, request: Request) -> task.Response:
        screen = screening(request, f"tasks.{task.name}")
        model = TaskModel(served(request.app.state.hosts, body.model), request.app.state.documents, screen)
        if screen is not None:
            decision = await screen.check("input", screened_texts(body.model_dump(exclude={"model"})))
            if decision.blocked:
                reasons = decision.categories + ([f"other_language: {decision.language}"] if decision.language else [])
                raise APIError(400, f"the input was blocked by the content filter ({', '.join(reasons)})",
                               code="content_filter")
        try:
            return await task.run(model, body)
        except GrammarError as e:
            raise APIError(400, f"the schema cannot be decoded: {e}", param="schema") from None
        except TinythinkError as e:
            raise APIError(400, str(e)) from None

    run.__name__ = f"task_{task.name.replace('-', '_')}"
    return run


router = APIRouter(prefix="/v1/tasks", tags=["tasks"])
for task in TASKS.values():
    router.add_api_route(f"/{task.name}", route(task), methods=["POST"], response_model=task.Response,
                         operation_id=f"task_{task.name.replace('-', '_')}",
                         summary=task.summary, responses=ERRORS)
