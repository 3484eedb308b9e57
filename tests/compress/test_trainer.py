"""The trainer: it learns, it resumes exactly after kill -9, a time limit stops it on a checkpoint, and two gloo
processes take the steps one process takes."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch
from safetensors.torch import load_file

from tinythink.compress import checkpoint

from train_tiny import run

SCRIPT = Path(__file__).parent / "train_tiny.py"


def same_weights(a: Path, b: Path, atol: float = 0.0) -> bool:
    wa, wb = load_file(str(a)), load_file(str(b))
    return wa.keys() == wb.keys() and all(torch.allclose(wa[k], wb[k], atol=atol, rtol=0) for k in wa)


def test_a_short_run_lowers_the_held_out_loss(tmp_path):
    summary = run(tmp_path, steps=12)
    rows = [json.loads(line) for line in (tmp_path / "train.jsonl").read_text().splitlines()]
    held = [r["eval_ce"] for r in rows if "eval_ce" in r]
    assert summary["status"] == "done" and summary["step"] == 12 and [r["step"] for r in rows] == list(range(13))
    assert held[-1] < held[0] - 0.2, held  # held[0]: the model before training
    assert (tmp_path / "loss.png").stat().st_size > 1000
    assert [p.name for p in sorted((tmp_path / "checkpoints").iterdir())] == ["step-000010", "step-000012"]


def test_distillation_moves_the_student_towards_its_teacher(tmp_path):
    run(tmp_path, steps=40, distill=True)
    rows = [json.loads(line) for line in (tmp_path / "train.jsonl").read_text().splitlines()]
    held = [r["eval_loss"] for r in rows if "eval_loss" in r]
    assert held[-1] < held[0] * 0.8, held


def test_a_run_killed_with_sigkill_resumes_to_the_same_weights(tmp_path):
    run(tmp_path / "whole")
    child = subprocess.Popen([sys.executable, str(SCRIPT), str(tmp_path / "killed"), "--slow", "0.15"])
    deadline = time.time() + 120
    while not (tmp_path / "killed/checkpoints/step-000004").is_dir():
        assert child.poll() is None and time.time() < deadline, "the run ended before it could be killed"
        time.sleep(0.02)
    child.send_signal(signal.SIGKILL)
    child.wait()
    assert not (tmp_path / "killed/final.safetensors").exists()
    assert checkpoint.latest(tmp_path / "killed/checkpoints").name in ("step-000004", "step-000006")
    summary = run(tmp_path / "killed")  # resumes
    assert summary["step"] == 8
    assert same_weights(tmp_path / "whole/final.safetensors", tmp_path / "killed/final.safetensors")
    steps = [json.loads(line)["step"] for line in (tmp_path / "killed/train.jsonl").read_text().splitlines()]
    assert steps == list(range(9))  # rows past the checkpoint were dropped and made again, once


def test_max_time_stops_on_a_checkpoint_and_a_rerun_finishes(tmp_path):
    summary = run(tmp_path, steps=40, slow=0.05, max_time=0.6)
    assert summary["status"] == "stopped" and 0 < summary["step"] < 40
    assert checkpoint.latest(tmp_path / "checkpoints").name == f"step-{summary['step']:06d}"
    assert run(tmp_path, steps=40)["step"] == 40


def test_two_gloo_processes_take_the_steps_of_one(tmp_path):
    run(tmp_path / "one", accumulate=2)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                           str(SCRIPT), str(tmp_path / "two"), "--accumulate", "1"], env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert same_weights(tmp_path / "one/final.safetensors", tmp_path / "two/final.safetensors", atol=1e-6)
    assert not same_weights(tmp_path / "one/final.safetensors", tmp_path / "two/checkpoints/step-000006/model.safetensors",
                            atol=1e-6)


def test_on_policy_batches_score_the_students_own_text(tiny_data):
    from tinythink.compress.losses import IGNORE, ForwardKL
    from tinythink.compress.objectives import Distill, OnPolicy
    from tinythink.compress.trainer import StudentForward

    from tiny_models import tiny_model
    from train_tiny import sharp_teacher

    data, _ = tiny_data
    student = tiny_model(tie_embeddings=False)
    on_policy = OnPolicy(Distill(ForwardKL(), teacher=sharp_teacher()), fraction=1.0, new_tokens=12, seed=3)
    batch = data.batch([0, 1])
    sampled = on_policy.sampled(student, batch)
    T = batch.tokens.shape[1]
    first = int((batch.documents == batch.documents[:, :1]).sum(1).min())  # the shortest first document
    context = min(max(first, 1), T - 12)
    assert torch.equal(sampled.tokens[:, :context], batch.tokens[:, :context])
    assert (sampled.labels != IGNORE).sum() == 2 * (T - context)  # only the student's own tokens are scored
    assert student.layers[0].self_attn.kv_cache is None and student.training  # left as it was
    loss, _ = on_policy(StudentForward(student), batch)
    loss.backward()
    assert student.lm_head.weight.grad is not None and loss > 0
