"""`tinythink bench`: prefill, single-stream decode, time to first token, batched throughput, and a
lightweight workload (200 support tickets, each classified with a one-word answer, end to end).

Each variant (float32, bfloat16, int8, int4) runs in a fresh subprocess so that its peak RSS is its own,
and the variants run one after another in the same invocation, so that their ratios are comparable on a
noisy machine.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time

from tinythink.engine import bench_baselines
from tinythink.model.memory import peak_rss_mb

# Prompt text for the measurements: support-ticket prose, the product's typical input.
TEXT = ("Ticket 4411: the customer writes that the invoice for October was charged twice to the same card, and "
        "asks for a refund of the duplicate payment. They also mention that the mobile app logs them out every "
        "time they switch networks, which makes it hard to check the order status while travelling. ") * 60


# The lightweight workload: short support tickets, each classified into one of six categories.
CATEGORIES = ("billing", "technical", "account", "shipping", "refund", "feedback")
TICKET_PARTS = {
    "billing": ["I was charged twice for my {plan} plan this month.", "My invoice shows {amount} but I expected less."],
    "technical": ["The app crashes when I open the {page} page.", "Sync stopped working after the {version} update."],
    "account": ["I can't log in; the password reset email never arrives.", "Please change the email on my account."],
    "shipping": ["My order {order} hasn't arrived after two weeks.",
                 "The tracking for order {order} stopped updating."],
    "refund": ["I returned order {order} and would like my {amount} back.",
               "Please cancel and refund order {order}."],
    "feedback": ["Just wanted to say the new {page} page is great.", "It would be nice to have a dark mode in the app."],
}
# the answer is begun for the model: at 135M parameters it follows this far better than an instruction alone
TICKET_QUESTION = "\n\nIs this ticket about " + ", ".join(CATEGORIES[:-1]) + f" or {CATEGORIES[-1]}?"
TICKET_ANSWER = "This ticket is about"


def support_tickets(n: int, seed: int = 0) -> list[tuple[str, str]]:
    """n (ticket text, category) pairs, made from templates with random details."""
    import random

    rng = random.Random(seed)
    tickets = []
    for i in range(n):
        category = CATEGORIES[i % len(CATEGORIES)]
        text = rng.choice(TICKET_PARTS[category]).format(
            plan=rng.choice(["Basic", "Pro", "Team"]), amount=f"${rng.randint(5, 500)}.{rng.randint(0, 99):02d}",
            page=rng.choice(["settings", "billing", "dashboard", "reports"]), version=f"4.{rng.randint(0, 12)}",
            order=f"#{rng.randint(10000, 99999)}")
        tickets.append((f"Ticket {1000 + i}: {text}", category))
    return tickets


def workload(tokenizer, prompt_lengths: list[int], streams: list[int], new_tokens: int, tickets: int) -> dict:
    """The token ids every runtime is given, made once, so that each one measures exactly the same work."""
    from tinythink.text.chat_template import ChatTemplate

    template = ChatTemplate(tokenizer.chat_template, tokenizer.bos_token, tokenizer.eos_token)
    texts = support_tickets(tickets)
    return {
        "prefill": {n: _prompt(tokenizer, n) for n in prompt_lengths},
        "decode": _prompt(tokenizer, 200),
        "new_tokens": new_tokens,
        "streams": {s: [_prompt(tokenizer, 100 + 7 * i) for i in range(s)] for s in streams},  # as real traffic
        "tickets": [tokenizer.encode(template.render([{"role": "user", "content": text + TICKET_QUESTION}],
                                                     add_generation_prompt=True) + TICKET_ANSWER,
                                     add_special_tokens=False) for text, _ in texts],
        "ticket_tokens": 3,
        "stop_ids": sorted(tokenizer.stop_ids),
    }


def _prompt(tokenizer, n: int) -> list[int]:
    ids = tokenizer.encode(TEXT, add_special_tokens=False)
    if len(ids) < n:
        raise ValueError(f"the benchmark text has only {len(ids)} tokens; asked for {n}")
    return ids[:n]


def measure(model_ref: str, variant: str, threads: int, work: dict) -> dict:
    """One tinythink variant on the workload, as the engine runs it."""
    import torch

    torch.set_num_threads(threads)
    with torch.no_grad():  # inference only, leaving the caller's grad mode as it was (tests measure in-process)
        return _measure(model_ref, variant, work)


def _measure(model_ref: str, variant: str, work: dict) -> dict:
    import torch

    from tinythink.engine.batch import BatchEngine
    from tinythink.engine.generate import generate
    from tinythink.engine.sampling import SamplingParams
    from tinythink.model.load import load_model
    from tinythink.model.inference import prepare_for_inference

    quantize = {"int8": 8, "int4": 4}.get(variant)
    start = time.perf_counter()
    dtype = torch.float32 if quantize or variant == "float32-unpacked" else getattr(torch, variant)
    loaded = load_model(model_ref, dtype, quantize=quantize)
    if variant != "float32-unpacked":  # as the engine runs it (tinythink.llm.LLM); unpacked: the model as loaded
        prepare_for_inference(loaded.model)
    result = {"variant": variant, "load_s": time.perf_counter() - start, "prefill_tok_s": {}}
    model, tok = loaded.model, loaded.tokenizer
    greedy = SamplingParams(max_tokens=work["new_tokens"], temperature=0.0)

    list(generate(model, work["decode"][:16], SamplingParams(max_tokens=2, temperature=0.0)))  # warm-up
    for n, prompt in work["prefill"].items():
        model.setup_caches(1, n + 1)
        ids = torch.tensor([prompt])
        best = float("inf")
        for _ in range(2):
            t = time.perf_counter()
            for lo in range(0, n, 512):  # the engine's own prefill chunking
                model(ids[:, lo:lo + 512], input_pos=torch.arange(lo, min(n, lo + 512)), last_only=True)
            best = min(best, time.perf_counter() - t)
        result["prefill_tok_s"][n] = n / best

    t = time.perf_counter()
    tokens = generate(model, work["decode"], greedy)  # no stop ids: exactly new_tokens tokens
    next(tokens)
    first = time.perf_counter()
    n = 1 + sum(1 for _ in tokens)
    result["ttft_ms"] = (first - t) * 1000
    result["decode_tok_s"] = (n - 1) / (time.perf_counter() - first)

    result["streams"] = {}
    model.clear_caches()
    pool = dict(max_batch=max(work["streams"]), context=1024, kv_budget_bytes=None)  # each slot holds 1,024
    engine = BatchEngine(model, **pool, prefix_cache_bytes=0)
    for s, prompts in work["streams"].items():
        t = time.perf_counter()
        reqs = [engine.submit(p, greedy) for p in prompts]
        finished: dict[int, float] = {}
        while len(finished) < s:
            engine.step()
            for r in reqs:
                if r.done and r.id not in finished:
                    finished[r.id] = time.perf_counter() - t
        wall = time.perf_counter() - t
        p50, p95 = bench_baselines.percentiles(list(finished.values()))
        result["streams"][s] = {"tok_s": sum(len(r.output) for r in reqs) / wall, "p50_s": p50, "p95_s": p95}

    engine = BatchEngine(model, **pool)  # with the prefix cache, as served; all tickets submitted at once
    t = time.perf_counter()
    outputs = engine.generate(work["tickets"], SamplingParams(max_tokens=work["ticket_tokens"], temperature=0.0),
                              tok.stop_ids)
    result["tickets"] = {"wall_s": time.perf_counter() - t, "answers": [tok.decode(o) for o in outputs]}
    result["peak_rss_mb"] = peak_rss_mb()
    return result


def run(model_ref: str, variants: list[str], threads: int, prompt_lengths: list[int], streams: list[int],
        new_tokens: int, tickets: int = 200, progress=print) -> list[dict]:
    from tinythink.model.load import load_tokenizer

    work = workload(load_tokenizer(model_ref), prompt_lengths, streams, new_tokens, tickets)
    categories = [category for _, category in support_tickets(tickets)]
    results = []
    for variant in variants:
        progress(f"benchmarking {model_ref} {variant} ...")
        job = {"model_ref": model_ref, "variant": variant, "threads": threads, "work": work}
        out = subprocess.run([sys.executable, "-m", "tinythink.engine.bench"], input=json.dumps(job),
                             capture_output=True, text=True)
        if out.returncode != 0:
            raise RuntimeError(f"{variant}: {out.stderr.strip().splitlines()[-1] if out.stderr else out.returncode}")
        result = json.loads(out.stdout.strip().splitlines()[-1])
        answers = result["tickets"].pop("answers")
        correct = sum(category in answer.lower() for answer, category in zip(answers, categories))
        result["tickets"].update(n=tickets, accuracy=correct / tickets if tickets else None,
                                 prompt_tokens=sum(map(len, work["tickets"])))
        results.append(result)
    return results


def _metrics(results: list[dict]) -> list[tuple[str, callable]]:
    """(column name, result -> figure or None) for every figure of a run."""
    base = results[0]
    columns = [(f"prefill@{n} tok/s", lambda r, n=n: r["prefill_tok_s"][n]) for n in base["prefill_tok_s"]]
    columns += [("TTFT ms (200)", lambda r: r["ttft_ms"]), ("decode tok/s", lambda r: r["decode_tok_s"])]
    columns += [(f"{s} streams tok/s", lambda r, s=s: r["streams"] and r["streams"][s]["tok_s"])  # s: str
                for s in next(r["streams"] for r in results if r["streams"])]
    columns += [(f"{base['tickets']['n']} tickets s", lambda r: r["tickets"]["wall_s"]),
                ("peak RSS MB", lambda r: r["peak_rss_mb"])]
    return columns


def table(results: list[dict]) -> str:
    columns = _metrics(results)
    head = ["variant"] + [name for name, _ in columns] + ["tickets accuracy", "load s"]
    rows = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in results:
        cells = [r["variant"]]
        for name, figure in columns:
            value = figure(r)
            cells.append("—" if value is None else f"{value:.1f}" if value < 100 else f"{value:.0f}")
            if name.endswith("streams tok/s") and value is not None:  # with latency percentiles
                stream = r["streams"][name.split()[0]]
                cells[-1] += f" ({stream['p50_s']:.1f}/{stream['p95_s']:.1f})"
        accuracy = r["tickets"]["accuracy"]  # None with --tickets 0
        cells += ["—" if accuracy is None else f"{accuracy:.2f}", f"{r['load_s']:.1f}"]
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows)


def _versus(results: list[dict]) -> dict[str, dict[str, float | None]] | None:
    """{tinythink variant: {column: ratio}} against the best llama.cpp figure of the same run
    (llama-cpp-python or llama-server, whichever is ahead); above 1 means tinythink is ahead, for times and
    memory too. None when the run has no llama.cpp or no tinythink variant."""
    llama = [r for r in results if r["variant"] in bench_baselines.LLAMA_CPP]
    ours = [r for r in results if r["variant"] not in bench_baselines.RUNTIMES]
    if not llama or not ours:
        return None
    versus = {}
    for r in ours:
        versus[r["variant"]] = row = {}
        for name, figure in _metrics(results):
            theirs = [figure(x) for x in llama if figure(x) is not None]
            lower = name.startswith(("TTFT", "peak RSS")) or "tickets" in name  # times and memory
            row[name] = (None if not theirs or figure(r) is None
                         else min(theirs) / figure(r) if lower else figure(r) / max(theirs))
    return versus


def _short(name: str) -> str:
    """A column's name in the ratio table: what is compared, not its unit."""
    return name.removesuffix(" tok/s").removesuffix(" MB").removesuffix(" ms (200)").replace(" tickets s", " tickets")


