"""Writing a model as a GGUF file that llama.cpp (and Ollama, LM Studio) loads.

Uniform models go out as llama.cpp's `llama` or `qwen2` architecture; models whose layers differ in width (pruned)
as `deci`, whose head, KV-head and FFN counts are per-layer arrays. `llama` and `deci` rotate q/k in llama.cpp's
interleaved order (as its converter permutes them; q/k biases too), `qwen2` in Hugging Face's. The tokenizer and
chat template go into the metadata. Tensor types: f16, q8_0, q4_0 or q4_1 for the projections (norms and biases
stay F32; with q4_*, the embeddings are Q8_0, as llama.cpp's own files have them); rows whose length does not fit
a type's 32-weight blocks fall back to F16, as llama.cpp's quantizer does. A model tinythink holds as int4 in
groups of 32 goes to q4_1 without requantizing: both are a scale and a minimum per 32 weights.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch
from gguf import GGMLQuantizationType as QT, GGUFWriter
from gguf.quants import quantize

from tinythink.errors import TinythinkError
from tinythink.model.config import ModelConfig
from tinythink.model.quantize import Int4Linear, Int8Linear

TYPES = {"f16": QT.F16, "q8_0": QT.Q8_0, "q4_0": QT.Q4_0, "q4_1": QT.Q4_1}
_LAYER_NAMES = {
    "input_layernorm.weight": "attn_norm.weight", "post_attention_layernorm.weight": "ffn_norm.weight",
    "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up", "mlp.down_proj": "ffn_down",
}


def architecture(config: ModelConfig) -> str:
    if config.uniform:
        return config.arch
    return "deci"


def check_exportable(config: ModelConfig):
    scaling = (config.rope_scaling or {}).get("rope_type")
    if scaling not in (None, "linear", "llama3"):
        raise TinythinkError(f"llama.cpp cannot load rope scaling {scaling!r} from tinythink's export")


def _permute(w: torch.Tensor, heads: int) -> torch.Tensor:
    """Hugging Face's rotary halves -> llama.cpp's interleaved pairs, per head (as its converter does)."""
    return w.reshape(heads, 2, w.shape[0] // heads // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def _q4_1_blocks(module: Int4Linear, rows: torch.Tensor | None) -> np.ndarray:
    """An int4 layer in groups of 32 as Q4_1 blocks (fp16 scale, fp16 minimum, 16 bytes of nibbles: weight j in
    the low nibble of byte j, weight j + 16 in the high one), without requantizing."""
    codes = module.codes()  # (N, K) 0..15
    sm = module.scales_mins.float().transpose(0, 1)  # (N, K/32, 2)
    if rows is not None:
        codes, sm = codes[rows], sm[rows]
    N, K = codes.shape
    q = codes.reshape(N, K // 32, 32).to(torch.uint8)
    packed = (q[..., :16] | q[..., 16:] << 4).numpy()  # (N, K/32, 16)
    halves = sm.to(torch.float16).numpy().view(np.uint8).reshape(N, K // 32, 4)
    return np.concatenate([halves, packed], axis=-1).reshape(N, -1)


def _tensor_data(weight: torch.Tensor, kind: QT) -> tuple[np.ndarray, QT]:
    w = weight.detach().float()
    if w.ndim == 1 or kind == QT.F32:
        return w.numpy().astype(np.float32), QT.F32
    if kind == QT.F16 or w.shape[-1] % 32:
        return w.numpy().astype(np.float16), QT.F16
    return quantize(w.numpy(), kind), kind


def _float_weight(module) -> torch.Tensor:
    return module.dequantize() if isinstance(module, (Int8Linear, Int4Linear)) else module.weight


def write(model, tokenizer, path: Path, kind: str = "f16", name: str = "model", license: str | None = None,
          progress: bool = True) -> Path:
    if kind not in TYPES:
        raise TinythinkError(f"unknown GGUF type {kind!r} (choose from {', '.join(TYPES)})")
    config: ModelConfig = model.config
    check_exportable(config)
    arch = architecture(config)
    interleave = arch in ("llama", "deci")
    target = TYPES[kind]
    w = GGUFWriter(str(path), arch)
    w.add_name(name)
    if license:
        w.add_license(license)
    w.add_context_length(config.max_seq_len)
    w.add_embedding_length(config.dim)
    w.add_block_count(config.n_layers)
    shapes = [config.layer(i) for i in range(config.n_layers)]
    per_layer = arch == "deci"
    w.add_feed_forward_length([s.intermediate_size for s in shapes] if per_layer else config.intermediate_size)
    w.add_head_count([s.n_heads for s in shapes] if per_layer else config.n_heads)
    w.add_head_count_kv([s.n_kv_heads for s in shapes] if per_layer else config.n_kv_heads)
    w.add_key_length(config.head_dim)
    w.add_value_length(config.head_dim)
    w.add_rope_dimension_count(config.head_dim)
    w.add_rope_freq_base(config.rope_theta)
    w.add_layer_norm_rms_eps(config.norm_eps)
    w.add_vocab_size(config.vocab_size)
    w.add_file_type({"f16": 1, "q8_0": 7, "q4_0": 2, "q4_1": 3}[kind])
    scaling = config.rope_scaling or {}
    if scaling.get("rope_type") == "linear":
        w.add_rope_scaling_type(__import__("gguf").RopeScalingType.LINEAR)
        w.add_rope_scaling_factor(scaling["factor"])
    for key, value in tokenizer.gguf_metadata().items():
        _add_field(w, key, value)
    w.add_quantization_version(2)

    def add(gguf_name: str, tensor: torch.Tensor, kind_here: QT):
        data, used = _tensor_data(tensor, kind_here)
        w.add_tensor(gguf_name, data, raw_dtype=used if used not in (QT.F32, QT.F16) else None)

    embed = model.embed_tokens.weight if hasattr(model.embed_tokens, "weight") else None
    if embed is None:
        raise TinythinkError("export the model as loaded, not made ready for inference")
    add("token_embd.weight", embed, QT.Q8_0 if target in (QT.Q4_0, QT.Q4_1) else target)
    if scaling.get("rope_type") == "llama3":
        from dataclasses import replace

        from tinythink.model.transformer import rope_inv_freq
        plain = rope_inv_freq(replace(config, rope_scaling=None))
        add("rope_freqs.weight", plain / rope_inv_freq(config), QT.F32)
    for i, block in enumerate(model.layers):
        for ours, theirs in _LAYER_NAMES.items():
            if ours.endswith("weight"):
                add(f"blk.{i}.{theirs}", block.get_submodule(ours.removesuffix(".weight")).weight, QT.F32)
                continue
            module = block.get_submodule(ours)
            heads = {"attn_q": shapes[i].n_heads, "attn_k": shapes[i].n_kv_heads}.get(theirs)
            order = None
            if interleave and heads:
                order = _permute(torch.arange(module.out_features), heads)
            if isinstance(module, Int4Linear) and module.group_size == 32 and target == QT.Q4_1:
                w.add_tensor(f"blk.{i}.{theirs}.weight", _q4_1_blocks(module, order), raw_dtype=QT.Q4_1)
            else:
                weight = _float_weight(module)
                add(f"blk.{i}.{theirs}.weight", weight if order is None else weight[order], target)
            if module.bias is not None:
                bias = module.bias.detach().float()
                add(f"blk.{i}.{theirs}.bias", bias if order is None else bias[order], QT.F32)
        if progress:
            print(f"\rwriting {path.name}: layer {i + 1}/{config.n_layers}", end="", file=sys.stderr, flush=True)
    if progress:
        print(file=sys.stderr)
    add("output_norm.weight", model.norm.weight, QT.F32)
    if not config.tie_embeddings:
        head = model.lm_head
        add("output.weight", _float_weight(head), QT.Q8_0 if target in (QT.Q4_0, QT.Q4_1) else target)
    path.parent.mkdir(parents=True, exist_ok=True)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def _add_field(w: GGUFWriter, key: str, value):
    if isinstance(value, bool):
        w.add_bool(key, value)
    elif isinstance(value, int):
        w.add_uint32(key, value)
    elif isinstance(value, str):
        w.add_string(key, value)
    else:
        w.add_array(key, value)
