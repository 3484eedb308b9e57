"""`tinythink make` end to end on a tiny teacher with the default model's tokenizer: every stage, its records, a stop
by --max-time and the rerun that resumes it, the model card, a directory tinythink loads, and the dry run."""

import json
import subprocess
import sys

import pytest
import torch

from tinythink.cli import main
from tinythink.model.hf_checkpoint import save_hf_dir
from tinythink.model.load import load_model

from tiny_models import tiny_model

TEXT = "\n\n".join(
    f"Ticket {i}: my order number {1000 + i} arrived {'late' if i % 2 else 'broken'} and I would like a "
    f"{'refund' if i % 3 else 'replacement'}. The support team answered within {i % 5 + 1} days." for i in range(120))


@pytest.fixture(scope="module")
def tiny_teacher(tmp_path_factory, ours):
    path = tmp_path_factory.mktemp("teacher") / "tiny-teacher"
    model = tiny_model(vocab_size=ours.config.vocab_size, dim=64, n_layers=4, n_heads=4, n_kv_heads=2,
                       intermediate_size=128, max_seq_len=256)
    tok = ours.tokenizer
    save_hf_dir(model, path, tok.token_id(tok.bos_token), sorted(tok.stop_ids))
    tok.save_hf(path)
    data = tmp_path_factory.mktemp("data") / "tickets.txt"
    data.write_text(TEXT)
    return path, data


def make_args(teacher, data, out, *extra):
    return ["make", "--teacher", str(teacher), "--out", str(out), "--data", str(data), "--seq-len", "64",
            "--calibration", "8", "--layers", "3", "--mlp", "64", "--micro-batch", "2", "--accumulate", "1",
            "--quantize", "4", "--group-size", "32", "--eval-suite", "sentiment", "--eval-limit", "2",
            "--export", "hf,gguf", "--threads", "2", *extra]


def test_the_dry_run_prints_shapes_sizes_and_times(tiny_teacher, tmp_path, capsys):
    teacher, data = tiny_teacher
    assert main(make_args(teacher, data, tmp_path / "out", "--tokens", "20k", "--dry-run")) == 0
    plan = capsys.readouterr().out
    for needle in ("teacher: 4 layers, hidden 64", "student shape: 3 layers, hidden 64, 4/2 heads, MLP 64",
                   "int4", "tok/s", "one distillation step", "--tokens 20,000", "data -> prune -> distill -> quantize"):
        assert needle in plan, needle
    assert not (tmp_path / "out").exists()


def test_make_runs_every_stage_stops_on_time_and_resumes(tiny_teacher, tmp_path):
    teacher, data = tiny_teacher
    out = tmp_path / "mini"
    args = make_args(teacher, data, out, "--tokens", "6k", "--max-time", "1s")
    first = subprocess.run([sys.executable, "-m", "tinythink.cli", *args], capture_output=True, text=True)
    assert first.returncode == 3, first.stderr[-2000:]
    assert "stopped by --max-time" in first.stderr
    step = json.loads((out / "distill" / "train.jsonl").read_text().splitlines()[-1])["step"]
    assert (out / "prune" / "record.json").is_file() and not (out / "distill" / "record.json").exists()

    second = subprocess.run([sys.executable, "-m", "tinythink.cli", *args[:-2], "--max-time", "10m"],
                            capture_output=True, text=True)
    assert second.returncode == 0, second.stderr[-3000:]
    assert "[data] done already" in second.stderr and "[prune] done already" in second.stderr
    assert "resuming from" in second.stderr
    rows = [json.loads(line) for line in (out / "distill" / "train.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == list(range(len(rows))) and len(rows) > step + 1
    records = {s: json.loads((out / s / "record.json").read_text()) for s in
               ("data", "prune", "distill", "quantize", "evaluate", "export")}
    assert records["prune"]["parameters"] < records["prune"]["teacher_parameters"]
    assert records["quantize"]["bits"] == 4 and records["quantize"]["method"] == "gptq"
    stages = records["evaluate"]["stages"]
    assert list(stages) == ["teacher", "pruned", "distilled", "quantized"]
    assert all(s["decode_tok_s"] > 0 and s["peak_rss_mb"] > 0 and s["perplexity"] > 1 for s in stages.values())
    assert "light" in records["evaluate"]["aggregates"] and (out / "evaluate" / "report.md").is_file()
    card = (out / "README.md").read_text()
    for needle in ("## Recipe", "tinythink make --teacher", "## Data", "## Pruning", "## Distillation",
                   "## Quantization", "| quantized |", "retention", "tinythink serve -m"):
        assert needle in card, needle
    served = load_model(str(out))  # the directory itself is the model
    assert served.config.quantization == {"bits": 4, "group_size": 32} and served.config.n_layers == 3
    gguf = load_model(str(out / "export" / "mini-q4_1.gguf"))
    assert gguf.config.n_layers == 3 and gguf.config.intermediate_size == 64
    ids = torch.tensor([served.tokenizer.encode("Ticket 7: my order")])
    with torch.no_grad():
        assert (served.model(ids).argmax(-1) == gguf.model(ids).argmax(-1)).all()


def test_other_settings_in_the_same_directory_are_refused(tiny_teacher, tmp_path, capsys):
    teacher, data = tiny_teacher
    out = tmp_path / "m"
    out.mkdir()
    (out / "make.json").write_text(json.dumps({"teacher": str(teacher), "layers": 2}))
    assert main(make_args(teacher, data, out, "--tokens", "1k")) == 2
    assert "was made with other settings" in capsys.readouterr().err


def test_make_under_torchrun_distills_on_two_processes(tiny_teacher, tmp_path):
    import os

    teacher, data = tiny_teacher
    out = tmp_path / "ddp"
    args = ["make", "--teacher", str(teacher), "--out", str(out), "--data", str(data), "--seq-len", "64",
            "--calibration", "8", "--layers", "3", "--tokens", "4k", "--micro-batch", "2", "--accumulate", "1",
            "--eval-suite", "sentiment", "--eval-limit", "1"]
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                           "-m", "tinythink.cli", *args], capture_output=True, text=True, timeout=600,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("# ddp") == 1  # the card, printed by the first process only
    distill = json.loads((out / "distill" / "record.json").read_text())
    # 4,000 tokens in steps of 2 sequences x 64 tokens x 1 accumulation x 2 processes
    assert distill["status"] == "done" and distill["step"] == 16 and distill["tokens"] == 16 * 2 * 2 * 64
    assert load_model(str(out)).config.n_layers == 3
