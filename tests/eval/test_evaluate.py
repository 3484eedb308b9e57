"""`tinythink eval` end to end on the real default model: a model against itself retains exactly 1.0, and the
same suite through a live server's endpoint gives the same replies as the model run here."""

import json
import shutil
import subprocess
import sys

import pytest

from tinythink.errors import TinythinkError
from tinythink.eval.evaluate import Target, evaluate

MODEL = "smollm2-135m"

# one task of each kind that downloads little: a classification (by a prompt, and through the task API), a
# generated math task, multiple choice (by letter and by log-likelihood), a safety set
TASKS = "sentiment,task-sentiment,basic_arithmetic,arc_easy,harmbench"
LIMIT = 6


@pytest.fixture(scope="module")
def self_eval(tmp_path_factory):
    out = tmp_path_factory.mktemp("eval")
    # float32: batched decoding then equals unbatched exactly, so a model and itself agree to the last token
    done = subprocess.run([sys.executable, "-m", "tinythink.cli", "eval", MODEL, "--reference", MODEL, "--suite",
                           TASKS, "--limit", str(LIMIT), "--dtype", "float32", "--concurrency", "4", "--out",
                           str(out)], capture_output=True, text=True, timeout=1200)
    assert done.returncode == 0, done.stderr[-3000:]
    return out, json.loads((out / "results.json").read_text()), done


def test_a_model_against_itself_retains_everything(self_eval):
    out, results, done = self_eval
    assert set(results["tasks"]) == set(TASKS.split(","))
    for name, task in results["tasks"].items():
        assert task["model"]["n"] == task["reference"]["n"] == LIMIT
        assert task["model"]["score"] == task["reference"]["score"]
        assert task["retention"]["value"] == 1.0 and task["retention"]["ci"] == [1.0, 1.0], name
        assert 0 <= task["model"]["ci"][0] <= task["model"]["score"] <= task["model"]["ci"][1] <= 1
    assert results["aggregates"]["light"]["retention"]["value"] == 1.0
    assert "loglik" in results["tasks"]["arc_easy"]["model"]  # scored by log-likelihood as well, locally
    assert "macro_f1" in results["tasks"]["sentiment"]["model"]


def test_the_task_api_is_evaluated_through_its_endpoint(self_eval):
    out, results, done = self_eval
    rows = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    asked = [r for r in rows if r["task"] == "task-sentiment"]
    prompted = {r["id"]: r for r in rows if r["task"] == "sentiment"}
    assert len(asked) == 2 * LIMIT and {r["id"] for r in asked} == set(prompted)  # the same test items
    assert all(r["error"] is None and r["answer"] in ("positive", "negative", "neutral") for r in asked)


def test_outputs_are_complete(self_eval):
    out, results, done = self_eval
    model = results["models"]["model"]
    assert len(model["sha256"]) == 64 and model["parameters"] > 100e6 and model["peak_rss_bytes"] > 100e6
    assert results["packages"]["torch"] and results["settings"]["generated_task_seed"] == 2_000_000
    speed = results["tasks"]["basic_arithmetic"]["model"]["speed"]
    assert speed["completion_tokens"] > 0 and speed["completion_tokens_per_s"] > 0 and speed["ttft_p50_s"] > 0
    # one pool for all tasks: each task's span lies within the suite's wall time
    assert all(0 < t["model"]["speed"]["wall_s"] <= model["wall_s"] for t in results["tasks"].values())
    samples = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    assert len(samples) == 2 * 5 * LIMIT and all("reply" in s and "score" in s for s in samples)
    report = (out / "report.md").read_text()
    assert "| arc_easy | reasoning | accuracy |" in report and "retention" in report and "peak RSS" in report
    for chart in ("scores.png", "tradeoff.png"):
        assert (out / chart).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "tinythink eval" in done.stdout  # the report is printed too


