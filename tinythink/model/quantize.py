"""Weight-only quantization of linear layers, as a module swap plus a state-dict format (as gpt-fast does).

- int8: one scale per output channel, symmetric, round to nearest.
- int4: one scale and one minimum per group of `group_size` input weights, asymmetric, round to nearest.

The rest of a quantized model (embeddings, norms) runs in float32 where tinythink's kernels build, and else in
bfloat16 where the CPU has it natively (`run_rest_in`, `load.quantized_rest_dtype`); for inference, embeddings are
looked up in int8 rows, a tied output head's own (`quantize_embeddings`). With float32 activations a quantized
layer runs on tinythink's own kernels (model/quantized_matmul.py); with bfloat16 ones, or where those cannot be
built, on PyTorch's CPU weight-only kernels (`_weight_int8pack_mm`, `_weight_int4pack_mm_for_cpu`), which are fast
with bfloat16 activations and very slow with float32 ones (so they compute in bfloat16 and hand back the input's
dtype).
The stored int4 format is plain nibbles (two weights a byte), portable across machines; PyTorch's kernel's
packed layout is made at its first use.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from tinythink.errors import TinythinkError
from tinythink.model import quantized_matmul, weight_formats
from tinythink.model.memory import release_free_memory

BITS = (8, 4)
GROUP_SIZES = (32, 64, 128, 256)  # int4 groups both CPU kernels (ours and PyTorch's) run


class QuantizationError(TinythinkError, ValueError):
    """Settings a model cannot be quantized with (bits, or a group size that does not fit)."""


class Int8Linear(nn.Module):
    # an output head's logits keep float32 products: quantized_matmul's bfloat16 ones round them to 3 digits
    bfloat16_products = True

    def __init__(self, in_features: int, out_features: int, bias: bool = False):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.register_buffer("weight", torch.empty(out_features, in_features, dtype=torch.int8))
        self.register_buffer("scales", torch.empty(out_features, dtype=torch.bfloat16))
        self.bias = nn.Parameter(torch.empty(out_features, dtype=torch.bfloat16)) if bias else None

    @classmethod
    def from_float(cls, linear: nn.Linear) -> Int8Linear:
        return cls.from_weight(linear.weight.detach(), linear.bias)

    @classmethod
    def from_weight(cls, weight: Tensor, bias: Tensor | None = None) -> Int8Linear:
        N, K = weight.shape
        q = cls(K, N, bias is not None)
        q.weight, scales = weight_formats.quantize_int8_rows(weight.detach())
        q.scales = scales.to(torch.bfloat16)
        if bias is not None:
            q.bias = nn.Parameter(bias.detach().to(torch.bfloat16))
        return q

    def dequantize(self) -> Tensor:
        return self.weight.float() * self.scales.float()[:, None]

    def forward(self, x: Tensor) -> Tensor:
        shape = x.shape
        if quantized_matmul.supports(x, self.in_features, self.scales) and quantized_matmul.library():
            y = quantized_matmul.int8_matmul(x.reshape(-1, shape[-1]), self.weight, self.scales,
                                             bfloat16=None if self.bfloat16_products else False)
        else:
            y = torch.ops.aten._weight_int8pack_mm(x.reshape(-1, shape[-1]).to(torch.bfloat16), self.weight,
                                                   self.scales)
        y = y.reshape(*shape[:-1], self.out_features)
        return (y + self.bias if self.bias is not None else y).to(x.dtype)


class Int4Linear(nn.Module):
    bfloat16_products = True  # as Int8Linear's

    def __init__(self, in_features: int, out_features: int, bias: bool = False, group_size: int = 32):
        super().__init__()
        if in_features % group_size:
            raise ValueError(f"in_features {in_features} is not a multiple of the group size {group_size}")
        self.in_features, self.out_features, self.group_size = in_features, out_features, group_size
        # stored: two 4-bit weights a byte (even input index in the high nibble), and per group (scale, minimum)
        self.register_buffer("weight", torch.empty(out_features, in_features // 2, dtype=torch.uint8))
        self.register_buffer("scales_mins", torch.empty(in_features // group_size, out_features, 2,
                                                        dtype=torch.bfloat16))
        self.bias = nn.Parameter(torch.empty(out_features, dtype=torch.bfloat16)) if bias else None
        self._packed: Tensor | None = None  # the CPU kernel's layout, made on first use
        self._scales_zeros: Tensor | None = None

    @classmethod
    def from_float(cls, linear: nn.Linear, group_size: int = 32) -> Int4Linear:
        return cls.from_weight(linear.weight.detach(), linear.bias, group_size)

    @classmethod
    def from_weight(cls, weight: Tensor, bias: Tensor | None = None, group_size: int = 32) -> Int4Linear:
        N, K = weight.shape
        q = cls(K, N, bias is not None, group_size)
        w = weight.float().reshape(N, K // group_size, group_size)
        lo, hi = w.amin(dim=-1), w.amax(dim=-1)  # (N, K/G)
        scales = ((hi - lo) / 15).clamp(min=1e-8)
        codes = torch.round((w - lo[..., None]) / scales[..., None]).clamp(0, 15).to(torch.uint8).reshape(N, K)
        q.weight = codes[:, 0::2] << 4 | codes[:, 1::2]
        q.scales_mins = torch.stack([scales.t(), lo.t()], dim=-1).to(torch.bfloat16).contiguous()
        if bias is not None:
            q.bias = nn.Parameter(bias.detach().to(torch.bfloat16))
        return q

    def codes(self) -> Tensor:
        """(N, K) integer codes 0..15."""
        return torch.stack([self.weight >> 4, self.weight & 15], dim=-1).reshape(self.out_features, self.in_features)

    def dequantize(self) -> Tensor:
        sm = self.scales_mins.float()  # (K/G, N, 2)
        scales = sm[..., 0].t().repeat_interleave(self.group_size, dim=1)
        mins = sm[..., 1].t().repeat_interleave(self.group_size, dim=1)
        return self.codes().float() * scales + mins

    def forward(self, x: Tensor) -> Tensor:
        shape = x.shape
        if quantized_matmul.supports(x, self.in_features, self.scales_mins, self.group_size) and \
                quantized_matmul.library():
            y = quantized_matmul.int4_matmul(x.reshape(-1, shape[-1]), self.weight, self.scales_mins, self.group_size,
                                             bfloat16=None if self.bfloat16_products else False)
            y = y.reshape(*shape[:-1], self.out_features)
            return y + self.bias if self.bias is not None else y
        if self._packed is None:
            self._packed = torch.ops.aten._convert_weight_to_int4pack_for_cpu(self.codes().int(), 1)
            scales, mins = self.scales_mins[..., 0], self.scales_mins[..., 1]
            # the kernel computes (code - 8) * scale + zero
            self._scales_zeros = torch.stack([scales, mins + 8 * scales], dim=-1).contiguous()
        y = torch.ops.aten._weight_int4pack_mm_for_cpu(x.reshape(-1, shape[-1]).to(torch.bfloat16), self._packed,
                                                       self.group_size, self._scales_zeros)
        y = y.reshape(*shape[:-1], self.out_features)
        return (y + self.bias if self.bias is not None else y).to(x.dtype)


def run_rest_in(model: nn.Module, dtype: torch.dtype) -> nn.Module:
    """Cast a quantized model's other weights (embeddings, norms, unquantized linears) to `dtype`, in place;
    the quantized layers keep their bfloat16 scales and biases, which their kernels need. An untied embedding
    table stays in bfloat16 (its rows are cast as they are looked up, Transformer.embed): in float32 Qwen2.5's
    151,936 x 1,536 table alone would be 933 MB, and inference turns it into int8 rows (quantize_embeddings)."""
    untied = getattr(getattr(model, "config", None), "tie_embeddings", True) is False
    for name, module in model.named_modules():
        if not isinstance(module, (Int8Linear, Int4Linear)) and not (untied and name == "embed_tokens"):
            for p in module.parameters(recurse=False):  # a tied head shares its Parameter: cast once, seen by both
                p.data = p.data.to(dtype)
    return model


class Int8Embedding(nn.Module):
    """Embedding lookups from an int8 table with one scale a row, giving vectors in `dtype`: a tied head's int8
    copy (shared: the head owns it, this module only reads it), or an untied model's own table."""

    def __init__(self, table: Int8Linear, dtype: torch.dtype):
        super().__init__()
        self.table, self.dtype = [table], dtype  # in a list: not a submodule, so never saved or cast

    def forward(self, idx: Tensor) -> Tensor:
        table = self.table[0]
        return table.weight[idx].to(self.dtype) * table.scales[idx, None].to(self.dtype)


