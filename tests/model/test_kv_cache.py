"""The KV pool costs the memory its sequences use, not what it is sized for."""

import torch

from tinythink.model.transformer import KVCache, zeros_paged_on_write


def resident_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096 / 2**20


def test_a_kv_pool_becomes_resident_only_where_written():
    before = resident_mb()
    cache = KVCache(max_batch=16, max_seq_len=4096, n_kv_heads=3, head_dim=64, dtype=torch.float32)  # 2 x 50 MB
    assert resident_mb() - before < 20
    assert cache.k.shape == (16, 3, 4096, 64) and cache.k.dtype == torch.float32 and cache.k.is_contiguous()
    assert cache.v.abs().sum() == 0 and cache.k[3, 2, 4000].abs().sum() == 0  # reading leaves pages shared
    cache.k[0, :, :4096] = 1.0  # one slot's keys, whole context: 3 MB
    grown = resident_mb() - before
    assert 2.5 < grown < 20
    assert cache.k[0].sum() == 3 * 4096 * 64 and cache.k[1].abs().sum() == 0


def test_paged_zeros_in_other_dtypes():
    t = zeros_paged_on_write((2, 3, 8), torch.bfloat16)
    assert t.dtype == torch.bfloat16 and t.shape == (2, 3, 8) and not t.any()
