"""Loading a model by reference: weights, config and tokenizer, from a GGUF file or an HF directory."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import torch

from tinythink.errors import ModelFileError, TinythinkError
from tinythink.model.config import ModelConfig
from tinythink.model.gguf_file import GGUFFile
from tinythink.model.hf_checkpoint import config_from_hf, load_state_dict, save_hf_dir
from tinythink.model.memory import release_free_memory
from tinythink.model.native import native_bfloat16
from tinythink.model.quantize import quantize_model, quantize_tensors, run_rest_in, swap_to_quantized
from tinythink.model.registry import KNOWN_MODELS, is_adapter, resolve
from tinythink.model.transformer import Transformer
from tinythink.text.tokenizer import Tokenizer


@dataclass
class LoadedModel:
    model: Transformer
    tokenizer: Tokenizer
    path: Path
    format: str  # "gguf" or "hf"
    name: str
    file_bytes: int
    tensor_types: Counter
    license: str | None = None

    @property
    def config(self) -> ModelConfig:
        return self.model.config

    def save_hf(self, path: Path):
        eos = sorted(self.tokenizer.stop_ids)
        bos = self.tokenizer.token_id(self.tokenizer.bos_token) if self.tokenizer.bos_token else None
        save_hf_dir(self.model, path, bos, eos)
        self.tokenizer.save_hf(path)


def dtype_named(name: str) -> torch.dtype:
    """"float32", "bfloat16", or "auto": bfloat16 where the CPU computes in it natively, else float32."""
    if name == "auto":
        return torch.bfloat16 if native_bfloat16() else torch.float32
    return getattr(torch, name)


def build_model(config: ModelConfig, state_dict: dict[str, torch.Tensor], path: Path) -> Transformer:
    """Build the model around the given weights without first allocating random ones."""
    with torch.device("meta"):
        model = Transformer(config)
        if config.quantization:
            swap_to_quantized(model, config.quantization)
    if config.quantization:
        # safetensors hands out views at arbitrary offsets of its file; the CPU int8/int4 kernels crash on
        # weights not aligned as torch's allocator aligns them (seen with torch 2.13): copy just those
        state_dict = {k: v if v.data_ptr() % 64 == 0 else v.clone() for k, v in state_dict.items()}
    if config.tie_embeddings:
        state_dict = {**state_dict, "lm_head.weight": state_dict.get("embed_tokens.weight")}
    expected = set(model.state_dict())
    missing, unexpected = expected - set(state_dict), set(state_dict) - expected
    if missing or unexpected:
        problem = f"missing tensors {sorted(missing)[:4]}" if missing else f"unexpected tensors {sorted(unexpected)[:4]}"
        raise ModelFileError(path, f"weights do not match the architecture: {problem}")
    try:
        model.load_state_dict(state_dict, assign=True, strict=True)
    except RuntimeError as e:
        raise ModelFileError(path, f"weights do not match the architecture: {str(e).splitlines()[-1].strip()}") from None
    if config.tie_embeddings:
        model.lm_head.weight = model.embed_tokens.weight
    return model.eval()


def quantized_rest_dtype() -> torch.dtype:
    """What a quantized model's other weights (embeddings, norms) and activations run in: float32 where our kernels
    build, since they take float32 activations and run a whole decoding step in one call (one stream of the
    default model in int8: 95 vs 42 tokens/s with bfloat16 modules on an AVX512-BF16 EPYC; 64 rows 13% slower);
    without them, bfloat16 where the CPU computes in it natively, else float32."""
    from tinythink.model import decode_layers

    return torch.float32 if decode_layers.library() is not None else dtype_named("auto")


def load_model(ref: str, dtype: torch.dtype = torch.float32, quantize: int | None = None,
               group_size: int = 32) -> LoadedModel:
    """Load a model; with `quantize` (8 or 4 bits), its linear layers are quantized after loading.

    Quantized models (loaded or made here) run their other weights in `quantized_rest_dtype()`, whatever `dtype`
    says.
    """
    loaded = _load(ref, dtype, quantize, group_size)
    if loaded.model.config.quantization:
        run_rest_in(loaded.model, quantized_rest_dtype())
    release_free_memory()
    return loaded


def load_tokenizer(ref: str) -> Tokenizer:
    """The tokenizer alone, without the weights."""
    path = resolve(ref)
    if is_adapter(path):
        return load_tokenizer(adapter_base(path))
    if path.is_dir():
        return Tokenizer.from_hf_dir(path)
    return Tokenizer.from_gguf_metadata(GGUFFile(path).metadata, path)


def _load(ref: str, dtype: torch.dtype, quantize: int | None, group_size: int) -> LoadedModel:
    path = resolve(ref)
    if is_adapter(path):
        return _load_adapted(ref, path, dtype, quantize, group_size)
    if path.is_dir():
        sd = load_state_dict(path)
        config = config_from_hf(path, sd)
        if config.quantization:
            dtype = torch.bfloat16
        model = build_model(config, {k: v.to(dtype) if v.is_floating_point() else v for k, v in sd.items()}, path)
        if quantize:
            if config.quantization:
                raise TinythinkError(f"{path}: the model is already quantized ({config.quantization})")
            quantize_model(model, quantize, group_size)
        types = Counter(str(v.dtype).removeprefix("torch.").upper() for v in sd.values())
        size = sum(f.stat().st_size for f in path.glob("*.safetensors"))
        return LoadedModel(model, Tokenizer.from_hf_dir(path), path, "hf", path.name, size, types)
    gguf = GGUFFile(path)
    config = gguf.config()
    if quantize:  # tensor by tensor: never the whole model in float32
        sd = quantize_tensors(gguf.named_tensors(config), config, quantize, group_size)
    else:
        sd = gguf.state_dict(config, dtype)
    model = build_model(config, sd, path)
    name = ref if ref in KNOWN_MODELS else path.stem  # a short id for the API, not general.name's free text
    return LoadedModel(model, Tokenizer.from_gguf_metadata(gguf.metadata, path), path, "gguf", name,
                       path.stat().st_size, gguf.tensor_types(), gguf.metadata.get("general.license"))


def adapter_base(path: Path) -> str:
    """The base model a PEFT adapter directory names (a known model's name, or a path)."""
    try:
        base = json.loads((path / "adapter_config.json").read_text())["base_model_name_or_path"]
    except (OSError, ValueError, KeyError) as e:
        raise ModelFileError(path, f"not a readable adapter config ({e})") from None
    if base in KNOWN_MODELS or Path(base).is_absolute():
        return base
    return str(path / base) if (path / base).exists() else base


def _load_adapted(ref: str, path: Path, dtype: torch.dtype, quantize: int | None, group_size: int) -> LoadedModel:
    """A LoRA adapter directory: its base model in float32, the adapter merged into its weights, then cast or
    quantized as asked (so a quantized adapted model is quantized from the merged weights)."""
    from tinythink.compress.lora import merge_adapter

    base = _load(adapter_base(path), torch.float32, None, group_size)
    if base.model.config.quantization:
        raise ModelFileError(path, f"its base {base.path} is stored quantized: an adapter merges into float weights")
    with torch.no_grad():
        merge_adapter(base.model, path)
    if quantize:
        quantize_model(base.model, quantize, group_size)
    else:
        base.model.to(dtype)
    adapter_bytes = sum(f.stat().st_size for f in path.iterdir() if f.is_file())
    return LoadedModel(base.model, base.tokenizer, path, base.format + "+lora", ref if ref in KNOWN_MODELS else
                       path.name, base.file_bytes + adapter_bytes, base.tensor_types, base.license)
