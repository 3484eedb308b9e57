"""A model made ready for inference computes what it computed before, with fewer, larger layers."""

import copy

import pytest
import torch
from torch import nn

from tinythink.model.inference import concat_linears, fuse_projections, prepare_for_inference
from tinythink.model.load import load_model
from tinythink.model.float_linear import KernelLinear
from tinythink.model.quantize import Int4Linear, Int8Embedding, Int8Linear

PROMPT = "<|im_start|>user\nName three colours and a fruit, then count to five.<|im_end|>\n<|im_start|>assistant\n"


@pytest.mark.parametrize("make", [lambda l: l, Int8Linear.from_float, lambda l: Int4Linear.from_float(l, 32)],
                         ids=["float32", "int8", "int4"])
def test_concatenated_layers_compute_their_parts_side_by_side(make):
    torch.manual_seed(0)
    parts = [make(nn.Linear(64, n, bias=True)) for n in (96, 32, 32)]
    fused = concat_linears(parts)
    assert type(fused) is type(parts[0]) and fused.out_features == 160
    x = torch.randn(3, 5, 64)
    with torch.inference_mode():
        assert torch.equal(fused(x), torch.cat([p(x) for p in parts], dim=-1))


def test_only_layers_of_one_kind_concatenate():
    with pytest.raises(ValueError, match="one kind"):
        concat_linears([nn.Linear(8, 8), Int8Linear.from_float(nn.Linear(8, 8))])
    with pytest.raises(ValueError, match="one kind"):
        concat_linears([Int4Linear.from_float(nn.Linear(64, 8), 32), Int4Linear.from_float(nn.Linear(64, 8), 64)])


@pytest.mark.parametrize("bits", [None, 8, 4])
def test_fused_projections_give_the_same_logits(ours, default_gguf, bits):
    model = copy.deepcopy(ours.model) if bits is None else load_model(str(default_gguf), quantize=bits).model
    ids = torch.tensor([ours.tokenizer.encode(PROMPT)])
    with torch.inference_mode():
        before = model(ids)
        fuse_projections(model)
        after = model(ids)
    block = model.layers[0]
    assert not hasattr(block.self_attn, "q_proj") and not hasattr(block.mlp, "up_proj")  # no second copy
    assert block.self_attn.qkv_proj.out_features == (9 + 3 + 3) * 64 and block.mlp.gate_up_proj.out_features == 2 * 1536
    assert torch.equal(before, after)


def test_prepared_models(ours, default_gguf):
    ids = torch.tensor([ours.tokenizer.encode(PROMPT)])
    float32 = prepare_for_inference(copy.deepcopy(ours.model))
    int4 = prepare_for_inference(load_model(str(default_gguf), quantize=4).model)
    assert isinstance(float32.layers[3].self_attn.qkv_proj, KernelLinear) and isinstance(float32.lm_head, KernelLinear)
    assert float32.decode_layers is not None and int4.decode_layers is not None
    assert isinstance(int4.layers[3].mlp.gate_up_proj, Int4Linear) and isinstance(int4.embed_tokens, Int8Embedding)
    with torch.inference_mode():
        reference, a, b = ours.model(ids), float32(ids), int4(ids)
    assert (a - reference).abs().max() < 1e-3  # float32 products summed in another order
    assert (b.argmax(-1) == reference.argmax(-1)).float().mean() > 0.8
