"""Reading GGUF files: metadata, model config, and weights dequantized through the `gguf` package."""

from __future__ import annotations

from collections import Counter
from dataclasses import replace
from functools import partial
from pathlib import Path

import numpy as np
import torch
from gguf import GGMLQuantizationType as QT, GGUFReader
from gguf.quants import dequantize

from tinythink.errors import ModelFileError
from tinythink.model.config import LayerShape, ModelConfig

ARCHITECTURES = ("llama", "qwen2", "deci")  # deci: llama.cpp's Llama with per-layer widths (pruned models)
TENSOR_TYPES = (QT.F32, QT.F16, QT.BF16, QT.Q8_0, QT.Q4_0, QT.Q4_1, QT.Q5_0, QT.Q5_1,
                QT.Q2_K, QT.Q3_K, QT.Q4_K, QT.Q5_K, QT.Q6_K)

# GGUF tensor name -> our parameter name ("{i}" is the layer)
_NAMES = {
    "token_embd.weight": "embed_tokens.weight",
    "output_norm.weight": "norm.weight",
    "output.weight": "lm_head.weight",
    "blk.{i}.attn_norm.weight": "layers.{i}.input_layernorm.weight",
    "blk.{i}.ffn_norm.weight": "layers.{i}.post_attention_layernorm.weight",
    "blk.{i}.ffn_gate.weight": "layers.{i}.mlp.gate_proj.weight",
    "blk.{i}.ffn_up.weight": "layers.{i}.mlp.up_proj.weight",
    "blk.{i}.ffn_down.weight": "layers.{i}.mlp.down_proj.weight",
    "blk.{i}.attn_output.weight": "layers.{i}.self_attn.o_proj.weight",
    "blk.{i}.attn_output.bias": "layers.{i}.self_attn.o_proj.bias",
    **{f"blk.{{i}}.attn_{x}.{p}": f"layers.{{i}}.self_attn.{x}_proj.{p}" for x in "qkv" for p in ("weight", "bias")},
}


def _f32(x) -> float:
    """A float32 metadata value as the decimal it was written from (9.99999974e-06 -> 1e-05)."""
    return float(f"{float(x):.7g}")


