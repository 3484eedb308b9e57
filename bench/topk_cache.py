"""Distillation from cached top-k teacher log-probabilities against the live teacher's full logits, on the same run:
the same pruned student, data, order, steps and settings, once with each; held-out loss measured both ways against
the full teacher (forward KL) and as plain cross-entropy. Uses the stages a `tinythink make` directory holds.

    python bench/topk_cache.py MAKE_DIR [--steps 20] [--k 64]
"""

from __future__ import annotations

import argparse
import json
import math
import tempfile
import time
from contextlib import nullcontext
from pathlib import Path

import torch

from tinythink.compress.data import PackedData
from tinythink.compress.losses import ForwardKL
from tinythink.compress.make import MakeSettings
from tinythink.compress.objectives import Distill
from tinythink.compress.teacher_cache import TeacherCache
from tinythink.compress.trainer import StudentForward, TrainSettings, autocast_dtype, device, evaluate, train
from tinythink.model.load import load_model


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("make_dir", type=Path)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--k", type=int, default=64)
    a = p.parse_args()
    torch.set_num_threads(2)
    s = MakeSettings(**{k: v for k, v in json.loads((a.make_dir / "make.json").read_text()).items()
                        if k in MakeSettings.__dataclass_fields__})
    data = PackedData.load(a.make_dir / "data" / "train.safetensors")
    held = PackedData.load(a.make_dir / "data" / "heldout.safetensors")
    held = held.subset(list(range(min(16, len(held)))))
    per_step = s.micro_batch * s.accumulate
    used = data.subset(data.indices(0, a.steps * per_step))
    teacher = load_model(s.teacher, autocast_dtype("auto", device()) or torch.float32).model.requires_grad_(False)
    settings = TrainSettings(steps=a.steps, lr=s.lr, warmup_steps=min(20, a.steps), micro_batch=s.micro_batch,
                             accumulate=s.accumulate, eval_every=10 ** 9, save_every=10 ** 9)
    full = Distill(ForwardKL(), teacher=teacher)
    dtype = autocast_dtype("auto", device())

    def amp():
        return torch.autocast("cpu", dtype=dtype) if dtype else nullcontext()

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        cache = TeacherCache.create(Path(tmp) / "cache", used, a.k, 1.0, s.teacher)
        cache.fill(teacher, used, s.micro_batch)
        fill_s = time.perf_counter() - start
        cache_mb = sum(f.stat().st_size for f in (Path(tmp) / "cache").iterdir()) / 1e6
        for name, objective in (("live teacher, full logits", full),
                                (f"cached top-{a.k} + rest", Distill(ForwardKL(), caches={"train": cache}))):
            student = load_model(str(a.make_dir / "prune" / "model")).model.float().train().requires_grad_(True)
            start = time.perf_counter()
            train(student, objective, used, None, settings, Path(tmp) / name)
            seconds = time.perf_counter() - start
            metrics = evaluate(StudentForward(student), full, held, TrainSettings(steps=1, eval_batches=4,
                                                                                   micro_batch=s.micro_batch), amp)
            rows.append((name, metrics["eval_loss"], metrics["eval_ce"], seconds / a.steps))
    print(f"\n{a.steps} steps of {per_step} x {used.seq_len} tokens from {a.make_dir / 'prune' / 'model'}; held-out: "
          f"{len(held)} sequences; cache: {cache_mb:.0f} MB, filled in {fill_s:.0f} s\n")
    print("| teacher signal | held-out KL to the full teacher | held-out perplexity | s / step |\n|---|---|---|---|")
    for name, kl, ce, step in rows:
        print(f"| {name} | {kl:.4f} | {math.exp(ce):.2f} | {step:.1f} |")


if __name__ == "__main__":
    main()
