"""The decode attention kernel: built for this CPU with the system's compiler (model/native.py), equal to SDPA,
and replaced by SDPA (with a warning) where it cannot be built."""

import pytest
import torch
import torch.nn.functional as F

from tinythink.model import decode_attention, native


@pytest.fixture
def fresh_library(monkeypatch, tmp_path):
    """library() built again, into an empty cache."""
    monkeypatch.setenv("TINYTHINK_CACHE", str(tmp_path))
    native.library.cache_clear()
    yield tmp_path
    native.library.cache_clear()


def reference(q, k, v, slots, lengths):
    k, v = k.float(), v.float()
    return torch.stack([F.scaled_dot_product_attention(q[i][None, :, None], k[s, :, :n][None], v[s, :, :n][None],
                                                       enable_gqa=True)[0, :, 0]
                        for i, (s, n) in enumerate(zip(slots.tolist(), lengths.tolist()))])


@pytest.mark.parametrize("kv_dtype", [torch.bfloat16, torch.float32])
@pytest.mark.parametrize("heads, kv_heads, dim", [(9, 3, 64), (4, 4, 32), (14, 2, 64), (8, 1, 128)])
def test_kernel_equals_sdpa(heads, kv_heads, dim, kv_dtype):
    """Grouped and plain heads, lengths from 1 past several 64-position blocks, rows out of order, and a cache (of
    either dtype) with rows and positions the tokens must not see (filled with large values)."""
    assert decode_attention.library() is not None, "the kernel must build here (gcc is installed)"
    g = torch.Generator().manual_seed(heads * dim)
    k = torch.full((6, kv_heads, 300, dim), 1e3, dtype=kv_dtype)
    v = torch.full((6, kv_heads, 300, dim), 1e3, dtype=kv_dtype)
    lengths = torch.tensor([1, 63, 64, 65, 300])
    slots = torch.tensor([4, 0, 5, 2, 1])
    for s, n in zip(slots.tolist(), lengths.tolist()):
        k[s, :, :n] = torch.randn(kv_heads, n, dim, generator=g) * 3
        v[s, :, :n] = torch.randn(kv_heads, n, dim, generator=g)
    q = torch.randn(5, heads, dim, generator=g)
    assert decode_attention.supports(q, k)
    got = decode_attention.decode_attention(q, k, v, slots, lengths)
    torch.testing.assert_close(got, reference(q, k, v, slots, lengths), atol=2e-5, rtol=1e-4)


def test_what_the_kernel_does_not_run():
    k = torch.zeros(2, 2, 16, 64, dtype=torch.bfloat16)
    assert decode_attention.supports(torch.zeros(1, 4, 64), k)
    assert not decode_attention.supports(torch.zeros(1, 4, 64, dtype=torch.bfloat16), k)  # float32 queries only
    assert decode_attention.supports(torch.zeros(1, 4, 64), k.float())  # a float32 cache, or a bfloat16 one
    assert not decode_attention.supports(torch.zeros(1, 4, 64), k.half())
    assert not decode_attention.supports(torch.zeros(1, 34, 64), k)  # 17 query heads per KV head
    assert not decode_attention.supports(torch.zeros(1, 3, 64), k)  # heads not a multiple of KV heads
    assert not decode_attention.supports(torch.zeros(1, 4, 64), k.new_zeros(2, 2, 64, 16).transpose(2, 3))


def test_built_once_into_the_cache(fresh_library):
    lib = decode_attention.library()
    built = list((fresh_library / "kernels").glob("decode_attention-*.so"))
    assert lib is not None and len(built) == 1
    mtime = built[0].stat().st_mtime_ns
    native.library.cache_clear()
    assert decode_attention.library() is not None
    assert built[0].stat().st_mtime_ns == mtime and list((fresh_library / "kernels").iterdir()) == built


def test_without_a_compiler_sdpa_runs_and_a_warning_says_why(fresh_library, monkeypatch):
    monkeypatch.setenv("CC", "/nonexistent/cc")
    with pytest.warns(RuntimeWarning, match="decode attention kernel is not available.*nonexistent"):
        assert decode_attention.library() is None


def test_switched_off(fresh_library, monkeypatch):
    monkeypatch.setenv("TINYTHINK_KERNELS", "0")
    assert decode_attention.library() is None
    assert not (fresh_library / "kernels").exists()
