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
from torch.utils.checkpoint import checkpoint

from tinythink.model import decode_attention
from tinythink.model.config import ModelConfig
from tinythink.model.kv_cache import KV_DTYPE, KVCache
from tinythink.model.packed_batch import Packed


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
    # x: (B, T, H, D); cos, sin: (T, 1, D). In x's dtype, as Hugging Face does.
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
        self.qkv_proj: nn.Module | None = None  # q, k and v in one layer, for inference (model/inference.py)
        self.kv_cache: KVCache | None = None

    def forward(self, x: Tensor, cos: Tensor, sin: Tensor, packed: Packed | None, mask: Tensor | None = None) -> Tensor:
        B, T, _ = x.shape
        H, H_kv, D = self.n_heads, self.n_kv_heads, self.head_dim
        if self.qkv_proj is not None:
            qkv = self.qkv_proj(x)
        else:
            qkv = torch.cat([self.q_proj(x), self.k_proj(x), self.v_proj(x)], dim=-1)  # (B, T, (H + 2 H_kv) D)
        qk = apply_rope(qkv[..., :(H + H_kv) * D].view(B, T, H + H_kv, D), cos, sin)  # q's and k's heads at once
        q, k = qk.split([H, H_kv], dim=2)  # (B, T, H, D), (B, T, H_kv, D)
        v = qkv[..., (H + H_kv) * D:].view(B, T, H_kv, D)
        if packed is None:  # mask (B, 1, T, T): causal within each packed document
            y = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), attn_mask=mask,
                                               is_causal=mask is None, enable_gqa=True).transpose(1, 2)
        else:
            y = self._packed_attention(q[0], k[0], v[0], packed)[None].to(x.dtype)
        return self.o_proj(y.reshape(B, T, self.n_heads * self.head_dim))

    def _packed_attention(self, q: Tensor, k: Tensor, v: Tensor, packed: Packed) -> Tensor:
        # q: (N, H, D), k, v: (N, H_kv, D); kept in the cache's dtype (KV_DTYPE), attended to in float32
        cache = self.kv_cache
        cache.k[packed.token_slots, :, packed.positions] = k.to(cache.k.dtype)  # index (N,) + H + index (N,) + D
        cache.v[packed.token_slots, :, packed.positions] = v.to(cache.v.dtype)
        q = q.float()
        y = torch.empty_like(q)
        if packed.single and decode_attention.library() and decode_attention.supports(q, cache.k):
            y[packed.decode_tokens] = decode_attention.decode_attention(
                q[packed.decode_tokens], cache.k, cache.v, packed.decode_slots, packed.decode_lengths)
        else:
            for tokens, rows, lo, hi, L, mask in packed.decoding:
                qb = q.new_zeros(hi - lo, self.n_heads, 1, self.head_dim)
                qb[rows] = q[tokens][:, :, None]  # (hi - lo, H, 1, D): one row per cache row of the range
                yb = F.scaled_dot_product_attention(qb, cache.k[lo:hi, :, :L].float(), cache.v[lo:hi, :, :L].float(),
                                                    attn_mask=mask, enable_gqa=True)
                y[tokens] = yb[rows, :, 0]
        for lo, slot, start, n, mask in packed.others:
            qi = q[lo:lo + n].transpose(0, 1)[None]  # (1, H, n, D)
            ki, vi = (c[slot:slot + 1, :, :start + n].float() for c in (cache.k, cache.v))  # (1, H_kv, L, D)
            yi = F.scaled_dot_product_attention(qi, ki, vi, attn_mask=mask, is_causal=mask is None, enable_gqa=True)
            y[lo:lo + n] = yi[0].transpose(0, 1)  # (n, H, D)
        return y


