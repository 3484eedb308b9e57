"""Products with int8/int4 (and float32) weights and float32 activations by our own kernels
(kernels/quantized_matmul.c, built by model/native.py). PyTorch's weight-only kernels need bfloat16 activations
(emulated, and converted to and from at every layer, on CPUs without native bfloat16) and run far below the
memory's speed at a few rows, as its float32 products do at the few rows of decoding; ours also serve the
one-call decode (model/decode_layers.py), which is why quantized models run float32 activations wherever ours
build (load.quantized_rest_dtype).

Up to `FEW_ROWS` rows (decoding) the kernel multiplies with the weights as they are stored: up to 8 (int4,
float32) or 16 (int8) rows each weight is dequantized in registers for every two rows, beyond that a few weight
rows at a time into a buffer in the CPU's cache, multiplied with all rows from there (100-110 GFLOP/s at 32-64
rows on a 2-core AVX2 EPYC). From there on (prefill) a quantized layer's float32 weights are written into a
scratch buffer, a block at a time, and multiplied by PyTorch's float32 product, as fast on many rows.

Where the CPU computes in bfloat16 natively (AVX512-BF16, AMX), from `BFLOAT16_ROWS` rows the weights go to
bfloat16 instead, a block at a time, for PyTorch's bfloat16 product: 2-4x ours and the float32 product at
16-512 rows of Qwen2.5's shapes on a 2-core AVX512-BF16 EPYC (`python bench/kernels.py`). int8 weights are
exact in bfloat16 (integers to 256 are), their scales applied to the product's rows in float32; int4 weights
are dequantized and rounded to bfloat16. The activations and the product are rounded to bfloat16 as in a
bfloat16 model. (Integer products with int8 activations, `torch._int_mm` on VNNI, ran faster still, but one
activation scale a row cost 3-6% perplexity and one a block of 128 inputs ran slower than this.)
`python bench/kernels.py` measures them against PyTorch's kernels (docs/BENCHMARKS.md).
"""

from __future__ import annotations

import ctypes
import threading

import torch
from torch import Tensor

from tinythink.model import native

FEW_ROWS = 64  # up to where our kernels beat dequantizing whole layers for PyTorch's float32 product (as above)
# up to these rows int4 and int8 weights multiply int8 activations where the CPU has AVX2 (the C file)
INT8_ACTIVATION_ROWS = {4: 8, 8: 16}
BFLOAT16_ROWS = 16  # from where PyTorch's bfloat16 product beats ours, where the CPU has it natively (as above)
SCRATCH_FLOATS = 2 << 20  # 8 MB of dequantized weights at a time: a layer's, or a block of a vocabulary-wide head's
_scratch = threading.local()  # each engine thread's buffer, reused across layers


def library() -> ctypes.CDLL | None:
    return native.library("quantized_matmul", _prepare)


def supports(x: Tensor, in_features: int, scales: Tensor, group_size: int = 32) -> bool:
    """Whether the kernels run this input for a layer of `in_features` inputs with these scales (bfloat16, as
    quantize.py makes them: the kernels read them as such)."""
    return (x.dtype == torch.float32 and x.device.type == "cpu" and scales.dtype == torch.bfloat16
            and in_features % 32 == 0 and group_size % 32 == 0)


def bfloat16_from(rows: int) -> bool:
    """Whether a product of this many rows with quantized weights runs through bfloat16 weights (as above)."""
    return rows >= BFLOAT16_ROWS and native.native_bfloat16()


def _buffer(name: str, numel: int, dtype: torch.dtype) -> Tensor:
    buf = getattr(_scratch, name, None)
    if buf is None or buf.numel() < numel:
        with torch.inference_mode(False):  # a normal tensor: written in place in and out of inference mode
            buf = torch.empty(max(numel, SCRATCH_FLOATS), dtype=dtype)
        setattr(_scratch, name, buf)
    return buf


