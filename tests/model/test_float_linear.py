"""Float32 linear layers made ready for inference: on our kernel up to FEW_ROWS rows (KernelLinear), or pre-packed
for oneDNN where our kernels cannot be built (PackedLinear); both compute what nn.Linear does."""

import copy

import pytest
import torch
from torch import nn

from tinythink.model import float_linear, native, quantized_matmul
from tinythink.model.float_linear import KernelLinear, PackedLinear, prepare_float_linears
from tinythink.model.quantize import Int8Linear

PROMPT = "<|im_start|>user\nName three colours and a fruit, then count to five.<|im_end|>\n<|im_start|>assistant\n"


@pytest.fixture(params=["kernels", "no kernels"])
def kernels(request, monkeypatch):
    if request.param == "no kernels":
        monkeypatch.setenv("TINYTHINK_KERNELS", "0")
    native.library.cache_clear()
    yield request.param == "kernels"
    native.library.cache_clear()


def test_kernel_linear_matches_dense():
    torch.manual_seed(0)
    linear = nn.Linear(576, 1536, bias=True)
    layer = KernelLinear.from_linear(linear)
    for rows in (1, 2, 3, 7, 64, 65):  # in registers; through the buffer; past FEW_ROWS, PyTorch's product
        x = torch.randn(rows, 576)
        torch.testing.assert_close(layer(x), linear(x), atol=1e-4, rtol=1e-5)
    assert quantized_matmul.FEW_ROWS == 64
    assert layer(torch.randn(2, 3, 576)).shape == (2, 3, 1536)
    assert layer.weight is linear.weight  # the same weight, not a copy


@pytest.mark.skipif(not float_linear.available(), reason="this PyTorch build has no oneDNN")
def test_packed_linear_matches_dense():
    torch.manual_seed(0)
    linear = nn.Linear(576, 1536, bias=True)
    packed = PackedLinear(linear)
    for rows in (1, 7, 64):
        x = torch.randn(2, rows, 576)
        assert torch.allclose(packed(x), linear(x), atol=1e-4, rtol=1e-5)
    assert torch.equal(packed.weight, linear.weight)  # the dense weight comes back exactly


def test_float32_layers_swapped_others_left(ours, kernels):
    model = copy.deepcopy(ours.model)
    model.layers[0].mlp.up_proj = Int8Linear.from_float(model.layers[0].mlp.up_proj)
    ids = torch.tensor([ours.tokenizer.encode(PROMPT)])
    with torch.inference_mode():
        before = model(ids)
        prepare_float_linears(model)
        after = model(ids)
    kind = KernelLinear if kernels else PackedLinear
    assert type(model.layers[2].self_attn.q_proj) is kind and type(model.lm_head) is kind
    assert isinstance(model.layers[0].mlp.up_proj, Int8Linear)
    assert (before - after).abs().max() < 1e-2  # float32 rounding, amplified by the bfloat16 int8 layer
    assert torch.equal(before.argmax(-1), after.argmax(-1))
    bf16 = nn.ModuleDict({"proj": nn.Linear(8, 8).to(torch.bfloat16)})
    assert type(prepare_float_linears(bf16)["proj"]) is nn.Linear
