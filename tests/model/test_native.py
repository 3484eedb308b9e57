"""The kernel libraries leave the process's floating point as it was."""

import subprocess
import sys

# in a fresh interpreter, so that no library loaded earlier in this one decides the answer
LOAD_EVERY_KERNEL = """
import ctypes, shutil, sys, torch
from tinythink.model import native
compiler = shutil.which("cc") or shutil.which("gcc")
for source in sorted(native.SOURCES.glob("*.c")):
    ctypes.CDLL(str(native.build(source.stem, compiler)))
tiny = sys.float_info.min  # the smallest normal float64
print(tiny / 2 > 0, (torch.tensor([1e-40]) * 1.0).item() > 0, (torch.tensor([1e-30]) * 1e-10).item() > 0)
"""


def test_loading_the_kernels_keeps_subnormal_numbers():
    """Built with -ffast-math in one step, gcc links in crtfastmath.o, whose constructor sets flush-to-zero and
    denormals-are-zero for the whole process: every float of the user's program, PyTorch's and Python's, would
    then lose its subnormals (Hypothesis refused to run beside such a server)."""
    out = subprocess.run([sys.executable, "-c", LOAD_EVERY_KERNEL], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["True", "True", "True"], out.stdout
