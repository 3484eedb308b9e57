"""Float32 linear layers for inference on CPU, a module swap done once for the engine's models (never for
training or export).

PyTorch's default float32 matmul (MKL) is weak at the small row counts of batched decoding and short prompts.
Where tinythink's kernels build (model/quantized_matmul.py), `KernelLinear` runs up to FEW_ROWS rows on ours and
keeps the dense weight, which the one-call decode (model/decode_layers.py) reads too; beyond, oneDNN's product on
that dense weight (within 10% of a packed one, and up to 1.3x MKL's at 128 rows).
Elsewhere `PackedLinear` pre-packs the weight for oneDNN, 1.5-2x faster than MKL at 4-64 rows and 2x on the
49,152-row output head at 16 rows, the same at one row (measured on a 2-core AVX2 EPYC, docs/BENCHMARKS.md); it
drops the dense weight, and `weight` gives a dense copy back on demand.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tinythink.model import quantized_matmul


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


class KernelLinear(nn.Linear):
    """A float32 linear layer whose products up to FEW_ROWS rows run on our kernel."""

    @classmethod
    def from_linear(cls, linear: nn.Linear) -> KernelLinear:
        with torch.device("meta"):
            layer = cls(linear.in_features, linear.out_features, bias=linear.bias is not None)
        layer.weight, layer.bias = linear.weight, linear.bias
        return layer.requires_grad_(False)

    def forward(self, x: Tensor) -> Tensor:
        shape, rows = x.shape, x.reshape(-1, x.shape[-1])
        if shape[-1] % 32 == 0 and x.dtype == torch.float32 and rows.shape[0] <= quantized_matmul.FEW_ROWS:
            y = quantized_matmul.float32_matmul(rows, self.weight)
            y = y if self.bias is None else y + self.bias
        elif available():
            y = torch.ops.mkldnn._linear_pointwise(rows, self.weight, self.bias, "none", [], "")
        else:
            return F.linear(x, self.weight, self.bias)
        return y.view(*shape[:-1], self.out_features)


def prepare_float_linears(model: nn.Module) -> nn.Module:
    """Swap the float32 `nn.Linear` layers of an inference model, in place, for KernelLinear where our kernels
    build, else for PackedLinear where PyTorch has oneDNN; others (bfloat16, quantized) are left as they are."""
    kernels = quantized_matmul.library() is not None
    if not kernels and not available():
        return model
    for name, module in list(model.named_modules()):
        if type(module) is nn.Linear and module.weight.dtype == torch.float32 and module.weight.device.type == "cpu":
            parent, _, attr = name.rpartition(".")
            module.weight.data = module.weight.data.contiguous()
            setattr(model.get_submodule(parent), attr,
                    KernelLinear.from_linear(module) if kernels else PackedLinear(module))
    return model
