"""The runtimes `tinythink bench` compares with, measured on exactly the token ids tinythink gets:

- `llama.cpp`: llama-cpp-python on the same GGUF file, one sequence at a time (that is its API);
- `llama-server`: llama.cpp's own server, with parallel slots and continuous batching, over HTTP;
- `transformers`: Hugging Face transformers in float32, static batches through `generate`.

Each returns the dict `tinythink.engine.bench.measure` returns, with None where the runtime cannot be
measured (llama-cpp-python has no concurrent streams). None of them imports torch unless it needs it, so a
llama.cpp process's peak RSS is llama.cpp's own. Each is a benchmark dependency, never a runtime one:
`make bench-deps` builds llama-cpp-python and llama-server.
"""

from __future__ import annotations

import json
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from tinythink.model.memory import peak_rss_mb

LLAMA_CPP = ("llama.cpp", "llama-server")
RUNTIMES = (*LLAMA_CPP, "transformers")


def percentiles(latencies: list[float]) -> tuple[float, float]:
    latencies = sorted(latencies)
    return statistics.median(latencies), latencies[min(len(latencies) - 1, round(0.95 * (len(latencies) - 1)))]


def llama_cpp(path: Path, threads: int, work: dict) -> dict:
    try:
        from llama_cpp import Llama
    except ImportError:
        raise RuntimeError("llama-cpp-python is not installed (make bench-deps builds it)") from None

    start = time.perf_counter()
    context = max(len(ids) for ids in work["prefill"].values()) + work["new_tokens"] + 8
    llm = Llama(str(path), n_ctx=max(context, 1024), n_threads=threads, n_threads_batch=threads, n_batch=512,
                verbose=False)
    result = {"variant": "llama.cpp", "load_s": time.perf_counter() - start, "prefill_tok_s": {}, "streams": None}
    llm.eval(work["decode"][:16])  # warm-up
    for n, ids in work["prefill"].items():
        best = float("inf")
        for _ in range(2):
            llm.reset()
            t = time.perf_counter()
            llm.eval(ids)
            best = min(best, time.perf_counter() - t)
        result["prefill_tok_s"][n] = len(ids) / best

    llm.reset()  # else generate() would reuse the prefill prompts' KV: they share this prompt's start
    t = time.perf_counter()
    tokens = llm.generate(work["decode"], top_k=1, temp=0.0)  # no stop: exactly new_tokens tokens
    next(tokens)
    first = time.perf_counter()
    for _ in range(work["new_tokens"] - 1):
        next(tokens)
    result["ttft_ms"] = (first - t) * 1000
    result["decode_tok_s"] = (work["new_tokens"] - 1) / (time.perf_counter() - first)

    # one ticket after another; generate() reuses the KV of the prefix the previous prompt shares
    stop = set(work["stop_ids"])
    t = time.perf_counter()
    answers = []
    for ids in work["tickets"]:
        out = []
        for token in llm.generate(ids, top_k=1, temp=0.0):
            if token in stop:
                break
            out.append(token)
            if len(out) == work["ticket_tokens"]:
                break
        answers.append(llm.detokenize(out).decode("utf-8", "replace"))
    result["tickets"] = {"wall_s": time.perf_counter() - t, "answers": answers}
    result["peak_rss_mb"] = peak_rss_mb()
    return result


def llama_server_binary() -> str:
    found = shutil.which("llama-server") or shutil.which("llama-server", path=str(Path(sys.executable).parent))
    if not found:
        raise RuntimeError("llama-server is not built (make bench-deps builds it into the virtual environment)")
    return found


