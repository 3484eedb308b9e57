"""Loading's two heavy steps on tinythink's own kernel (kernels/weight_formats.c): a GGUF tensor's blocks to
float32 rows, and float32 rows to int8 with one scale a row. Where the kernel cannot be had, or for block types it
does not know (Q2_K, Q3_K, the IQ types), the `gguf` package's numpy dequantizer and PyTorch's operators do the
same, slower.
"""

from __future__ import annotations

import ctypes

import numpy as np
import torch
from gguf import GGMLQuantizationType as QT
from gguf.quants import dequantize as numpy_dequantize
from torch import Tensor

from tinythink.model import native

KERNEL_TYPES = (QT.F32, QT.F16, QT.BF16, QT.Q8_0, QT.Q4_0, QT.Q4_1, QT.Q5_0, QT.Q5_1, QT.Q4_K, QT.Q5_K, QT.Q6_K)
# where each block keeps its float16 scales (byte offsets), so the check can write finite ones into random blocks
_HALF_OFFSETS = {QT.Q8_0: (0,), QT.Q4_0: (0,), QT.Q4_1: (0, 2), QT.Q5_0: (0,), QT.Q5_1: (0, 2), QT.Q4_K: (0, 2),
                 QT.Q5_K: (0, 2), QT.Q6_K: (208,)}


def library() -> ctypes.CDLL | None:
    return native.library("weight_formats", _prepare)


def dequantize(raw: np.ndarray, qtype: QT, rows: int, cols: int, out: Tensor, lib=None) -> Tensor:
    """raw: the bytes of `rows` rows of `cols` weights of `qtype` -> out, a float32 (rows, cols) tensor."""
    lib = lib or (library() if qtype in KERNEL_TYPES else None)
    if lib is not None and lib.dequantize_rows(int(qtype), raw.ctypes.data, out.data_ptr(), rows, cols) == 0:
        return out
    flat = raw.reshape(rows, -1)
    block = flat.view(np.float32) if qtype == QT.F32 else numpy_dequantize(flat, qtype)
    out.copy_(torch.from_numpy(np.ascontiguousarray(block, dtype=np.float32)).reshape(rows, cols))
    return out


def quantize_int8_rows(w: Tensor, lib=None, rows: int = 4096) -> tuple[Tensor, Tensor]:
    """w (n, k), any float dtype -> (codes (n, k) int8, scales (n,) float32): scale = max|w_row| / 127 (at least
    1e-8), code = round(w / scale). A block of rows at a time: never a float32 copy of a whole 151,936-row head."""
    lib = lib or library()
    n, k = w.shape
    codes, scales = torch.empty(n, k, dtype=torch.int8), torch.empty(n)
    for lo in range(0, n, rows):
        block = w[lo:lo + rows].float().contiguous()
        if lib is not None:
            lib.quantize_int8_rows(block.data_ptr(), block.shape[0], k, codes[lo:].data_ptr(), scales[lo:].data_ptr())
        else:
            scales[lo:lo + rows] = (block.abs().amax(dim=1) / 127).clamp(min=1e-8)
            codes[lo:lo + rows] = torch.round(block / scales[lo:lo + rows, None]).clamp(-127, 127)
    return codes, scales


def random_blocks(qtype: QT, blocks: int, generator: np.random.Generator) -> np.ndarray:
    """`blocks` blocks of random codes with finite, modest float16 scales: (blocks, bytes a block) uint8."""
    from gguf import GGML_QUANT_SIZES

    size = GGML_QUANT_SIZES[qtype][1]
    raw = generator.integers(0, 256, (blocks, size), dtype=np.uint8)
    for at in _HALF_OFFSETS.get(qtype, ()):
        raw[:, at:at + 2] = (generator.standard_normal((blocks, 1)) * 0.01).astype(np.float16).view(np.uint8)
    if qtype == QT.F16:
        raw = generator.standard_normal((blocks, 1)).astype(np.float16).view(np.uint8)
    elif qtype == QT.BF16:
        raw = (generator.standard_normal((blocks, 1)).astype(np.float32).view(np.uint32) >> 16).astype(
            np.uint16).view(np.uint8)
    elif qtype == QT.F32:
        raw = generator.standard_normal((blocks, 1)).astype(np.float32).view(np.uint8)
    return raw


def _prepare(lib: ctypes.CDLL) -> None:
    p, i64, i32 = ctypes.c_void_p, ctypes.c_int64, ctypes.c_int
    lib.dequantize_rows.argtypes = [i32, p, p, i64, i64]
    lib.dequantize_rows.restype = i32
    lib.quantize_int8_rows.argtypes = [p, i64, i64, p, p]
    # every type against the gguf package's dequantizer (llama.cpp's formulas), and int8 rows against PyTorch
    from gguf import GGML_QUANT_SIZES

    g = np.random.default_rng(0)
    for qtype in KERNEL_TYPES:
        per_block = GGML_QUANT_SIZES[qtype][0]
        rows, cols = 3, 2 * max(per_block, 32)
        raw = random_blocks(qtype, rows * cols // per_block, g).reshape(-1)
        got = dequantize(raw, qtype, rows, cols, torch.empty(rows, cols), lib)
        want = torch.from_numpy(np.ascontiguousarray(
            numpy_dequantize(raw.reshape(rows, -1), qtype), dtype=np.float32)).reshape(rows, cols)
        if not torch.allclose(got, want, rtol=1e-5, atol=1e-5 * float(want.abs().max())):
            raise RuntimeError(f"its {qtype.name} blocks disagree with the gguf package's by "
                               f"{float((got - want).abs().max()):.2g}")
    w = torch.from_numpy(g.standard_normal((5, 96)).astype(np.float32))
    codes, scales = quantize_int8_rows(w, lib)
    want_scales = (w.abs().amax(dim=1) / 127).clamp(min=1e-8)
    if not torch.allclose(scales, want_scales) or \
            (codes.float() - torch.round(w / want_scales[:, None])).abs().max() > 1:
        raise RuntimeError("its int8 rows disagree with PyTorch's rounding")
