"""The OpenAI-compatible HTTP server: an app factory over one or more served models."""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import time
import uuid
from pathlib import Path
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import FileResponse, Response, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from tinythink import __version__
from tinythink.batch.store import Store
from tinythink.batch.worker import BatchWorker
from tinythink.engine.constraint import GrammarError
from tinythink.engine.sampling import SamplingParams
from tinythink.errors import TinythinkError
from tinythink.serve.errors import APIError, error_response, served
from tinythink.serve.host import ModelHost
from tinythink.serve.metrics import Metrics
from tinythink.serve import consistency, tools
from tinythink.serve.batches import batch_routes
from tinythink.serve.files import file_routes
from tinythink.serve.tasks import task_routes
from tinythink.serve.protocol import ChatCompletionRequest, CompletionRequest, NamedToolChoice, SamplingFields
from tinythink.text.reasoning import ReasoningSplitter, chat_text
from tinythink.text.stream import TextChunk

FINGERPRINT = f"tinythink-{__version__}"
PAGE = Path(__file__).parent / "static" / "index.html"
ANSWER_TOKENS = 512  # with reasoning and no max_completion_tokens: the thought's budget plus this many for the answer
CONSISTENCY_TEMPERATURE = 0.7  # self-consistency's samples, when the request asks for greedy decoding


@dataclass
class ServerSettings:
    host: str = "127.0.0.1"
    port: int = 8000
    api_keys: list[str] = field(default_factory=list)
    max_body_bytes: int = 1 << 20
    cors_origins: list[str] = field(default_factory=list)  # browsers on other origins may call the API: off
    # thinking tokens allowed per reasoning_effort; enforced by the engine, which closes the thought itself
    thinking_budgets: dict[str, int] = field(default_factory=lambda: {"minimal": 0, "low": 256, "medium": 1024,
                                                                       "high": 4096})
    self_consistency: int = 5  # thoughts sampled per choice at reasoning_effort high, the majority answer kept
    data_dir: Path | None = None  # where /v1/files and /v1/batches keep their files and jobs; None: those are off
    max_file_bytes: int = 200 << 20  # an uploaded file's limit (the body limit is for requests)
    batch_concurrency: int | None = None  # batch lines in flight (default: the engine's batch)
    docs_dir: Path | None = None  # documents the answer task answers from (indexed, followed as they change)