def _bfloat16_rows(x: Tensor, n: int, to_bfloat16) -> Tensor:
    """x (m, k) @ W^T in bfloat16, W's rows written a block at a time into a bfloat16 (rows, k) tensor by
    `to_bfloat16(first, out)` -> (m, n) float32."""
    k = x.shape[1]
    block = max(1, min(n, SCRATCH_FLOATS // k))
    buf, xb = _buffer("bf16", block * k, torch.bfloat16), x.to(torch.bfloat16)
    y = x.new_empty(x.shape[0], n)
    for lo in range(0, n, block):
        w = buf[:min(block, n - lo) * k].view(-1, k)
        to_bfloat16(lo, w)
        y[:, lo:lo + w.shape[0]] = xb @ w.t()
    return y


def _many_rows(x: Tensor, n: int, dequantize, bfloat16: bool) -> Tensor:
    """x (m, k) @ W^T, W's rows dequantized a block at a time by `dequantize(first, rows, out_pointer)`."""
    k = x.shape[1]
    block = max(1, min(n, SCRATCH_FLOATS // k))
    buf = _buffer("buf", block * k, torch.float32)
    if bfloat16:
        def to_bfloat16(lo, out):
            dequantize(lo, out.shape[0], buf.data_ptr())
            out.copy_(buf[:out.numel()].view_as(out))
        return _bfloat16_rows(x, n, to_bfloat16)
    if block == n:
        dequantize(0, n, buf.data_ptr())
        return x @ buf[:n * k].view(n, k).t()
    y = x.new_empty(x.shape[0], n)
    for lo in range(0, n, block):
        rows = min(block, n - lo)
        dequantize(lo, rows, buf.data_ptr())
        y[:, lo:lo + rows] = x @ buf[:rows * k].view(rows, k).t()
    return y


def int8_matmul(x: Tensor, weight: Tensor, scales: Tensor, lib: ctypes.CDLL | None = None,
                bfloat16: bool | None = None) -> Tensor:
    """x (m, k) float32; weight (n, k) int8; scales (n,) bfloat16 -> (m, n) float32; `bfloat16`: through
    bfloat16 weights (default: `bfloat16_from(m)`)"""
    lib, (m, k), n, threads = lib or library(), x.shape, weight.shape[0], torch.get_num_threads()
    x = x.contiguous()
    if bfloat16_from(m) if bfloat16 is None else bfloat16:  # exact: the scales go on the product's columns
        return _bfloat16_rows(x, n, lambda lo, out: out.copy_(weight[lo:lo + out.shape[0]])) * scales.float()
    if m > FEW_ROWS:
        return _many_rows(x, n, lambda lo, rows, out: lib.int8_dequantize(
            weight[lo].data_ptr(), scales[lo].data_ptr(), out, rows, k, threads), False)
    return _few_rows(lib, x, weight, scales, n, 8, 0, threads)


def int4_matmul(x: Tensor, weight: Tensor, scales_mins: Tensor, group_size: int,
                lib: ctypes.CDLL | None = None, bfloat16: bool | None = None) -> Tensor:
    """x (m, k) float32; weight (n, k / 2) uint8 nibbles; scales_mins (k / group_size, n, 2) bfloat16 -> (m, n);
    `bfloat16` as for int8_matmul"""
    lib, (m, k), n, threads = lib or library(), x.shape, weight.shape[0], torch.get_num_threads()
    x = x.contiguous()
    bfloat16 = bfloat16_from(m) if bfloat16 is None else bfloat16
    if m > FEW_ROWS or bfloat16:
        return _many_rows(x, n, lambda lo, rows, out: lib.int4_dequantize(
            weight[lo].data_ptr(), scales_mins[:, lo].data_ptr(), out, rows, n, k, group_size, threads), bfloat16)
    return _few_rows(lib, x, weight, scales_mins, n, 4, group_size, threads)


def float32_matmul(x: Tensor, weight: Tensor, lib: ctypes.CDLL | None = None) -> Tensor:
    """x (m, k) float32; weight (n, k) float32, contiguous -> (m, n); PyTorch's product beyond FEW_ROWS rows"""
    if x.shape[0] > FEW_ROWS:
        return x @ weight.t()
    return _few_rows(lib or library(), x.contiguous(), weight, None, weight.shape[0], 32, 0, torch.get_num_threads())


def int8_activations(x: Tensor) -> Tensor:
    """x (m, k) as the int8 and int4 kernels see it at a few rows on AVX2 CPUs: rounded to int8 with one scale a
    block of 32 inputs (llama.cpp's Q8_0), back in float32 -- the reference its products are checked against."""
    blocks = x.reshape(x.shape[0], -1, 32)
    d = blocks.abs().amax(dim=-1, keepdim=True) / 127
    return (torch.round(blocks * torch.where(d > 0, 1 / d, 0)) * d).reshape_as(x)


def as_multiplied(x: Tensor, bits: int, lib: ctypes.CDLL | None = None) -> Tensor:
    """x (..., k) float32 as our kernel (`lib`, default the library) multiplies it with `bits`-bit weights
    (bfloat16 path aside): rounded by int8_activations at the few rows where it does that, else as it is."""
    x2 = x.reshape(-1, x.shape[-1])
    lib = lib or library()
    if bits in INT8_ACTIVATION_ROWS and len(x2) <= INT8_ACTIVATION_ROWS[bits] and x2.shape[1] % 64 == 0 \
            and lib is not None and lib.int8_dots():
        return int8_activations(x2).reshape_as(x)
    return x


def _few_rows(lib: ctypes.CDLL, x: Tensor, weight: Tensor, scales: Tensor | None, n: int, bits: int, group: int,
              threads: int) -> Tensor:
    y = x.new_empty(x.shape[0], n)
    if lib.matmul(x.data_ptr(), weight.data_ptr(), None if scales is None else scales.data_ptr(), y.data_ptr(),
                  x.shape[0], n, x.shape[1], bits, group, threads):
        raise MemoryError("quantized product: no memory for its scratch buffers")
    return y


def _prepare(lib: ctypes.CDLL) -> None:
    p, i64, i32 = ctypes.c_void_p, ctypes.c_int64, ctypes.c_int
    lib.matmul.argtypes = [p, p, p, p, i64, i64, i64, i64, i64, i32]
    lib.matmul.restype = ctypes.c_int
    lib.int8_dequantize.argtypes = [p, p, p, i64, i64, i32]
    lib.int4_dequantize.argtypes = [p, p, p, i64, i64, i64, i64, i32]
    lib.set_int8_activations.argtypes = [i32]
    lib.int8_dots.restype = i32
    # against the same weights dequantized by PyTorch: one row, two tiles, a block of rows, and the many-row path
    # (in float32: the bfloat16 one is PyTorch's product); at a few rows with float activations, then int8 ones
    from tinythink.model.quantize import Int4Linear, Int8Linear

    g = torch.Generator().manual_seed(0)
    w = torch.randn(40, 128, generator=g)
    q8, q4 = Int8Linear.from_weight(w), Int4Linear.from_weight(w, group_size=32)
    for int8_inputs in (0, 1):
        lib.set_int8_activations(int8_inputs)
        for m in (1, 2, 5, 33, 65):
            x = torch.randn(m, 128, generator=g)
            x4, x8 = (as_multiplied(x, bits, lib) if int8_inputs else x for bits in (4, 8))
            for got, want in [(int8_matmul(x, q8.weight, q8.scales, lib, bfloat16=False), x8 @ q8.dequantize().t()),
                              (int4_matmul(x, q4.weight, q4.scales_mins, 32, lib, bfloat16=False),
                               x4 @ q4.dequantize().t()),
                              (float32_matmul(x, w, lib), x @ w.t())]:
                if not torch.allclose(got, want, atol=1e-3, rtol=1e-4):
                    raise RuntimeError(f"it disagrees with PyTorch by {float((got - want).abs().max()):.2g} at {m} "
                                       "rows")
