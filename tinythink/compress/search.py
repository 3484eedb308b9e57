"""A parameter budget -> the pruned shape that keeps the model best: candidate uniform shapes (depth and width
traded against each other, the MLP width solved to meet the budget), each pruned and scored by its held-out
language-modelling loss before any training (as Minitron ranks its candidates), the lowest loss chosen."""

from __future__ import annotations

import sys
from dataclasses import dataclass, replace

from tinythink.compress import prune
from tinythink.compress.data import PackedData
from tinythink.compress.importance import Importance, lm_loss
from tinythink.compress.prune import Target
from tinythink.errors import TinythinkError
from tinythink.model.config import ModelConfig

LAYER_FRACTIONS = (1.0, 0.9, 0.8, 0.7, 0.6, 0.5)
HIDDEN_FRACTIONS = (1.0, 0.875, 0.75, 0.625, 0.5)
MULTIPLE = 32  # widths stay multiples of this by default (kernels and quantization groups like them)


@dataclass
class Candidate:
    target: Target
    parameters: int
    loss: float | None = None


def _round(x: float, multiple: int) -> int:
    return max(multiple, int(round(x / multiple)) * multiple)


def shape_config(config: ModelConfig, t: Target) -> ModelConfig:
    return replace(config, n_layers=t.layers, dim=t.hidden, intermediate_size=t.mlp, layer_shapes=None, quantization=None)


def candidates(config: ModelConfig, budget: int, embeddings: bool = True, multiple: int = MULTIPLE
               ) -> list[Candidate]:
    """Uniform shapes of about `budget` parameters (all of them, or only the non-embedding ones)."""
    out = []
    for layers in sorted({max(1, round(config.n_layers * f)) for f in LAYER_FRACTIONS}, reverse=True):
        for hidden in sorted({min(config.dim, _round(config.dim * f, multiple)) for f in HIDDEN_FRACTIONS},
                             reverse=True):
            base = Target(layers=layers, hidden=hidden, mlp=multiple)
            at_min = prune.parameters(shape_config(config, base), embeddings)
            per_width = (prune.parameters(shape_config(config, replace(base, mlp=2 * multiple)), embeddings) - at_min) \
                / multiple
            mlp = _round(multiple + (budget - at_min) / per_width, multiple)
            if budget < at_min or mlp > config.intermediate_size:
                continue
            target = replace(base, mlp=mlp)
            out.append(Candidate(target, prune.parameters(shape_config(config, target), embeddings)))
    if not out:
        raise TinythinkError(f"no uniform shape of {config.n_layers} layers or fewer reaches {budget:,} parameters "
                             "(each layer needs its attention and at least a small MLP)")
    return out


def best_shape(model, importance: Importance, budget: int, scoring: PackedData, embeddings: bool = True,
               multiple: int = MULTIPLE, progress: bool = True) -> list[Candidate]:
    """Every candidate scored, best first."""
    found = candidates(model.config, budget, embeddings, multiple)
    for n, c in enumerate(found, 1):
        small = prune.apply(model, prune.plan(model.config, importance, c.target))
        c.loss = lm_loss(small, scoring)
        if progress:
            print(f"shape {n}/{len(found)}: {c.target.describe()} ({c.parameters / 1e6:.1f} M): held-out loss "
                  f"{c.loss:.3f}", file=sys.stderr, flush=True)
    return sorted(found, key=lambda c: c.loss)
