"""`tinythink bench`: prefill, single-stream decode, time to first token, batched throughput, and a
lightweight workload (200 support tickets, each classified with a one-word answer, end to end).

Each variant (float32, bfloat16, int8, int4) runs in a fresh subprocess so that its peak RSS is its own,
and the variants run one after another in the same invocation, so that their ratios are comparable on a
noisy machine.
"""

from __future__ import annotations

import json
import resource
import statistics
import subprocess
import sys
import time

import torch

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


def _tickets(engine, loaded, n: int = 200) -> dict:
    """Classify n tickets through the engine, all submitted at once; wall time end to end."""
    from tinythink.engine.sampling import SamplingParams
    from tinythink.text.chat_template import ChatTemplate

    tok = loaded.tokenizer
    template = ChatTemplate(tok.chat_template, tok.bos_token, tok.eos_token)
    t = time.perf_counter()
    tickets = support_tickets(n)
    prompts = [tok.encode(template.render([{"role": "user", "content": text + TICKET_QUESTION}],
                                          add_generation_prompt=True) + TICKET_ANSWER, add_special_tokens=False)
               for text, _ in tickets]
    outputs = engine.generate(prompts, SamplingParams(max_tokens=3, temperature=0.0), tok.stop_ids)
    wall = time.perf_counter() - t
    correct = sum(category in tok.decode(o).lower() for o, (_, category) in zip(outputs, tickets))
    return {"n": n, "wall_s": wall, "accuracy": correct / n, "prompt_tokens": sum(map(len, prompts))}


def _prompt(tokenizer, n: int) -> list[int]:
    ids = tokenizer.encode(TEXT, add_special_tokens=False)
    if len(ids) < n:
        raise ValueError(f"the benchmark text has only {len(ids)} tokens; asked for {n}")
    return ids[:n]


@torch.inference_mode()
def measure(model_ref: str, variant: str, threads: int, prompt_lengths: list[int], streams: list[int],
            new_tokens: int, tickets: int = 200) -> dict:
    from tinythink.engine.batch import BatchEngine
    from tinythink.engine.generate import generate
    from tinythink.engine.sampling import SamplingParams
    from tinythink.model.load import load_model
    from tinythink.model.packed_linear import pack_linears

    torch.set_num_threads(threads)
    quantize = {"int8": 8, "int4": 4}.get(variant)
    start = time.perf_counter()
    dtype = torch.float32 if quantize or variant == "float32-unpacked" else getattr(torch, variant)
    loaded = load_model(model_ref, dtype, quantize=quantize)
    if variant != "float32-unpacked":  # as the engine runs it (tinythink.llm.LLM); unpacked: PyTorch's default
        pack_linears(loaded.model)
    result = {"variant": variant, "load_s": time.perf_counter() - start, "prefill_tok_s": {}}
    model, tok = loaded.model, loaded.tokenizer
    greedy = SamplingParams(max_tokens=new_tokens, temperature=0.0)

    list(generate(model, _prompt(tok, 16), SamplingParams(max_tokens=2, temperature=0.0)))  # warm-up
    for n in prompt_lengths:
        model.setup_caches(1, n + 1)
        ids = torch.tensor([_prompt(tok, n)])
        best = float("inf")
        for _ in range(2):
            t = time.perf_counter()
            for lo in range(0, n, 512):  # the engine's own prefill chunking
                model(ids[:, lo:lo + 512], input_pos=torch.arange(lo, min(n, lo + 512)), last_only=True)
            best = min(best, time.perf_counter() - t)
        result["prefill_tok_s"][n] = n / best

    prompt = _prompt(tok, 200)
    t = time.perf_counter()
    tokens = generate(model, prompt, greedy)  # no stop ids: exactly new_tokens tokens
    next(tokens)
    first = time.perf_counter()
    n = 1 + sum(1 for _ in tokens)
    result["ttft_ms"] = (first - t) * 1000
    result["decode_tok_s"] = (n - 1) / (time.perf_counter() - first)

    result["streams"] = {}
    model.clear_caches()
    pool = dict(max_batch=max(streams), context=1024, kv_budget_bytes=None)  # every slot holds 1,024 tokens
    engine = BatchEngine(model, **pool, prefix_cache_bytes=0)
    for s in streams:
        prompts = [_prompt(tok, 100 + 7 * i) for i in range(s)]  # different lengths, as real traffic has
        t = time.perf_counter()
        reqs = [engine.submit(p, greedy) for p in prompts]
        finished: dict[int, float] = {}
        while len(finished) < s:
            engine.step()
            for r in reqs:
                if r.done and r.id not in finished:
                    finished[r.id] = time.perf_counter() - t
        wall = time.perf_counter() - t
        latencies = sorted(finished.values())
        result["streams"][s] = {
            "tok_s": sum(len(r.output) for r in reqs) / wall,
            "p50_s": statistics.median(latencies),
            "p95_s": latencies[min(len(latencies) - 1, round(0.95 * (len(latencies) - 1)))],
        }
    engine = BatchEngine(model, **pool)  # with the prefix cache, as served
    result["tickets"] = _tickets(engine, loaded, tickets)
    result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return result


def run(model_ref: str, variants: list[str], threads: int, prompt_lengths: list[int], streams: list[int],
        new_tokens: int, tickets: int = 200, progress=print) -> list[dict]:
    results = []
    for variant in variants:
        progress(f"benchmarking {model_ref} {variant} ...")
        cmd = [sys.executable, "-m", "tinythink.engine.bench", json.dumps(
            {"model_ref": model_ref, "variant": variant, "threads": threads, "prompt_lengths": prompt_lengths,
             "streams": streams, "new_tokens": new_tokens, "tickets": tickets})]
        out = subprocess.run(cmd, capture_output=True, text=True)
        if out.returncode != 0:
            raise RuntimeError(f"{variant}: {out.stderr.strip().splitlines()[-1] if out.stderr else out.returncode}")
        results.append(json.loads(out.stdout.strip().splitlines()[-1]))
    return results


def table(results: list[dict]) -> str:
    base = results[0]
    lengths = list(base["prefill_tok_s"])
    streams = list(base["streams"])
    head = (["variant"] + [f"prefill@{n} tok/s" for n in lengths] + ["TTFT ms (200)", "decode tok/s"]
            + [f"{s} streams tok/s (p50/p95 s)" for s in streams]
            + [f"{base['tickets']['n']} tickets s", "peak RSS MB", "load s"])
    rows = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in results:
        cells = ([r["variant"]] + [f"{r['prefill_tok_s'][n]:.0f}" for n in lengths]
                 + [f"{r['ttft_ms']:.0f}", f"{r['decode_tok_s']:.1f}"]
                 + [f"{r['streams'][s]['tok_s']:.1f} ({r['streams'][s]['p50_s']:.1f}/{r['streams'][s]['p95_s']:.1f})"
                    for s in streams]
                 + [f"{r['tickets']['wall_s']:.1f}", f"{r['peak_rss_mb']:.0f}", f"{r['load_s']:.1f}"])
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows)


if __name__ == "__main__":  # one variant, in its own process
    print(json.dumps(measure(**json.loads(sys.argv[1]))))
