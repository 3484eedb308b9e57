"""Decoding steps through all layers in one kernel call (model/decode_layers.py) compute what the model's modules
compute, write the same keys and values, and run only the steps they can."""

import copy
from contextlib import contextmanager

import pytest
import torch

from tinythink.model import decode_layers, quantized_matmul
from tinythink.model.config import LayerShape, ModelConfig
from tinythink.model.inference import prepare_for_inference
from tinythink.model.load import load_model
from tinythink.model.packed_batch import Packed
from tinythink.model.quantize import quantize_model, run_rest_in
from tinythink.model.transformer import Transformer


def step_both_ways(model, tokens: list[int], slots: list[int], positions: list[int]):
    """One decoding step by the kernel and again by the modules, over the same cache positions: (logits, keys
    and values written) for each."""
    results = []
    for layers in (model.decode_layers, None):
        for block in model.layers:  # what the step writes, cleared: each way must write it itself
            cache = block.self_attn.kv_cache
            cache.k[slots, :, positions] = cache.v[slots, :, positions] = 0
        model.decode_layers, fused = layers, model.decode_layers
        packed = Packed(slots, positions, [1] * len(slots))
        with torch.inference_mode():
            logits = model.forward_packed(torch.tensor([tokens]), packed)
        model.decode_layers = fused
        written = torch.cat([torch.cat([b.self_attn.kv_cache.k[slots, :, positions].flatten(),
                                        b.self_attn.kv_cache.v[slots, :, positions].flatten()]) for b in model.layers])
        results.append((logits, written))
    return results


def assert_close_in_bfloat16(a, b):
    """Keys and values in the bfloat16 cache: a last-digit difference may round one the other way (a step is 2^-7
    of a value at most), and the token attends to its own key and value, so later layers see that too."""
    torch.testing.assert_close(a.float(), b.float(), rtol=2 ** -7, atol=1e-3)


def prefill(model, prompts: list[list[int]]):
    model.setup_caches(len(prompts), 256)
    with torch.inference_mode():
        model.forward_packed(torch.tensor([sum(prompts, [])]),
                             Packed(list(range(len(prompts))), [0] * len(prompts), [len(p) for p in prompts]))


@contextmanager
def float_activations():
    """int4 products without int8 activations in both libraries: the two ways then differ only by sums' order.
    (With them, a last-digit difference between the ways' norms can round an activation the other way, and 30
    layers spread that: 0.17 at most in the default model's logits.)"""
    libraries = [quantized_matmul.library(), decode_layers.library()]
    for lib in libraries:
        lib.set_int8_activations(0)
    try:
        yield
    finally:
        for lib in libraries:
            lib.set_int8_activations(1)


@pytest.mark.parametrize("bits", [None, 8, 4])
def test_steps_of_the_default_model_equal_its_modules(default_gguf, bits):
    model = prepare_for_inference(load_model(str(default_gguf), quantize=bits).model)
    assert model.decode_layers is not None, "the kernel must build here (gcc is installed)"
    g = torch.Generator().manual_seed(bits or 32)
    prompts = [torch.randint(0, 49152, (n,), generator=g).tolist() for n in (5, 90, 33)]
    prefill(model, prompts)
    for slots in ([1], [2, 0, 1]):  # one row; rows out of order, at their own positions
        positions = [len(prompts[s]) for s in slots]
        tokens = [17, 400, 9000][:len(slots)]
        with float_activations():
            (fused, fused_kv), (modules, modules_kv) = step_both_ways(model, tokens, slots, positions)
        assert fused.shape == (len(slots), 49152)
        torch.testing.assert_close(fused, modules, atol=1e-3, rtol=1e-4)
        assert torch.equal(fused.argmax(-1), modules.argmax(-1))
        assert_close_in_bfloat16(fused_kv, modules_kv)
        (fused, _), (modules, _) = step_both_ways(model, tokens, slots, positions)
        assert (fused - modules).abs().max() < 0.5
        # the same next token, or one the modules score within that of their own best (a near tie)
        assert (modules.max(-1).values - modules.gather(1, fused.argmax(-1, keepdim=True))[:, 0]).max() < 0.5


@pytest.mark.parametrize("rows", [2, 20])  # products with weights dequantized in registers; through a buffer
@pytest.mark.parametrize("bits, group", [(None, 0), (8, 0), (4, 64)])
def test_biases_and_layers_of_their_own_shapes(bits, group, rows):
    """A Qwen2-style model (q/k/v biases) pruned to a different width in each layer."""
    torch.manual_seed(0)
    shapes = (LayerShape(4, 2, 128), LayerShape(2, 1, 64), LayerShape(4, 4, 192))
    config = ModelConfig(vocab_size=100, dim=64, n_layers=3, n_heads=4, n_kv_heads=2, intermediate_size=128,
                         head_dim=32, attention_bias=True, arch="qwen2", layer_shapes=shapes)
    model = Transformer(config)
    if bits:
        model = run_rest_in(quantize_model(model, bits, group or 32), torch.float32)
    model = prepare_for_inference(model)
    assert model.decode_layers is not None
    prompts = [[4] * (3 + 7 * i) for i in range(rows)]
    prefill(model, prompts)
    slots = list(range(rows))[::-1]
    (fused, fused_kv), (modules, modules_kv) = step_both_ways(model, [5 + s for s in slots], slots,
                                                              [len(prompts[s]) for s in slots])
    torch.testing.assert_close(fused, modules, atol=1e-4, rtol=1e-4)
    assert_close_in_bfloat16(fused_kv, modules_kv)


def test_which_steps_and_models_it_runs(ours, default_gguf):
    assert prepare_for_inference(copy.deepcopy(ours.model).to(torch.bfloat16)).decode_layers is None
    model = prepare_for_inference(load_model(str(default_gguf), quantize=4).model)
    layers = model.decode_layers
    model.setup_caches(70, 64)
    assert layers.runs(Packed([0, 3], [5, 9], [1, 1]))
    assert not layers.runs(Packed([0, 3], [5, 0], [1, 4]))  # a prompt in the step: the modules run it all
    assert not layers.runs(Packed(list(range(65)), [5] * 65, [1] * 65))  # past the few-row products
    model.clear_caches()
    assert not layers.runs(Packed([0], [5], [1]))


def test_switched_off(default_gguf, no_kernels):
    assert decode_layers.library() is None
    assert prepare_for_inference(load_model(str(default_gguf), quantize=4).model).decode_layers is None