@dataclass
class Choice:
    """One choice's whole output, gathered from its chunks."""
    text: str = ""
    finish_reason: str = "length"
    tokens: int = 0
    reasoning_tokens: int = 0
    logprobs: list = field(default_factory=list)
    prompt_logprobs: list | None = None

    def add(self, chunk: TextChunk):
        if chunk.prompt_logprobs is not None:
            self.prompt_logprobs = chunk.prompt_logprobs
        self.text += chunk.text
        self.finish_reason = chunk.finish_reason or self.finish_reason
        self.tokens += len(chunk.token_ids)
        self.reasoning_tokens += chunk.reasoning_tokens
        self.logprobs += chunk.logprobs or []


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
    app.state.hosts, app.state.store, app.state.batch_worker = hosts, store, None
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
        return error_response(e.status_code, str(e.detail), "invalid_request_error" if e.status_code < 500 else
                              "server_error")

    app.add_middleware(Guard, settings=settings, metrics=metrics)

    def host_for(model: str) -> ModelHost:
        return served(hosts, model)

    def model_card(name: str) -> dict:
        return {"id": name, "object": "model", "created": 0, "owned_by": "tinythink"}

    @app.get("/health")
    async def health():
        return {"status": "ok", "models": {n: {"active": h.engine.active, "waiting": h.engine.queued}
                                           for n, h in hosts.items()}}

    @app.get("/", include_in_schema=False)
    async def chat_page():
        return FileResponse(PAGE, media_type="text/html")

    @app.get("/metrics")
    async def prometheus_metrics():
        return Response(metrics.render(), media_type="text/plain; version=0.0.4")

    @app.get("/v1/models")
    async def list_models():
        return {"object": "list", "data": [model_card(n) for n in hosts]}

    @app.get("/v1/models/{model_id}")
    async def get_model(model_id: str):
        host_for(model_id)
        return model_card(model_id)

    def sampling(body: SamplingFields, max_tokens: int | None, seed_offset: int = 0) -> SamplingParams:
        bias = {}
        for key, value in (body.logit_bias or {}).items():
            if not key.lstrip("-").isdigit():
                raise APIError(400, f"logit_bias keys must be token ids, got {key!r}", param="logit_bias")
            bias[int(key)] = value
        if isinstance(body, CompletionRequest):  # logprobs: how many alternatives; echo scores the prompt too
            logprobs = body.logprobs
            prompt_logprobs = (logprobs or 0) if body.echo and (logprobs is not None or max_tokens == 0) else None
        else:
            if body.top_logprobs is not None and not body.logprobs:
                raise APIError(400, "top_logprobs needs logprobs: true", param="top_logprobs")
            logprobs, prompt_logprobs = (body.top_logprobs or 0) if body.logprobs else None, None
        try:
            return SamplingParams(max_tokens=512 if max_tokens is None else max_tokens, temperature=body.temperature,
                                  top_p=body.top_p, presence_penalty=body.presence_penalty,
                                  frequency_penalty=body.frequency_penalty, logit_bias=bias,
                                  seed=None if body.seed is None else body.seed + seed_offset,
                                  logprobs=logprobs, prompt_logprobs=prompt_logprobs)
        except TinythinkError as e:
            raise APIError(400, str(e)) from None

    def response_schema(body: ChatCompletionRequest) -> dict | None:
        """The JSON schema that response_format asks the answer to follow, if any."""
        fmt = body.response_format
        if fmt is None or fmt.type == "text":
            return None
        if fmt.type == "json_object":
            return {"type": "object"}
        if fmt.json_schema is None:
            raise APIError(400, "response_format.json_schema is required with type json_schema",
                           param="response_format.json_schema")
        return fmt.json_schema.schema_

    def offered_tools(body: ChatCompletionRequest) -> tuple[list[dict], bool, bool]:
        """The functions the reply may call, whether it must call one, and whether it may call several."""
        if body.tool_choice is not None and not body.tools:
            raise APIError(400, "tool_choice needs tools", param="tool_choice")
        choice = body.tool_choice or ("auto" if body.tools else "none")
        if choice == "none":
            return [], False, False
        functions = [t.function.model_dump(exclude_none=True) for t in body.tools]
        if isinstance(choice, NamedToolChoice):
            functions = [f for f in functions if f["name"] == choice.function.name]
            if not functions:
                raise APIError(400, f"tool_choice names the function {choice.function.name!r}, which is not "
                                    "among tools", param="tool_choice")
            return functions, True, False
        return functions, choice == "required", body.parallel_tool_calls

    def chat_messages(body: ChatCompletionRequest) -> list[dict]:
        messages = []
        for i, m in enumerate(body.messages):
            text = m.text()
            if m.name and m.role != "tool" and text:  # tells participants of one role apart, in the text the model reads
                text = f"{m.name}: {text}"
            message = {"role": "system" if m.role == "developer" else m.role, "content": text}
            if m.role == "tool":
                if not m.tool_call_id:
                    raise APIError(400, f"messages.{i}.tool_call_id: a tool message needs the id of the call it "
                                        "answers", param=f"messages.{i}.tool_call_id")
                message["tool_call_id"] = m.tool_call_id
            if m.tool_calls:
                if m.role != "assistant":
                    raise APIError(400, f"messages.{i}.tool_calls: only assistant messages make tool calls",
                                   param=f"messages.{i}.tool_calls")
                for call in m.tool_calls:
                    try:
                        json.loads(call.function.arguments)
                    except json.JSONDecodeError:
                        raise APIError(400, f"messages.{i}.tool_calls: the arguments of {call.id!r} are not "
                                            "valid JSON", param=f"messages.{i}.tool_calls") from None
                message["tool_calls"] = [c.model_dump() for c in m.tool_calls]
            messages.append(message)
        return messages

    async def run_choices(host: ModelHost, prompts: list[list[int]], body: SamplingFields, max_tokens: int | None,
                          budget: int | None = None, grammar: str | None = None) -> list[AsyncIterator[TextChunk]]:
        # fail before streaming starts: settings, prompt length, queue room
        if getattr(body, "logprobs", False) and budget:
            raise APIError(400, "logprobs cannot be combined with reasoning yet; use reasoning_effort minimal",
                           param="logprobs")
        streams = []
        for i, prompt in enumerate(prompts):
            params = sampling(body, max_tokens, i)
            if len(prompt) + 1 > host.engine.context:
                raise APIError(400, f"the prompt is {len(prompt)} tokens; this server's context holds "
                                    f"{host.engine.context}", param="messages", code="context_length_exceeded")
            if host.engine.queued + len(streams) >= host.max_queue:
                raise APIError(429, "the server is busy: its queue is full; try again shortly",
                               "rate_limit_error", code="queue_full")
            thinking = host.thinking(budget, params.max_tokens) if budget else None
            streams.append(measured(host.name, len(prompt),
                                    host.stream(prompt, params, body.stop_list(), grammar, thinking)))
        return streams

    def usage(prompt_tokens: int, completion_tokens: int, reasoning_tokens: int | None = None) -> dict:
        u = {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
             "total_tokens": prompt_tokens + completion_tokens}
        if reasoning_tokens is not None:
            u["completion_tokens_details"] = {"reasoning_tokens": reasoning_tokens}
        return u

    async def measured(model: str, prompt_tokens: int, stream: AsyncIterator[TextChunk]
                       ) -> AsyncIterator[TextChunk]:
        """The stream, counted into the metrics as it goes."""
        start, first = time.perf_counter(), True
        metrics.prompt_tokens.labels(model).inc(prompt_tokens)
        async for chunk in stream:
            if first and chunk.text:
                metrics.ttft.labels(model).observe(time.perf_counter() - start)
                first = False
            metrics.completion_tokens.labels(model).inc(len(chunk.token_ids))
            yield chunk
        metrics.latency.labels(model).observe(time.perf_counter() - start)

    async def collect(streams: list[AsyncIterator[TextChunk]], request: Request) -> list[Choice]:
        """Every choice run to its end, all at once (so they share the engine's batch). If the client goes
        away first, they are cancelled and their slots are free at once, as for a stream."""
        choices = [Choice() for _ in streams]

        async def gather():
            async for i, chunk in merged(streams):
                choices[i].add(chunk)

        task = asyncio.ensure_future(gather())
        while not task.done():
            await asyncio.wait({task}, timeout=0.25)
            if not task.done() and await request.is_disconnected():
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
                raise APIError(499, "the client closed the request", code="client_closed_request")
        task.result()  # re-raises what went wrong, if anything
        return choices

    def token_text(host: ModelHost, token: int) -> str:
        """A token's text as the logprobs report it (a part of a UTF-8 character shows as U+FFFD)."""
        return host.llm.tokenizer.token_bytes(token).decode("utf-8", errors="replace")

    def logprob_content(host: ModelHost, entries: list) -> list[dict]:
        def item(token: int, logprob: float) -> dict:
            return {"token": token_text(host, token), "logprob": logprob,
                    "bytes": list(host.llm.tokenizer.token_bytes(token))}

        return [{**item(t, lp), "top_logprobs": [item(a, alp) for a, alp in alts]} for t, lp, alts in entries]

    def sse(data: dict | str) -> str:
        return f"data: {data if isinstance(data, str) else json.dumps(data, ensure_ascii=False)}\n\n"

    async def merged(streams: list[AsyncIterator[TextChunk]]) -> AsyncIterator[tuple[int, TextChunk]]:
        """Chunks of several choices in arrival order, as (choice index, chunk)."""
        queue: asyncio.Queue = asyncio.Queue()

        async def pump(i, s):
            try:
                async for chunk in s:
                    await queue.put((i, chunk))
            finally:
                await queue.put((i, None))

        tasks = [asyncio.create_task(pump(i, s)) for i, s in enumerate(streams)]
        try:
            remaining = len(tasks)
            while remaining:
                i, chunk = await queue.get()
                if chunk is None:
                    remaining -= 1
                else:
                    yield i, chunk
        finally:
            for t in tasks:
                t.cancel()

    @app.post("/v1/chat/completions")
    async def chat_completions(body: ChatCompletionRequest, request: Request):
        host = host_for(body.model)
        functions, must_call, parallel = offered_tools(body)
        template_knows_tools = tools.native(host.llm.template.source)
        messages = tools.prompt_messages(chat_messages(body), functions, template_knows_tools)
        effort = body.reasoning_effort
        budget = settings.thinking_budgets[effort] if effort else 0
        try:
            kwargs = {"tools": [{"type": "function", "function": f} for f in functions]} \
                if functions and template_knows_tools else {}
            prompt = host.llm.tokenizer.encode(chat_text(host.llm.template, messages, bool(budget), **kwargs),
                                               add_special_tokens=False)
        except TinythinkError as e:
            raise APIError(400, str(e), param="messages") from None
        schema, grammar = response_schema(body), None
        try:
            if functions:
                grammar = host.grammars.lark(tools.grammar(functions, must_call, parallel, schema))
            elif schema is not None:
                grammar = host.grammars.json_schema(schema)
        except GrammarError as e:
            raise APIError(400, str(e), param="tools" if functions else "response_format.json_schema") from None
        max_tokens = body.max_completion_tokens or body.max_tokens
        if budget and max_tokens is None:  # room for the whole thought and an answer, as reasoning models default
            max_tokens = budget + ANSWER_TOKENS
        samples = settings.self_consistency if effort == "high" and not functions else 1
        votes: list[dict | None] = [None] * body.n
        if samples > 1:  # several thoughts a choice, sampled together; the majority's reply is the choice
            sampled = body.model_copy(update={"temperature": body.temperature or CONSISTENCY_TEMPERATURE})
            runs = await run_choices(host, [prompt] * (body.n * samples), sampled, max_tokens, budget, grammar)
            streams = []
            for i in range(body.n):
                stream, votes[i] = await consistency.replay(runs[i * samples:(i + 1) * samples], bool(budget))
                streams.append(stream)
        else:
            streams = await run_choices(host, [prompt] * body.n, body, max_tokens, budget, grammar)
        cid, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())
        base = {"id": cid, "created": created, "model": body.model, "system_fingerprint": FINGERPRINT}
        if not body.stream:
            choices, total, thought = [], 0, 0
            for i, c in enumerate(await collect(streams, request)):
                total, thought = total + c.tokens, thought + c.reasoning_tokens
                message, answer, finish = {"role": "assistant"}, c.text, c.finish_reason
                if budget:
                    splitter = ReasoningSplitter()
                    (r1, a1), (r2, a2) = splitter.feed(c.text), splitter.flush()
                    message["reasoning_content"], answer = r1 + r2, a1 + a2
                calls = tools.parse_calls(answer) if functions else None
                message.update(content=None if calls else answer, refusal=None)
                if calls:
                    message["tool_calls"], finish = [call.openai() for call in calls], "tool_calls"
                logprobs = {"content": logprob_content(host, c.logprobs)} if body.logprobs else None
                choices.append({"index": i, "message": message, "logprobs": logprobs, "finish_reason": finish,
                                **({"self_consistency": votes[i]} if votes[i] is not None else {})})
            return {**base, "object": "chat.completion", "choices": choices,
                    "usage": usage(len(prompt) * body.n, total, thought if effort else None)}

        async def events():
            chunk_base = {**base, "object": "chat.completion.chunk"}
            total, thought = 0, 0
            splitters = [ReasoningSplitter() if budget else None for _ in range(body.n)]
            held = [tools.CallBuffer() if functions else None for _ in range(body.n)]

            def delta_event(i, delta, logprobs=None, finish_reason=None):
                extra = {"self_consistency": votes[i]} if finish_reason and votes[i] is not None else {}
                return sse({**chunk_base, "choices": [{"index": i, "delta": delta, "logprobs": logprobs,
                                                       "finish_reason": finish_reason, **extra}]})

            for i in range(body.n):
                yield delta_event(i, {"role": "assistant", "content": ""})
            async for i, chunk in merged(streams):
                total, thought = total + len(chunk.token_ids), thought + chunk.reasoning_tokens
                reasoning, answer = ("", chunk.text) if splitters[i] is None else splitters[i].feed(chunk.text)
                if chunk.finish_reason and splitters[i] is not None:
                    r, a = splitters[i].flush()
                    reasoning, answer = reasoning + r, answer + a
                if held[i] is not None:
                    answer = held[i].feed(answer)
                if reasoning:
                    yield delta_event(i, {"reasoning_content": reasoning})
                if answer or chunk.logprobs:
                    logprobs = {"content": logprob_content(host, chunk.logprobs)} if body.logprobs else None
                    yield delta_event(i, {"content": answer}, logprobs)
                if chunk.finish_reason:
                    finish = chunk.finish_reason
                    if held[i] is not None:
                        calls, rest = held[i].finish()
                        if calls:
                            finish = "tool_calls"
                            yield delta_event(i, {"tool_calls": [c.openai(k) for k, c in enumerate(calls)]})
                        elif rest:
                            yield delta_event(i, {"content": rest})
                    yield delta_event(i, {}, finish_reason=finish)
            if body.stream_options and body.stream_options.include_usage:
                yield sse({**chunk_base, "choices": [],
                           "usage": usage(len(prompt) * body.n, total, thought if effort else None)})
            yield sse("[DONE]")

        return StreamingResponse(events(), media_type="text/event-stream")

    def legacy_logprobs(host: ModelHost, entries: list, offset: int) -> dict:
        """The completions API's logprobs object for (token, logprob, alternatives) entries whose text starts
        at character `offset` of the choice's text; a logprob of None is the prompt's unscored first token."""
        out = {"tokens": [], "token_logprobs": [], "top_logprobs": [], "text_offset": []}
        for token, logprob, alts in entries:
            out["tokens"].append(token_text(host, token))
            out["token_logprobs"].append(logprob)
            out["top_logprobs"].append(None if logprob is None else {token_text(host, a): lp for a, lp in alts})
            out["text_offset"].append(offset)
            offset += len(out["tokens"][-1])
        return out

    def completion_prompts(host: ModelHost, body: CompletionRequest) -> list[list[int]]:
        prompt, vocab = body.prompt, host.llm.model.config.vocab_size
        if isinstance(prompt, str) or isinstance(prompt[0], str):
            prompts = [host.llm.tokenizer.encode(t) for t in ([prompt] if isinstance(prompt, str) else prompt)]
        else:
            prompts = [prompt] if isinstance(prompt[0], int) else prompt
            if any(not 0 <= t < vocab for p in prompts for t in p):
                raise APIError(400, f"prompt token ids must be in [0, {vocab})", param="prompt")
        if any(not p for p in prompts):
            raise APIError(400, "the prompt is empty", param="prompt")
        if body.max_tokens == 0 and not body.echo:
            raise APIError(400, "max_tokens 0 generates nothing: it needs echo: true (to score the prompt)",
                           param="max_tokens")
        return prompts

    @app.post("/v1/completions")
    async def completions(body: CompletionRequest, request: Request):
        host = host_for(body.model)
        prompts = [p for p in completion_prompts(host, body) for _ in range(body.n)]
        streams = await run_choices(host, prompts, body, body.max_tokens)
        cid, created = f"cmpl-{uuid.uuid4().hex}", int(time.time())
        base = {"id": cid, "created": created, "model": body.model, "system_fingerprint": FINGERPRINT}
        prompt_tokens = sum(len(p) for p in prompts)

        def echoed(i: int, prompt_logprobs: list | None) -> tuple[str, dict | None]:
            """The prompt as choice i's text starts (echo), and its logprobs when asked for."""
            text = host.llm.tokenizer.decode(prompts[i]) if body.echo else ""
            if prompt_logprobs is None:
                return text, None
            entries = [(prompts[i][0], None, None), *prompt_logprobs]
            return text, legacy_logprobs(host, entries, 0)

        if not body.stream:
            choices, total = [], 0
            for i, c in enumerate(await collect(streams, request)):
                total += c.tokens
                text, logprobs = echoed(i, c.prompt_logprobs)
                if body.logprobs is not None:
                    generated = legacy_logprobs(host, c.logprobs, len(text))
                    logprobs = generated if logprobs is None else {k: logprobs[k] + generated[k] for k in logprobs}
                choices.append({"index": i, "text": text + c.text, "logprobs": logprobs,
                                "finish_reason": c.finish_reason})
            return {**base, "object": "text_completion", "choices": choices, "usage": usage(prompt_tokens, total)}

        async def events():
            chunk_base = {**base, "object": "text_completion"}
            total, offsets = 0, [None] * len(prompts)  # offsets: characters of each choice's text sent so far

            def event(i, text, logprobs, finish_reason=None):
                return sse({**chunk_base, "choices": [{"index": i, "text": text, "logprobs": logprobs,
                                                      "finish_reason": finish_reason}]})

            async for i, chunk in merged(streams):
                if offsets[i] is None:  # the first chunk: prefill is done, the prompt is scored
                    text, logprobs = echoed(i, chunk.prompt_logprobs)
                    if text:
                        yield event(i, text, logprobs)
                    offsets[i] = len(text)
                total += len(chunk.token_ids)
                logprobs = legacy_logprobs(host, chunk.logprobs, offsets[i]) if body.logprobs is not None else None
                offsets[i] += len(chunk.text)
                yield event(i, chunk.text, logprobs, chunk.finish_reason)
            if body.stream_options and body.stream_options.include_usage:
                yield sse({**chunk_base, "choices": [], "usage": usage(prompt_tokens, total)})
            yield sse("[DONE]")

        return StreamingResponse(events(), media_type="text/event-stream")

    def openapi() -> dict:
        """FastAPI's document, plus the bearer key that /v1/ needs when this server requires one, so tools
        that import it (low-code builders, client generators) know to send it."""
        if app.openapi_schema is None:
            schema = FastAPI.openapi(app)
            if settings.api_keys:
                schema.setdefault("components", {})["securitySchemes"] = {
                    "bearerAuth": {"type": "http", "scheme": "bearer", "description": "an API key of this server"}}
                for path, operations in schema["paths"].items():
                    if path.startswith("/v1/"):
                        for operation in operations.values():
                            operation["security"] = [{"bearerAuth": []}]
            app.openapi_schema = schema
        return app.openapi_schema

    app.include_router(task_routes())
    if store is not None:
        app.include_router(file_routes())
        app.include_router(batch_routes())
    app.openapi = openapi
    return app
