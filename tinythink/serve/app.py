"""The OpenAI-compatible HTTP server: an app factory over one or more served models.

Each endpoint family has its module: chat.py, completions.py, models.py (health, metrics, the page, models),
tasks.py, files.py, batches.py and moderations.py (with the screening chat, completions and tasks share); they share the server's state through `request.app.state` (hosts, settings,
metrics, the file store, the batch worker, the documents). Here: settings, the guard (keys, body limits,
request counts), error handlers, and the document."""

from __future__ import annotations

import contextlib
import hmac
from dataclasses import dataclass, field
from pathlib import Path

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from starlette.exceptions import HTTPException as StarletteHTTPException

from tinythink import __version__
from tinythink.batch.store import Store
from tinythink.batch.worker import BatchWorker
from tinythink.serve import batches, chat, completions, files, models, moderations, tasks
from tinythink.serve.errors import APIError, error_response
from tinythink.serve.host import ModelHost
from tinythink.serve.metrics import Metrics
from tinythink.serve.responses import STREAM_CHUNKS
from tinythink.text.reasoning import THINKING_BUDGETS


@dataclass
class ServerSettings:
    host: str = "127.0.0.1"
    port: int = 8000
    api_keys: list[str] = field(default_factory=list)
    max_body_bytes: int = 1 << 20
    cors_origins: list[str] = field(default_factory=list)  # browsers on other origins may call the API: off
    thinking_budgets: dict[str, int] = field(default_factory=lambda: dict(THINKING_BUDGETS))
    self_consistency: int = 5  # thoughts sampled per choice at reasoning_effort high, the majority answer kept
    data_dir: Path | None = None  # where /v1/files and /v1/batches keep their files and jobs; None: those are off
    max_file_bytes: int = 200 << 20  # an uploaded file's limit (the body limit is for requests)
    batch_concurrency: int | None = None  # batch lines in flight (default: the engine's batch)
    docs_dir: Path | None = None  # documents the answer task answers from (indexed, followed as they change)
    # the guard's filters on input and output, and /v1/moderations (`tinythink serve` turns them on unless
    # --no-safety); the policy's file, or None for the built-in one
    safety: bool = False
    safety_policy: Path | None = None


