"""The plain token loop: prefill the prompt into the KV cache, then decode one token at a time.

Works on token ids only; text, chat templates and stop strings live in `tinythink.llm`.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch

from tinythink.engine.sampling import InvalidSettingError, Sampler, SamplingParams
from tinythink.errors import TinythinkError
from tinythink.model.transformer import Transformer


class PromptTooLongError(TinythinkError, ValueError):
    pass


def check_prompt(prompt: list[int], context: int):
    if not prompt:
        raise InvalidSettingError("the prompt is empty")
    if len(prompt) >= context:
        raise PromptTooLongError(f"the prompt is {len(prompt)} tokens; the model's context holds {context}, "
                                 "including at least one generated token")


@torch.inference_mode()
def generate(model: Transformer, prompt: list[int], params: SamplingParams, stop_ids=frozenset(),
             prefill_chunk: int = 512) -> Iterator[int]:
    """Yield generated token ids; a stop id, when reached, is yielded last.

    Stops after params.max_tokens tokens or when the model's context is full.
    """
    context = model.config.max_seq_len
    check_prompt(prompt, context)
    total = min(context, len(prompt) + params.max_tokens)
    model.setup_caches(1, total)
    sampler = Sampler(params, prompt, model.config.vocab_size)
    ids = torch.tensor(prompt, dtype=torch.long)
    for start in range(0, len(prompt), prefill_chunk):  # chunks bound the attention scratch memory
        chunk = ids[start:start + prefill_chunk]
        logits = model(chunk[None], input_pos=torch.arange(start, start + len(chunk)), last_only=True)
    logits = logits[0, -1]
    for pos in range(len(prompt), total):
        token = sampler(logits)
        yield token
        if token in stop_ids or pos + 1 == total:
            return
        logits = model(torch.tensor([[token]]), input_pos=torch.tensor([pos]))[0, -1]
