"""`tinythink bench`'s parts: one workload of token ids for every runtime, the runtimes compared with, and
the ratio table's direction (above 1 is tinythink ahead, for speeds, times and memory alike)."""

import importlib.util

import pytest
import torch

from tinythink.engine import bench, bench_baselines
from tinythink.model.load import load_tokenizer


@pytest.fixture(scope="module")
def work():
    return bench.workload(load_tokenizer("smollm2-135m"), [24], [1, 2], new_tokens=4, tickets=6)


def test_workload_is_the_same_token_ids_for_every_runtime(work):
    again = bench.workload(load_tokenizer("smollm2-135m"), [24], [1, 2], new_tokens=4, tickets=6)
    assert again == work
    assert len(work["prefill"][24]) == 24 and len(work["decode"]) == 200
    assert [len(p) for p in work["streams"][2]] == [100, 107]
    tok = load_tokenizer("smollm2-135m")
    first = tok.decode(work["tickets"][0], skip_special_tokens=False)
    assert first.startswith("<|im_start|>") and "Ticket 1000:" in first and first.endswith(bench.TICKET_ANSWER)


def _check(result: dict, work: dict, streams: bool = True):
    assert result["prefill_tok_s"][24] > 0 and result["decode_tok_s"] > 0 and result["ttft_ms"] > 0
    assert len(result["tickets"]["answers"]) == len(work["tickets"]) and result["tickets"]["wall_s"] > 0
    assert result["peak_rss_mb"] > 50
    if streams:
        assert result["streams"][2]["tok_s"] > 0 and result["streams"][2]["p95_s"] >= result["streams"][2]["p50_s"]


def test_transformers_runs_the_same_workload_and_answers_like_tinythink(work):
    theirs = bench_baselines.measure("transformers", "smollm2-135m", 2, work)
    ours = bench.measure("smollm2-135m", "float32", 2, work)
    assert torch.is_grad_enabled()  # measuring in-process leaves training in later tests possible
    _check(theirs, work)
    _check(ours, work)
    # the same float32 weights and greedy decoding: the same answers, ticket by ticket
    assert theirs["tickets"]["answers"] == ours["tickets"]["answers"]
    assert any(a.strip() for a in ours["tickets"]["answers"])


needs_llama_cpp = pytest.mark.skipif(importlib.util.find_spec("llama_cpp") is None,
                                     reason="llama-cpp-python is a benchmark dependency (make bench-deps)")
def _llama_server_built() -> bool:
    try:
        return bool(bench_baselines.llama_server_binary())
    except RuntimeError:
        return False


needs_llama_server = pytest.mark.skipif(not _llama_server_built(),
                                        reason="llama-server is a benchmark dependency (make bench-deps)")


@needs_llama_cpp
def test_llama_cpp_runs_the_same_workload(work):
    result = bench_baselines.measure("llama.cpp", "smollm2-135m", 2, work)
    _check(result, work, streams=False)
    assert result["streams"] is None


@needs_llama_server
def test_llama_server_runs_the_same_workload(work):
    _check(bench_baselines.measure("llama-server", "smollm2-135m", 2, work), work)


def _result(variant, prefill, tickets_s, rss, streams=None):
    return {"variant": variant, "prefill_tok_s": {"512": prefill}, "ttft_ms": 1000 / prefill, "decode_tok_s": 10.0,
            "streams": streams, "tickets": {"n": 200, "wall_s": tickets_s, "accuracy": 0.5}, "peak_rss_mb": rss,
            "load_s": 1.0}


def test_ratios_are_against_the_best_llama_cpp_figure_and_above_one_when_ahead(tmp_path):
    results = [
        _result("int8", 900.0, 10.0, 400.0, {"16": {"tok_s": 100.0, "p50_s": 1.0, "p95_s": 2.0}}),
        _result("llama.cpp", 300.0, 40.0, 200.0),
        _result("llama-server", 450.0, 20.0, 250.0, {"16": {"tok_s": 200.0, "p50_s": 1.0, "p95_s": 1.0}}),
        _result("transformers", 2000.0, 5.0, 1000.0, {"16": {"tok_s": 500.0, "p50_s": 1.0, "p95_s": 1.0}}),
    ]
    row = next(line for line in bench.ratios(results).splitlines() if line.startswith("| int8"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    # prefill 900 / best 450; TTFT; decode equal; 16 streams 100 / 200 (llama-server only);
    # tickets: best 20 s / our 10 s; RSS: best 200 MB / our 400 MB. transformers is not a llama.cpp.
    assert cells == ["int8", "2.00x", "2.00x", "1.00x", "0.50x", "2.00x", "0.50x"]
    assert "—" in bench.table(results) and "transformers" not in bench.ratios(results)
    assert bench.ratios(results[:1]) is None
    bench.chart(results, tmp_path / "versus.png")
    png = (tmp_path / "versus.png").read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 10_000
