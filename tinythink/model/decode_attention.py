"""Decode attention by our own kernel (kernels/decode_attention.c): every decoding sequence's new query attends
to its own cache row, up to its own length, in one call per layer, reading each key and value once. 2.5-3x
faster than PyTorch's SDPA over the same rows (docs/BENCHMARKS.md), which is the reason it exists.

The C source is compiled for this CPU (-march=native) with the system's C compiler at first use, in about a
second, into tinythink's cache, keyed by the source, the flags, the compiler and the CPU. It uses PyTorch's own
OpenMP runtime (the library is loaded after torch, so `libgomp.so.1` is the one torch brought) and its thread
count. Before it is used, it must agree with SDPA on a small case. Without a compiler, where building or that
check fails, or with TINYTHINK_KERNELS=0, `library()` is None and the model uses SDPA (model/transformer.py).
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
import warnings
from functools import cache
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from tinythink import paths

SOURCE = Path(__file__).with_name("kernels") / "decode_attention.c"
FLAGS = ["-O3", "-ffast-math", "-march=native", "-fopenmp", "-shared", "-fPIC"]


def _cpu_identity() -> str:
    try:  # -march=native builds for this CPU: a cache shared between machines must not mix them
        with open("/proc/cpuinfo") as f:
            return "".join(sorted({line for line in f if line.startswith(("model name", "flags"))}))
    except OSError:
        return platform.processor() + platform.machine()


def build(compiler: str) -> Path:
    """The compiled library, from the cache or built now."""
    version = subprocess.run([compiler, "--version"], capture_output=True, text=True, check=True).stdout
    key = hashlib.sha256("\n".join([SOURCE.read_text(), *FLAGS, version, _cpu_identity()]).encode()).hexdigest()
    path = paths.cache_dir("kernels") / f"decode_attention-{key[:16]}.so"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(suffix=".so", dir=path.parent)
        os.close(fd)
        try:
            subprocess.run([compiler, *FLAGS, str(SOURCE), "-o", tmp, "-lm"], capture_output=True, text=True,
                           check=True)
            os.replace(tmp, path)  # atomic: processes building at once each install a whole library
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    return path


@cache
def library() -> ctypes.CDLL | None:
    if os.environ.get("TINYTHINK_KERNELS", "1") == "0":
        return None
    compiler = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    try:
        if compiler is None:
            raise RuntimeError("no C compiler (cc or gcc) on the PATH")
        lib = ctypes.CDLL(str(build(compiler)))
        lib.decode_attention.restype = ctypes.c_int
        lib.decode_attention.argtypes = [ctypes.c_void_p] * 6 + [ctypes.c_int64] + [ctypes.c_int] * 3 + \
            [ctypes.c_int64] * 2 + [ctypes.c_float, ctypes.c_int]
        _check(lib)
        return lib
    except (OSError, RuntimeError, subprocess.CalledProcessError) as e:
        detail = e.stderr.strip().splitlines()[-1] if isinstance(e, subprocess.CalledProcessError) and e.stderr \
            else str(e)
        warnings.warn(f"tinythink's decode attention kernel is not available ({detail}); using PyTorch's SDPA, "
                      "which is slower for batched decoding", RuntimeWarning, stacklevel=2)
        return None


def _call(lib: ctypes.CDLL, q: Tensor, k: Tensor, v: Tensor, slots: Tensor, lengths: Tensor) -> Tensor:
    n, h, d = q.shape
    out = torch.empty_like(q)
    rc = lib.decode_attention(q.data_ptr(), k.data_ptr(), v.data_ptr(), slots.data_ptr(), lengths.data_ptr(),
                              out.data_ptr(), n, h, k.shape[1], d, k.stride(0), k.stride(1), d ** -0.5,
                              torch.get_num_threads())
    if rc:
        raise ValueError(f"decode attention kernel: unsupported shape (heads {h}, KV heads {k.shape[1]}, dim {d})")
    return out


def supports(q: Tensor, k: Tensor) -> bool:
    """Whether the kernel can run these queries (N, H, D) against this cache (rows, H_kv, S, D)."""
    h, d, h_kv = q.shape[1], q.shape[2], k.shape[1]
    return (q.dtype == k.dtype == torch.float32 and q.device.type == k.device.type == "cpu" and h % h_kv == 0
            and h // h_kv <= 16 and d <= 256 and k.stride(3) == 1 and k.stride(2) == d)


def decode_attention(q: Tensor, k: Tensor, v: Tensor, slots: Tensor, lengths: Tensor) -> Tensor:
    """q (N, H, D): one new query per sequence; k, v (rows, H_kv, S, D): the cache, float32; slots (N,) int64:
    each sequence's cache row; lengths (N,) int64: how many positions it attends to -> (N, H, D). Needs
    `library()` and `supports(q, k)`."""
    return _call(library(), q.contiguous(), k, v, slots, lengths)


def _check(lib: ctypes.CDLL) -> None:
    """The kernel against SDPA on a small case with grouped heads, rows out of order and lengths across blocks."""
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(*shape, generator=g) for shape in [(3, 6, 32), (4, 2, 150, 32), (4, 2, 150, 32)])
    slots, lengths = torch.tensor([2, 0, 3]), torch.tensor([1, 150, 70])
    got = _call(lib, q, k, v, slots, lengths)
    for i in range(3):
        L = int(lengths[i])
        want = F.scaled_dot_product_attention(q[i][None, :, None], k[slots[i], :, :L][None], v[slots[i], :, :L][None],
                                              enable_gqa=True)[0, :, 0]
        if not torch.allclose(got[i], want, atol=1e-4):
            raise RuntimeError(f"it disagrees with SDPA by {float((got[i] - want).abs().max()):.2g}")
