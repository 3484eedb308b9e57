"""POST /v1/moderations in OpenAI's shape (a string, a list of strings, or text parts), answered by the guard;
and what chat, completions and tasks share to screen a request through the server's safety filter."""

from __future__ import annotations

import asyncio
import uuid
from typing import Annotated, Literal

from fastapi import APIRouter, Request
from pydantic import Field

from tinythink.request_body import RequestBody
from tinythink.safety.filter import Screening
from tinythink.serve.errors import APIError, errors
from tinythink.serve.responses import Moderation

MODEL = "tinythink-guard"  # what a moderation reports it was scored by, whatever `model` the request named
MAX_INPUTS = 64

router = APIRouter()


class ModerationText(RequestBody):
    type: Literal["text"]
    text: str


# what the handler enforces with its own messages, stated in the schema
TEXTS = {"minItems": 1, "maxItems": MAX_INPUTS}


class ModerationRequest(RequestBody):
    input: str | Annotated[list[str], Field(json_schema_extra=TEXTS)] | \
        Annotated[list[ModerationText], Field(json_schema_extra=TEXTS)]
    model: str | None = None  # accepted, as OpenAI's client always sends one; the guard answers every name


def screening(request: Request, endpoint: str) -> Screening | None:
    """The request's screening, or None when the server runs without its safety filter."""
    safety = request.app.state.safety
    if safety is None:
        return None
    key = request.headers.get("authorization", "").removeprefix("Bearer ").strip() or None
    return safety.screening(endpoint, key)


@router.post("/v1/moderations", response_model=Moderation, summary="score texts for harm, injection and review domains",
             responses=errors({400: "a bad request (the message says why)",
                               404: "this server runs without its safety filter"}))
async def moderations(body: ModerationRequest, request: Request):
    safety = request.app.state.safety
    if safety is None:
        raise APIError(404, "this server runs without its safety filter (serve --no-safety)", code="not_found")
    texts = [body.input] if isinstance(body.input, str) else \
        [t if isinstance(t, str) else t.text for t in body.input]
    if not texts:
        raise APIError(400, "input: give at least one text", param="input")
    if len(texts) > MAX_INPUTS:
        raise APIError(400, f"input: at most {MAX_INPUTS} texts a request, got {len(texts)}", param="input")
    verdicts = await asyncio.to_thread(safety.guard.check, texts)
    return {"id": f"modr-{uuid.uuid4().hex}", "model": MODEL, "results": [v.moderation() for v in verdicts]}
