"""A served model: the model, its batching engine on its own thread, and an asyncio view of its streams."""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import AsyncIterator

from tinythink.engine.batch import BatchEngine, Thinking, answer_reserve
from tinythink.engine.constraint import Grammars
from tinythink.engine.sampling import SamplingParams
from tinythink.llm import LLM
from tinythink.text.reasoning import THINK_CLOSE, reopens_thought
from tinythink.text.stream import TextChunk, TextStream


# True in the batch worker's lines (a context variable, so it reaches the engine through the endpoint's own code):
# their requests wait behind interactive ones and never take the engine's last free slots
BACKGROUND = contextvars.ContextVar("tinythink_background", default=False)


class ModelHost:
    def __init__(self, name: str, llm: LLM, max_batch: int = 16, max_queue: int = 64, context: int | None = None,
                 kv_budget_bytes: int | None = 1 << 30, prefix_cache_bytes: int = 64 << 20):
        self.name, self.llm, self.max_queue = name, llm, max_queue
        self.engine = BatchEngine(llm.model, max_batch=max_batch, context=context, kv_budget_bytes=kv_budget_bytes,
                                  prefix_cache_bytes=prefix_cache_bytes)
        self.grammars = Grammars(llm.tokenizer, llm.model.config.vocab_size)
        self.engine.start()

    def close(self):
        self.engine.stop()

    def thinking(self, budget: int, max_tokens: int | None = None) -> Thinking:
        """The thought's rules for one reply of at most `max_tokens`: its budget leaves the answer its reserve."""
        tok = self.llm.tokenizer
        close = tok.encode(f"\n{THINK_CLOSE}\n\n", add_special_tokens=False)
        if max_tokens is not None:
            budget = max(0, min(budget, max_tokens - answer_reserve(max_tokens) - len(close)))
        # the answer's last 16 tokens hold any tag it could be writing (a tag is at most ~5 tokens)
        return Thinking(budget, close, lambda out: THINK_CLOSE in tok.decode(out[-12:], skip_special_tokens=False),
                        lambda answer: reopens_thought(tok.decode(answer[-16:], skip_special_tokens=False)),
                        lambda answer: not tok.decode(answer, skip_special_tokens=True).strip())

    async def stream(self, prompt: list[int], params: SamplingParams, stop: list[str], grammar: str | None = None,
                     thinking: Thinking | None = None) -> AsyncIterator[TextChunk]:
        """Text chunks of one completion. Leaving the iteration early (a client that went away) cancels it."""
        loop = asyncio.get_running_loop()
        wake = asyncio.Event()
        constraint = self.grammars.constraint(grammar) if grammar else None
        req = self.engine.submit(prompt, params, self.llm.tokenizer.stop_ids,
                                 listener=lambda: loop.call_soon_threadsafe(wake.set), constraint=constraint,
                                 thinking=thinking, background=BACKGROUND.get())
        text = TextStream(self.llm.tokenizer, stop)
        consumed, pending_logprobs, scored = 0, [], False  # the sampler's entries for tokens not yet in a chunk
        try:
            while True:
                await wake.wait()
                wake.clear()
                while not req.events.empty():
                    token = req.events.get_nowait()
                    if token is not None and params.logprobs is not None:
                        if token not in text.stop_ids:  # stop tokens are never shown, so never reported
                            pending_logprobs.append(req.sampler.logprobs[consumed])
                        consumed += 1
                    chunk = text.feed(token) if token is not None else None
                    if token is None and not text.finish_reason:  # the engine ended it: max_tokens, context
                        chunk = text.finish(req.finish_reason)
                    if chunk is not None:
                        if params.prompt_logprobs is not None and not scored:
                            chunk.prompt_logprobs, scored = req.prompt_logprobs, True
                        if params.logprobs is not None:
                            chunk.logprobs, pending_logprobs = pending_logprobs, []
                        if text.finish_reason and thinking is not None:
                            chunk.reasoning_tokens = thinking.tokens or len(req.output)
                        yield chunk
                    if text.finish_reason or token is None:
                        return
        finally:
            self.engine.cancel(req)  # frees the slot at once if it is still running
