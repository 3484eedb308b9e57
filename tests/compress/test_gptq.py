"""GPTQ: less output error than round-to-nearest where inputs are correlated, in the format our kernels run."""

import pytest
import torch

from tinythink.compress.gptq import Hessian, gptq, quantize_model, quantized_layer
from tinythink.model.quantize import Int4Linear, Int8Linear

from tiny_models import tiny_model


def correlated_inputs(n: int, k: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    mixing = torch.randn(k, k, generator=g) * (torch.rand(k, generator=g) ** 3)  # a few strong directions
    return torch.randn(n, k, generator=g) @ mixing + 0.05 * torch.randn(n, k, generator=g)


@pytest.mark.parametrize("bits,group", [(4, 32), (4, 128), (8, 0)])
@pytest.mark.parametrize("act_order", [False, True])
def test_gptq_error_is_below_round_to_nearest(bits, group, act_order):
    torch.manual_seed(1)
    linear = torch.nn.Linear(256, 96, bias=True)
    x = correlated_inputs(2048, 256)
    h = Hessian(256)
    h(None, (x[:1024],))
    h(None, (x[1024:],))
    assert torch.allclose(h.H, 2 * x.t() @ x / len(x), rtol=1e-4, atol=1e-3)
    ours = quantized_layer(linear, h.H, bits, group, damp=0.01, act_order=act_order)
    rtn = Int8Linear.from_float(linear) if bits == 8 else Int4Linear.from_float(linear, group)
    assert type(ours) is type(rtn)
    want = linear(x)
    with torch.no_grad():
        err_gptq = (ours(x) - want).pow(2).mean()
        err_rtn = (rtn(x) - want).pow(2).mean()
    print(f"int{bits} g{group} act_order={act_order}: GPTQ {err_gptq:.3g} vs RTN {err_rtn:.3g}")
    assert err_gptq < 0.8 * err_rtn


def test_codes_dequantize_to_what_the_error_feedback_used():
    torch.manual_seed(2)
    w = torch.randn(8, 64)
    codes, scales, offsets = gptq(w, torch.eye(64), 4, group_size=32)
    assert codes.min() >= 0 and codes.max() <= 15 and scales.shape == (8, 2)
    # with an identity Hessian there is nothing to correct: GPTQ is round-to-nearest (with the scales rounded to
    # bfloat16 before the codes are chosen, not after: a few codes differ, for the better)
    rtn = Int4Linear.from_weight(w, group_size=32)
    assert (codes.to(torch.uint8) == rtn.codes()).float().mean() > 0.98
    deq = codes * scales.repeat_interleave(32, 1) + offsets.repeat_interleave(32, 1)
    assert (deq - w).pow(2).mean() <= (rtn.dequantize() - w).pow(2).mean()


def test_a_whole_model_quantized_with_calibration(tiny_data):
    model = tiny_model(attention_bias=True, arch="qwen2", tie_embeddings=False, intermediate_size=64)
    ids = tiny_data[1].tokens[:2]
    with torch.no_grad():
        want = model(ids)
    quantize_model(model, tiny_data[0], bits=4, group_size=32, progress=False)
    assert model.config.quantization == {"bits": 4, "group_size": 32}
    assert isinstance(model.layers[0].self_attn.q_proj, Int4Linear) and isinstance(model.lm_head, Int4Linear)
    assert model.embed_tokens.weight.dtype == torch.bfloat16
    with torch.no_grad():
        got = model(ids)
    agree = (got.argmax(-1) == want.argmax(-1)).float().mean()
    assert agree > 0.7 and (got - want).abs().mean() < 0.5 * want.abs().mean()
