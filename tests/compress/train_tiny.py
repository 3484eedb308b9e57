"""Train the tiny model on the patterned data: run by the trainer tests as a script (in a process of its own, to be
killed, or under torchrun), and imported for the uninterrupted run they compare with."""

import argparse
import sys
import time
from pathlib import Path

import torch
from safetensors.torch import save_file

sys.path.insert(0, str(Path(__file__).parent))
from tiny_models import patterned_documents, tiny_model  # noqa: E402

from tinythink.compress.checkpoint import weights  # noqa: E402
from tinythink.compress.data import PackedData, pack  # noqa: E402
from tinythink.compress.objectives import Distill, LanguageModeling  # noqa: E402
from tinythink.compress.losses import ForwardKL  # noqa: E402
from tinythink.compress.trainer import TrainSettings, train  # noqa: E402


def sharp_teacher():
    """A random model with confident predictions (its logits scaled up), for the student to move towards."""
    teacher = tiny_model(seed=5, tie_embeddings=False)
    with torch.no_grad():
        teacher.norm.weight.mul_(4)
    return teacher


def run(out: Path, steps: int = 8, accumulate: int = 2, micro_batch: int = 2, slow: float = 0.0, distill: bool = False,
        max_time: float | None = None) -> dict:
    torch.set_num_threads(1)
    model = tiny_model(seed=0, tie_embeddings=not distill)  # tied random models predict their input token
    data = PackedData(pack(patterned_documents(64), 32), seed=1)
    heldout = PackedData(pack(patterned_documents(8, seed=9), 32), split="heldout")
    objective = Distill(ForwardKL(), teacher=sharp_teacher()) if distill else LanguageModeling()

    def slowed(forward, batch):
        time.sleep(slow)
        return objective(forward, batch)

    settings = TrainSettings(steps=steps, max_time=max_time, lr=3e-3, warmup_steps=2, micro_batch=micro_batch,
                             accumulate=accumulate, save_every=2, eval_every=4, eval_batches=2, keep=2,
                             precision="float32")
    summary = train(model, slowed if slow else objective, data, heldout, settings, out, progress=False)
    if int(__import__("os").environ.get("RANK", 0)) == 0:
        save_file(weights(model), str(out / "final.safetensors"))
    return summary


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("out", type=Path)
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--accumulate", type=int, default=2)
    p.add_argument("--micro-batch", type=int, default=2)
    p.add_argument("--slow", type=float, default=0.0)
    p.add_argument("--distill", action="store_true")
    a = p.parse_args()
    run(a.out, a.steps, a.accumulate, a.micro_batch, a.slow, a.distill)