class Guard:
    """API keys, the body size limit and request counting, as plain ASGI middleware (Starlette's
    BaseHTTPMiddleware would hide a client's disconnect from the handlers, which cancel work on it)."""

    def __init__(self, app, settings: ServerSettings, metrics: Metrics):
        self.app, self.settings, self.metrics = app, settings, metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        path, headers = scope["path"], {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        status = 500

        async def counted_send(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        given = headers.get("authorization", "").removeprefix("Bearer ").strip()
        length = headers.get("content-length")
        upload = path == "/v1/files" and scope["method"] == "POST"
        limit = self.settings.max_file_bytes if upload else self.settings.max_body_bytes
        if self.settings.api_keys and path.startswith("/v1/") and not any(
                hmac.compare_digest(given.encode(), key.encode()) for key in self.settings.api_keys):
            await error_response(401, "invalid or missing API key (send Authorization: Bearer KEY)",
                                 "authentication_error", code="invalid_api_key")(scope, receive, counted_send)
        elif length is not None and length.isdigit() and int(length) > limit:
            await self.too_large(f"request body of {length} bytes", limit, scope, receive, counted_send)
        elif upload:  # streamed through (the form parser spools it to disk), counted on the way
            await self.counted_upload(scope, receive, counted_send)
        elif scope["method"] in ("POST", "PUT", "PATCH"):
            # read the body here, whatever its Content-Length says (or a chunked one, which has none), so the
            # limit holds while it arrives; the app gets it back in one piece
            body, size = [], 0
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    return
                body.append(message.get("body", b""))
                size += len(body[-1])
                if size > limit:
                    await self.too_large(f"request body of more than {size} bytes", limit, scope, receive,
                                         counted_send)
                    break
                if not message.get("more_body"):
                    await self.app(scope, replay(b"".join(body), receive), counted_send)
                    break
        else:
            await self.app(scope, receive, counted_send)
        if path.startswith("/v1/"):
            self.metrics.requests.labels(path, str(status)).inc()

    async def too_large(self, what: str, limit: int, scope, receive, send):
        await error_response(413, f"{what} is over the limit of {limit} bytes",
                             code="request_too_large")(scope, receive, send)

    async def counted_upload(self, scope, receive, send):
        """The app reads the upload as it arrives; past the file limit it is told the client left, its answer is
        dropped, and the client gets a 413 instead."""
        size, over, started = 0, False, False

        async def counted_receive():
            nonlocal size, over
            if over:
                return {"type": "http.disconnect"}
            message = await receive()
            size += len(message.get("body", b""))
            if size > self.settings.max_file_bytes:
                over = True
                return {"type": "http.disconnect"}
            return message

        async def held_send(message):
            nonlocal started
            if not over:
                started = started or message["type"] == "http.response.start"
                await send(message)

        try:
            await self.app(scope, counted_receive, held_send)
        except Exception:
            if not over:
                raise
        if over and not started:
            await self.too_large(f"an upload of more than {size} bytes", self.settings.max_file_bytes, scope,
                                 receive, send)


def replay(body: bytes, receive):
    """An ASGI receive that hands out an already read body once, then the connection's own messages (a
    disconnect, which cancels a request's work)."""
    given = False

    async def receive_again():
        nonlocal given
        if not given:
            given = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()
    return receive_again


def add_stream_chunks(components: dict) -> None:
    """The schemas of the chunks streams send (which the event schemas refer to), and of the types inside them."""
    for chunk in STREAM_CHUNKS:
        schema = chunk.model_json_schema(ref_template="#/components/schemas/{model}", mode="serialization")
        for name, part in schema.pop("$defs", {}).items():
            components.setdefault(name, part)
        components.setdefault(chunk.__name__, schema)


def require_passages(answer: dict) -> None:
    """The answer task's request schema on a server without documents: passages are its only source."""
    answer["required"] = [*answer.get("required", []), "passages"]
    given = next(s for s in answer["properties"]["passages"]["anyOf"] if s.get("type") == "array")  # not null
    answer["properties"]["passages"] = {**given, "description": "the texts to answer from"}


def create_app(hosts: dict[str, ModelHost], settings: ServerSettings | None = None) -> FastAPI:
    settings = settings or ServerSettings()
    store = Store(settings.data_dir) if settings.data_dir is not None else None

    @contextlib.asynccontextmanager
    async def lifespan(app):
        worker = app.state.batch_worker
        if worker:
            worker.start()
        yield
        if worker:
            await worker.stop()
            store.close()

    app = FastAPI(title="tinythink", version=__version__, lifespan=lifespan,
                  description="OpenAI-compatible API for small reasoning models on a CPU.")
    app.state.hosts, app.state.settings, app.state.store, app.state.batch_worker = hosts, settings, store, None
    app.state.documents = None
    if settings.docs_dir is not None:
        from tinythink.retrieval.index import DocumentIndex

        saved = settings.data_dir / "docs-index.json" if settings.data_dir is not None else None
        app.state.documents = DocumentIndex(settings.docs_dir, saved)
    if store is not None:
        concurrency = settings.batch_concurrency or min(h.engine.max_batch for h in hosts.values())
        app.state.batch_worker = BatchWorker(store, app, settings.api_keys[0] if settings.api_keys else None,
                                             concurrency)
    metrics = app.state.metrics = Metrics(hosts)
    app.state.safety = None
    if settings.safety:
        from tinythink.safety.filter import SafetyFilter

        app.state.safety = SafetyFilter.load(settings.safety_policy, settings.data_dir, metrics)
    if settings.cors_origins:
        app.add_middleware(CORSMiddleware, allow_origins=settings.cors_origins, allow_methods=["GET", "POST"],
                           allow_headers=["Authorization", "Content-Type"])

    @app.exception_handler(APIError)
    async def api_error(_, e: APIError):
        return error_response(e.status, e.message, e.type, e.param, e.code)

    @app.exception_handler(RequestValidationError)
    async def validation_error(_, e: RequestValidationError):
        first = e.errors()[0]
        loc = [str(x) for x in first.get("loc", ()) if x != "body"]
        if first.get("type") == "json_invalid":
            return error_response(400, f"the request body is not valid JSON: {first.get('msg')}", code="invalid_json")
        param = ".".join(loc) or None
        message = f"{param}: {first.get('msg')}" if param else first.get("msg", "invalid request")
        if first.get("type") == "extra_forbidden":
            message = f"{param}: unknown or unsupported parameter"
        return error_response(400, message, param=param, code=first.get("type"))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_, e: StarletteHTTPException):
        # its headers kept: a 405 names the methods that are allowed (Allow), as HTTP requires
        return error_response(e.status_code, str(e.detail), "invalid_request_error" if e.status_code < 500 else
                              "server_error", headers=e.headers)

    app.add_middleware(Guard, settings=settings, metrics=metrics)

    def openapi() -> dict:
        """FastAPI's document, less the 422 it lists for every route (a bad request is a 400 here, in OpenAI's
        shape, which each route documents), plus the bearer key that /v1/ needs when this server requires one, so
        tools that import it (low-code builders, client generators) know to send it; and without --docs, the
        answer task's passages are required (there is nothing else to answer from)."""
        if app.openapi_schema is None:
            schema = FastAPI.openapi(app)
            for operations in schema["paths"].values():
                for operation in operations.values():
                    operation.get("responses", {}).pop("422", None)
            for unused in ("HTTPValidationError", "ValidationError"):
                schema.get("components", {}).get("schemas", {}).pop(unused, None)
            add_stream_chunks(schema["components"]["schemas"])
            if app.state.documents is None:
                require_passages(schema["components"]["schemas"]["AnswerRequest"])
            if settings.api_keys:
                schema.setdefault("components", {})["securitySchemes"] = {
                    "bearerAuth": {"type": "http", "scheme": "bearer", "description": "an API key of this server"}}
                for path, operations in schema["paths"].items():
                    if path.startswith("/v1/"):
                        for operation in operations.values():
                            operation["security"] = [{"bearerAuth": []}]
                            operation["responses"]["401"] = {
                                "description": "a missing or wrong API key",
                                "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorResponse"}}}}
            app.openapi_schema = schema
        return app.openapi_schema

    for module in (models, chat, completions, tasks, moderations):
        app.include_router(module.router)
    if store is not None:
        app.include_router(files.router)
        app.include_router(batches.router)
    app.openapi = openapi
    return app
