"""Running a suite against a model: any OpenAI-compatible endpoint, or a local model served in-process by
tinythink's own server on a free localhost port. One code path for both, so a local model, a llama.cpp or
Ollama server and a hosted model are measured the same way; requests go out concurrently, so a batching
server batches them (tinythink's engine decodes them together).
"""

from __future__ import annotations

import socket
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass

from tinythink.eval import score as scoring
from tinythink.eval.fetch import sha256
from tinythink.eval.tasks import Example, Task
from tinythink.model.memory import peak_rss_bytes, reset_peak_rss
from tinythink.text.reasoning import THINKING_BUDGETS


FILTERED = "[cannot help with this: the server's content filter stopped the reply]"


@dataclass
class Reply:
    text: str
    prompt_tokens: int
    completion_tokens: int
    ttft: float | None  # seconds to the first streamed text
    seconds: float
    error: str | None = None  # the endpoint refused the request (e.g. a prompt over its context)


class Endpoint:
    """An OpenAI-compatible server: chat replies (streamed, to time the first token) and, where the server
    scores prompts (tinythink's does), log-likelihoods of options given token ids."""

    def __init__(self, base_url: str, model: str, api_key: str | None = None, concurrency: int = 16,
                 effort: str | None = None, tokenizer=None):
        import openai

        self.client = openai.OpenAI(base_url=base_url, api_key=api_key or "none", max_retries=2, timeout=600)
        self.model, self.concurrency, self.effort, self.tokenizer = model, concurrency, effort, tokenizer

    def chat(self, messages: list[dict], max_tokens: int) -> Reply:
        import openai

        start, first, text, usage = time.perf_counter(), None, "", None
        extra = {"reasoning_effort": self.effort} if self.effort else {}
        # max_completion_tokens counts the thought too: a task's limit is for its answer, so an effort adds its
        # thinking budget (else a choice task's 8 tokens cut every thought, and low and medium score alike)
        max_tokens += THINKING_BUDGETS.get(self.effort, 0)
        try:
            stream = self.client.chat.completions.create(
                model=self.model, messages=messages, max_completion_tokens=max_tokens, temperature=0, stream=True,
                stream_options={"include_usage": True}, **extra)
            for chunk in stream:
                if chunk.usage is not None:
                    usage = chunk.usage
                # a server's content filter refuses in `refusal`, or cuts a reply off with finish_reason
                # content_filter: the safety suite counts both as the server refusing
                piece = chunk.choices[0].delta.content or getattr(chunk.choices[0].delta, "refusal", None) \
                    if chunk.choices else None
                if piece:
                    first = first or time.perf_counter()
                    text += piece
                if chunk.choices and chunk.choices[0].finish_reason == "content_filter":
                    text = f"{FILTERED} {text}"
        except openai.APIStatusError as e:
            return Reply("", 0, 0, None, time.perf_counter() - start, error=f"{e.status_code}: {e.message}")
        seconds = time.perf_counter() - start
        return Reply(text, usage.prompt_tokens if usage else 0, usage.completion_tokens if usage else 0,
                     first - start if first else None, seconds)

    def task(self, name: str, body: dict, field: str) -> Reply:
        """One ready-made task's answer (`POST /v1/tasks/{name}`), its `field` as the reply's text."""
        import httpx
        import openai

        start = time.perf_counter()
        try:
            r = self.client.post(f"/tasks/{name}", body={**body, "model": self.model}, cast_to=httpx.Response)
        except openai.APIStatusError as e:
            return Reply("", 0, 0, None, time.perf_counter() - start, error=f"{e.status_code}: {e.message}")
        answer = r.json()[field]
        return Reply("" if answer is None else str(answer), 0, 0, None, time.perf_counter() - start)

    def logliks(self, options: list[tuple[str, str]]) -> list[tuple[float, int]]:
        """(log-likelihood, characters) of each continuation given its context."""
        prompts, starts = [], []
        for context, continuation in options:
            ctx = self.tokenizer.encode(context)
            prompts.append(ctx + self.tokenizer.encode(continuation, add_special_tokens=False))
            starts.append(len(ctx))
        # all options at once: tinythink's engine computes their shared context once (it keeps a scored prompt's
        # logprobs with its KV in the prefix cache, and the other options wait for it)
        r = self.client.completions.create(model=self.model, prompt=prompts, max_tokens=0, echo=True, logprobs=0)
        choices = sorted(r.choices, key=lambda c: c.index)
        return [(sum(c.logprobs.token_logprobs[s:]), len(cont)) for c, s, (_, cont) in zip(choices, starts, options)]


