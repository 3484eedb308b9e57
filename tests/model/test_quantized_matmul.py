"""tinythink's kernels for int8/int4 weights with float32 activations (model/quantized_matmul.py) against the
same weights dequantized and multiplied by PyTorch, on each of its paths: weights dequantized in registers (tiles of
2 rows, and a remainder), a few weight rows at a time into a buffer (rows in vectors of 8, and a remainder), and
the many-row path (dequantized in blocks for PyTorch's product), and the bfloat16 path (weights in bfloat16
for PyTorch's bfloat16 product) that CPUs with native bfloat16 take from BFLOAT16_ROWS rows."""

import threading

import pytest
import torch
from torch import nn

from tinythink.model import native, quantized_matmul
from tinythink.model.quantize import Int4Linear, Int8Linear


@pytest.fixture(autouse=True)
def kernels_built():
    assert quantized_matmul.library() is not None, "the kernels must build here (gcc is installed)"


def as_the_kernel_sees(x, q):
    return quantized_matmul.as_multiplied(x, 4 if isinstance(q, Int4Linear) else 8)


def rel_err(a, b):
    return ((a - b).norm() / b.norm()).item()


@pytest.mark.parametrize("rows", [1, 3, 8, 9, 16, 17, 33, 64, 65])
@pytest.mark.parametrize("make", [Int8Linear.from_weight, lambda w: Int4Linear.from_weight(w, group_size=32),
                                  lambda w: Int4Linear.from_weight(w, group_size=128)], ids=["int8", "int4g32", "int4g128"])
@pytest.mark.parametrize("inputs", [128, 1536])
@pytest.mark.parametrize("bfloat16", [False, True], ids=["float32", "bfloat16"])
def test_products_equal_dequantized_weights(rows, make, inputs, bfloat16):
    g = torch.Generator().manual_seed(rows * inputs)
    q = make(torch.randn(72, inputs, generator=g))
    x = torch.randn(rows, inputs, generator=g)
    got = _product(q, x, bfloat16)
    x = x if bfloat16 else as_the_kernel_sees(x, q)
    # bfloat16: the activations and the product rounded to 8 significant bits (at most 2^-9 relative each)
    assert got.shape == (rows, 72) and rel_err(got, x @ q.dequantize().t()) < (3e-3 if bfloat16 else 1e-5)


@pytest.mark.parametrize("rows", [1, 2, 3, 8, 16])
@pytest.mark.parametrize("make", [Int8Linear.from_weight, lambda w: Int4Linear.from_weight(w, group_size=64)],
                         ids=["int8", "int4g64"])
def test_int8_activations_at_a_few_rows(rows, make):
    """llama.cpp's way (int8 activations, a scale a block of 32): within 1% of the float product on random
    inputs, and off when switched off (the float path, as above)."""
    lib = quantized_matmul.library()
    if not lib.int8_dots():
        pytest.skip("this CPU has no AVX2: the float path runs (tested above)")
    g = torch.Generator().manual_seed(rows)
    q = make(torch.randn(72, 1536, generator=g))
    x = torch.randn(rows, 1536, generator=g)
    full = x @ q.dequantize().t()
    got = _product(q, x, False)
    if rows <= quantized_matmul.INT8_ACTIVATION_ROWS[8 if isinstance(q, Int8Linear) else 4]:
        assert 1e-4 < rel_err(got, full) < 1e-2
    else:
        assert rel_err(got, full) < 1e-5  # beyond: weights through a buffer, float activations
    lib.set_int8_activations(0)
    try:
        assert rel_err(_product(q, x, False), full) < 1e-5
    finally:
        lib.set_int8_activations(1)


def _product(q, x, bfloat16):
    if isinstance(q, Int8Linear):
        return quantized_matmul.int8_matmul(x, q.weight, q.scales, bfloat16=bfloat16)
    return quantized_matmul.int4_matmul(x, q.weight, q.scales_mins, q.group_size, bfloat16=bfloat16)


@pytest.mark.parametrize("native", [False, True])
def test_bfloat16_products_from_bfloat16_rows_where_the_cpu_has_them_except_for_heads(native, monkeypatch):
    monkeypatch.setattr(quantized_matmul.native, "native_bfloat16", lambda: native)
    g = torch.Generator().manual_seed(2)
    q = Int8Linear.from_weight(torch.randn(72, 256, generator=g))
    few, many = (torch.randn(n, 256, generator=g) for n in (quantized_matmul.BFLOAT16_ROWS - 1,
                                                             quantized_matmul.BFLOAT16_ROWS))
    assert torch.equal(q(few), _product(q, few, False))
    assert torch.equal(q(many), _product(q, many, native))
    assert not torch.equal(_product(q, many, False), _product(q, many, True))
    q.bfloat16_products = False  # as an output head is
    assert torch.equal(q(many), _product(q, many, False))


