"""Decoding steps through all of a model's layers in one call of our own kernel (kernels/decode_layers.c, built by
model/native.py): norms, products, rotary embeddings, cache writes, attention and residual additions, in place of
the ~600 PyTorch operators a step of SmolLM2-135M otherwise runs, whose dispatch at a few rows took as long as
the int4 products themselves. The embeddings, the final norm and the output head stay PyTorch's (the head on
model/quantized_matmul.py's kernel).

It runs steps where every sequence decodes one token, up to the few-row limit of the products
(quantized_matmul.FEW_ROWS; for quantized weights on CPUs with native bfloat16, below BFLOAT16_ROWS), for
float32, int8 and int4 weights with float32 activations and a float32 or bfloat16 KV cache; anything else
(prompts, wider batches, bfloat16 models, no compiler) runs the modules as before. Numerically it is the
modules' computation: the tests compare its logits with theirs.
"""

from __future__ import annotations

import ctypes

import torch
from torch import Tensor, nn

from tinythink.model import decode_attention, native, quantized_matmul
from tinythink.model.packed_batch import Packed
from tinythink.model.quantize import Int4Linear, Int8Linear

_p, _i64 = ctypes.c_void_p, ctypes.c_int64


class _Linear(ctypes.Structure):
    _fields_ = [("weight", _p), ("scales", _p), ("n", _i64), ("k", _i64), ("bits", _i64), ("group", _i64),
                ("bias", _p)]


class _Layer(ctypes.Structure):
    _fields_ = [("attn_norm", _p), ("mlp_norm", _p), ("qkv", _Linear), ("o", _Linear), ("gate_up", _Linear),
                ("down", _Linear), ("k_cache", _p), ("v_cache", _p), ("row_stride", _i64), ("head_stride", _i64),
                ("h", _i64), ("h_kv", _i64), ("hidden", _i64), ("bf16_cache", _i64)]


def library() -> ctypes.CDLL | None:
    return native.library("decode_layers", _prepare)


def _runnable(m) -> bool:
    """Whether the kernel runs this linear layer with float32 inputs: our int8/int4 layers with bfloat16 scales,
    or float32 weights, contiguous, k a multiple of 32."""
    if isinstance(m, (Int8Linear, Int4Linear)):
        scales = m.scales if isinstance(m, Int8Linear) else m.scales_mins
        return quantized_matmul.supports(torch.empty(0), m.in_features, scales, getattr(m, "group_size", 32))
    return (isinstance(m, nn.Linear) and m.weight.dtype == torch.float32 and m.weight.is_contiguous()
            and m.in_features % 32 == 0)


class DecodeLayers:
    """A model's layers as the kernel reads them; `for_model` gives one where the kernel can run the model."""

    def __init__(self, model):
        self.blocks, self.config = list(model.layers), model.config
        quantized = isinstance(model.layers[0].mlp.down_proj, (Int8Linear, Int4Linear))
        # quantized weights: from BFLOAT16_ROWS on, where the CPU has it, PyTorch's bfloat16 product runs the
        # modules faster than ours runs the step (16 streams of Qwen2.5-0.5B int8: 65-74 vs 50-55 tok/s)
        self.max_rows = (quantized_matmul.BFLOAT16_ROWS - 1 if quantized and quantized_matmul.bfloat16_from(
            quantized_matmul.BFLOAT16_ROWS) else quantized_matmul.FEW_ROWS)
        self._layers, self._cache = None, None  # the ctypes array, for the KV cache it was made with
        self._biases: list[Tensor] = []  # float32 copies of the biases the array points at

    @classmethod
    def for_model(cls, model) -> DecodeLayers | None:
        if not len(model.layers):
            return None
        for block in model.layers:
            attn, mlp = block.self_attn, block.mlp
            linears = [attn.qkv_proj, attn.o_proj, mlp.gate_up_proj, mlp.down_proj]
            norms = [block.input_layernorm.weight, block.post_attention_layernorm.weight]
            if not all(map(_runnable, linears)) or any(w.dtype != torch.float32 for w in norms) \
                    or not decode_attention.fits(attn.n_heads, attn.n_kv_heads, attn.head_dim):
                return None
        return cls(model) if library() else None

    def runs(self, packed: Packed) -> bool:
        """Whether this step is one the kernel runs: every sequence decoding, few enough, a float32 or bfloat16
        cache."""
        cache = self.blocks[0].self_attn.kv_cache
        return (len(packed.single) == len(packed.slots) <= self.max_rows and cache is not None
                and cache.k.dtype in decode_attention.KV_DTYPES and cache.k.is_contiguous())

    def __call__(self, x: Tensor, cos: Tensor, sin: Tensor, packed: Packed, lib: ctypes.CDLL | None = None) -> Tensor:
        """x (N, dim) the new tokens' embeddings, cos and sin (N, head_dim) at their positions -> the last
        layer's output (N, dim); writes their keys and values into the cache."""
        x = x.contiguous().clone()  # updated in place by the kernel
        cos, sin, c = cos.contiguous(), sin.contiguous(), self.config
        rc = (lib or library()).decode_layers(
            self._array(), len(self.blocks), x.data_ptr(), x.shape[0], c.dim, c.head_dim, cos.data_ptr(),
            sin.data_ptr(), packed.token_slots.data_ptr(), packed.positions.data_ptr(), c.norm_eps,
            torch.get_num_threads())
        if rc:
            raise MemoryError("decode layers kernel: no memory for its buffers") if rc == 1 else \
                ValueError("decode layers kernel: unsupported attention shape")
        return x

    def _array(self):
        cache = self.blocks[0].self_attn.kv_cache.k
        if self._cache is not cache:
            self._biases = []
            self._layers, self._cache = (_Layer * len(self.blocks))(*map(self._layer, self.blocks)), cache
        return self._layers

    def _layer(self, block) -> _Layer:
        attn, mlp, cache = block.self_attn, block.mlp, block.self_attn.kv_cache
        return _Layer(block.input_layernorm.weight.data_ptr(), block.post_attention_layernorm.weight.data_ptr(),
                      self._linear(attn.qkv_proj), self._linear(attn.o_proj), self._linear(mlp.gate_up_proj),
                      self._linear(mlp.down_proj), cache.k.data_ptr(), cache.v.data_ptr(), cache.k.stride(0),
                      cache.k.stride(1), attn.n_heads, attn.n_kv_heads, mlp.down_proj.in_features,
                      int(cache.k.dtype == torch.bfloat16))

    def _linear(self, m) -> _Linear:
        bias = None
        if m.bias is not None:
            self._biases.append(m.bias.detach().float().contiguous())
            bias = self._biases[-1].data_ptr()
        if isinstance(m, Int8Linear):
            return _Linear(m.weight.data_ptr(), m.scales.data_ptr(), m.out_features, m.in_features, 8, 0, bias)
        if isinstance(m, Int4Linear):
            return _Linear(m.weight.data_ptr(), m.scales_mins.data_ptr(), m.out_features, m.in_features, 4,
                           m.group_size, bias)
        return _Linear(m.weight.data_ptr(), None, m.out_features, m.in_features, 32, 0, bias)


