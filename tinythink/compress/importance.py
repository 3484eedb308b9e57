"""How much each part of a model matters, measured on calibration data (Minitron's activation-based importance):

- MLP neurons: the root mean square of each input of the down projection (SiLU(gate) x up);
- attention heads: the root mean square, over tokens, of each head's slice of the output projection's input;
  a KV group counts the sum of its heads;
- hidden (embedding) channels: the root mean square of each channel over every norm's output;
- layers: block influence, 1 - the mean cosine between a block's input and output (ShortGPT), and the increase
  of the language-modelling loss when the block is skipped.

Scores are saved (safetensors), so pruning to another shape needs no new pass.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from tinythink.compress.data import PackedData
from tinythink.compress.losses import CrossEntropy


@dataclass
class Importance:
    neurons: list[Tensor]  # per layer (intermediate_size,)
    heads: list[Tensor]  # per layer (n_heads,)
    channels: Tensor  # (dim,)
    block_influence: Tensor  # (n_layers,)
    drop_loss: Tensor  # (n_layers,): held-out loss with the layer skipped, minus base_loss
    base_loss: float
    tokens: int  # calibration tokens measured

    def save(self, path: Path):
        tensors = {"channels": self.channels, "block_influence": self.block_influence, "drop_loss": self.drop_loss,
                   **{f"neurons.{i}": t for i, t in enumerate(self.neurons)},
                   **{f"heads.{i}": t for i, t in enumerate(self.heads)}}
        save_file({k: v.contiguous() for k, v in tensors.items()}, str(path),
                  metadata={"base_loss": repr(self.base_loss), "tokens": str(self.tokens)})

    @classmethod
    def load(cls, path: Path) -> Importance:
        from safetensors import safe_open

        t = load_file(str(path))
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata()
        n = len(t["block_influence"])
        return cls([t[f"neurons.{i}"] for i in range(n)], [t[f"heads.{i}"] for i in range(n)], t["channels"],
                   t["block_influence"], t["drop_loss"], float(meta["base_loss"]), int(meta["tokens"]))


def _bar(total: int, desc: str, progress: bool, unit: str = "seq"):
    if not progress:
        return None
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit=unit, file=sys.stderr, dynamic_ncols=True)


def lm_loss(model: nn.Module, data: PackedData, micro_batch: int = 4) -> float:
    """Mean next-token cross-entropy of the model on the data's labels."""
    ce, total, n = CrossEntropy(), 0.0, 0
    with torch.inference_mode():
        for lo in range(0, len(data), micro_batch):
            batch = data.batch(list(range(lo, min(lo + micro_batch, len(data)))))
            w = batch.trained_tokens
            total += ce(model.logits(model.hidden(batch.tokens, batch.documents)), None, batch.labels).item() * w
            n += w
    return total / max(n, 1)


def measure(model: nn.Module, calibration: PackedData, drop_data: PackedData, micro_batch: int = 4,
            progress: bool = True) -> Importance:
    """One pass over the calibration data with hooks, then one held-out pass per skipped layer."""
    L, dim = len(model.layers), model.config.dim
    neurons = [torch.zeros(b.mlp.down_proj.in_features) for b in model.layers]
    heads = [torch.zeros(b.self_attn.n_heads) for b in model.layers]
    channels, influence = torch.zeros(dim), torch.zeros(L)
    counts = {"tokens": 0}
    hooks = []

    def on_down(i):
        def hook(_, args):
            a = args[0].detach().float().reshape(-1, args[0].shape[-1])
            neurons[i] += a.pow(2).sum(0)
        return hook

    def on_o(i, n_heads):
        def hook(_, args):
            a = args[0].detach().float().reshape(-1, n_heads, args[0].shape[-1] // n_heads)
            heads[i] += a.pow(2).sum(-1).sqrt().sum(0)  # each head's L2 norm per token, summed over tokens
        return hook

    def on_norm(_, __, out):
        channels.add_(out.detach().float().reshape(-1, dim).pow(2).sum(0))

    def on_block(i):
        def hook(_, args, out):
            cos = F.cosine_similarity(args[0].detach().float(), out.detach().float(), dim=-1)
            influence[i] += (1 - cos).sum()
        return hook

    for i, b in enumerate(model.layers):
        hooks += [b.mlp.down_proj.register_forward_pre_hook(on_down(i)),
                  b.self_attn.o_proj.register_forward_pre_hook(on_o(i, b.self_attn.n_heads)),
                  b.input_layernorm.register_forward_hook(on_norm), b.post_attention_layernorm.register_forward_hook(on_norm),
                  b.register_forward_hook(on_block(i))]
    hooks.append(model.norm.register_forward_hook(on_norm))
    bar = _bar(len(calibration), "importance", progress)
    try:
        with torch.inference_mode():
            for lo in range(0, len(calibration), micro_batch):
                rows = list(range(lo, min(lo + micro_batch, len(calibration))))
                batch = calibration.batch(rows)
                model.norm(model.hidden(batch.tokens, batch.documents))  # the final norm's output counts too
                counts["tokens"] += batch.tokens.numel()
                if bar is not None:
                    bar.update(len(rows))
    finally:
        for h in hooks:
            h.remove()
        if bar is not None:
            bar.close()
    N = max(counts["tokens"], 1)
    base = lm_loss(model, drop_data, micro_batch)
    drop = torch.zeros(L)
    bar = _bar(L, "layer drop loss", progress, unit="layer")
    layers = model.layers
    try:
        for i in range(L):
            model.layers = nn.ModuleList([b for j, b in enumerate(layers) if j != i])
            drop[i] = lm_loss(model, drop_data, micro_batch) - base
            if bar is not None:
                bar.update(1)
    finally:
        model.layers = layers
        if bar is not None:
            bar.close()
    return Importance([(n / N).sqrt() for n in neurons], [h / N for h in heads], (channels / (N * (2 * L + 1))).sqrt(),
                      influence / N, drop, base, N)