class GGUFFile:
    """An opened GGUF file with its metadata read; tensors are memory-mapped, not loaded."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        try:
            with open(self.path, "rb") as f:
                magic = f.read(4)
        except OSError as e:
            raise ModelFileError(self.path, f"cannot read file ({e.strerror})") from None
        if magic != b"GGUF":
            raise ModelFileError(self.path, "not a GGUF file (bad magic number)")
        try:
            self.reader = GGUFReader(self.path)
            self.metadata = {k: f.contents() for k, f in self.reader.fields.items() if not k.startswith("GGUF.")}
            # the reader keeps numpy views for every vocabulary entry (~170 MB for a 49k vocabulary): the
            # plain values are copied out now, so let them go
            self.reader.fields.clear()
        except Exception as e:  # the reader raises whatever numpy or struct raised on a short or garbled file
            raise ModelFileError(self.path, f"truncated or corrupt GGUF file ({type(e).__name__}: {e})") from None
        size = self.path.stat().st_size
        for t in self.reader.tensors:
            if t.data_offset + t.n_bytes > size or t.data.nbytes != t.n_bytes:
                raise ModelFileError(self.path, f"truncated GGUF file: tensor {t.name} runs past the end")
        self.tensors = {t.name: t for t in self.reader.tensors}
        self.arch = self.metadata.get("general.architecture")
        if self.arch not in ARCHITECTURES:
            raise ModelFileError(self.path, f"architecture {self.arch!r} is not supported "
                                            f"(supported: {', '.join(ARCHITECTURES)})")

    def get(self, key: str, default=None):
        return self.metadata.get(f"{self.arch}.{key}", default)

    def tensor_types(self) -> Counter:
        return Counter(t.tensor_type.name for t in self.reader.tensors)

    def config(self) -> ModelConfig:
        try:
            n_layers = int(self.get("block_count"))
            dim = int(self.get("embedding_length"))
            heads = self.get("attention.head_count")
            first_heads = int(heads[0] if isinstance(heads, list) else heads)
            head_dim = int(self.get("attention.key_length", dim // first_heads))
            shapes = []
            for i in range(n_layers):  # per-layer widths come from the tensors themselves (pruned models)
                q, k = self.tensors[f"blk.{i}.attn_q.weight"], self.tensors[f"blk.{i}.attn_k.weight"]
                gate = self.tensors[f"blk.{i}.ffn_gate.weight"]
                shapes.append(LayerShape(int(q.shape[1]) // head_dim, int(k.shape[1]) // head_dim, int(gate.shape[1])))
            vocab = int(self.tensors["token_embd.weight"].shape[1])
        except (KeyError, TypeError, ValueError) as e:
            raise ModelFileError(self.path, f"incomplete model: missing or invalid {e}") from None
        return ModelConfig(
            vocab_size=vocab, dim=dim, n_layers=n_layers,
            n_heads=shapes[0].n_heads, n_kv_heads=shapes[0].n_kv_heads, intermediate_size=shapes[0].intermediate_size,
            head_dim=head_dim, max_seq_len=int(self.get("context_length", 2048)),
            rope_theta=_f32(self.get("rope.freq_base", 10000.0)), rope_scaling=self._rope_scaling(),
            norm_eps=_f32(self.get("attention.layer_norm_rms_epsilon", 1e-5)),
            attention_bias="blk.0.attn_q.bias" in self.tensors, tie_embeddings="output.weight" not in self.tensors,
            arch=self._hf_arch(), layer_shapes=tuple(shapes),
        )

    def _hf_arch(self) -> str:
        """The Hugging Face model type to export as: a deci file with q/k/v biases but none on the output
        projection is a pruned Qwen2."""
        if self.arch != "deci":
            return self.arch
        qwen2 = "blk.0.attn_q.bias" in self.tensors and "blk.0.attn_output.bias" not in self.tensors
        return "qwen2" if qwen2 else "llama"

    def _rope_scaling(self) -> dict | None:
        kind = self.get("rope.scaling.type")
        if kind == "linear":
            return {"rope_type": "linear", "factor": float(self.get("rope.scaling.factor"))}
        if kind not in (None, "none"):
            raise ModelFileError(self.path, f"rope scaling {kind!r} is not supported")
        if "rope_freqs.weight" in self.tensors:
            # Llama 3.x stores its frequency factors as a tensor; find the llama3 parameters that produce them
            return self._llama3_scaling(self.tensor("rope_freqs.weight"))
        return None

    def _llama3_scaling(self, factors: torch.Tensor) -> dict:
        from tinythink.model.transformer import rope_inv_freq

        plain = ModelConfig(vocab_size=1, dim=2 * factors.numel(), n_layers=1, n_heads=1, n_kv_heads=1,
                            intermediate_size=1, rope_theta=float(self.get("rope.freq_base", 10000.0)))
        original = int(self.get("rope.scaling.original_context_length", 8192))
        for factor in (8.0, 16.0, 32.0, 4.0, 2.0):
            scaling = {"rope_type": "llama3", "factor": factor, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                       "original_max_position_embeddings": original}
            scaled = replace(plain, rope_scaling=scaling)
            if torch.allclose(rope_inv_freq(plain) / rope_inv_freq(scaled), factors, rtol=1e-3):
                return scaling
        raise ModelFileError(self.path, "rope_freqs.weight does not match any known Llama-3 rope scaling")

    def tensor(self, name: str, dtype: torch.dtype = torch.float32, rows_per_chunk: int = 4096) -> torch.Tensor:
        """One tensor, dequantized, in PyTorch's (out_features, in_features) order.

        Large tensors are dequantized a block of rows at a time straight into the result, so a 49k-row
        embedding never has several float32 copies alive at once.
        """
        t = self.tensors[name]
        if t.tensor_type not in TENSOR_TYPES:
            raise ModelFileError(self.path, f"tensor {name} has type {t.tensor_type.name}, which is not supported "
                                            f"(supported: {', '.join(q.name for q in TENSOR_TYPES)})")
        shape = tuple(int(d) for d in reversed(t.shape))
        data = np.asarray(t.data).reshape(shape[0], -1) if len(shape) > 1 else np.asarray(t.data)[None]
        out = torch.empty((data.shape[0], shape[-1]), dtype=dtype)
        for lo in range(0, data.shape[0], rows_per_chunk):
            rows = data[lo:lo + rows_per_chunk]
            block = rows.astype(np.float32) if t.tensor_type == QT.F32 else dequantize(rows, t.tensor_type)
            out[lo:lo + rows_per_chunk] = torch.from_numpy(np.ascontiguousarray(block, dtype=np.float32))
        return out.reshape(shape)

    def named_tensors(self, config: ModelConfig):
        """(our parameter name, loader) pairs; `loader(dtype)` dequantizes that one tensor when called."""
        for i in range(config.n_layers):
            for src, dst in _NAMES.items():
                if "{i}" in src and src.format(i=i) in self.tensors:
                    yield dst.format(i=i), partial(self._load, src.format(i=i), config, i)
        for src, dst in _NAMES.items():
            if "{i}" not in src and src in self.tensors:
                yield dst, partial(self._load, src, config, None)

    def state_dict(self, config: ModelConfig, dtype: torch.dtype = torch.float32) -> dict[str, torch.Tensor]:
        return {name: load(dtype) for name, load in self.named_tensors(config)}

    def _load(self, name: str, config: ModelConfig, layer: int | None, dtype: torch.dtype) -> torch.Tensor:
        w = self.tensor(name, dtype)
        if self.arch in ("llama", "deci") and layer is not None and name.split(".")[-2] in ("attn_q", "attn_k"):
            # llama.cpp's converter interleaves the two rotary halves of each q/k head; undo that
            shape = config.layer(layer)
            heads = shape.n_heads if "attn_q" in name else shape.n_kv_heads
            w = w.reshape(heads, config.head_dim // 2, 2, *w.shape[1:]).transpose(1, 2).reshape(w.shape)
        return w