@pytest.mark.parametrize("make", [Int8Linear.from_weight, lambda w: Int4Linear.from_weight(w, group_size=32)])
@pytest.mark.parametrize("bfloat16", [False, True], ids=["float32", "bfloat16"])
def test_many_rows_in_blocks_of_a_weight(make, bfloat16, monkeypatch):
    """A vocabulary-wide head is dequantized a block of rows at a time, not whole (113 MB for SmolLM2's)."""
    monkeypatch.setattr(quantized_matmul, "SCRATCH_FLOATS", 7 * 96)
    monkeypatch.setattr(quantized_matmul.native, "native_bfloat16", lambda: bfloat16)
    g = torch.Generator().manual_seed(1)
    q, x = make(torch.randn(40, 96, generator=g)), torch.randn(70, 96, generator=g)
    got = q(x)
    assert rel_err(got, x @ q.dequantize().t()) < (3e-3 if bfloat16 else 1e-5)


def test_layers_run_on_the_kernels_with_float32_inputs_and_on_pytorch_otherwise():
    torch.manual_seed(0)
    linear = nn.Linear(576, 64, bias=True)
    q4 = Int4Linear.from_float(linear, 32)
    x = torch.randn(2, 3, 576)
    reference = as_the_kernel_sees(x, q4) @ q4.dequantize().t() + q4.bias.float()
    assert rel_err(q4(x), reference) < 1e-5 and q4._packed is None  # PyTorch's packed copy is never made
    y = q4(x.bfloat16())  # bfloat16 activations: PyTorch's kernel
    assert y.dtype == torch.bfloat16 and q4._packed is not None and rel_err(y.float(), reference) < 1e-2
    odd = Int8Linear.from_float(nn.Linear(48, 16))  # inputs not a multiple of 32: PyTorch's kernel
    xo = torch.randn(3, 48)
    assert not quantized_matmul.supports(xo, 48, odd.scales)
    assert not quantized_matmul.supports(torch.randn(3, 64), 64, odd.scales.float())  # scales made float32
    assert rel_err(odd(xo), xo @ odd.dequantize().t() + odd.bias.float()) < 1e-2


def test_bfloat16_scratch_made_in_inference_mode_serves_outside_it(monkeypatch):
    monkeypatch.setattr(quantized_matmul.native, "native_bfloat16", lambda: True)
    monkeypatch.setattr(quantized_matmul, "_scratch", threading.local())
    q = Int8Linear.from_weight(torch.randn(72, 256))
    x = torch.randn(quantized_matmul.BFLOAT16_ROWS, 256)
    with torch.inference_mode():
        first = q(x)
    assert torch.equal(q(x), first)  # the buffer is a normal tensor, written in place here too


@pytest.mark.parametrize("arch, int8_dots", [("haswell", 1), ("x86-64", 0)], ids=["avx2", "no-avx2"])
def test_the_kernels_built_for_older_cpus_agree_with_pytorch(arch, int8_dots, tmp_path):
    """Other CPUs build other paths: AVX2 without VNNI (vpmaddubsw), and no AVX2 at all (float activations). Each
    build, run here, passes the check the library must pass before use, and multiplies a layer of Qwen2.5's width
    as PyTorch does on the activations it sees."""
    import ctypes
    import shutil
    from pathlib import Path

    flags = Path("/proc/cpuinfo").read_text().split()
    assert "avx2" in flags and "fma" in flags, "this test runs the AVX2 build on this CPU"
    so = tmp_path / f"qm-{arch}.so"
    native.compile_library(shutil.which("gcc"), native.SOURCES / "quantized_matmul.c", so, march=arch)
    lib = ctypes.CDLL(str(so))
    quantized_matmul._prepare(lib)  # raises where it disagrees
    assert lib.int8_dots() == int8_dots
    g = torch.Generator().manual_seed(3)
    for q in (Int8Linear.from_weight(torch.randn(200, 1536, generator=g)),
              Int4Linear.from_weight(torch.randn(200, 1536, generator=g), group_size=32)):
        for rows in (1, 3, 8):
            x = torch.randn(rows, 1536, generator=g)
            if isinstance(q, Int8Linear):
                got = quantized_matmul.int8_matmul(x, q.weight, q.scales, lib, bfloat16=False)
            else:
                got = quantized_matmul.int4_matmul(x, q.weight, q.scales_mins, q.group_size, lib, bfloat16=False)
            seen = quantized_matmul.as_multiplied(x, 8 if isinstance(q, Int8Linear) else 4, lib)
            assert torch.equal(seen, quantized_matmul.int8_activations(x)) == bool(int8_dots)
            assert rel_err(got, seen @ q.dequantize().t()) < 1e-5
