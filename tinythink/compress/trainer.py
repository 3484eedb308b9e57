"""The training loop shared by distillation and fine-tuning: AdamW, linear warmup then cosine decay, gradient
accumulation and clipping, bfloat16 autocast where the CPU computes in it natively (float32 elsewhere; CUDA
when present), optional gradient checkpointing, periodic held-out evaluation, a JSONL log, a loss-curve PNG,
and checkpoints that resume exactly (compress/checkpoint.py).

Under `torchrun --nproc-per-node N` the same call runs DistributedDataParallel (gloo on CPU, NCCL on GPU): the
global batch is `micro_batch x accumulate x N` sequences, rank r taking micro-batches r, r + N, ... of it, so N
processes take the steps one process takes with N times the accumulation.

An objective is a callable `(student_forward, batch) -> (loss, metrics)`; `student_forward(tokens, documents)`
returns (hidden, logits) and is what DDP wraps.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from tinythink.compress import checkpoint
from tinythink.compress.data import Batch, PackedData
from tinythink.errors import TinythinkError


@dataclass
class TrainSettings:
    steps: int | None = None  # optimizer steps in the schedule; None: as many as max_time allows
    max_time: float | None = None  # seconds of this run before it stops cleanly on a checkpoint
    lr: float = 1e-4
    min_lr_ratio: float = 0.1  # the cosine ends at lr x this
    warmup_steps: int = 10
    weight_decay: float = 0.0
    micro_batch: int = 4  # sequences per forward pass
    accumulate: int = 1  # micro-batches per optimizer step (per process)
    clip: float = 1.0  # gradient norm clipping (0: off)
    eval_every: int = 50
    eval_batches: int = 8
    save_every: int = 50
    keep: int = 2  # checkpoints kept
    seed: int = 0
    precision: str = "auto"  # "auto": bfloat16 autocast where native (and on CUDA), else float32; or either name
    gradient_checkpointing: bool = False

    def check(self):
        if self.steps is None and self.max_time is None:
            raise TinythinkError("say how long to train: a number of steps or tokens, or a maximum time")
        for name in ("micro_batch", "accumulate", "save_every", "eval_every", "keep"):
            if getattr(self, name) < 1:
                raise TinythinkError(f"{name} must be at least 1")
        if self.lr <= 0:
            raise TinythinkError("the learning rate must be positive")


class StudentForward(nn.Module):
    """(tokens, documents) -> (hidden, logits): the one call that DDP wraps."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, tokens: Tensor, documents: Tensor) -> tuple[Tensor, Tensor]:
        hidden = self.model.hidden(tokens, documents)
        return hidden, self.model.logits(hidden)


