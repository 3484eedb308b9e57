"""The token loop against transformers' greedy generation, and the loop's own limits."""

import pytest
import torch

from tinythink.engine.generate import PromptTooLongError, generate
from tinythink.engine.sampling import InvalidSettingError, SamplingParams

STORY = [{"role": "user", "content": "Write a long story about a robot who learns to paint."}]


def chat_ids(ours, messages):
    from tinythink.text.chat_template import ChatTemplate

    t = ours.tokenizer
    return t.encode(ChatTemplate(t.chat_template).render(messages), add_special_tokens=False)


def test_greedy_matches_transformers_for_64_tokens(ours, hf_model):
    prompt = chat_ids(ours, STORY)
    mine = list(generate(ours.model, prompt, SamplingParams(max_tokens=64, temperature=0.0), ours.tokenizer.stop_ids))
    with torch.no_grad():
        out = hf_model.generate(torch.tensor([prompt]), max_new_tokens=64, do_sample=False,
                                eos_token_id=sorted(ours.tokenizer.stop_ids), pad_token_id=0)
    theirs = out[0, len(prompt):].tolist()
    assert len(mine) == 64
    assert mine == theirs


def test_stops_at_a_stop_token(ours):
    prompt = chat_ids(ours, [{"role": "user", "content": "What is the capital of France?"}])
    out = list(generate(ours.model, prompt, SamplingParams(max_tokens=100, temperature=0.0), ours.tokenizer.stop_ids))
    assert out[-1] in ours.tokenizer.stop_ids and len(out) < 100
    assert "Paris" in ours.tokenizer.decode(out)


def test_stops_when_the_context_is_full(ours):
    model = ours.model
    context = model.config.max_seq_len
    model.config.max_seq_len = 24  # a tiny context, to reach its end quickly
    try:
        prompt = chat_ids(ours, STORY)[:20]
        out = list(generate(model, prompt, SamplingParams(max_tokens=100, temperature=0.0)))
        assert len(out) == 4
        with pytest.raises(PromptTooLongError, match="the prompt is 24 tokens; the model's context holds 24"):
            list(generate(model, prompt + prompt[:4], SamplingParams()))
    finally:
        model.config.max_seq_len = context


def test_chunked_prefill_gives_the_same_tokens(ours):
    prompt = chat_ids(ours, STORY)
    params = SamplingParams(max_tokens=12, temperature=0.0)
    whole = list(generate(ours.model, prompt, params))
    chunked = list(generate(ours.model, prompt, params, prefill_chunk=7))
    assert whole == chunked


def test_empty_prompt_is_rejected(ours):
    with pytest.raises(InvalidSettingError, match="empty"):
        list(generate(ours.model, [], SamplingParams()))
