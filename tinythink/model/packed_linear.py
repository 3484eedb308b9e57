"""Float32 linear layers with their weights pre-packed for oneDNN, for inference on CPU.

PyTorch's default float32 matmul (MKL) is weak at the small row counts of batched decoding and short
prompts: measured on a 2-core AVX2 EPYC, oneDNN with a pre-packed weight is 1.5-2x faster at 4-64 rows and
2x on the 49,152-row output head at 16 rows (docs/BENCHMARKS.md), the same at one row. The packing is a
module swap done once for inference (the engine's models), never for training or export: the dense weight
is dropped, and `weight` gives a dense copy back on demand.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


def available() -> bool:
    return torch.backends.mkldnn.is_available()


class PackedLinear(nn.Module):
    def __init__(self, linear: nn.Linear, rows_hint: int = 16):
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        # an opaque oneDNN tensor, blocked for the CPU's vector width; rows_hint only tunes the blocking
        self.packed = torch.ops.mkldnn._reorder_linear_weight(linear.weight.detach(), rows_hint)
        self.bias = None if linear.bias is None else linear.bias.detach()

    @property
    def weight(self) -> Tensor:
        return self.packed.to_dense()

    def forward(self, x: Tensor) -> Tensor:
        shape = x.shape
        y = torch.ops.mkldnn._linear_pointwise(x.reshape(-1, shape[-1]), self.packed, self.bias, "none", [], "")
        return y.view(*shape[:-1], self.out_features)


def pack_linears(model: nn.Module) -> nn.Module:
    """Swap the float32 `nn.Linear` layers of an inference model for packed ones, in place; others (bfloat16,
    quantized) and CPUs without oneDNN are left as they are."""
    if not available():
        return model
    for name, module in list(model.named_modules()):
        if type(module) is nn.Linear and module.weight.dtype == torch.float32 and module.weight.device.type == "cpu":
            parent, _, attr = name.rpartition(".")
            setattr(model.get_submodule(parent), attr, PackedLinear(module))
    return model
