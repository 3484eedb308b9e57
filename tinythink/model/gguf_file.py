"""Reading GGUF files: metadata, model config, and weights dequantized a tensor at a time.

The header is parsed here rather than by the `gguf` package's GGUFReader, which builds a numpy view for every
part of every field (a 151,936-token vocabulary and its merges: ~12 s and ~0.5 GB for Qwen2.5); tensors are read
with plain file reads, not memory-mapped, so that a file's pages never count in the process's memory while its
weights are converted (llama.cpp maps them because it runs them as they are).
Layout (https://github.com/ggml-org/ggml/blob/master/docs/gguf.md): magic, version, tensor count, key count;
the keys and values; each tensor's name, shape, type and offset; the tensors' data, aligned.
"""

from __future__ import annotations

import mmap
import struct
from collections import Counter
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path

import numpy as np
import torch
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType as QT

from tinythink.errors import ModelFileError
from tinythink.model import weight_formats
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


@dataclass(frozen=True)
class TensorInfo:
    name: str
    shape: tuple[int, ...]  # GGUF's order: the fastest-varying dimension first
    tensor_type: QT
    offset: int  # in the file
    n_bytes: int


# value type id -> struct format (8: string, 9: array)
_SCALARS = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}


class _Header:
    """A cursor over a GGUF file's header bytes; running off the end raises struct.error or IndexError."""

    def __init__(self, data):
        self.data, self.at = data, 0

    def scalar(self, fmt: str):
        (value,) = struct.unpack_from("<" + fmt, self.data, self.at)
        self.at += struct.calcsize(fmt)
        return value

    def string(self) -> str:
        n = self.scalar("Q")
        if self.at + n > len(self.data):
            raise IndexError("string past the end")
        text = bytes(self.data[self.at:self.at + n]).decode("utf-8", errors="replace")
        self.at += n
        return text

    def value(self, kind: int):
        if kind == 8:
            return self.string()
        if kind == 9:
            item, n = self.scalar("I"), self.scalar("Q")
            if item == 8:
                return [self.string() for _ in range(n)]
            if item in _SCALARS:
                fmt = "<" + _SCALARS[item]
                size = struct.calcsize(fmt)
                if self.at + n * size > len(self.data):
                    raise IndexError("array past the end")
                values = np.frombuffer(self.data, np.dtype(fmt), n, self.at).tolist()
                self.at += n * size
                return values
            return [self.value(item) for _ in range(n)]  # arrays of arrays
        if kind in _SCALARS:
            return self.scalar(_SCALARS[kind])
        raise ValueError(f"unknown value type {kind}")


