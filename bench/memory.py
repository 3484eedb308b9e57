"""Where a served model's memory goes: resident and peak memory after each stage of the `tinythink bench` work.

    python bench/memory.py [--model smollm2-135m] [--quantize 8|4] [--threads 2]

Stages: importing torch and tinythink, loading the model (made ready for inference, as served), prefilling
2,048 tokens, 16 concurrent streams (prompts of 100-205 tokens, 64 new tokens each) on a 16-slot engine of
1,024 tokens a slot, then the 200 support tickets through a fresh engine with its prefix cache. One process,
as a server is: the figures are what its operating system sees (/proc/self/statm, ru_maxrss).
"""

from __future__ import annotations

import argparse
import sys
import time

from tinythink.model.memory import peak_rss_mb, resident_mb  # no torch: the first rows are measured without it


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--quantize", type=int, choices=[8, 4])
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    rows = [("start", resident_mb(), peak_rss_mb())]
    start = time.perf_counter()

    import torch
    rows.append(("import torch", resident_mb(), peak_rss_mb()))
    from tinythink.engine.batch import BatchEngine
    from tinythink.engine.bench import workload
    from tinythink.engine.sampling import SamplingParams
    from tinythink.llm import LLM
    from tinythink.model.load import load_model
    rows.append(("import tinythink", resident_mb(), peak_rss_mb()))

    torch.set_num_threads(args.threads)
    torch.set_grad_enabled(False)
    llm = LLM(load_model(args.model, quantize=args.quantize))
    rows.append(("model loaded, ready for inference", resident_mb(), peak_rss_mb()))
    model, tok = llm.model, llm.tokenizer
    work = workload(tok, [2048], [16], 64, 200)

    model.setup_caches(1, 2049)
    ids = torch.tensor([work["prefill"][2048]])
    for lo in range(0, 2048, 512):
        model(ids[:, lo:lo + 512], input_pos=torch.arange(lo, lo + 512), last_only=True)
    model.clear_caches()
    rows.append(("prefilled 2,048 tokens", resident_mb(), peak_rss_mb()))

    pool = dict(max_batch=16, context=1024, kv_budget_bytes=None)
    engine = BatchEngine(model, **pool, prefix_cache_bytes=0)
    engine.generate(work["streams"][16], SamplingParams(max_tokens=64, temperature=0.0))
    rows.append(("16 streams of 64 tokens", resident_mb(), peak_rss_mb()))
    model.clear_caches()

    engine = BatchEngine(model, **pool)
    engine.generate(work["tickets"], SamplingParams(max_tokens=3, temperature=0.0), tok.stop_ids)
    rows.append((f"200 tickets (prefix cache {engine.prefix_cache.bytes / 2**20:.0f} MB)", resident_mb(), peak_rss_mb()))

    variant = f"int{args.quantize}" if args.quantize else "float32"
    print(f"# {args.model} {variant}, {args.threads} threads, {time.perf_counter() - start:.0f} s")
    print("| stage | resident MB | peak MB |\n|---|---|---|")
    for name, now, peak in rows:
        print(f"| {name} | {now:,.0f} | {peak:,.0f} |")


if __name__ == "__main__":
    sys.exit(main())
