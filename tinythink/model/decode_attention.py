"""Decode attention by our own kernel (kernels/decode_attention.c, built by model/native.py): every decoding
sequence's new query attends to its own cache row, up to its own length, in one call per layer, reading each
key and value once, the query heads that share a KV head together. PyTorch's SDPA reads a single query's
float32 keys and values at a third of the memory's speed, over rows padded to the longest: decode steps of 64
mixed-length rows run 1.4-1.6x faster with the kernel (docs/BENCHMARKS.md).
"""

from __future__ import annotations

import ctypes

import torch
import torch.nn.functional as F
from torch import Tensor

from tinythink.model import native

KV_DTYPES = (torch.float32, torch.bfloat16)  # the caches the kernel reads


def library() -> ctypes.CDLL | None:
    return native.library("decode_attention", _prepare)


def supports(q: Tensor, k: Tensor) -> bool:
    """Whether the kernel can run these queries (N, H, D) against this cache (rows, H_kv, S, D); its limits are
    the C source's MAX_G and MAX_D."""
    h, d, h_kv = q.shape[1], q.shape[2], k.shape[1]
    return (q.dtype == torch.float32 and k.dtype in KV_DTYPES and q.device.type == k.device.type == "cpu"
            and fits(h, h_kv, d) and k.stride(3) == 1 and k.stride(2) == d)


def fits(heads: int, kv_heads: int, head_dim: int) -> bool:
    """Whether the kernel's limits (the C source's MAX_G and MAX_D) allow these attention shapes."""
    return heads % kv_heads == 0 and heads // kv_heads <= 16 and head_dim <= 256


def decode_attention(q: Tensor, k: Tensor, v: Tensor, slots: Tensor, lengths: Tensor) -> Tensor:
    """q (N, H, D) float32: one new query per sequence; k, v (rows, H_kv, S, D): the cache, float32 or bfloat16;
    slots (N,) int64: each sequence's cache row; lengths (N,) int64: how many positions it attends to -> (N, H, D).
    Needs `library()` and `supports(q, k)`."""
    return _call(library(), q.contiguous(), k, v, slots, lengths)


def _call(lib: ctypes.CDLL, q: Tensor, k: Tensor, v: Tensor, slots: Tensor, lengths: Tensor) -> Tensor:
    n, h, d = q.shape
    out = torch.empty_like(q)
    rc = lib.decode_attention(q.data_ptr(), k.data_ptr(), v.data_ptr(), int(k.dtype == torch.bfloat16),
                              slots.data_ptr(), lengths.data_ptr(),
                              out.data_ptr(), n, h, k.shape[1], d, k.stride(0), k.stride(1), d ** -0.5,
                              torch.get_num_threads())
    if rc:
        raise ValueError(f"decode attention kernel: unsupported shape (heads {h}, KV heads {k.shape[1]}, dim {d})")
    return out


def _prepare(lib: ctypes.CDLL) -> None:
    lib.decode_attention.restype = ctypes.c_int
    lib.decode_attention.argtypes = [ctypes.c_void_p] * 3 + [ctypes.c_int] + [ctypes.c_void_p] * 3 + \
        [ctypes.c_int64] + [ctypes.c_int] * 3 + [ctypes.c_int64] * 2 + [ctypes.c_float, ctypes.c_int]
    # against SDPA on a small case with grouped heads, rows out of order and lengths across blocks
    g = torch.Generator().manual_seed(0)
    q = torch.randn(3, 6, 32, generator=g)
    k, v = (torch.randn(4, 2, 150, 32, generator=g) for _ in "kv")
    slots, lengths = torch.tensor([2, 0, 3]), torch.tensor([1, 150, 70])
    for k, v in ((k, v), (k.bfloat16(), v.bfloat16())):  # each cache dtype
        _check(lib, q, k, v, slots, lengths)


def _check(lib, q, k, v, slots, lengths):
    got = _call(lib, q, k, v, slots, lengths)
    for i in range(len(slots)):
        L = int(lengths[i])
        want = F.scaled_dot_product_attention(q[i][None, :, None], k[slots[i], :, :L][None].float(),
                                              v[slots[i], :, :L][None].float(), enable_gqa=True)[0, :, 0]
        if not torch.allclose(got[i], want, atol=1e-4):
            raise RuntimeError(f"it disagrees with SDPA by {float((got[i] - want).abs().max()):.2g}")