def quantize_embeddings(model: nn.Module) -> nn.Module:
    """For inference, in place: a quantized model's embeddings are looked up in an int8 table with a scale per row,
    as llama.cpp's Q8_0 tables are. A head tied to them becomes that table (28 MB for SmolLM2-135M, where the
    float table is 113 MB in float32); an untied table is converted on its own (Qwen2.5-1.5B: 233 MB, from 466 in
    bfloat16).

    Every decoded token reads the whole head: in float32 (on CPUs without native bfloat16) it is the largest
    read of an int4 decoding step. int8 leaves perplexity within 0.5% (tests/model/test_quantize.py). Saving
    an inference model is not supported; models are saved as loaded (`tinythink quantize`), with their
    embeddings in bfloat16.
    """
    if not model.config.quantization or not isinstance(model.embed_tokens, nn.Embedding):
        return model
    table = model.embed_tokens.weight.detach()
    dtype = model.norm.weight.dtype  # the rest of the model's
    if model.config.tie_embeddings and type(model.lm_head) is nn.Linear:
        _replace(model, "lm_head", Int8Linear.from_weight(table))
        model.embed_tokens = Int8Embedding(model.lm_head, dtype)
    elif not model.config.tie_embeddings:
        model.embed_tokens = Int8Embedding(Int8Linear.from_weight(table), dtype)
    release_free_memory()
    return model


