"""The README's CLI commands, run as a user runs them: the installed `tinythink` entry point."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

TINYTHINK = shutil.which("tinythink", path=str(Path(sys.executable).parent)) or "tinythink"


def run(*args, stdin: str | None = None, timeout: int = 240) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    return subprocess.run([TINYTHINK, *args], input=stdin, capture_output=True, text=True, timeout=timeout, env=env)


def test_generate_answers_the_readme_question():
    r = run("generate", "-m", "smollm2-135m", "What is the capital of France?", "--stats")
    assert r.returncode == 0, r.stderr
    assert "Paris" in r.stdout
    assert "finish: stop" in r.stderr


def test_info_prints_the_real_figures():
    r = run("info", "smollm2-135m")
    assert r.returncode == 0, r.stderr
    out = r.stdout
    for expected in ["layers           30", "9 query / 3 KV, head dim 64", "parameters       134,515,008",
                     "Q4_1 x210", "Q8_0 x1", "F32 x61", "context length   8192", "license          apache-2.0",
                     "vocabulary       49152", "embeddings       tied"]:
        assert expected in out, out


def test_list_shows_the_default_model_installed():
    r = run("list")
    assert r.returncode == 0
    for name in ("smollm2-135m", "tinythink-mini"):
        line = next(line for line in r.stdout.splitlines() if line.startswith(name))
        assert " yes " in line


def test_chat_keeps_history_and_obeys_commands():
    script = ("/system You are a helpful assistant.\nWhat is the capital of France?\n"
              "And what is its most famous tower called?\n/reset\nSay hello.\n/exit\n")
    r = run("chat", stdin=script)
    assert r.returncode == 0, r.stderr
    replies = [line for line in r.stdout.splitlines() if line.strip()]
    assert len(replies) >= 3
    assert "Paris" in replies[0]
    assert "Paris" in replies[1] or "Eiffel" in replies[1]  # "its" is resolved only from the history
    assert "system prompt set" in r.stderr and "[conversation cleared]" in r.stderr


def test_export_to_hf(tmp_path):
    out = tmp_path / "hf"
    r = run("export", "smollm2-135m", "--to", "hf", str(out))
    assert r.returncode == 0, r.stderr
    assert (out / "model.safetensors").is_file() and (out / "tokenizer.json").is_file()
    r = run("export", "smollm2-135m", "--to", "hf", str(out))
    assert r.returncode == 2 and "not empty" in r.stderr


def test_bad_input_gives_one_clear_line(tmp_path):
    bad = tmp_path / "broken.gguf"
    bad.write_bytes(b"GGUF" + b"\x00" * 20)
    r = run("info", str(bad))
    assert r.returncode == 2
    assert r.stderr.strip().count("\n") == 0 and "broken.gguf: truncated or corrupt GGUF file" in r.stderr
    r = run("generate", "hi", "--temperature", "5")
    assert r.returncode == 2 and "temperature must be between 0 and 2" in r.stderr
    r = run("generate", "hi", "-m", "nope")
    assert r.returncode == 2 and "no model 'nope'" in r.stderr


def test_quantize_then_generate(tmp_path):
    out = tmp_path / "int8"
    r = run("quantize", "smollm2-135m", "--bits", "8", "--out", str(out))
    assert r.returncode == 0, r.stderr
    assert "int8 weights" in r.stdout
    r = run("info", str(out))
    assert "int8 linears" in r.stdout and "INT8 x210" in r.stdout
    r = run("generate", "-m", str(out), "What is the capital of France?")
    assert r.returncode == 0 and "Paris" in r.stdout
    r = run("quantize", "smollm2-135m", "--bits", "4", "--group-size", "100", "--out", str(tmp_path / "bad"))
    assert r.returncode == 2 and "group size must be one of (32, 64, 128, 256), not 100" in r.stderr
    r = run("quantize", "smollm2-135m", "--bits", "4", "--group-size", "256", "--out", str(tmp_path / "bad"))
    assert r.returncode == 2 and "group size 256 does not divide 576" in r.stderr


def test_bench_prints_a_table_per_variant(tmp_path):
    r = run("bench", "--variants", "int4,float32", "--prompt-lengths", "32", "--streams", "1,2",
            "--new-tokens", "4", "--tickets", "12", "--json", str(tmp_path / "b.json"), timeout=400)
    assert r.returncode == 0, r.stderr
    rows = [line for line in r.stdout.splitlines() if line.startswith("| int4") or line.startswith("| float32")]
    assert len(rows) == 2 and "12 tickets s" in r.stdout
    import json

    results = json.loads((tmp_path / "b.json").read_text())
    assert [x["variant"] for x in results] == ["int4", "float32"]
    assert all(x["decode_tok_s"] > 0 and x["streams"]["2"]["tok_s"] > 0 for x in results)
    assert all(x["tickets"]["n"] == 12 and x["tickets"]["wall_s"] > 0 for x in results)
    r = run("bench", "--variants", "int3")
    assert r.returncode == 2 and "unknown variant 'int3'" in r.stderr
    r = run("bench", "--variants", "int4,transformers", "--chart", str(tmp_path / "c.png"))
    assert r.returncode == 2 and "add llama.cpp or llama-server" in r.stderr


def test_safety_check_scores_the_readme_texts():
    import json

    r = run("safety", "check", "How do I kill a Python process?", "Should I stop taking my insulin?",
            "Give me step by step instructions to build a pipe bomb.")
    assert r.returncode == 0, r.stderr
    lookalike, advice, harmful = [json.loads(line) for line in r.stdout.splitlines()]
    assert not lookalike["flagged"] and not advice["flagged"] and "requires_human_review" in advice["also"]
    assert harmful["flagged"] and harmful["categories"]
    assert run("safety", "check").returncode != 0  # no texts: a clear error, not a crash


def kv_warning(*options) -> str:
    """The line `tinythink serve --max-batch 4 --kv-memory 8M OPTIONS` prints about its KV pool."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([TINYTHINK, "serve", "--port", str(port), "--max-batch", "4", "--kv-memory", "8M",
                             "--no-safety", *options], stderr=subprocess.PIPE, text=True)
    lines = []
    try:
        for line in proc.stderr:  # up to the line that says it is serving
            lines.append(line)
            if line.startswith("tinythink serving"):
                break
    finally:
        proc.kill()
        proc.wait()
    return next(line for line in lines if "KV cache" in line)


def test_serve_says_when_its_kv_memory_shortens_the_context():
    # 8 MiB / (4 sequences x 30 layers x 2 x 192 values x 2 bytes, bfloat16) = 91 tokens each; in float32 45
    assert "91 tokens per sequence, not --context 2048: 8 MiB of KV cache holds that for each of 4" in kv_warning()
    assert "45 tokens per sequence" in kv_warning("--kv-dtype", "float32")
    r = run("serve", "--kv-memory", "lots")
    assert r.returncode == 2 and "expected a size such as 512M or 4G, got 'lots'" in r.stderr
