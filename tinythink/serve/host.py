"""A served model: the model, its batching engine on its own thread, and an asyncio view of its streams."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from tinythink.engine.batch import BatchEngine
from tinythink.engine.constraint import Grammars
from tinythink.engine.sampling import SamplingParams
from tinythink.llm import LLM
from tinythink.text.stream import TextChunk, TextStream


class ModelHost:
    def __init__(self, name: str, llm: LLM, max_batch: int = 16, max_queue: int = 64, context: int | None = None):
        self.name, self.llm, self.max_queue = name, llm, max_queue
        self.engine = BatchEngine(llm.model, max_batch=max_batch, context=context)
        self.grammars = Grammars(llm.tokenizer, llm.model.config.vocab_size)
        self.engine.start()

    def close(self):
        self.engine.stop()

    async def stream(self, prompt: list[int], params: SamplingParams, stop: list[str], grammar: str | None = None
                     ) -> AsyncIterator[TextChunk]:
        """Text chunks of one completion. Leaving the iteration early (a client that went away) cancels it."""
        loop = asyncio.get_running_loop()
        wake = asyncio.Event()
        constraint = self.grammars.constraint(grammar) if grammar else None
        req = self.engine.submit(prompt, params, self.llm.tokenizer.stop_ids,
                                 listener=lambda: loop.call_soon_threadsafe(wake.set), constraint=constraint)
        text = TextStream(self.llm.tokenizer, stop)
        try:
            while True:
                await wake.wait()
                wake.clear()
                while not req.events.empty():
                    token = req.events.get_nowait()
                    if token is None:  # the engine finished it: max_tokens or the context
                        if not text.finish_reason:
                            yield text.finish(req.finish_reason)
                        return
                    chunk = text.feed(token)
                    if chunk is not None:
                        yield chunk
                    if text.finish_reason:
                        return
        finally:
            self.engine.cancel(req)  # frees the slot at once if it is still running
