"""A loaded model made ready for inference, in place: what serving runs, never what is trained or saved.

- A quantized model's embeddings are looked up in int8 rows: a tied output head's int8 copy, or an untied
  model's own table (`quantize_embeddings`).
- q, k and v become one linear layer, and so do the MLP's gate and up: a decoding step is ~600 small
  operators whose dispatch costs as much as the arithmetic, and this removes 3 products a layer, with the
  conversions to and from bfloat16 around each quantized one.
- Float32 linear layers run few rows on our kernel, or, without it, are pre-packed for oneDNN
  (`prepare_float_linears`).
- Our C kernels (decode attention, products, and decoding steps through all layers in one call, `DecodeLayers`)
  are built, or found in the cache, now rather than at the first request.
"""

from __future__ import annotations

import torch
from torch import nn

from tinythink.model import decode_attention, quantized_matmul
from tinythink.model.decode_layers import DecodeLayers
from tinythink.model.float_linear import prepare_float_linears
from tinythink.model.memory import release_free_memory
from tinythink.model.quantize import Int4Linear, quantize_embeddings
from tinythink.model.transformer import Transformer

# Where a linear layer's tensors keep their output features: int4 scales are (groups, outputs, 2)
_OUTPUT_DIM = {"scales_mins": 1}


def concat_linears(linears: list[nn.Module]) -> nn.Module:
    """One layer computing the given layers' outputs side by side (same inputs, same kind: float, int8 or int4)."""
    first = linears[0]
    if len({type(m) for m in linears}) > 1 or len({getattr(m, "group_size", 0) for m in linears}) > 1:
        raise ValueError("only layers of one kind can be concatenated")
    extra = {"group_size": first.group_size} if isinstance(first, Int4Linear) else {}
    with torch.device("meta"):  # the weights come from the state dicts below
        fused = type(first)(first.in_features, sum(m.out_features for m in linears), first.bias is not None, **extra)
    states = [m.state_dict() for m in linears]
    fused.load_state_dict({k: torch.cat([sd[k].detach() for sd in states], _OUTPUT_DIM.get(k, 0)) for k in states[0]},
                          assign=True)
    return fused.requires_grad_(False)


def fuse_projections(model: Transformer) -> Transformer:
    for block in model.layers:
        attn, mlp = block.self_attn, block.mlp
        attn.qkv_proj = concat_linears([attn.q_proj, attn.k_proj, attn.v_proj])
        mlp.gate_up_proj = concat_linears([mlp.gate_proj, mlp.up_proj])
        del attn.q_proj, attn.k_proj, attn.v_proj, mlp.gate_proj, mlp.up_proj
        release_free_memory()  # the parts' space, before the next layer's copies pile up beside it
    return model


def prepare_for_inference(model: Transformer) -> Transformer:
    decode_attention.library()
    quantized_matmul.library()
    model = prepare_float_linears(fuse_projections(quantize_embeddings(model)))
    model.decode_layers = DecodeLayers.for_model(model)
    return model
