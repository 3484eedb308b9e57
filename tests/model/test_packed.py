"""Packed batches (many sequences in one forward pass), on the default model."""

import pytest
import torch

from tinythink.model import decode_attention
from tinythink.model.packed_batch import Packed, row_ranges

PROMPTS = ["<|im_start|>user\nWhy is the sky blue?<|im_end|>\n",
           "<|im_start|>user\nName three colours and a fruit, then count to five.<|im_end|>\n<|im_start|>assistant\n"]


@pytest.fixture(params=["kernel", "sdpa"])
def decode_path(request, monkeypatch):
    """Decoding tokens attend through tinythink's kernel, or through SDPA as where the kernel cannot be built."""
    if request.param == "sdpa":
        monkeypatch.setattr(decode_attention, "library", lambda: None)
    else:
        assert decode_attention.library() is not None
    return request.param

# how far a batch's logits may stray from a sequence's alone: the products' sums in another order can round a key
# or value the other way in the bfloat16 cache, and later positions read those (up to ~0.02 over 40 tokens here;
# a misplaced position or a wrong mask changes logits by whole units)
ROUNDING = 0.05


def alone(model, ids: list[int]) -> torch.Tensor:
    """The logits of one sequence prefilled alone through a cache of its own, which a batch must reproduce. (A plain
    causal pass agrees only to about 0.1: the cache keeps keys and values in bfloat16.)"""
    model.setup_caches(1, 512)
    out = model.forward_packed(torch.tensor([ids]), Packed([0], [0], [len(ids)]))
    model.clear_caches()
    return out


def test_a_packed_batch_equals_each_sequence_alone(ours, decode_path):
    """Two decode tokens (attending together), a prompt prefilled from 0 and one continued from a cached start,
    in one pass: each equals a plain causal forward of its own sequence."""
    model, tok = ours.model, ours.tokenizer
    a, b = (tok.encode(p) for p in PROMPTS)
    with torch.inference_mode():
        full_a, full_b = alone(model, a), alone(model, b)
        assert (full_a - model(torch.tensor([a]))[0]).abs().max() < 0.25  # bfloat16 keys and values
        model.setup_caches(5, 64)
        model.forward_packed(torch.tensor([a[:5] + b[:16] + b[:10]]), Packed([0, 2, 4], [0, 0, 0], [5, 16, 10]))
        # rows 0 and 4 decode a[5] and b[10]; row 1 prefills all of a; row 2 continues b from 16; row 3 is idle
        tokens = [a[5]] + a + b[16:] + [b[10]]
        out = model.forward_packed(torch.tensor([tokens]),
                                   Packed([0, 1, 2, 4], [5, 0, 16, 10], [1, len(a), len(b) - 16, 1]))
        model.clear_caches()
    assert out.shape == (len(tokens), model.config.vocab_size)
    assert (out[0] - full_a[5]).abs().max() < ROUNDING
    assert (out[1:1 + len(a)] - full_a).abs().max() < ROUNDING
    assert (out[1 + len(a):-1] - full_b[16:]).abs().max() < ROUNDING
    assert (out[-1] - full_b[10]).abs().max() < ROUNDING


def test_decoding_rows_attend_in_ranges(ours, decode_path):
    """Two short sequences and a long one decode together: each token equals a plain forward pass of its
    sequence. Through SDPA their rows split into two calls (the short rows do not read up to the long one's
    length); the kernel reads each row to its own length."""
    assert row_ranges([5, 5, 0, 0, 0, 0, 0, 300]) == [(0, 2), (7, 8)]
    assert row_ranges([100, 0, 90, 100]) == [(0, 4)] and row_ranges([0, 0, 7]) == [(2, 3)]
    model, tok = ours.model, ours.tokenizer
    seqs = [tok.encode(PROMPTS[0]), tok.encode(PROMPTS[1]), tok.encode(PROMPTS[1] * 12)[:300]]
    slots = [0, 1, 7]
    with torch.inference_mode():
        full = [alone(model, s)[-1] for s in seqs]
        model.setup_caches(8, 512)
        model.forward_packed(torch.tensor([sum((s[:-1] for s in seqs), [])]),
                             Packed(slots, [0] * 3, [len(s) - 1 for s in seqs]))
        step = Packed(slots, [len(s) - 1 for s in seqs], [1] * 3)
        assert [(lo, hi) for _, _, lo, hi, _, _ in step.decoding] == [(0, 2), (7, 8)]
        out = model.forward_packed(torch.tensor([[s[-1] for s in seqs]]), step)
        model.clear_caches()
    for o, f in zip(out, full):
        assert (o - f).abs().max() < ROUNDING


def test_logits_only_where_asked(ours):
    model, ids = ours.model, ours.tokenizer.encode(PROMPTS[0])
    with torch.inference_mode():
        full = alone(model, ids)[-1]
        model.setup_caches(1, 64)
        packed = Packed([0], [0], [len(ids)])
        out = model.forward_packed(torch.tensor([ids]), packed, packed.ends - 1)
        model.clear_caches()
    assert out.shape == (1, model.config.vocab_size) and (out[0] - full).abs().max() < ROUNDING


def test_positions_must_be_consecutive(ours):
    with pytest.raises(ValueError, match="consecutive"):
        ours.model.setup_caches(1, 16)
        ours.model(torch.tensor([[1, 2, 3]]), input_pos=torch.tensor([0, 2, 3]))
    ours.model.clear_caches()