def read_header(path: Path) -> tuple[dict, dict[str, TensorInfo]]:
    """(metadata, tensors) of a GGUF file (ValueError, struct.error or IndexError on a garbled one)."""
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
        h = _Header(data)
        magic, version = h.scalar("4s"), h.scalar("I")
        if magic != b"GGUF" or version not in (2, 3):
            raise ValueError(f"GGUF version {version} (this reader knows 2 and 3)")
        n_tensors, n_keys = h.scalar("Q"), h.scalar("Q")
        if n_tensors > len(data) // 24 or n_keys > len(data) // 12:  # each takes at least that many bytes
            raise ValueError(f"{n_tensors} tensors and {n_keys} keys cannot fit in {len(data)} bytes")
        metadata = {}
        for _ in range(n_keys):
            key = h.string()
            metadata[key] = h.value(h.scalar("I"))
        infos = []
        for _ in range(n_tensors):
            name, dims = h.string(), h.scalar("I")
            shape = tuple(h.scalar("Q") for _ in range(dims))
            infos.append((name, shape, QT(h.scalar("I")), h.scalar("Q")))
        align = int(metadata.get("general.alignment", 32))
        start = (h.at + align - 1) // align * align
    tensors = {}
    for name, shape, qtype, offset in infos:
        per_block, block_bytes = GGML_QUANT_SIZES[qtype]
        tensors[name] = TensorInfo(name, shape, qtype, start + offset, int(np.prod(shape)) // per_block * block_bytes)
    return metadata, tensors


class GGUFFile:
    """An opened GGUF file with its metadata read; tensors are read when asked for."""

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
            self.metadata, self.tensors = read_header(self.path)
        except (ValueError, struct.error, IndexError, KeyError, OverflowError) as e:
            raise ModelFileError(self.path, f"truncated or corrupt GGUF file ({type(e).__name__}: {e})") from None
        size = self.path.stat().st_size
        for t in self.tensors.values():
            if t.offset + t.n_bytes > size:
                raise ModelFileError(self.path, f"truncated GGUF file: tensor {t.name} runs past the end")
        self.arch = self.metadata.get("general.architecture")
        if self.arch not in ARCHITECTURES:
            raise ModelFileError(self.path, f"architecture {self.arch!r} is not supported "
                                            f"(supported: {', '.join(ARCHITECTURES)})")

    def get(self, key: str, default=None):
        return self.metadata.get(f"{self.arch}.{key}", default)

    def tensor_types(self) -> Counter:
        return Counter(t.tensor_type.name for t in self.tensors.values())

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

    def raw(self, t: TensorInfo) -> np.ndarray:
        """A tensor's bytes, read from the file (uint8)."""
        data = np.empty(t.n_bytes, dtype=np.uint8)
        with open(self.path, "rb") as f:
            f.seek(t.offset)
            if f.readinto(memoryview(data)) != t.n_bytes:
                raise ModelFileError(self.path, f"truncated GGUF file: tensor {t.name} runs past the end")
        return data

    def tensor(self, name: str, dtype: torch.dtype = torch.float32, rows_per_chunk: int = 4096):
        """One tensor, dequantized, in PyTorch's (out_features, in_features) order; with dtype torch.int8, a matrix
        quantized to int8 rows (weight_formats.quantize_int8_rows) -> (codes, float32 scales).

        Into another dtype than float32, a block of rows at a time: a 151,936-row head never has a whole float32
        copy alive beside its result.
        """
        t = self.tensors[name]
        if t.tensor_type not in TENSOR_TYPES:
            raise ModelFileError(self.path, f"tensor {name} has type {t.tensor_type.name}, which is not supported "
                                            f"(supported: {', '.join(q.name for q in TENSOR_TYPES)})")
        shape = tuple(reversed(t.shape))
        rows, cols = int(np.prod(shape[:-1])), shape[-1]
        raw = self.raw(t).reshape(rows, -1)
        out = torch.empty((rows, cols), dtype=dtype)
        scales = torch.empty(rows) if dtype == torch.int8 else None
        chunk = rows if dtype == torch.float32 else rows_per_chunk
        for lo in range(0, rows, chunk):
            n = min(chunk, rows - lo)
            into = out[lo:lo + n] if dtype == torch.float32 else torch.empty(n, cols)
            weight_formats.dequantize(raw[lo:lo + n], t.tensor_type, n, cols, into)
            if dtype == torch.int8:
                out[lo:lo + n], scales[lo:lo + n] = weight_formats.quantize_int8_rows(into)
            elif dtype != torch.float32:
                out[lo:lo + n] = into
        return (out, scales) if dtype == torch.int8 else out.reshape(shape)

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

    def _load(self, name: str, config: ModelConfig, layer: int | None, dtype: torch.dtype):
        loaded = self.tensor(name, dtype)
        if self.arch in ("llama", "deci") and layer is not None and name.split(".")[-2] in ("attn_q", "attn_k"):
            # llama.cpp's converter interleaves the two rotary halves of each q/k head; undo that (a permutation
            # of rows: int8 rows and their scales are permuted alike)
            shape = config.layer(layer)
            heads = shape.n_heads if "attn_q" in name else shape.n_kv_heads

            def unpermute(w):
                return w.reshape(heads, config.head_dim // 2, 2, *w.shape[1:]).transpose(1, 2).reshape(w.shape)

            return tuple(map(unpermute, loaded)) if dtype == torch.int8 else unpermute(loaded)
        return loaded
