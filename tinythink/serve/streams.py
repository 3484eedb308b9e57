"""What chat and completions share: a request's sampling settings, its choices started on the engine and
counted into the metrics, gathered whole (cancelled when the client leaves) or merged as they stream, and the
pieces of their responses (usage, logprobs, server-sent events)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from fastapi import Request

from tinythink.engine.sampling import SamplingParams
from tinythink.errors import TinythinkError
from tinythink.safety.filter import Screening
from tinythink.serve.errors import APIError
from tinythink.serve.host import ModelHost
from tinythink.serve.metrics import Metrics
from tinythink.serve.protocol import CompletionRequest, SamplingFields
from tinythink.text.stream import TextChunk


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


async def run_choices(host: ModelHost, metrics: Metrics, prompts: list[list[int]], body: SamplingFields,
                      max_tokens: int | None, budget: int | None = None, grammar: str | None = None,
                      screening: Screening | None = None) -> list[AsyncIterator[TextChunk]]:
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
        stream = measured(metrics, host.name, len(prompt), host.stream(prompt, params, body.stop_list(), grammar,
                                                                        thinking))
        streams.append(screening.guarded(stream) if screening is not None else stream)
    return streams


def usage(prompt_tokens: int, completion_tokens: int, reasoning_tokens: int | None = None) -> dict:
    u = {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
         "total_tokens": prompt_tokens + completion_tokens}
    if reasoning_tokens is not None:
        u["completion_tokens_details"] = {"reasoning_tokens": reasoning_tokens}
    return u


async def measured(metrics: Metrics, model: str, prompt_tokens: int, stream: AsyncIterator[TextChunk]
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
