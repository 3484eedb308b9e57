"""Structured pruning: a smaller `Transformer` cut out of a larger one by importance (compress/importance.py),
its weights sliced, not masked.

A target names what to keep: layers (the least important go, by loss increase or block influence), hidden
channels (every embedding, norm and projection along the residual stream), KV groups and query heads (whole KV
groups go first; then within each kept group its least important heads, so every group keeps as many), MLP
neurons; uniform by default, or one shape per kept layer. Tied embeddings stay tied, q/k/v biases are sliced
with their rows.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import torch
from torch import Tensor, nn

from tinythink.compress.importance import Importance
from tinythink.errors import TinythinkError
from tinythink.model.config import LayerShape, ModelConfig
from tinythink.model.transformer import Transformer


@dataclass
class Target:
    layers: int | None = None
    hidden: int | None = None
    heads: int | None = None  # query heads per layer
    kv_heads: int | None = None
    mlp: int | None = None
    layer_shapes: list[LayerShape] | None = None  # one per kept layer: overrides heads, kv_heads, mlp
    layer_metric: str = "loss"  # "loss" (LM-loss increase when dropped) or "influence" (block influence)

    def describe(self) -> str:
        parts = [f"{k}={v}" for k, v in (("layers", self.layers), ("hidden", self.hidden), ("heads", self.heads),
                                        ("kv_heads", self.kv_heads), ("mlp", self.mlp)) if v is not None]
        return ", ".join(parts + (["per-layer shapes"] if self.layer_shapes else [])) or "unchanged"


@dataclass
class Plan:
    """What survives: teacher layer indices, hidden channels, and per kept layer its KV groups, query heads and
    neurons (indices into the teacher's layer, ascending)."""
    layers: list[int]
    channels: Tensor
    kv_groups: list[Tensor] = field(default_factory=list)
    heads: list[Tensor] = field(default_factory=list)
    neurons: list[Tensor] = field(default_factory=list)

    def config(self, teacher: ModelConfig) -> ModelConfig:
        shapes = tuple(LayerShape(len(h), len(g), len(n)) for h, g, n in zip(self.heads, self.kv_groups, self.neurons))
        first = shapes[0]
        return replace(teacher, dim=len(self.channels), n_layers=len(self.layers), n_heads=first.n_heads,
                       n_kv_heads=first.n_kv_heads, intermediate_size=first.intermediate_size, layer_shapes=shapes,
                       quantization=None)


def _top(scores: Tensor, n: int) -> Tensor:
    return scores.topk(n).indices.sort().values


def plan(config: ModelConfig, importance: Importance, target: Target) -> Plan:
    L = target.layers or config.n_layers
    if not 1 <= L <= config.n_layers:
        raise TinythinkError(f"--layers must be between 1 and {config.n_layers}, not {L}")
    metric = {"loss": importance.drop_loss, "influence": importance.block_influence}.get(target.layer_metric)
    if metric is None:
        raise TinythinkError(f"unknown layer metric {target.layer_metric!r} (loss or influence)")
    layers = sorted(metric.topk(L).indices.tolist())
    hidden = target.hidden or config.dim
    if not 1 <= hidden <= config.dim:
        raise TinythinkError(f"--hidden must be between 1 and {config.dim}, not {hidden}")
    shapes = target.layer_shapes
    if shapes is not None and len(shapes) != L:
        raise TinythinkError(f"{len(shapes)} layer shapes given for {L} kept layers")
    p = Plan(layers, _top(importance.channels, hidden))
    for n, i in enumerate(layers):
        have = config.layer(i)
        group = have.n_heads // have.n_kv_heads
        kv = target.kv_heads or have.n_kv_heads  # fewer KV groups alone keep each group's heads
        want = shapes[n] if shapes else LayerShape(target.heads or kv * group, kv, target.mlp or have.intermediate_size)
        if not (1 <= want.n_kv_heads <= have.n_kv_heads and want.n_heads % want.n_kv_heads == 0
                and want.n_heads // want.n_kv_heads <= group):
            raise TinythinkError(f"layer {i}: {want.n_heads} heads in {want.n_kv_heads} KV groups cannot be cut from "
                                 f"{have.n_heads} heads in {have.n_kv_heads} groups (each group keeps at most {group} "
                                 "heads, and every group as many)")
        if not 1 <= want.intermediate_size <= have.intermediate_size:
            raise TinythinkError(f"layer {i}: the MLP width must be between 1 and {have.intermediate_size}")
        scores = importance.heads[i].view(have.n_kv_heads, group)
        groups = _top(scores.sum(1), want.n_kv_heads)
        per = want.n_heads // want.n_kv_heads
        p.kv_groups.append(groups)
        p.heads.append(torch.cat([g * group + _top(scores[g], per) for g in groups.tolist()]))
        p.neurons.append(_top(importance.neurons[i], want.intermediate_size))
    return p


def shape_of(config: ModelConfig, target: Target) -> ModelConfig:
    """The pruned model's configuration, from the target alone (which parts are kept needs the importance)."""
    layers = target.layers or config.n_layers
    if target.layer_shapes:
        shapes = tuple(target.layer_shapes)
    else:
        have = config.layer(0)
        kv = target.kv_heads or have.n_kv_heads
        shapes = tuple(LayerShape(target.heads or kv * (have.n_heads // have.n_kv_heads), kv,
                                  target.mlp or have.intermediate_size) for _ in range(layers))
    return replace(config, dim=target.hidden or config.dim, n_layers=layers, n_heads=shapes[0].n_heads,
                   n_kv_heads=shapes[0].n_kv_heads, intermediate_size=shapes[0].intermediate_size,
                   layer_shapes=shapes, quantization=None)


def _rows(t: Tensor, heads: Tensor, head_dim: int) -> Tensor:
    """The rows of heads `heads` of a (n_heads * head_dim, ...) tensor."""
    return t.view(-1, head_dim, *t.shape[1:])[heads].reshape(-1, *t.shape[1:])


def _linear(weight: Tensor, bias: Tensor | None) -> nn.Linear:
    linear = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None)
    linear.weight = nn.Parameter(weight.clone())
    if bias is not None:
        linear.bias = nn.Parameter(bias.clone())
    return linear


@torch.no_grad()
def apply(model: Transformer, p: Plan) -> Transformer:
    """A new model holding the plan's slices of `model`'s weights (float, as they are)."""
    config = p.config(model.config)
    D, ch = config.head_dim, p.channels
    with torch.device("meta"):
        student = Transformer(config)
    student.embed_tokens = nn.Embedding.from_pretrained(model.embed_tokens.weight[:, ch].clone(), freeze=False)
    student.norm.weight = nn.Parameter(model.norm.weight[ch].clone())
    for n, i in enumerate(p.layers):
        src, dst = model.layers[i], student.layers[n]
        a, m = src.self_attn, src.mlp
        heads, groups, neurons = p.heads[n], p.kv_groups[n], p.neurons[n]
        dst.input_layernorm.weight = nn.Parameter(src.input_layernorm.weight[ch].clone())
        dst.post_attention_layernorm.weight = nn.Parameter(src.post_attention_layernorm.weight[ch].clone())
        for name, chosen in (("q_proj", heads), ("k_proj", groups), ("v_proj", groups)):
            lin = getattr(a, name)
            setattr(dst.self_attn, name, _linear(_rows(lin.weight, chosen, D)[:, ch],
                                                 None if lin.bias is None else _rows(lin.bias, chosen, D)))
        o = a.o_proj.weight[ch].view(len(ch), a.n_heads, D)[:, heads].reshape(len(ch), -1)
        dst.self_attn.o_proj = _linear(o, None if a.o_proj.bias is None else a.o_proj.bias[ch])
        dst.mlp.gate_proj = _linear(m.gate_proj.weight[neurons][:, ch], None)
        dst.mlp.up_proj = _linear(m.up_proj.weight[neurons][:, ch], None)
        dst.mlp.down_proj = _linear(m.down_proj.weight[ch][:, neurons], None)
    if config.tie_embeddings:
        student.lm_head.weight = student.embed_tokens.weight
    else:
        student.lm_head = _linear(model.lm_head.weight[:, ch], None)
    return student


def parameters(config: ModelConfig, embeddings: bool = True) -> int:
    with torch.device("meta"):
        model = Transformer(config)
    total = sum(p.numel() for p in model.parameters())
    return total if embeddings else total - model.embed_tokens.weight.numel() * (1 if config.tie_embeddings else 2)
