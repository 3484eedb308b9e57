"""A decoder-only transformer covering the Llama family: Llama 3.x, SmolLM2, Qwen2/2.5.

RMSNorm, rotary embeddings (with Llama-3 frequency scaling), grouped-query attention with optional
q/k/v bias, a SwiGLU MLP, tied or untied embeddings. Each layer may have its own number of heads and
its own MLP width (pruned models). Parameter names follow Hugging Face's Llama modules minus the
leading `model.`, so importing and exporting HF checkpoints is a rename of the prefix.

The model works on token ids only. Generation keeps a preallocated KV cache per layer and passes the
positions being written explicitly (`input_pos`), as gpt-fast does.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tinythink.model.config import ModelConfig


def rope_inv_freq(config: ModelConfig) -> Tensor:
    """Inverse frequencies (head_dim/2,), float32, computed exactly as Hugging Face does."""
    d = config.head_dim
    inv = 1.0 / (config.rope_theta ** (torch.arange(0, d, 2, dtype=torch.int64).float() / d))
    scaling = config.rope_scaling or {}
    kind = scaling.get("rope_type", scaling.get("type", "default"))
    if kind == "linear":
        inv = inv / scaling["factor"]
    elif kind == "llama3":
        factor, low, high = scaling["factor"], scaling["low_freq_factor"], scaling["high_freq_factor"]
        old_len = scaling["original_max_position_embeddings"]
        wavelen = 2 * math.pi / inv
        scaled = torch.where(wavelen > old_len / low, inv / factor, inv)
        smooth = (old_len / wavelen - low) / (high - low)
        smoothed = (1 - smooth) * scaled / factor + smooth * scaled
        medium = (wavelen >= old_len / high) & (wavelen <= old_len / low)
        inv = torch.where(medium, smoothed, scaled)
    elif kind != "default":
        raise ValueError(f"unsupported rope scaling {kind!r} (supported: default, linear, llama3)")
    return inv


def rotate_half(x: Tensor) -> Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def apply_rope(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    # x: (B, H, T, D); cos, sin: (T, D) or, per sequence, (B, 1, T, D). In x's dtype, as Hugging Face does.
    return x * cos.to(x.dtype) + rotate_half(x) * sin.to(x.dtype)


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: Tensor) -> Tensor:
        # normalise in float32 whatever the activations' dtype, for the same numbers as the reference
        h = x.float()
        h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * h.to(x.dtype)


class KVCache(nn.Module):
    """Keys and values for `max_batch` sequences of up to `max_seq_len` positions."""

    def __init__(self, max_batch: int, max_seq_len: int, n_kv_heads: int, head_dim: int, dtype: torch.dtype):
        super().__init__()
        shape = (max_batch, n_kv_heads, max_seq_len, head_dim)
        self.register_buffer("k", torch.zeros(shape, dtype=dtype), persistent=False)
        self.register_buffer("v", torch.zeros(shape, dtype=dtype), persistent=False)

    def update(self, rows: slice, input_pos: Tensor, k: Tensor, v: Tensor, length: int) -> tuple[Tensor, Tensor]:
        # k, v: (B, H_kv, T, D) written (cast to the cache's dtype) into cache rows `rows` at input_pos (B, T);
        # returns those rows' first `length` positions, (B, H_kv, length, D), as views
        kc, vc = self.k[rows], self.v[rows]
        b = torch.arange(k.shape[0])[:, None]
        kc[b, :, input_pos] = k.transpose(1, 2).to(kc.dtype)  # index (B, T) + slice H + D -> (B, T, H, D)
        vc[b, :, input_pos] = v.transpose(1, 2).to(vc.dtype)
        return kc[:, :, :length], vc[:, :, :length]


class Attention(nn.Module):
    def __init__(self, config: ModelConfig, n_heads: int, n_kv_heads: int):
        super().__init__()
        self.n_heads, self.n_kv_heads, self.head_dim = n_heads, n_kv_heads, config.head_dim
        bias = config.attention_bias
        self.q_proj = nn.Linear(config.dim, n_heads * self.head_dim, bias=bias)
        self.k_proj = nn.Linear(config.dim, n_kv_heads * self.head_dim, bias=bias)
        self.v_proj = nn.Linear(config.dim, n_kv_heads * self.head_dim, bias=bias)
        # Llama's attention_bias covers the output projection too; Qwen2's biases stop at q, k, v
        self.o_proj = nn.Linear(n_heads * self.head_dim, config.dim, bias=bias and config.arch == "llama")
        self.kv_cache: KVCache | None = None

    def forward(self, x: Tensor, cos: Tensor, sin: Tensor, mask: Tensor | None, input_pos: Tensor | None,
                length: int, rows: slice) -> Tensor:
        B, T, _ = x.shape
        q = self.q_proj(x).view(B, T, self.n_heads, self.head_dim).transpose(1, 2)  # (B, H, T, D)
        k = self.k_proj(x).view(B, T, self.n_kv_heads, self.head_dim).transpose(1, 2)  # (B, H_kv, T, D)
        v = self.v_proj(x).view(B, T, self.n_kv_heads, self.head_dim).transpose(1, 2)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        if self.kv_cache is not None and input_pos is not None:
            # attention runs in the cache's dtype: float32 on CPU, where bf16 SDPA is ~6x slower at decode
            q, k, v = q.to(self.kv_cache.k.dtype), *self.kv_cache.update(rows, input_pos, k, v, length)
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=True).to(x.dtype)
        else:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
        return self.o_proj(y.transpose(1, 2).reshape(B, T, self.n_heads * self.head_dim))


class MLP(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.gate_proj = nn.Linear(dim, hidden, bias=False)
        self.up_proj = nn.Linear(dim, hidden, bias=False)
        self.down_proj = nn.Linear(hidden, dim, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class Block(nn.Module):
    def __init__(self, config: ModelConfig, layer: int):
        super().__init__()
        shape = config.layer(layer)
        self.input_layernorm = RMSNorm(config.dim, config.norm_eps)
        self.self_attn = Attention(config, shape.n_heads, shape.n_kv_heads)
        self.post_attention_layernorm = RMSNorm(config.dim, config.norm_eps)
        self.mlp = MLP(config.dim, shape.intermediate_size)

    def forward(self, x: Tensor, cos: Tensor, sin: Tensor, mask: Tensor | None, input_pos: Tensor | None,
                length: int, rows: slice) -> Tensor:
        x = x + self.self_attn(self.input_layernorm(x), cos, sin, mask, input_pos, length, rows)
        return x + self.mlp(self.post_attention_layernorm(x))


class Transformer(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        self.embed_tokens = nn.Embedding(config.vocab_size, config.dim)
        self.layers = nn.ModuleList(Block(config, i) for i in range(config.n_layers))
        self.norm = RMSNorm(config.dim, config.norm_eps)
        self.lm_head = nn.Linear(config.dim, config.vocab_size, bias=False)
        if config.tie_embeddings:
            self.lm_head.weight = self.embed_tokens.weight
        self.max_batch = self.max_seq_len = 0
        self._rope_cache: tuple[Tensor, Tensor] | None = None

    def rope(self, positions: Tensor) -> tuple[Tensor, Tensor]:
        """cos, sin (T, head_dim) at the given positions, from a float32 table over the whole context."""
        if self._rope_cache is None or self._rope_cache[0].shape[0] <= int(positions.max()):
            n = max(self.config.max_seq_len, int(positions.max()) + 1)
            freqs = torch.outer(torch.arange(n, dtype=torch.float32), rope_inv_freq(self.config))
            emb = torch.cat((freqs, freqs), dim=-1)
            self._rope_cache = (emb.cos(), emb.sin())
        cos, sin = self._rope_cache
        return cos[positions], sin[positions]

    def setup_caches(self, max_batch: int, max_seq_len: int, dtype: torch.dtype | None = None):
        """Preallocate KV caches; reuses them when they are already large enough."""
        cache = self.layers[0].self_attn.kv_cache if len(self.layers) else None
        # caches made under torch.inference_mode cannot be written outside it
        usable = cache is not None and (torch.is_inference_mode_enabled() or not cache.k.is_inference())
        if usable and max_batch <= self.max_batch and max_seq_len <= self.max_seq_len:
            return
        dtype = dtype or torch.float32  # see Attention.forward: float32 attention is faster on CPU
        self.max_batch, self.max_seq_len = max_batch, max_seq_len
        for block in self.layers:
            attn = block.self_attn
            attn.kv_cache = KVCache(max_batch, max_seq_len, attn.n_kv_heads, attn.head_dim, dtype)

    def clear_caches(self):
        for block in self.layers:
            block.self_attn.kv_cache = None
        self.max_batch = self.max_seq_len = 0

    def forward(self, idx: Tensor, input_pos: Tensor | None = None, slot: int = 0, last_only: bool = False) -> Tensor:
        """idx (B, T) token ids -> logits (B, T, vocab) in float32; (B, 1, vocab) with last_only.

        Without input_pos: a plain causal pass over positions 0..T-1, no cache.
        With input_pos, (T,) shared or (B, T) per sequence: writes this chunk's keys/values into cache
        rows slot..slot+B-1 at those positions; each sequence attends to its own cache up to its position.
        """
        B, T = idx.shape
        rows = slice(slot, slot + B)
        if input_pos is None:
            cos, sin = self.rope(torch.arange(T))
            mask, length = None, T
        else:
            if slot + B > self.max_batch:
                raise RuntimeError(f"cache rows {slot}..{slot + B - 1} do not exist; call setup_caches() first")
            input_pos = input_pos.expand(B, T)
            length = int(input_pos.max()) + 1
            if length > self.max_seq_len:
                raise ValueError(f"position {length - 1} is past the KV cache ({self.max_seq_len} positions)")
            cos, sin = self.rope(input_pos)  # (B, T, D)
            cos, sin = cos[:, None], sin[:, None]  # (B, 1, T, D): broadcast over heads
            mask = (torch.arange(length) <= input_pos[..., None])[:, None]  # (B, 1, T, length): only the past
        x = self.embed_tokens(idx)
        for block in self.layers:
            x = block(x, cos, sin, mask, input_pos, length, rows)
        if last_only:  # prefill needs only the next token's logits: skip the vocab-wide head elsewhere
            x = x[:, -1:]
        return self.lm_head(self.norm(x)).float()

    def num_parameters(self) -> int:
        return sum(p.numel() for p in {id(p): p for p in self.parameters()}.values())
