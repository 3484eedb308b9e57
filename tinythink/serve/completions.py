"""POST /v1/completions: a prompt (text, texts or token ids) continued, or scored (echo with max_tokens 0), in
the completions API's shape with its legacy logprobs."""

from __future__ import annotations

import time
import uuid

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse

from tinythink.serve.chat import FINGERPRINT
from tinythink.serve.errors import APIError, served
from tinythink.serve.host import ModelHost
from tinythink.serve.moderations import screening
from tinythink.serve.protocol import CompletionRequest
from tinythink.serve.responses import Completion, documented
from tinythink.serve.streams import collect, merged, run_choices, sse, token_text, usage

router = APIRouter()
SCREENED_PROMPT_TOKENS = 256


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


@router.post("/v1/completions", responses=documented(Completion, Completion))
async def completions(body: CompletionRequest, request: Request):
    host = served(request.app.state.hosts, body.model)
    prompts = [p for p in completion_prompts(host, body) for _ in range(body.n)]
    cid, created = f"cmpl-{uuid.uuid4().hex}", int(time.time())
    base = {"id": cid, "created": created, "model": body.model, "system_fingerprint": FINGERPRINT}
    prompt_tokens = sum(len(p) for p in prompts)
    screen = screening(request, "completions")
    reported = screen.fields if screen is not None else dict
    if screen is not None:
        # the end of each prompt, where a continuation takes its cue (the encoder reads 256 tokens)
        texts = {host.llm.tokenizer.decode(p[-SCREENED_PROMPT_TOKENS:]) for p in prompts}
        if (await screen.check("input", sorted(texts))).blocked:
            choices = [{"index": i, "text": "", "logprobs": None, "finish_reason": "content_filter"}
                       for i in range(len(prompts))]
            return {**base, "object": "text_completion", "choices": choices, "usage": usage(prompt_tokens, 0),
                    **reported()}
    streams = await run_choices(host, request.app.state.metrics, prompts, body, body.max_tokens, screening=screen)

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
        return {**base, "object": "text_completion", "choices": choices, "usage": usage(prompt_tokens, total),
                **reported()}

    async def events():
        chunk_base = {**base, "object": "text_completion"}
        total, offsets = 0, [None] * len(prompts)  # offsets: characters of each choice's text sent so far

        def event(i, text, logprobs, finish_reason=None):
            return sse({**chunk_base, "choices": [{"index": i, "text": text, "logprobs": logprobs,
                                                  "finish_reason": finish_reason}],
                        **(reported() if finish_reason else {})})

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