def progress(total: int, desc: str):
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="ex", file=sys.stderr, dynamic_ncols=True, leave=True)


def run_tasks(endpoint: Endpoint, tasks: list[Task], examples: dict[str, list[Example]], loglik: bool) -> dict:
    """Every task's examples through one pool of `endpoint.concurrency` requests, in task order; each task's
    replies and scores, with intervals and speed. One pool, not one per task: a task's last long replies then
    overlap the next task's first requests and the server's batch stays full, where task after task left a tail
    of a few rows at a time each (a third of the suite's time at --limit 40). A task's wall time runs from its
    first request to its last reply, so neighbouring tasks' times overlap a little."""
    work = [(task, example) for task in tasks for example in examples[task.name]]
    bar = progress(len(work), endpoint.model)
    lock = threading.Lock()

    def one(item: tuple[Task, Example]) -> tuple[dict, float, float]:
        task, example = item
        start = time.perf_counter()
        reply = endpoint.task(task.api[0], example.request, task.api[1]) if task.api else \
            endpoint.chat(example.messages, task.max_tokens)
        value, answer = task.score(example, reply.text) if reply.error is None else (0.0, None)
        row = {"id": example.id, "reply": reply.text, "answer": answer, "score": value, "error": reply.error,
               "prompt_tokens": reply.prompt_tokens, "completion_tokens": reply.completion_tokens,
               "ttft": reply.ttft, "seconds": reply.seconds}
        if task.kind in ("answer", "choice", "label"):
            row["gold"] = example.gold
        if loglik and example.options:
            scores = [ll / max(chars, 1) for ll, chars in endpoint.logliks(example.options)]
            row["loglik_pick"] = max(range(len(scores)), key=scores.__getitem__)
            row["loglik_score"] = float(row["loglik_pick"] == example.gold)
        with lock:
            bar.set_postfix_str(task.name, refresh=False)
            bar.update()
        return row, start, time.perf_counter()

    with ThreadPoolExecutor(endpoint.concurrency) as pool:
        done = list(pool.map(one, work))
    bar.close()
    results, at = {}, 0
    for task in tasks:
        mine, at = done[at:at + len(examples[task.name])], at + len(examples[task.name])
        wall = max((end for _, _, end in mine), default=0.0) - min((start for _, start, _ in mine), default=0.0)
        results[task.name] = summarize(task, [row for row, _, _ in mine], wall)
    return results


