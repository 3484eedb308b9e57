"""LoRA (Hu et al., 2021): a frozen linear layer plus a trained low-rank update, W x + (alpha / r) B A x, saved as a
PEFT adapter (adapter_config.json, adapter_model.safetensors with PEFT's tensor names), so that the few megabytes
that teach a model a job can ship on their own and be merged into the base weights at load.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from tinythink.errors import ModelFileError

TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


class LoRALinear(nn.Module):
    def __init__(self, base: nn.Linear, rank: int, alpha: float):
        super().__init__()
        self.base, self.rank, self.scale = base, rank, alpha / rank
        self.lora_A = nn.Parameter(torch.empty(rank, base.in_features))
        self.lora_B = nn.Parameter(torch.zeros(base.out_features, rank))  # zero: training starts at the base model
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))  # as PEFT initialises A
        base.requires_grad_(False)

    @property
    def weight(self) -> Tensor:  # the merged weight, for code that reads a linear's weight
        return self.base.weight + self.scale * self.lora_B @ self.lora_A

    @property
    def bias(self) -> Tensor | None:
        return self.base.bias

    def forward(self, x: Tensor) -> Tensor:
        return self.base(x) + (x @ self.lora_A.t().to(x.dtype)) @ self.lora_B.t().to(x.dtype) * self.scale


def _linears(model: nn.Module, targets: tuple[str, ...]):
    for name, module in list(model.named_modules()):
        if isinstance(module, nn.Linear) and name.rsplit(".", 1)[-1] in targets and name.startswith("layers."):
            yield name, module


def add_lora(model: nn.Module, rank: int = 32, alpha: float = 64.0, targets: tuple[str, ...] = TARGETS) -> nn.Module:
    """Freeze the model and wrap its target linears, in place; only the LoRA matrices train."""
    model.requires_grad_(False)
    for name, linear in _linears(model, targets):
        parent, _, attr = name.rpartition(".")
        setattr(model.get_submodule(parent), attr, LoRALinear(linear, rank, alpha))
    return model


def _peft_name(name: str, which: str) -> str:
    return f"base_model.model.model.{name}.{which}.weight"  # PEFT's names over a *ForCausalLM's `model.`


def save_adapter(model: nn.Module, path: Path, base_name: str, dtype: torch.dtype = torch.bfloat16):
    path.mkdir(parents=True, exist_ok=True)
    tensors, targets, rank, alpha = {}, set(), None, None
    for name, m in model.named_modules():
        if isinstance(m, LoRALinear):
            tensors[_peft_name(name, "lora_A")] = m.lora_A.detach().to(dtype).contiguous()
            tensors[_peft_name(name, "lora_B")] = m.lora_B.detach().to(dtype).contiguous()
            targets.add(name.rsplit(".", 1)[-1])
            rank, alpha = m.rank, m.scale * m.rank
    save_file(tensors, str(path / "adapter_model.safetensors"), metadata={"format": "pt"})
    config = {"peft_type": "LORA", "task_type": "CAUSAL_LM", "base_model_name_or_path": base_name, "r": rank,
              "lora_alpha": alpha, "target_modules": sorted(targets), "lora_dropout": 0.0, "bias": "none",
              "fan_in_fan_out": False, "inference_mode": True}
    (path / "adapter_config.json").write_text(json.dumps(config, indent=2))


@torch.no_grad()
def merge_adapter(model: nn.Module, path: Path) -> nn.Module:
    """Add a saved adapter's updates into a (float) model's weights, in place: W += (alpha / r) B A."""
    try:
        config = json.loads((path / "adapter_config.json").read_text())
        tensors = load_file(str(path / "adapter_model.safetensors"))
    except (OSError, ValueError) as e:
        raise ModelFileError(path, f"not a readable LoRA adapter ({e})") from None
    if config.get("peft_type") != "LORA" or config.get("fan_in_fan_out"):
        raise ModelFileError(path, "only PEFT LoRA adapters (not fan_in_fan_out) are supported")
    scale = config["lora_alpha"] / config["r"]
    names = {k.removeprefix("base_model.model.model.").rsplit(".", 2)[0] for k in tensors}
    for name in sorted(names):
        try:
            linear = model.get_submodule(name)
        except AttributeError:
            raise ModelFileError(path, f"the adapter updates {name}, which the base model has no layer for") from None
        a, b = tensors[_peft_name(name, "lora_A")].float(), tensors[_peft_name(name, "lora_B")].float()
        if (b.shape[0], a.shape[1]) != tuple(linear.weight.shape):
            raise ModelFileError(path, f"the adapter's {name} is {b.shape[0]} x {a.shape[1]}, the model's "
                                       f"{tuple(linear.weight.shape)}: it was made for another base model")
        linear.weight += (scale * b @ a).to(linear.weight.dtype)
    return model


def merged(model: nn.Module) -> nn.Module:
    """The LoRA layers of a model in training folded back into plain linears, in place."""
    for name, m in list(model.named_modules()):
        if isinstance(m, LoRALinear):
            with torch.no_grad():
                m.base.weight += m.scale * m.lora_B @ m.lora_A
            parent, _, attr = name.rpartition(".")
            setattr(model.get_submodule(parent), attr, m.base)
    return model
