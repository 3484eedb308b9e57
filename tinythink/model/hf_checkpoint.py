"""Hugging Face model directories: config.json + safetensors weights, in and out. Never pickles."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from tinythink.errors import ModelFileError
from tinythink.model.config import LayerShape, ModelConfig

MODEL_TYPES = ("llama", "qwen2")
_ARCHITECTURES = {"llama": "LlamaForCausalLM", "qwen2": "Qwen2ForCausalLM"}


def _read_config(path: Path) -> dict:
    file = path / "config.json"
    if not file.is_file():
        raise ModelFileError(path, "not a model directory (no config.json)")
    try:
        return json.loads(file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ModelFileError(file, f"invalid JSON ({e})") from None


def _weight_files(path: Path) -> list[Path]:
    index = path / "model.safetensors.index.json"
    if index.is_file():
        try:
            names = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        except (json.JSONDecodeError, KeyError, AttributeError) as e:
            raise ModelFileError(index, f"invalid shard index ({e})") from None
        return [path / n for n in names]
    if (path / "model.safetensors").is_file():
        return [path / "model.safetensors"]
    if any(path.glob("*.bin")) or any(path.glob("*.pt")) or any(path.glob("*.pth")):
        raise ModelFileError(path, "only pickle-based weights (.bin/.pt) found; tinythink never unpickles: "
                                   "convert them to safetensors")
    raise ModelFileError(path, "no model.safetensors or model.safetensors.index.json")


def load_state_dict(path: Path) -> dict[str, torch.Tensor]:
    sd = {}
    for file in _weight_files(path):
        if not file.is_file():
            raise ModelFileError(file, "weight shard listed in the index is missing")
        try:
            with safe_open(str(file), framework="pt") as f:  # memory-mapped: no whole-file buffer
                sd.update({k: f.get_tensor(k) for k in f.keys()})
        except (SafetensorError, OSError, ValueError) as e:
            raise ModelFileError(file, f"truncated or corrupt safetensors file ({e})") from None
    return {k.removeprefix("model."): v for k, v in sd.items()}


def config_from_hf(path: Path, sd: dict[str, torch.Tensor]) -> ModelConfig:
    c = _read_config(path)
    model_type = c.get("model_type")
    if model_type not in MODEL_TYPES:
        raise ModelFileError(path, f"model_type {model_type!r} is not supported (supported: {', '.join(MODEL_TYPES)})")
    if c.get("hidden_act", "silu") != "silu" or c.get("mlp_bias") or c.get("use_sliding_window"):
        raise ModelFileError(path, "unsupported variant (needs silu activation, no MLP bias, no sliding window)")
    rope = c.get("rope_parameters") or {}
    scaling = c.get("rope_scaling") or ({k: v for k, v in rope.items() if k != "rope_theta"} if rope else None)
    if scaling and scaling.get("rope_type", scaling.get("type")) == "default":
        scaling = None
    try:
        dim, n_heads, n_layers = c["hidden_size"], c["num_attention_heads"], c["num_hidden_layers"]
        head_dim = c.get("head_dim") or dim // n_heads
        shapes = tuple(  # per-layer widths from the weights themselves, so pruned models load too
            LayerShape(sd[f"layers.{i}.self_attn.q_proj.weight"].shape[0] // head_dim,
                       sd[f"layers.{i}.self_attn.k_proj.weight"].shape[0] // head_dim,
                       sd[f"layers.{i}.mlp.gate_proj.weight"].shape[0])
            for i in range(n_layers))
        return ModelConfig(
            vocab_size=c["vocab_size"], dim=dim, n_layers=n_layers, n_heads=n_heads,
            n_kv_heads=c.get("num_key_value_heads", n_heads), intermediate_size=c["intermediate_size"],
            head_dim=head_dim, max_seq_len=c.get("max_position_embeddings", 2048),
            rope_theta=rope.get("rope_theta", c.get("rope_theta", 10000.0)), rope_scaling=scaling,
            norm_eps=c.get("rms_norm_eps", 1e-6), attention_bias=c.get("attention_bias", model_type == "qwen2"),
            tie_embeddings=c.get("tie_word_embeddings", True), arch=model_type, layer_shapes=shapes,
            quantization=c.get("tinythink_quantization"),
        )
    except KeyError as e:
        raise ModelFileError(path, f"config.json or weights lack {e}") from None


def hf_config(config: ModelConfig, dtype: torch.dtype, bos_id: int | None, eos_ids: list[int]) -> dict:
    """The config.json transformers reads back to the same model."""
    c = {
        "architectures": [_ARCHITECTURES[config.arch]], "model_type": config.arch,
        "vocab_size": config.vocab_size, "hidden_size": config.dim, "num_hidden_layers": config.n_layers,
        "num_attention_heads": config.n_heads, "num_key_value_heads": config.n_kv_heads,
        "intermediate_size": config.intermediate_size, "head_dim": config.head_dim,
        "max_position_embeddings": config.max_seq_len, "rope_theta": config.rope_theta,
        "rope_scaling": config.rope_scaling, "rms_norm_eps": config.norm_eps, "hidden_act": "silu",
        "tie_word_embeddings": config.tie_embeddings, "torch_dtype": str(dtype).removeprefix("torch."),
        "bos_token_id": bos_id, "eos_token_id": eos_ids[0] if len(eos_ids) == 1 else eos_ids,
    }
    if config.arch == "llama":
        c.update(attention_bias=config.attention_bias, mlp_bias=False)
    if config.quantization:
        # tinythink's own weight format: transformers cannot load these weights
        c["tinythink_quantization"] = config.quantization
    if not config.uniform:
        # transformers' configs have one width for every layer; record ours so tinythink can read it back
        c["tinythink_layer_shapes"] = [vars(config.layer(i)) for i in range(config.n_layers)]
    return c


def save_hf_dir(model: torch.nn.Module, path: Path, bos_id: int | None, eos_ids: list[int]):
    """Write config.json, generation_config.json and model.safetensors (tied weights stored once)."""
    path.mkdir(parents=True, exist_ok=True)
    config: ModelConfig = model.config
    dtype = model.embed_tokens.weight.dtype
    sd = {("" if k.startswith("lm_head") else "model.") + k: v.contiguous() for k, v in model.state_dict().items()
          if not (config.tie_embeddings and k == "lm_head.weight")}
    save_file(sd, str(path / "model.safetensors"), metadata={"format": "pt"})
    (path / "config.json").write_text(json.dumps(hf_config(config, dtype, bos_id, eos_ids), indent=2))
    gen = {"bos_token_id": bos_id, "eos_token_id": eos_ids[0] if len(eos_ids) == 1 else eos_ids}
    (path / "generation_config.json").write_text(json.dumps(gen, indent=2))
