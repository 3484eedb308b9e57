"""Prefill and decode speed of the plain generation loop, side by side with llama.cpp when it is installed.

    python bench/plain_loop.py [--model smollm2-135m] [--threads 2] [--prompt-tokens 200] [--new-tokens 128]

Each runtime runs in its own subprocess, so peak RSS is its own; runtimes alternate over --rounds and the
best round counts, which is the fairest figure on a shared, noisy machine.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

from tinythink.model.memory import peak_rss_mb

TEXT = ("The support team receives many tickets every day about billing, shipping, returns, accounts, "
        "technical problems and general questions. ") * 40


def run_tinythink(model: str, variant: str, threads: int, n_prompt: int, n_new: int) -> dict:
    import torch

    from tinythink.engine.generate import generate
    from tinythink.engine.sampling import SamplingParams
    from tinythink.llm import LLM
    from tinythink.model.load import load_model

    torch.set_num_threads(threads)
    quantize = {"int8": 8, "int4": 4}.get(variant)
    llm = LLM(load_model(model, torch.float32 if quantize else getattr(torch, variant), quantize=quantize))
    prompt = llm.tokenizer.encode(TEXT)[:n_prompt]
    params = SamplingParams(max_tokens=n_new, temperature=0.0)
    list(generate(llm.model, prompt[:16], SamplingParams(max_tokens=4, temperature=0.0)))  # warm-up
    start = time.perf_counter()
    tokens = generate(llm.model, prompt, params)  # no stop ids: always n_new tokens
    next(tokens)
    first = time.perf_counter()
    n = 1 + sum(1 for _ in tokens)
    end = time.perf_counter()
    return {"prefill_tok_s": n_prompt / (first - start), "decode_tok_s": (n - 1) / (end - first), "tokens": n}


def run_llama_cpp(model: str, threads: int, n_prompt: int, n_new: int) -> dict:
    from llama_cpp import Llama

    from tinythink.model.registry import resolve

    llm = Llama(str(resolve(model)), n_ctx=1024, n_threads=threads, n_batch=512, verbose=False)
    prompt = llm.tokenize(TEXT.encode(), add_bos=False)[:n_prompt]
    llm.eval(prompt[:16])
    llm.reset()
    start = time.perf_counter()
    llm.eval(prompt)
    first = time.perf_counter()
    token = None
    for i in range(n_new - 1):
        token = llm.sample(temp=0.0)
        llm.eval([token])
    end = time.perf_counter()
    return {"prefill_tok_s": n_prompt / (first - start), "decode_tok_s": (n_new - 1) / (end - first), "tokens": n_new}


def child(args):
    if args.runtime == "llama.cpp":
        result = run_llama_cpp(args.model, args.threads, args.prompt_tokens, args.new_tokens)
    else:
        result = run_tinythink(args.model, args.runtime.split(" ")[1], args.threads, args.prompt_tokens,
                               args.new_tokens)
    result["peak_rss_mb"] = peak_rss_mb()
    print(json.dumps(result))


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--prompt-tokens", type=int, default=200)
    p.add_argument("--new-tokens", type=int, default=128)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--runtime", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.runtime:
        return child(args)
    runtimes = ["tinythink float32", "tinythink bfloat16", "tinythink int8", "tinythink int4"]
    try:
        import llama_cpp  # noqa: F401

        runtimes.append("llama.cpp")
    except ImportError:
        print("llama-cpp-python is not installed (make bench-deps): tinythink only", file=sys.stderr)
    best: dict[str, dict] = {}
    for r in range(args.rounds):
        for runtime in runtimes:
            cmd = [sys.executable, __file__, "--runtime", runtime, "--model", args.model, "--threads",
                   str(args.threads), "--prompt-tokens", str(args.prompt_tokens), "--new-tokens", str(args.new_tokens)]
            out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
            result = json.loads(out.strip().splitlines()[-1])
            print(f"round {r + 1}: {runtime}: {result}", file=sys.stderr)
            old = best.get(runtime)
            # the fastest round's speeds; the largest round's memory
            best[runtime] = result if old is None else {k: max(old[k], result[k]) for k in result}
    base = best.get("llama.cpp")
    print(f"\n{args.model}, {args.threads} threads, {args.prompt_tokens}-token prompt, {args.new_tokens} greedy tokens, "
          f"best of {args.rounds} rounds\n")
    print("| runtime | prefill tok/s | decode tok/s | peak RSS MB | prefill vs llama.cpp | decode vs llama.cpp |")
    print("|---|---|---|---|---|---|")
    for runtime, r in best.items():
        ratio = (lambda k: f"{r[k] / base[k]:.2f}x") if base else (lambda k: "n/a")
        print(f"| {runtime} | {r['prefill_tok_s']:.0f} | {r['decode_tok_s']:.1f} | {r['peak_rss_mb']:.0f} | "
              f"{ratio('prefill_tok_s')} | {ratio('decode_tok_s')} |")


if __name__ == "__main__":
    main()