def quantized_linears(config) -> list[str]:
    """Names of the linear layers to quantize: all projections, and an untied output head.

    A head tied to the embeddings stays in bfloat16: it costs no memory beyond the embedding table the model
    needs anyway, and it is where quantization hurts a small model most (int4: +4% perplexity on SmolLM2-135M).
    """
    names = [f"layers.{i}.{m}" for i in range(config.n_layers)
             for m in ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
                       "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj")]
    return names if config.tie_embeddings else names + ["lm_head"]


def _replace(model: nn.Module, name: str, module: nn.Module):
    parent, _, attr = name.rpartition(".")
    setattr(model.get_submodule(parent), attr, module)
    if name == "lm_head":
        module.bfloat16_products = False


def _quantize_weight(weight: Tensor, bias: Tensor | None, bits: int, group_size: int) -> nn.Module:
    if bits == 4 and weight.shape[1] % group_size:
        raise QuantizationError(f"group size {group_size} does not divide {weight.shape[1]} inputs")
    return Int8Linear.from_weight(weight, bias) if bits == 8 else Int4Linear.from_weight(weight, bias, group_size)


def _check_bits(bits: int, group_size: int):
    if bits not in BITS:
        raise QuantizationError(f"bits must be one of {BITS}")
    if bits == 4 and group_size not in GROUP_SIZES:
        raise QuantizationError(f"the int4 group size must be one of {GROUP_SIZES}, not {group_size}")


def quantize_model(model: nn.Module, bits: int, group_size: int = 32) -> nn.Module:
    """Swap every linear layer for its quantized form, in place; the rest of the model goes to bfloat16."""
    _check_bits(bits, group_size)
    for name in quantized_linears(model.config):  # from the float32 (or whatever) weights, before any cast
        linear = model.get_submodule(name)
        _replace(model, name, _quantize_weight(linear.weight.detach(), linear.bias, bits, group_size))
    model.to(torch.bfloat16)
    model.config.quantization = {"bits": bits, "group_size": group_size if bits == 4 else 0}
    return model


def quantize_tensors(named_loaders, config, bits: int, group_size: int = 32) -> dict[str, Tensor]:
    """A quantized model's state dict from (name, loader) pairs, `loader(dtype)` giving one tensor (with
    torch.int8: int8 rows and their scales, GGUFFile.tensor): linear weights are read into int8 rows, or for int4
    in float32 and quantized one at a time, everything else straight into bfloat16, so no more than one float32
    tensor is ever alive. Sets config.quantization."""
    _check_bits(bits, group_size)
    linears = {f"{n}.weight" for n in quantized_linears(config)}
    sd = {}
    for name, load in named_loaders:
        prefix = name.removesuffix("weight")
        if name in linears and bits == 8:  # straight into int8 rows, a block at a time
            codes, scales = load(torch.int8)
            sd.update({prefix + "weight": codes, prefix + "scales": scales.to(torch.bfloat16)})
        elif name in linears:
            module = _quantize_weight(load(torch.float32), None, bits, group_size)
            sd.update({prefix + k: v for k, v in module.state_dict().items()})
            release_free_memory()  # the float32 copy's space, pinned in the heap by the quantized weights
        else:
            sd[name] = load(torch.bfloat16)
    config.quantization = {"bits": bits, "group_size": group_size if bits == 4 else 0}
    return sd


def swap_to_quantized(model: nn.Module, quantization: dict) -> nn.Module:
    """Replace linear layers by empty quantized ones of the right shapes, to load a quantized state dict into."""
    bits, group = quantization["bits"], quantization.get("group_size", 32)
    for name in quantized_linears(model.config):
        linear = model.get_submodule(name)
        args = (linear.in_features, linear.out_features, linear.bias is not None)
        _replace(model, name, Int8Linear(*args) if bits == 8 else Int4Linear(*args, group_size=group))
    return model