class MLP(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.gate_proj = nn.Linear(dim, hidden, bias=False)
        self.up_proj = nn.Linear(dim, hidden, bias=False)
        self.down_proj = nn.Linear(hidden, dim, bias=False)
        self.gate_up_proj: nn.Module | None = None  # gate and up in one layer, for inference

    def forward(self, x: Tensor) -> Tensor:
        if self.gate_up_proj is not None:
            gate, up = self.gate_up_proj(x).chunk(2, dim=-1)
        else:
            gate, up = self.gate_proj(x), self.up_proj(x)
        return self.down_proj(F.silu(gate) * up)


class Block(nn.Module):
    def __init__(self, config: ModelConfig, layer: int):
        super().__init__()
        shape = config.layer(layer)
        self.input_layernorm = RMSNorm(config.dim, config.norm_eps)
        self.self_attn = Attention(config, shape.n_heads, shape.n_kv_heads)
        self.post_attention_layernorm = RMSNorm(config.dim, config.norm_eps)
        self.mlp = MLP(config.dim, shape.intermediate_size)

    def forward(self, x: Tensor, cos: Tensor, sin: Tensor, packed: Packed | None, mask: Tensor | None = None) -> Tensor:
        x = x + self.self_attn(self.input_layernorm(x), cos, sin, packed, mask)
        return x + self.mlp(self.post_attention_layernorm(x))


def _embedding(n: int, dim: int) -> nn.Embedding:
    if torch.empty(0).is_meta:  # building a model to load weights into: no random init, which on meta tensors
        return nn.Embedding(n, dim, _weight=torch.empty(n, dim))  # imports torch's compiler (~800 modules, ~65 MB)
    return nn.Embedding(n, dim)


class Transformer(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        self.embed_tokens = _embedding(config.vocab_size, config.dim)
        self.layers = nn.ModuleList(Block(config, i) for i in range(config.n_layers))
        self.norm = RMSNorm(config.dim, config.norm_eps)
        self.lm_head = nn.Linear(config.dim, config.vocab_size, bias=False)
        if config.tie_embeddings:
            self.lm_head.weight = self.embed_tokens.weight
        self.max_batch = self.max_seq_len = 0
        self.kv_dtype = KV_DTYPE  # float32: batches then reproduce each sequence alone to the last digit
        self.decode_layers = None  # decoding steps in one kernel call, for inference (model/decode_layers.py)
        self.checkpointing = False  # training: recompute each block in the backward pass instead of keeping it
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
        """Preallocate KV caches (in `dtype`, by default self.kv_dtype); reuses them when they are large enough."""
        dtype = dtype or self.kv_dtype
        cache = self.layers[0].self_attn.kv_cache if len(self.layers) else None
        # caches made under torch.inference_mode cannot be written outside it
        usable = cache is not None and (torch.is_inference_mode_enabled() or not cache.k.is_inference())
        if usable and cache.k.dtype == dtype and max_batch <= self.max_batch and max_seq_len <= self.max_seq_len:
            return
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
        With input_pos, (T,) shared or (B, T) per sequence, consecutive positions: writes this chunk's keys and
        values into cache rows slot..slot+B-1 at those positions; each sequence attends to its own cache.
        """
        B, T = idx.shape
        if input_pos is None:
            cos, sin = self.rope(torch.arange(T))
            return self._logits(self._hidden(idx, cos[:, None], sin[:, None], None), last_only)
        input_pos = input_pos.expand(B, T)
        if T > 1 and not bool((input_pos.diff(dim=1) == 1).all()):
            raise ValueError("input_pos must be consecutive positions in each row")
        packed = Packed(list(range(slot, slot + B)), input_pos[:, 0].tolist(), [T] * B)
        at = packed.ends - 1 if last_only else None
        return self.forward_packed(idx.reshape(1, -1), packed, at).view(B, 1 if last_only else T, -1)

    def forward_packed(self, idx: Tensor, packed: Packed, logits_at: Tensor | None = None) -> Tensor:
        """idx (1, N): the packed sequences' tokens -> logits (N, vocab) in float32, or only at the token
        indices `logits_at`. Writes every token's keys and values into the KV cache."""
        if max(packed.slots) >= self.max_batch:
            raise RuntimeError(f"cache row {max(packed.slots)} does not exist; call setup_caches() first")
        length = max(s + n for s, n in zip(packed.starts, packed.lengths))
        if length > self.max_seq_len:
            raise ValueError(f"position {length - 1} is past the KV cache ({self.max_seq_len} positions)")
        cos, sin = self.rope(packed.positions)  # (N, D)
        if self.decode_layers is not None and self.decode_layers.runs(packed):
            x = self.decode_layers(self.embed(idx[0]), cos, sin, packed)  # (N, dim)
        else:
            x = self._hidden(idx, cos[:, None], sin[:, None], packed)[0]
        return self._logits(x if logits_at is None else x[logits_at], False)

    def hidden(self, idx: Tensor, documents: Tensor | None = None) -> Tensor:
        """Training pass: idx (B, T) -> the last block's output (B, T, dim), before the final norm. With documents
        (B, T), see document_attention."""
        if documents is None:
            cos, sin = self.rope(torch.arange(idx.shape[1]))
            return self._hidden(idx, cos[:, None], sin[:, None], None)
        return self._hidden(idx, *self.document_attention(documents))

    def document_attention(self, documents: Tensor) -> tuple[Tensor, Tensor, None, Tensor]:
        """documents (B, T), non-decreasing in each row: which packed document each token is in. Positions restart
        at each document and no token attends across documents: cos, sin (B, T, 1, D), packed None, mask (B, 1, T, T)."""
        T = documents.shape[1]
        at = torch.arange(T).expand_as(documents)
        starts = torch.where(F.pad(documents.diff(dim=1), (1, 0), value=1) != 0, at, 0).cummax(dim=1).values
        cos, sin = self.rope(at - starts)
        same = documents[:, :, None] == documents[:, None, :]
        return cos[:, :, None], sin[:, :, None], None, (same & torch.ones(T, T, dtype=torch.bool).tril())[:, None]

    def logits(self, hidden: Tensor) -> Tensor:
        return self._logits(hidden, False)

    def embed(self, idx: Tensor) -> Tensor:
        """Token embeddings in the dtype the layers run in (a quantized model's untied table stays in bfloat16)."""
        return self.embed_tokens(idx).to(self.norm.weight.dtype)

    def _hidden(self, idx: Tensor, cos: Tensor, sin: Tensor, packed: Packed | None, mask: Tensor | None = None) -> Tensor:
        x = self.embed(idx)
        for block in self.layers:
            if self.checkpointing and torch.is_grad_enabled():
                x = checkpoint(block, x, cos, sin, packed, mask, use_reentrant=False)
            else:
                x = block(x, cos, sin, packed, mask)
        return x

    def _logits(self, x: Tensor, last_only: bool) -> Tensor:
        if last_only:  # prefill needs only the next token's logits: skip the vocab-wide head elsewhere
            x = x[:, -1:]
        return self.lm_head(self.norm(x)).float()

    def num_parameters(self) -> int:
        """Weights as trained, whatever form they are held in now (quantized, packed, tied once)."""
        with torch.device("meta"):
            return sum(p.numel() for p in Transformer(self.config).parameters())
