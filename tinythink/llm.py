"""The text-level interface over a loaded model: prompts and chats in, streamed text out."""

from __future__ import annotations

from collections.abc import Iterator

import torch

from tinythink.engine.generate import generate
from tinythink.engine.sampling import SamplingParams
from tinythink.model.load import LoadedModel, load_model
from tinythink.model.inference import prepare_for_inference
from tinythink.text.chat_template import ChatTemplate
from tinythink.text.stream import TextChunk, TextStream


class LLM:
    """Owns its model, made ready for inference (tinythink.model.inference)."""

    def __init__(self, loaded: LoadedModel):
        self.loaded = loaded
        prepare_for_inference(loaded.model)
        self.model, self.tokenizer = loaded.model, loaded.tokenizer
        self.template = ChatTemplate(self.tokenizer.chat_template, self.tokenizer.bos_token, self.tokenizer.eos_token)

    @classmethod
    def load(cls, ref: str, dtype: torch.dtype = torch.float32) -> LLM:
        return cls(load_model(ref, dtype))

    def chat_prompt(self, messages: list[dict], **template_kwargs) -> list[int]:
        text = self.template.render(messages, add_generation_prompt=True, **template_kwargs)
        return self.tokenizer.encode(text, add_special_tokens=False)

    def stream(self, prompt: list[int], params: SamplingParams, stop: list[str] = ()) -> Iterator[TextChunk]:
        text = TextStream(self.tokenizer, stop)
        for token in generate(self.model, prompt, params, self.tokenizer.stop_ids):
            chunk = text.feed(token)
            if chunk is not None:
                yield chunk
            if text.finish_reason:
                return
        yield text.finish("length")

    def chat(self, messages: list[dict], params: SamplingParams, stop: list[str] = ()) -> Iterator[TextChunk]:
        return self.stream(self.chat_prompt(messages), params, stop)

    def complete(self, prompt: str, params: SamplingParams, stop: list[str] = ()) -> Iterator[TextChunk]:
        return self.stream(self.tokenizer.encode(prompt), params, stop)
