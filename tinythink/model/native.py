"""tinythink's own CPU kernels (kernels/*.c), for the few operations where PyTorch's are slow at our shapes:
decode attention, and products with quantized weights and float32 activations. Each is small plain C, built
for this CPU (-march=native) with the system's C compiler at first use, in about a second, into tinythink's
cache, keyed by the source, the flags, the compiler and the CPU, and loaded with ctypes. They use PyTorch's own
OpenMP runtime (a library loaded after torch finds the `libgomp.so.1` torch brought) and its thread count.

Before a kernel is used it must agree with PyTorch on a small case. Without a compiler, where building or that
check fails, or with TINYTHINK_KERNELS=0, `library(name)` is None (with a warning that says why, except when
switched off) and the model runs PyTorch's operators instead.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import re
import shutil
import subprocess
import tempfile
import warnings
from collections.abc import Callable
from functools import cache
from pathlib import Path

import torch  # noqa: F401  loaded before any kernel, so a kernel's libgomp.so.1 is the one torch brought

from tinythink import paths

SOURCES = Path(__file__).with_name("kernels")
# -ffast-math for compiling only: linked with it, gcc (before 13) adds crtfastmath.o, whose constructor sets
# flush-to-zero and denormals-are-zero for the whole process that loads the library, so that every float in
# PyTorch and Python then rounds subnormal numbers to zero
COMPILE_FLAGS = ["-O3", "-ffast-math", "-march=native", "-fopenmp", "-fPIC"]
LINK_FLAGS = ["-shared", "-fopenmp"]


def _cpu_identity() -> str:
    try:  # -march=native builds for this CPU: a cache shared between machines must not mix them
        with open("/proc/cpuinfo") as f:
            return "".join(sorted({line for line in f if line.startswith(("model name", "flags"))}))
    except OSError:
        return platform.processor() + platform.machine()


@cache
def native_bfloat16() -> bool:
    """Does this CPU compute in bfloat16 natively (AVX512-BF16 or AMX)? Without it, bfloat16 matmuls are
    emulated and several times slower than float32."""
    try:
        flags = Path("/proc/cpuinfo").read_text().split()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def _text_with_includes(source: Path) -> str:
    """The source and, after it, every kernel source it includes (`#include "name.c"`), for the cache key."""
    text = source.read_text()
    included = re.findall(r'^#include "([^"]+)"', text, flags=re.MULTILINE)
    return "\n".join([text, *(_text_with_includes(SOURCES / name) for name in included)])


def build(name: str, compiler: str) -> Path:
    """kernels/{name}.c compiled, from the cache or now."""
    source = SOURCES / f"{name}.c"
    version = subprocess.run([compiler, "--version"], capture_output=True, text=True, check=True).stdout
    parts = [_text_with_includes(source), *COMPILE_FLAGS, *LINK_FLAGS, version, _cpu_identity()]
    key = hashlib.sha256("\n".join(parts).encode()).hexdigest()
    path = paths.cache_dir("kernels") / f"{name}-{key[:16]}.so"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=path.parent) as tmp:
            compile_library(compiler, source, Path(tmp) / path.name)
            os.replace(Path(tmp) / path.name, path)  # atomic: processes building at once each install a whole one
    return path


def compile_library(compiler: str, source: Path, out: Path, march: str = "native") -> None:
    """source compiled for `march` and linked into the shared library `out` (two steps: see COMPILE_FLAGS)."""
    flags = [f"-march={march}" if f == "-march=native" else f for f in COMPILE_FLAGS]
    obj = out.with_suffix(".o")
    subprocess.run([compiler, *flags, "-c", str(source), "-o", str(obj)], capture_output=True, text=True, check=True)
    subprocess.run([compiler, *LINK_FLAGS, str(obj), "-o", str(out), "-lm"], capture_output=True, text=True,
                   check=True)


@cache
def library(name: str, prepare: Callable[[ctypes.CDLL], None]) -> ctypes.CDLL | None:
    """The kernel library `name`, after `prepare(lib)` has declared its functions and checked them (raising
    RuntimeError when they disagree with PyTorch); None where it cannot be had."""
    if os.environ.get("TINYTHINK_KERNELS", "1") == "0":
        return None
    compiler = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    try:
        if compiler is None:
            raise RuntimeError("no C compiler (cc or gcc) on the PATH")
        lib = ctypes.CDLL(str(build(name, compiler)))
        prepare(lib)
        return lib
    except (OSError, RuntimeError, subprocess.CalledProcessError) as e:
        detail = e.stderr.strip().splitlines()[-1] if isinstance(e, subprocess.CalledProcessError) and e.stderr \
            else str(e)
        warnings.warn(f"tinythink's {name.replace('_', ' ')} kernel is not available ({detail}); PyTorch's "
                      "operators run instead, slower", RuntimeWarning, stacklevel=3)
        return None
