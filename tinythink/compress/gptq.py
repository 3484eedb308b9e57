"""GPTQ (Frantar et al., 2023): weight quantization that corrects each column's rounding error in the columns not
yet quantized, using the Hessian of the layer's squared error, H = 2 X^T X over calibration inputs.

The result is tinythink's own quantized format (model/quantize.py: int8 with a scale per output channel, int4 in
groups with a scale and a minimum each), so every kernel that runs round-to-nearest weights runs these. Applied a
block at a time: each block's Hessians come from the inputs that the already quantized blocks before it produce.
Options as in the reference implementation: damping (a fraction of the mean diagonal), blocks of columns updated
lazily, and act-order (columns in order of decreasing Hessian diagonal; with groups, each group's parameters
are fixed up front from the original weights, "static groups", so groups stay contiguous in the stored layout).
"""

from __future__ import annotations

import sys

import torch
from torch import Tensor, nn

from tinythink.compress.data import PackedData
from tinythink.model.quantize import Int4Linear, Int8Linear, QuantizationError, _check_bits, quantized_linears


class Hessian:
    """Accumulates 2 X^T X / n over a layer's inputs (a forward pre-hook)."""

    def __init__(self, columns: int):
        self.H, self.n = torch.zeros(columns, columns), 0

    def __call__(self, _, args):
        x = args[0].detach().reshape(-1, args[0].shape[-1]).float()
        total = self.n + len(x)
        self.H *= self.n / total
        self.H += (2 / total) * x.t() @ x
        self.n = total


def _group_params(w: Tensor, bits: int) -> tuple[Tensor, Tensor]:
    """(scale, offset) per row of w, rounded to bfloat16 as stored: int4 asymmetric (scale, minimum), int8
    symmetric (scale, 0)."""
    if bits == 8:
        scale = (w.abs().amax(dim=1) / 127).clamp(min=1e-8).bfloat16().float()
        return scale, torch.zeros_like(scale)
    lo, hi = w.amin(dim=1), w.amax(dim=1)
    return ((hi - lo) / 15).clamp(min=1e-8).bfloat16().float(), lo.bfloat16().float()


def _quantize(w: Tensor, scale: Tensor, offset: Tensor, bits: int) -> tuple[Tensor, Tensor]:
    """(integer codes, dequantized values) of a column w (N,)."""
    if bits == 8:
        q = torch.round(w / scale).clamp(-127, 127)
    else:
        q = torch.round((w - offset) / scale).clamp(0, 15)
    return q, q * scale + offset


def gptq(weight: Tensor, H: Tensor, bits: int, group_size: int = 128, damp: float = 0.01, block: int = 128,
         act_order: bool = False) -> tuple[Tensor, Tensor, Tensor]:
    """weight (N, K), H (K, K) -> (codes (N, K), scales, offsets): scales/offsets (N,) for int8, (N, K/G) for int4."""
    W = weight.detach().float().clone()
    N, K = W.shape
    if bits == 4 and K % group_size:
        raise QuantizationError(f"group size {group_size} does not divide {K} inputs")
    G = group_size if bits == 4 else K
    block = max(block, G) if bits == 4 else block
    H = H.clone()
    dead = H.diag() == 0
    H[dead, dead] = 1
    W[:, dead] = 0
    groups = K // G
    scales, offsets = torch.zeros(N, groups), torch.zeros(N, groups)
    perm = torch.argsort(H.diag(), descending=True) if act_order else torch.arange(K)
    if act_order or bits == 8:  # parameters fixed up front from the original weights
        for g in range(groups):
            scales[:, g], offsets[:, g] = _group_params(W[:, g * G:(g + 1) * G], bits)
    W, H = W[:, perm], H[perm][:, perm]
    H += damp * H.diag().mean() * torch.eye(K)
    Hinv = torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(H)), upper=True)
    Q = torch.zeros_like(W)
    for i1 in range(0, K, block):
        i2 = min(i1 + block, K)
        W1, Err1, Hinv1 = W[:, i1:i2].clone(), torch.zeros(N, i2 - i1), Hinv[i1:i2, i1:i2]
        for i in range(i2 - i1):
            col = int(perm[i1 + i])
            g = col // G
            if not act_order and bits == 4 and col % G == 0:  # a group starts: its parameters from the current weights
                scales[:, g], offsets[:, g] = _group_params(W1[:, i:i + G], bits)
            q, deq = _quantize(W1[:, i], scales[:, g], offsets[:, g], bits)
            Q[:, i1 + i] = q
            err = (W1[:, i] - deq) / Hinv1[i, i]
            W1[:, i:] -= err[:, None] * Hinv1[i, i:][None]
            Err1[:, i] = err
        W[:, i2:] -= Err1 @ Hinv[i1:i2, i2:]
    codes = torch.empty_like(Q)
    codes[:, perm] = Q
    return codes, (scales[:, 0] if bits == 8 else scales), (offsets[:, 0] if bits == 8 else offsets)