def lr_at(step: int, total: int, s: TrainSettings) -> float:
    # warmup takes at most a tenth of the schedule: a short run (a time budget on a slow machine) still reaches
    # its learning rate instead of ending inside the warmup
    warmup = min(s.warmup_steps, max(1, total // 10))
    if step < warmup:
        return s.lr * (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return s.lr * (s.min_lr_ratio + (1 - s.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


def device() -> torch.device:
    return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0))) if torch.cuda.is_available() else \
        torch.device("cpu")


def autocast_dtype(precision: str, dev: torch.device) -> torch.dtype | None:
    from tinythink.model.native import native_bfloat16

    if precision == "float32":
        return None
    if precision == "bfloat16" or dev.type == "cuda" or native_bfloat16():
        return torch.bfloat16
    return None


class Distributed:
    """The process group when run under torchrun (WORLD_SIZE > 1), else a single process."""

    def __init__(self):
        self.world = int(os.environ.get("WORLD_SIZE", 1))
        self.rank = int(os.environ.get("RANK", 0))
        if self.world > 1 and not torch.distributed.is_initialized():
            import datetime

            # long: under `tinythink make` the other processes wait while the first prunes or evaluates
            torch.distributed.init_process_group("nccl" if torch.cuda.is_available() else "gloo",
                                                 timeout=datetime.timedelta(hours=12))

    @property
    def main(self) -> bool:
        return self.rank == 0

    def wrap(self, module: nn.Module) -> nn.Module:
        if self.world == 1:
            return module
        from torch.nn.parallel import DistributedDataParallel

        return DistributedDataParallel(module)

    def mean(self, value: float) -> float:
        if self.world == 1:
            return value
        t = torch.tensor([value], dtype=torch.float64)
        torch.distributed.all_reduce(t)
        return t.item() / self.world

    def barrier(self):
        if self.world > 1:
            torch.distributed.barrier()


def plot_log(log: Path, png: Path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    train = [(r["tokens"], r["loss"]) for r in rows if "loss" in r]
    held = [(r["tokens"], r["eval_loss"]) for r in rows if "eval_loss" in r]
    fig, ax = plt.subplots(figsize=(7, 4))
    if train:
        ax.plot(*zip(*train), lw=0.8, alpha=0.6, label="training loss")
    if held:
        ax.plot(*zip(*held), "o-", label="held-out loss")
    ax.set_xlabel("training tokens")
    ax.set_ylabel("loss")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(png, dpi=120)
    plt.close(fig)


def evaluate(forward: nn.Module, objective, data: PackedData, settings: TrainSettings, amp) -> dict:
    """Mean objective and cross-entropy on the first `eval_batches` micro-batches of the held-out data."""
    from tinythink.compress.losses import CrossEntropy

    ce, totals, n = CrossEntropy(), {}, 0
    was_training = forward.training
    forward.eval()
    with torch.no_grad(), amp():
        for lo in range(0, min(len(data), settings.eval_batches * settings.micro_batch), settings.micro_batch):
            batch = data.batch(list(range(lo, min(lo + settings.micro_batch, len(data)))))
            loss, _ = objective(forward, batch)
            _, logits = forward(batch.tokens, batch.documents)
            for k, v in (("eval_loss", loss.item()), ("eval_ce", ce(logits, None, batch.labels).item())):
                totals[k] = totals.get(k, 0.0) + v
            n += 1
    forward.train(was_training)
    return {k: v / max(n, 1) for k, v in totals.items()}


def train(model: nn.Module, objective: Callable[[nn.Module, Batch], tuple[Tensor, dict]], data: PackedData,
          heldout: PackedData | None, settings: TrainSettings, out: Path, progress: bool = True) -> dict:
    """Train `model` in place, resuming from out/checkpoints when a checkpoint is there. Writes out/train.jsonl,
    out/loss.png and the checkpoints; returns a summary (status "done" or "stopped" by max_time)."""
    settings.check()
    dist = Distributed()
    dev = device()
    model.to(dev)
    model.checkpointing = settings.gradient_checkpointing
    torch.manual_seed(settings.seed)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=settings.lr, weight_decay=settings.weight_decay, betas=(0.9, 0.95))
    ckpt_dir, log_file = out / "checkpoints", out / "train.jsonl"
    out.mkdir(parents=True, exist_ok=True)
    state = {"position": 0, "tokens": 0, "elapsed": 0.0, "total_steps": settings.steps, "settings": asdict(settings)}
    found = checkpoint.latest(ckpt_dir)
    step = 0
    if found is not None:
        state = checkpoint.load(found, model, optimizer)
        step = state["step"]
        if dist.main:
            print(f"resuming from {found} (step {step}, {state['tokens']:,} tokens)", file=sys.stderr)
    if dist.main and log_file.exists():  # drop log rows past the checkpoint: they will be made again
        rows = [r for r in log_file.read_text().splitlines() if r.strip() and json.loads(r)["step"] <= step]
        log_file.write_text("".join(r + "\n" for r in rows))
    forward = dist.wrap(StudentForward(model))
    forward.train()
    amp_dtype = autocast_dtype(settings.precision, dev)

    def amp():
        return torch.autocast(dev.type, dtype=amp_dtype) if amp_dtype else nullcontext()

    per_step = settings.micro_batch * settings.accumulate * dist.world
    bar = None
    if progress and dist.main:
        from tqdm import tqdm

        bar = tqdm(total=state["total_steps"], initial=step, desc="training", unit="step", file=sys.stderr,
                   dynamic_ncols=True)
    if step == 0 and heldout is not None:  # where the curve starts: the student before training
        row = {"step": 0, "tokens": 0, **evaluate(forward, objective, heldout, settings, amp)}
        if dist.main:
            log_file.write_text(json.dumps(row) + "\n")
    start, status, timed, elapsed_before = time.perf_counter(), "done", [], state["elapsed"]

    def save():
        state["elapsed"] = elapsed_before + time.perf_counter() - start
        if dist.main:
            checkpoint.save(ckpt_dir, step, model, optimizer, state, settings.keep)
        dist.barrier()

    while state["total_steps"] is None or step < state["total_steps"]:
        t0 = time.perf_counter()
        lr = lr_at(step, state["total_steps"] or 10 ** 9, settings)
        for g in optimizer.param_groups:
            g["lr"] = lr
        indices = data.indices(state["position"], per_step)
        losses, trained = [], 0
        for j in range(settings.accumulate):
            lo = (j * dist.world + dist.rank) * settings.micro_batch
            batch = data.batch(indices[lo:lo + settings.micro_batch])
            sync = j == settings.accumulate - 1 or dist.world == 1
            with (nullcontext() if sync else forward.no_sync()), amp():
                loss, _ = objective(forward, batch)
            (loss / settings.accumulate).backward()
            losses.append(loss.item())
            trained += batch.trained_tokens
        grad_norm = torch.nn.utils.clip_grad_norm_(params, settings.clip).item() if settings.clip else 0.0
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        step += 1
        state["position"] += per_step
        state["tokens"] += per_step * data.seq_len
        seconds = time.perf_counter() - t0
        timed.append(seconds)
        loss_value = dist.mean(sum(losses) / len(losses))
        if settings.steps is None and (len(timed) in (1, 5) or len(timed) > 5 and step % settings.save_every == 0):
            # a time budget alone: the schedule's length from the time left and the last steps' pace, set after
            # the first step (so that the warmup and the decay fit a short run), again after five and at every
            # checkpoint (a shared machine's pace changes), so it ends on time
            left = settings.max_time - (time.perf_counter() - start)
            state["total_steps"] = step + max(1, int(left / (sum(timed[-4:]) / len(timed[-4:]))))
            if bar is not None:
                bar.total = state["total_steps"]
        row = {"step": step, "loss": loss_value, "lr": lr, "grad_norm": grad_norm, "tokens": state["tokens"],
               "trained_tokens": trained * dist.world, "tok_per_s": per_step * data.seq_len / seconds}
        if heldout is not None and (step % settings.eval_every == 0 or step == state["total_steps"]):
            row.update(evaluate(forward, objective, heldout, settings, amp))
        if dist.main:
            with open(log_file, "a") as f:
                f.write(json.dumps(row) + "\n")
            if bar is not None:
                bar.set_postfix(loss=f"{loss_value:.4f}", tok_s=f"{row['tok_per_s']:.0f}",
                                **({"held_out": f"{row['eval_loss']:.4f}"} if "eval_loss" in row else {}))
                bar.update(1)
            if "eval_loss" in row:
                plot_log(log_file, out / "loss.png")
        out_of_time = settings.max_time is not None and time.perf_counter() - start >= settings.max_time
        if step % settings.save_every == 0 or out_of_time or step == state["total_steps"]:
            save()
        if out_of_time and step < (state["total_steps"] or 0):
            status = "stopped"
            break
    if bar is not None:
        bar.close()
    if dist.main and log_file.exists():
        plot_log(log_file, out / "loss.png")
    return {"status": status, "step": step, "tokens": state["tokens"], "seconds": elapsed_before + time.perf_counter() - start,
            "total_steps": state["total_steps"]}