def _prepare(lib: ctypes.CDLL) -> None:
    lib.decode_layers.restype = ctypes.c_int
    lib.decode_layers.argtypes = [_p, _i64, _p, _i64, _i64, _i64, _p, _p, _p, _p, ctypes.c_float, ctypes.c_int]
    # small int4 and float32 models with q/k/v biases: a decoding step of three rows out of order, against their
    # modules
    from tinythink.model.config import ModelConfig
    from tinythink.model.inference import fuse_projections
    from tinythink.model.quantize import quantize_model, run_rest_in
    from tinythink.model.transformer import Transformer

    if decode_attention.library() is None:
        raise RuntimeError("it needs the decode attention kernel")
    for bits in (4, None):
        with torch.random.fork_rng():  # the model's random init, seeded, leaving the caller's generator as it was
            torch.manual_seed(0)
            config = ModelConfig(vocab_size=64, dim=64, n_layers=2, n_heads=4, n_kv_heads=2, intermediate_size=96,
                                 attention_bias=True, arch="qwen2")
            model = Transformer(config)
            model = fuse_projections(run_rest_in(quantize_model(model, bits), torch.float32) if bits else model)
            prompts = torch.randint(0, 64, (1, 15))
        for dtype in decode_attention.KV_DTYPES:
            _check(lib, model, prompts, dtype)


def _check(lib: ctypes.CDLL, model, prompts: Tensor, kv_dtype: torch.dtype) -> None:
    model.clear_caches()
    model.setup_caches(3, 16, kv_dtype)
    with torch.inference_mode():
        model.forward_packed(prompts, Packed([0, 1, 2], [0, 0, 0], [5, 3, 7]))
        packed = Packed([2, 0, 1], [7, 5, 3], [1, 1, 1])
        ids = torch.tensor([1, 2, 3])
        cos, sin = model.rope(packed.positions)
        want = model._hidden(ids[None], cos[:, None], sin[:, None], packed)[0]
        caches = [(b.self_attn.kv_cache.k.clone(), b.self_attn.kv_cache.v.clone()) for b in model.layers]
        for b in model.layers:  # the step's own keys and values, written again by the kernel
            b.self_attn.kv_cache.k[packed.token_slots, :, packed.positions] = 0
            b.self_attn.kv_cache.v[packed.token_slots, :, packed.positions] = 0
        got = DecodeLayers(model)(model.embed_tokens(ids), cos, sin, packed, lib)
    error = float((got - want).abs().max())
    # the cache in bfloat16, whose steps are 2^-8 of a value: a last-digit difference may round the other way
    steps = max(float(((c.float() - w.float()).abs() / (w.float().abs() + 1e-3)).max())
                for b, (k, v) in zip(model.layers, caches) for c, w in ((b.self_attn.kv_cache.k, k),
                                                                        (b.self_attn.kv_cache.v, v)))
    if not (error < 1e-3 and steps < 1e-2):
        raise RuntimeError(f"it disagrees with the model's modules by {error:.2g} (cache: {steps:.2g} relative)")