def quantized_layer(linear: nn.Linear, H: Tensor, bits: int, group_size: int, damp: float, act_order: bool) -> nn.Module:
    codes, scales, offsets = gptq(linear.weight, H, bits, group_size, damp, act_order=act_order)
    N, K = codes.shape
    bias = linear.bias is not None
    if bits == 8:
        q = Int8Linear(K, N, bias)
        q.weight = codes.to(torch.int8)
        q.scales = scales.bfloat16()
    else:
        q = Int4Linear(K, N, bias, group_size)
        c = codes.to(torch.uint8)
        q.weight = c[:, 0::2] << 4 | c[:, 1::2]
        q.scales_mins = torch.stack([scales.t(), offsets.t()], dim=-1).bfloat16().contiguous()
    if bias:
        q.bias = nn.Parameter(linear.bias.detach().bfloat16())
    return q


# the linears of a block that read the same input share one Hessian
_SHARED_INPUT = {"self_attn.q_proj": ("self_attn.k_proj", "self_attn.v_proj"), "self_attn.o_proj": (),
                 "mlp.gate_proj": ("mlp.up_proj",), "mlp.down_proj": ()}


@torch.no_grad()
def quantize_model(model: nn.Module, calibration: PackedData, bits: int, group_size: int = 128, damp: float = 0.01,
                   act_order: bool = False, micro_batch: int = 4, progress: bool = True) -> nn.Module:
    """Quantize every linear layer `quantized_linears` names, in place, block after block; as quantize.py's
    round-to-nearest does, the rest of the model goes to bfloat16 and config.quantization is set."""
    _check_bits(bits, group_size)
    model.eval().float()
    batches = [calibration.batch(list(range(lo, min(lo + micro_batch, len(calibration)))))
               for lo in range(0, len(calibration), micro_batch)]
    attention = [model.document_attention(b.documents) for b in batches]
    xs = [model.embed_tokens(b.tokens) for b in batches]
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(model.layers), desc=f"GPTQ int{bits}", unit="layer", file=sys.stderr, dynamic_ncols=True)
    for block in model.layers:
        hessians = {name: Hessian(block.get_submodule(name).in_features) for name in _SHARED_INPUT}
        hooks = [block.get_submodule(n).register_forward_pre_hook(h) for n, h in hessians.items()]
        for x, att in zip(xs, attention):
            block(x, *att)
        for h in hooks:
            h.remove()
        for name, shared in _SHARED_INPUT.items():
            for n in (name, *shared):
                parent, _, attr = n.rpartition(".")
                setattr(block.get_submodule(parent), attr,
                        quantized_layer(block.get_submodule(n), hessians[name].H, bits, group_size, damp, act_order))
        xs = [block(x, *att) for x, att in zip(xs, attention)]  # the quantized block's outputs feed the next one
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    if "lm_head" in quantized_linears(model.config):
        h = Hessian(model.config.dim)
        for x in xs:
            h(None, (model.norm(x),))
        model.lm_head = quantized_layer(model.lm_head, h.H, bits, group_size, damp, act_order)
    for module in model.modules():
        if not isinstance(module, (Int8Linear, Int4Linear)):
            for p in module.parameters(recurse=False):
                p.data = p.data.bfloat16()
    model.config.quantization = {"bits": bits, "group_size": group_size if bits == 4 else 0}
    return model