def summarize(task: Task, rows: list[dict], wall: float) -> dict:
    values = [r["score"] for r in rows]
    result = {"kind": task.kind, "suite": task.suite, "n": len(rows), "score": scoring.mean(values),
              "ci": list(scoring.bootstrap(len(values), lambda i: scoring.mean([values[k] for k in i]))),
              "unparseable": sum(r["answer"] is None and r["error"] is None for r in rows),
              "errors": sum(r["error"] is not None for r in rows)}
    if task.kind == "label":
        gold, predicted = [r["gold"] for r in rows], [r["answer"] for r in rows]
        result["macro_f1"] = scoring.macro_f1(predicted, gold)
        result["macro_f1_ci"] = list(scoring.bootstrap(
            len(rows), lambda i: scoring.macro_f1([predicted[k] for k in i], [gold[k] for k in i])))
    if task.kind == "compliance":
        result["false_refusal_rate"] = 1 - result["score"]
    if rows and "loglik_score" in rows[0]:
        ll = [r["loglik_score"] for r in rows]
        result["loglik"] = scoring.mean(ll)
        result["loglik_ci"] = list(scoring.bootstrap(len(ll), lambda i: scoring.mean([ll[k] for k in i])))
    completion = sum(r["completion_tokens"] for r in rows)
    ttfts = sorted(r["ttft"] for r in rows if r["ttft"] is not None)
    result["speed"] = {"prompt_tokens": sum(r["prompt_tokens"] for r in rows), "completion_tokens": completion,
                       "wall_s": wall, "completion_tokens_per_s": completion / wall if wall else None,
                       "ttft_p50_s": ttfts[len(ttfts) // 2] if ttfts else None,
                       "latency_p50_s": sorted(r["seconds"] for r in rows)[len(rows) // 2] if rows else None}
    result["rows"] = rows
    return result


# ---- a local model, served in-process

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def weight_bytes(model) -> int:
    """Bytes of a model's weights as served (prepared: fused, on our kernels, the tied head's int8 copy); its KV
    caches are not weights."""
    from tinythink.model.kv_cache import KVCache

    caches = {id(t) for m in model.modules() if isinstance(m, KVCache) for t in m.buffers()}
    return sum(t.numel() * t.element_size() for t in [*model.parameters(), *model.buffers()] if id(t) not in caches)


@contextmanager
def local_endpoint(ref: str, dtype: str = "auto", quantize: int | None = None, max_batch: int = 16,
                   context: int = 1024, effort: str | None = None):
    """A model loaded here and served on a free localhost port; yields (Endpoint, facts about the model)."""
    import torch
    import uvicorn

    from tinythink.llm import LLM
    from tinythink.model.load import dtype_named, load_model
    from tinythink.serve.app import ServerSettings, create_app
    from tinythink.serve.host import ModelHost

    reset_peak_rss()
    context += THINKING_BUDGETS.get(effort, 0)  # a whole thought fits beside the prompt and the answer
    loaded = load_model(ref, dtype_named(dtype), quantize=quantize)
    name = loaded.name + (f"-int{quantize}" if quantize else "")
    model = loaded.model
    if dtype == "float32":  # float32 throughout, the KV cache too: batched replies then equal unbatched ones
        model.kv_dtype = torch.float32
    info = {"name": name, "source": str(loaded.path), "sha256": sha256(loaded.path), "format": loaded.format,
            "dtype": str(next(model.parameters()).dtype).removeprefix("torch."), "quantize": quantize,
            "parameters": model.num_parameters(), "file_bytes": loaded.file_bytes,
            "threads": torch.get_num_threads(), "max_batch": max_batch,
            "kv_dtype": str(model.kv_dtype).removeprefix("torch.")}
    # every slot holds the whole context; a prefix cache large enough to keep each multiple-choice context until
    # its other options come in, with `max_batch` requests in flight (64 MB holds ~2,800 tokens of the default
    # model's bfloat16 KV)
    host = ModelHost(name, LLM(loaded), max_batch=max_batch, max_queue=1 << 16, context=context,
                     kv_budget_bytes=None, prefix_cache_bytes=512 << 20)
    info["weight_bytes"] = weight_bytes(host.llm.model)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app({name: host}, ServerSettings()), host="127.0.0.1", port=port,
                                           log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    try:
        endpoint = Endpoint(f"http://127.0.0.1:{port}/v1", name, concurrency=max_batch, effort=effort,
                            tokenizer=loaded.tokenizer)
        endpoint.chat([{"role": "user", "content": "Hello"}], 4)  # warm-up: first-call costs are not the model's
        yield endpoint, info
        info["peak_rss_bytes"] = peak_rss_bytes()
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        host.close()
        model.clear_caches()