def test_an_endpoint_is_scored_like_the_model_run_here(self_eval, served, tmp_path):
    _, local, _ = self_eval
    target = Target(MODEL, endpoint=served.url, api_key=served.key)
    remote = evaluate(target, None, "sentiment,basic_arithmetic", LIMIT, None, tmp_path, concurrency=4)
    rows = [json.loads(line) for line in (tmp_path / "samples.jsonl").read_text().splitlines()]
    local_rows = [json.loads(line) for line in (self_eval[0] / "samples.jsonl").read_text().splitlines()
                  if json.loads(line)["who"] == "model"]
    for name in ("sentiment", "basic_arithmetic"):
        assert remote["tasks"][name]["model"]["score"] == local["tasks"][name]["model"]["score"]
        assert [r["reply"] for r in rows if r["task"] == name] == \
            [r["reply"] for r in local_rows if r["task"] == name]  # the very same replies
    assert remote["models"]["model"]["endpoint"] == served.url


def test_weights_are_counted_as_served_without_the_kv_caches():
    import torch

    from tinythink.eval.run import weight_bytes
    from tinythink.model.config import ModelConfig
    from tinythink.model.inference import prepare_for_inference
    from tinythink.model.quantize import quantize_model
    from tinythink.model.transformer import Transformer

    config = ModelConfig(vocab_size=256, dim=64, n_layers=2, n_heads=4, n_kv_heads=2, intermediate_size=128,
                         head_dim=16)
    torch.manual_seed(0)
    model = Transformer(config)
    float32 = weight_bytes(model)
    assert float32 >= 4 * sum(p.numel() for p in model.parameters())
    model.setup_caches(8, 512)  # 2 layers x 2 x 8 x 2 x 512 x 16 float32: 1 MiB of caches, no weights
    assert weight_bytes(model) == float32
    int8 = prepare_for_inference(quantize_model(model, 8))  # int8 layers and, served, an int8 copy of the tied head
    assert weight_bytes(int8) < 0.5 * float32


def test_a_recorded_run_serves_as_the_reference(self_eval, served, tmp_path):
    out, local, _ = self_eval
    target = Target(MODEL, endpoint=served.url, api_key=served.key)
    again = evaluate(target, out, "sentiment,basic_arithmetic", LIMIT - 2, None, tmp_path, concurrency=4)
    for name in ("sentiment", "basic_arithmetic"):
        assert again["tasks"][name]["reference"]["n"] == LIMIT - 2
        assert again["tasks"][name]["retention"]["value"] == 1.0  # the same model's replies, recorded and live
    assert again["models"]["reference"]["recorded"] == str(out) and again["models"]["reference"]["sha256"]
    with pytest.raises(TinythinkError, match="has no sentiment results for 2 of these examples"):
        evaluate(target, out, "sentiment", LIMIT + 2, None, tmp_path / "more", concurrency=4)
    with pytest.raises(TinythinkError, match="run with effort None, this run asks low"):
        evaluate(target, out, "sentiment", LIMIT, "low", tmp_path / "effort", concurrency=4)
    assert not (tmp_path / "more").exists()  # refused before the model ran
    # an earlier run's reference, by its name (here the same replies, renamed in a copy of that run)
    copy = tmp_path / "renamed"
    shutil.copytree(out, copy)
    earlier = json.loads((copy / "results.json").read_text())
    earlier["models"]["reference"]["name"] = "the-teacher"
    (copy / "results.json").write_text(json.dumps(earlier))
    named = evaluate(target, copy, "sentiment", LIMIT, None, tmp_path / "named", concurrency=4,
                     recorded_name="the-teacher")
    assert named["models"]["reference"]["name"] == "the-teacher" and named["tasks"]["sentiment"]["reference"]["n"] == LIMIT
    with pytest.raises(TinythinkError, match="not qwen"):
        evaluate(target, copy, "sentiment", LIMIT, None, tmp_path / "nobody", concurrency=4, recorded_name="qwen")
    # a run made on other test items of a task (an earlier version of it) is refused for that task only
    assert earlier["task_versions"]["sentiment"] == 1
    earlier["task_versions"]["sentiment"] = 0
    (copy / "results.json").write_text(json.dumps(earlier))
    with pytest.raises(TinythinkError, match=r"other test items of sentiment \(its version 0; this one is 1\)"):
        evaluate(target, copy, "sentiment", LIMIT, None, tmp_path / "old", concurrency=4, recorded_name="the-teacher")
    again = evaluate(target, copy, "basic_arithmetic", LIMIT, None, tmp_path / "other", concurrency=4,
                     recorded_name="the-teacher")
    assert again["tasks"]["basic_arithmetic"]["reference"]["n"] == LIMIT