def _post(port: int, body: dict) -> dict:
    req = urllib.request.Request(f"http://127.0.0.1:{port}/completion", json.dumps(body).encode(),
                                 {"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=300) as r:
        return json.loads(r.read())


def llama_server(path: Path, threads: int, work: dict) -> dict:
    """llama-server with one slot per stream of the largest stream count, each slot holding the longest prompt
    and its completion; a stream count's requests sent at once, the tickets through one client per slot."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    slots = max(max(work["streams"]), 1)
    slot_context = max(len(ids) for ids in work["prefill"].values()) + work["new_tokens"] + 8
    cmd = [llama_server_binary(), "-m", str(path), "--host", "127.0.0.1", "--port", str(port), "-t", str(threads),
           "-tb", str(threads), "-np", str(slots), "-c", str(slots * max(slot_context, 1024)), "-b", "512"]
    start = time.perf_counter()
    log = tempfile.TemporaryFile("w+")  # not a pipe: it logs every request, and a pipe nobody reads stalls it
    server = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, text=True)
    try:
        while True:
            if server.poll() is not None:
                log.seek(0)
                raise RuntimeError(f"llama-server exited: {log.read()[-500:]}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as r:
                    if r.status == 200:
                        break
            except (urllib.error.URLError, ConnectionError):
                time.sleep(0.2)
        result = {"variant": "llama-server", "load_s": time.perf_counter() - start, "prefill_tok_s": {}}
        greedy = {"temperature": 0.0, "top_k": 1, "cache_prompt": False}
        _post(port, {"prompt": work["decode"][:16], "n_predict": 2, **greedy})  # warm-up
        for n, ids in work["prefill"].items():  # the server's own timings: HTTP is not prefill
            best = min(_post(port, {"prompt": ids, "n_predict": 1, **greedy})["timings"]["prompt_ms"]
                       for _ in range(2))
            result["prefill_tok_s"][n] = len(ids) / best * 1000
        timings = _post(port, {"prompt": work["decode"], "n_predict": work["new_tokens"], "ignore_eos": True,
                               **greedy})["timings"]
        result["ttft_ms"] = timings["prompt_ms"]
        result["decode_tok_s"] = timings["predicted_per_second"]

        result["streams"] = {}
        for s, prompts in work["streams"].items():
            t = time.perf_counter()

            def one(ids):
                r = _post(port, {"prompt": ids, "n_predict": work["new_tokens"], "ignore_eos": True, **greedy})
                return r["tokens_predicted"], time.perf_counter() - t

            with ThreadPoolExecutor(len(prompts)) as pool:
                done = list(pool.map(one, prompts))
            wall = time.perf_counter() - t
            p50, p95 = percentiles([latency for _, latency in done])
            result["streams"][s] = {"tok_s": sum(n for n, _ in done) / wall, "p50_s": p50, "p95_s": p95}

        t = time.perf_counter()  # a client per slot, each sending its next ticket when the last is answered
        with ThreadPoolExecutor(slots) as pool:
            replies = list(pool.map(lambda ids: _post(port, {
                "prompt": ids, "n_predict": work["ticket_tokens"], "temperature": 0.0, "top_k": 1,
                "cache_prompt": True}), work["tickets"]))
        result["tickets"] = {"wall_s": time.perf_counter() - t, "answers": [r["content"] for r in replies]}
        with open(f"/proc/{server.pid}/status") as f:  # the server's peak RSS, not this client's
            result["peak_rss_mb"] = next(int(line.split()[1]) for line in f if line.startswith("VmHWM")) / 1024
        return result
    finally:
        server.terminate()
        server.wait(timeout=30)
        log.close()


def transformers_float32(path: Path, threads: int, work: dict) -> dict:
    import torch
    from transformers import AutoModelForCausalLM

    from tinythink.model.load import load_tokenizer

    torch.set_num_threads(threads)
    start = time.perf_counter()
    model = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name, dtype=torch.float32).eval()
    result = {"variant": "transformers", "load_s": time.perf_counter() - start, "prefill_tok_s": {}}
    tokenizer = load_tokenizer(str(path))
    stop = sorted(work["stop_ids"])
    with torch.inference_mode():
        model(torch.tensor([work["decode"][:16]]))  # warm-up
        for n, ids in work["prefill"].items():
            best = float("inf")
            for _ in range(2):
                t = time.perf_counter()
                model(torch.tensor([ids]), use_cache=True, logits_to_keep=1)
                best = min(best, time.perf_counter() - t)
            result["prefill_tok_s"][n] = len(ids) / best

        t = time.perf_counter()
        out = model(torch.tensor([work["decode"]]), use_cache=True, logits_to_keep=1)
        token = out.logits[:, -1].argmax(-1, keepdim=True)
        first = time.perf_counter()
        for _ in range(work["new_tokens"] - 1):
            out = model(token, past_key_values=out.past_key_values, use_cache=True)
            token = out.logits[:, -1].argmax(-1, keepdim=True)
        result["ttft_ms"] = (first - t) * 1000
        result["decode_tok_s"] = (work["new_tokens"] - 1) / (time.perf_counter() - first)

        def generate(prompts: list[list[int]], max_new: int, eos: list[int] | None):
            """One static batch, left-padded, as transformers users batch; (B, max_new) new token ids."""
            width = max(map(len, prompts))
            ids = torch.tensor([[0] * (width - len(p)) + p for p in prompts])
            mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
            kw = {"eos_token_id": eos} if eos else {"min_new_tokens": max_new}
            return model.generate(ids, attention_mask=mask, max_new_tokens=max_new, do_sample=False,
                                  pad_token_id=stop[0], **kw)[:, width:]

        result["streams"] = {}
        for s, prompts in work["streams"].items():
            t = time.perf_counter()
            new = generate(prompts, work["new_tokens"], None)
            wall = time.perf_counter() - t  # a static batch: every stream finishes with the last
            result["streams"][s] = {"tok_s": new.numel() / wall, "p50_s": wall, "p95_s": wall}

        t = time.perf_counter()
        answers = []
        batch = max(max(work["streams"]), 1)
        for lo in range(0, len(work["tickets"]), batch):
            for row in generate(work["tickets"][lo:lo + batch], work["ticket_tokens"], stop).tolist():
                answers.append(tokenizer.decode([i for i in row if i not in stop]))
        result["tickets"] = {"wall_s": time.perf_counter() - t, "answers": answers}
    result["peak_rss_mb"] = peak_rss_mb()
    return result


def measure(runtime: str, model_ref: str, threads: int, work: dict) -> dict:
    from tinythink.model.registry import resolve

    path = resolve(model_ref)
    if path.suffix != ".gguf":
        raise RuntimeError(f"{runtime} is measured on a GGUF file; {model_ref} is {path}")
    run = {"llama.cpp": llama_cpp, "llama-server": llama_server, "transformers": transformers_float32}[runtime]
    return run(path, threads, work)
