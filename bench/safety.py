"""What the safety filter costs, measured side by side in one process: the input check against a 1-token chat
completion of the same prompt, and streamed decode with and without the output check.

    .venv/bin/python bench/safety.py [--threads 2]
"""

import argparse
import asyncio
import time

import torch

from tinythink.engine.sampling import SamplingParams
from tinythink.llm import LLM
from tinythink.model.load import dtype_named, load_model
from tinythink.safety.filter import SafetyFilter
from tinythink.serve.host import ModelHost

PROMPTS = {"short (9 words)": "How do I reset my password on the billing portal?",
           "ticket (70 words)": ("Hello, since the update on Monday our whole team cannot log in to the billing "
                                 "portal. We get an error saying the session expired, even right after signing in. "
                                 "We tried three browsers and cleared the cache. Our invoices are due on Friday and "
                                 "we need access to download them. Could you please look into this urgently and "
                                 "tell us what we should do in the meantime? Thanks, Maria from Acme Ltd.")}


def best(f, n=7):
    times = []
    for _ in range(n):
        t = time.perf_counter()
        f()
        times.append(time.perf_counter() - t)
    return min(times)


async def decode(host, prompt, screening, tokens):
    stream = host.stream(prompt, SamplingParams(max_tokens=tokens, temperature=0.0), [])
    stream = screening.guarded(stream) if screening else stream
    t = time.perf_counter()
    n = 0
    async for chunk in stream:
        n += len(chunk.token_ids)
    return n / (time.perf_counter() - t)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--tokens", type=int, default=128)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    llm = LLM(load_model("smollm2-135m", dtype_named("auto")))  # as `tinythink serve` loads it
    host = ModelHost("smollm2-135m", llm, max_batch=4, context=1024, prefix_cache_bytes=0)
    safety = SafetyFilter.load()
    print(f"model and guard encoder in {dtype_named('auto')}, {args.threads} threads\n")
    print("| prompt | input check ms | 1-token completion ms | ratio |\n|---|---|---|---|")
    for name, text in PROMPTS.items():
        check = best(lambda: safety.guard.check([text]))
        ids = llm.tokenizer.encode(llm.template.render([{"role": "user", "content": text}]), add_special_tokens=False)
        one = best(lambda: asyncio.run(decode(host, ids, None, 1)))
        print(f"| {name} | {check * 1000:.1f} | {one * 1000:.1f} | {check / one:.2f} |")
    story = [{"role": "user", "content": "Write a long story about a dragon who learns to bake bread."}]
    ids = llm.tokenizer.encode(llm.template.render(story), add_special_tokens=False)
    rows = []
    for window in (8, 16, 32):
        safety.policy.stream_window_tokens = window
        plain, guarded = [], []
        for _ in range(3):  # alternating, so drift on a shared machine falls on both
            plain.append(asyncio.run(decode(host, ids, None, args.tokens)))
            guarded.append(asyncio.run(decode(host, ids, safety.screening("bench", None), args.tokens)))
        rows.append((window, max(plain), max(guarded)))
    print("\n| window tokens | decode tok/s | with output check | cost |\n|---|---|---|---|")
    for window, plain, guarded in rows:
        print(f"| {window} | {plain:.1f} | {guarded:.1f} | {1 - guarded / plain:+.1%} |")
    host.close()


if __name__ == "__main__":
    main()
