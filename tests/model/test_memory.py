"""Memory: the KV pool costs what its sequences use, not what it is sized for; a loaded model costs about its
weights."""

import subprocess
import sys

import torch

from tinythink.model.kv_cache import zeros_paged_on_write

# In a fresh process, as a server allocates its pool after loading: in a long-lived one (this test session)
# the allocator may hand back memory that is already resident, which is zeroed but shows no growth.
MEASURE = """
import torch
from tinythink.model.memory import resident_mb
from tinythink.model.kv_cache import KVCache

before = resident_mb()
cache = KVCache(max_batch=16, max_seq_len=4096, n_kv_heads=3, head_dim=64, dtype=torch.float32)  # 2 x 50 MB
allocated = resident_mb() - before
assert cache.k.shape == (16, 3, 4096, 64) and cache.k.dtype == torch.float32 and cache.k.is_contiguous()
assert not cache.k[3, 2].any() and not cache.v[15].any()
cache.k[:, :, :256] = 1.0  # every slot's first 256 positions, as serving short requests writes them: 3 MB
written = resident_mb() - before
assert cache.k[5, 1, :256].all() and not cache.k[:, :, 256:].any()
print(allocated, written)
"""


def test_a_kv_pool_becomes_resident_only_where_written():
    r = subprocess.run([sys.executable, "-c", MEASURE], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    allocated, written = map(float, r.stdout.split())
    assert allocated < 10  # of 100 MB
    # 3 MB and what the first operators load; 50 MB (all of k) if a write made a 2 MB huge page resident
    assert 2.5 < written < 15


def test_paged_zeros_in_other_dtypes():
    t = zeros_paged_on_write((2, 3, 8), torch.bfloat16)
    assert t.dtype == torch.bfloat16 and t.shape == (2, 3, 8) and not t.any()
    t[1, 2] = 1.5
    assert t.sum() == 12 and zeros_paged_on_write((0, 3), torch.float32).shape == (0, 3)


LOAD = """
import sys
import torch
from tinythink.model.load import load_model
from tinythink.model.memory import resident_mb

before = resident_mb()
model = load_model(sys.argv[1], quantize=8).model
weights = sum(t.numel() * t.element_size() for t in [*model.parameters(), *model.buffers()]) / 2**20
print(resident_mb() - before, weights, "torch._dynamo" in sys.modules)
"""


def test_loading_costs_about_the_weights(default_gguf):
    """Quantizing at load frees a float32 copy of each weight; glibc kept those pages (+600 MB for SmolLM2 in
    int8) until they were handed back, and building the model on the meta device imported torch's compiler."""
    r = subprocess.run([sys.executable, "-c", LOAD, str(default_gguf)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    grew, weights, compiler = r.stdout.split()
    assert 150 < float(weights) < 250  # int8 layers, and bfloat16 or float32 embeddings
    assert float(grew) < float(weights) + 200  # + the tokenizer, the file's mapped pages; was weights + 600
    assert compiler == "False"