def ratios(results: list[dict]) -> str | None:
    """The ratio table (see `_versus`), or None."""
    versus = _versus(results)
    if versus is None:
        return None
    names = list(next(iter(versus.values())))
    head = ["variant vs best llama.cpp"] + [_short(n) for n in names]
    rows = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for variant, row in versus.items():
        rows.append("| " + " | ".join([variant] + ["—" if row[n] is None else f"{row[n]:.2f}x" for n in names])
                    + " |")
    return "\n".join(rows)


def chart(results: list[dict], path: str):
    """The ratio table as a PNG: one group of bars per figure, log scale, 1 = the best llama.cpp figure."""
    import matplotlib
    import matplotlib.ticker

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    versus = _versus(results)
    if versus is None:
        raise ValueError("a chart needs llama.cpp or llama-server and a tinythink variant in the run")
    names = list(next(iter(versus.values())))
    fig, ax = plt.subplots(figsize=(8, 0.5 * len(names) * max(1, len(versus) / 2) + 1.5))
    height = 0.8 / len(versus)
    for k, (variant, row) in enumerate(versus.items()):
        ys = [i + (k - (len(versus) - 1) / 2) * height for i in range(len(names))]
        ratio = [row[n] or float("nan") for n in names]  # bars grow from 1: left is behind, right ahead
        ax.barh(ys, [r - 1 for r in ratio], left=1, height=height, label=variant)
        for y, n in zip(ys, names):
            if row[n]:
                ahead = row[n] >= 1
                ax.annotate(f"{row[n]:.2f}x", (row[n], y), xytext=(3 if ahead else -3, 0), textcoords="offset points",
                            va="center", ha="left" if ahead else "right", fontsize=7)
    ax.set_yticks(range(len(names)), [_short(n) for n in names], fontsize=8)
    ax.invert_yaxis()
    ax.set_xscale("log")
    ax.margins(x=0.15)
    ax.xaxis.set_major_locator(matplotlib.ticker.FixedLocator([2.0 ** k for k in range(-6, 7)]))
    ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda x, _: f"{x:g}x"))
    ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
    ax.axvline(1.0, color="black", linewidth=1)
    ax.set_xlabel("tinythink / best llama.cpp (log scale; right of 1 = tinythink ahead, times and memory too)")
    ax.set_title("tinythink vs llama.cpp: the same model, the same token ids", fontsize=10)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _child(job: dict) -> dict:
    work = job["work"]  # JSON made its integer keys strings
    work["prefill"] = {int(n): ids for n, ids in work["prefill"].items()}
    work["streams"] = {int(s): prompts for s, prompts in work["streams"].items()}
    if job["variant"] in bench_baselines.RUNTIMES:
        return bench_baselines.measure(job["variant"], job["model_ref"], job["threads"], work)
    return measure(job["model_ref"], job["variant"], job["threads"], work)


if __name__ == "__main__":  # one variant, in its own process: the job comes on stdin
    print(json.dumps(_child(json.load(sys.stdin))))
