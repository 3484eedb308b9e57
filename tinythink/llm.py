"""The text-level interface over a loaded model: prompts and chats in, streamed text out."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch

from tinythink.engine.generate import generate
from tinythink.engine.sampling import SamplingParams
from tinythink.model.load import LoadedModel, load_model
from tinythink.text.chat_template import ChatTemplate
from tinythink.text.stream import IncrementalDecoder, StopStrings


@dataclass
class TextChunk:
    text: str  # new text, possibly empty
    token_ids: list[int]  # tokens generated since the last chunk
    finish_reason: str | None = None  # "stop" or "length" on the last chunk


class LLM:
    def __init__(self, loaded: LoadedModel):
        self.loaded = loaded
        self.model, self.tokenizer = loaded.model, loaded.tokenizer
        self.template = ChatTemplate(self.tokenizer.chat_template, self.tokenizer.bos_token, self.tokenizer.eos_token)

    @classmethod
    def load(cls, ref: str, dtype: torch.dtype = torch.float32) -> LLM:
        return cls(load_model(ref, dtype))

    def chat_prompt(self, messages: list[dict], **template_kwargs) -> list[int]:
        text = self.template.render(messages, add_generation_prompt=True, **template_kwargs)
        return self.tokenizer.encode(text, add_special_tokens=False)

    def stream(self, prompt: list[int], params: SamplingParams, stop: list[str] = ()) -> Iterator[TextChunk]:
        decoder, stops = IncrementalDecoder(self.tokenizer), StopStrings(list(stop))
        stop_ids = self.tokenizer.stop_ids
        pending: list[int] = []
        for token in generate(self.model, prompt, params, stop_ids):
            if token in stop_ids:
                yield TextChunk(stops.feed(decoder.flush()) + stops.flush(), pending, "stop")
                return
            pending.append(token)
            text = stops.feed(decoder.feed(token))
            if stops.stopped:
                yield TextChunk(text, pending, "stop")
                return
            if text:
                yield TextChunk(text, pending)
                pending = []
        yield TextChunk(stops.feed(decoder.flush()) + stops.flush(), pending, "length")

    def chat(self, messages: list[dict], params: SamplingParams, stop: list[str] = ()) -> Iterator[TextChunk]:
        return self.stream(self.chat_prompt(messages), params, stop)

    def complete(self, prompt: str, params: SamplingParams, stop: list[str] = ()) -> Iterator[TextChunk]:
        return self.stream(self.tokenizer.encode(prompt), params, stop)
