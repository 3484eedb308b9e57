"""tinythink's C kernels against the PyTorch operators they replace, on the default model's shapes.

    python bench/kernels.py [--threads 2] [--rows 1,4,8,16,64,256] [--rounds 3]

- Decode attention: 64 decoding rows of random lengths 50-400 (an evaluation's mix), over 30 layers' distinct
  float32 caches (so that keys and values come from memory, not the CPU's caches): the kernel against PyTorch's
  SDPA as one masked call over the rows, and how many bytes of the keys and values the rows need it reads a second.
- Quantized products: the 30 layers' products of SmolLM2-135M (fused q/k/v, o, fused gate/up, down) plus its
  vocabulary-wide int8 head, float32 activations, at each row count: float32 (oneDNN, pre-packed), int8 and int4
  through PyTorch's bfloat16 weight-only kernels, and through ours.
Variants alternate within each round; the best round counts (a shared machine is noisy).
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F
from torch import nn

from tinythink.model import decode_attention, quantized_matmul
from tinythink.model.packed_linear import PackedLinear
from tinythink.model.quantize import Int4Linear, Int8Linear

LAYERS, HEADS, KV_HEADS, HEAD_DIM, DIM, VOCAB = 30, 9, 3, 64, 576, 49152
SHAPES = [(576, 960), (576, 576), (576, 3072), (1536, 576)]  # (inputs, outputs) of a layer's products


def best_of(rounds: int, variants: dict) -> dict:
    best = {name: float("inf") for name in variants}
    for _ in range(rounds):
        for name, run in variants.items():
            start = time.perf_counter()
            run()
            best[name] = min(best[name], time.perf_counter() - start)
    return best


def attention(rounds: int) -> None:
    g = torch.Generator().manual_seed(0)
    rows, size = 64, 512
    caches = [(torch.randn(rows, KV_HEADS, size, HEAD_DIM, generator=g),
               torch.randn(rows, KV_HEADS, size, HEAD_DIM, generator=g)) for _ in range(LAYERS)]
    q = torch.randn(rows, HEADS, HEAD_DIM, generator=g)
    lengths = torch.randint(50, 401, (rows,), generator=g)
    slots = torch.arange(rows)
    longest = int(lengths.max())
    mask = (torch.arange(longest) < lengths[:, None])[:, None, None]

    def sdpa():
        for k, v in caches:
            F.scaled_dot_product_attention(q[:, :, None], k[:, :, :longest], v[:, :, :longest], attn_mask=mask,
                                           enable_gqa=True)

    def kernel():
        for k, v in caches:
            decode_attention.decode_attention(q, k, v, slots, lengths)

    best = best_of(rounds, {"SDPA, one masked call": sdpa, "tinythink's kernel": kernel})
    needed = int(lengths.sum()) * KV_HEADS * HEAD_DIM * 4 * 2 * LAYERS
    print(f"\nDecode attention, {rows} rows of lengths 50-400, {LAYERS} layers\n")
    print("| | ms | needed keys and values read per second |\n|---|---|---|")
    for name, seconds in best.items():
        print(f"| {name} | {seconds * 1e3:.1f} | {needed / seconds / 1e9:.1f} GB/s |")


def products(rounds: int, row_counts: list[int]) -> None:
    torch.manual_seed(0)
    linears = [[nn.Linear(i, o, bias=False) for i, o in SHAPES] for _ in range(LAYERS)]
    head = nn.Linear(DIM, VOCAB, bias=False)
    kinds = {"float32": ([[PackedLinear(m) for m in layer] for layer in linears], PackedLinear(head)),
             "int8": ([[Int8Linear.from_float(m) for m in layer] for layer in linears], Int8Linear.from_float(head)),
             "int4": ([[Int4Linear.from_float(m, 32) for m in layer] for layer in linears], Int8Linear.from_float(head))}
    ours = quantized_matmul.library

    def run(kind: str, rows: int, kernel: str):
        layers, hd = kinds[kind]
        xs = {i: torch.randn(rows, i) for i, _ in SHAPES}

        def go():
            quantized_matmul.library = ours if kernel == "ours" else (lambda: None)
            try:
                for layer in layers:
                    for m, (i, _) in zip(layer, SHAPES):
                        m(xs[i])
                hd(xs[DIM])
            finally:
                quantized_matmul.library = ours
        return go

    print(f"\nProducts of {LAYERS} layers + the int8 head, ms\n")
    print("| rows | float32 | int8 PyTorch | int8 ours | int4 PyTorch | int4 ours |\n|---|---|---|---|---|---|")
    with torch.inference_mode():
        for rows in row_counts:
            variants = {"float32": run("float32", rows, "pytorch")}
            for kind in ("int8", "int4"):
                variants |= {f"{kind} PyTorch": run(kind, rows, "pytorch"), f"{kind} ours": run(kind, rows, "ours")}
            best = best_of(rounds, variants)
            print(f"| {rows} | " + " | ".join(f"{best[name] * 1e3:.1f}" for name in variants) + " |")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--rows", default="1,4,8,16,64,256")
    p.add_argument("--rounds", type=int, default=3)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    if decode_attention.library() is None or quantized_matmul.library() is None:
        raise SystemExit("the kernels are not available here (see the warning above)")
    attention(args.rounds)
    products(args.rounds, [int(r) for r in args.rows.split(",")])


if __name__ == "__main__":
    main()
