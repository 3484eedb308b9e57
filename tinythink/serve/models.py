"""The server's own endpoints: /health, /metrics (Prometheus), the chat page at /, and /v1/models."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, Response

from tinythink.serve.errors import errors, served
from tinythink.serve.responses import Health, Model, ModelList

PAGE = Path(__file__).parent / "static" / "index.html"

router = APIRouter()


def model_card(name: str) -> dict:
    return {"id": name, "object": "model", "created": 0, "owned_by": "tinythink"}


@router.get("/health", response_model=Health, summary="the server is up; each model's load")
async def health(request: Request):
    return {"status": "ok", "models": {n: {"active": h.engine.active, "waiting": h.engine.queued}
                                       for n, h in request.app.state.hosts.items()}}


@router.get("/", include_in_schema=False)
async def chat_page():
    return FileResponse(PAGE, media_type="text/html")


@router.get("/metrics", response_class=Response, responses={200: {"content": {"text/plain": {}}}},
            summary="Prometheus metrics")
async def prometheus_metrics(request: Request):
    return Response(request.app.state.metrics.render(), media_type="text/plain; version=0.0.4")


@router.get("/v1/models", response_model=ModelList)
async def list_models(request: Request):
    return {"object": "list", "data": [model_card(n) for n in request.app.state.hosts]}


@router.get("/v1/models/{model_id}", response_model=Model,
            responses=errors({404: "no such model is served"}))
async def get_model(model_id: str, request: Request):
    served(request.app.state.hosts, model_id)
    return model_card(model_id)
