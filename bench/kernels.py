"""tinythink's C kernels against the PyTorch operators they replace, on the default model's shapes.

    python bench/kernels.py [--threads 2] [--rows 1,4,8,16,64,256] [--step-rows 1,16,64] [--rounds 3]

- Decode attention: 64 decoding rows of random lengths 50-400 (an evaluation's mix), over 30 layers' distinct
  float32 caches (so that keys and values come from memory, not the CPU's caches): the kernel against PyTorch's
  SDPA as one masked call over the rows, and how many bytes of the keys and values the rows need it reads a second.
- Products: the 30 layers' products of SmolLM2-135M (fused q/k/v, o, fused gate/up, down) plus its
  vocabulary-wide head (int8 for the quantized kinds), float32 activations, at each row count: float32 weights
  through oneDNN (pre-packed) and ours, int8 and int4 through PyTorch's bfloat16 weight-only kernels and ours.
- Decoding steps of the default model (float32, int8, int4; caches filled by a 200-token prompt per row): every
  layer through the model's modules (~600 PyTorch operators) against one call of our decode-layers kernel.
Variants alternate within each round; the best round counts (a shared machine is noisy).
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F
from torch import nn

from tinythink.model import decode_attention, quantized_matmul
from tinythink.model.float_linear import KernelLinear, PackedLinear
from tinythink.model.inference import prepare_for_inference
from tinythink.model.load import load_model
from tinythink.model.packed_batch import Packed
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
             "float32 ours": ([[KernelLinear.from_linear(m) for m in layer] for layer in linears],
                              KernelLinear.from_linear(head)),
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

    print(f"\nProducts of {LAYERS} layers + the head, ms\n")
    print("| rows | float32 oneDNN | float32 ours | int8 PyTorch | int8 ours | int4 PyTorch | int4 ours |\n"
          "|---|---|---|---|---|---|---|")
    with torch.inference_mode():
        for rows in row_counts:
            variants = {"float32": run("float32", rows, "pytorch"), "float32 ours": run("float32 ours", rows, "ours")}
            for kind in ("int8", "int4"):
                variants |= {f"{kind} PyTorch": run(kind, rows, "pytorch"), f"{kind} ours": run(kind, rows, "ours")}
            best = best_of(rounds, variants)
            print(f"| {rows} | " + " | ".join(f"{best[name] * 1e3:.1f}" for name in variants) + " |")


def steps(rounds: int, row_counts: list[int]) -> None:
    print("\nDecoding steps of smollm2-135m, ms: the modules / one call of the decode-layers kernel\n")
    print("| rows | float32 | int8 | int4 |\n|---|---|---|---|")
    models = {bits: prepare_for_inference(load_model("smollm2-135m", quantize=bits).model) for bits in (None, 8, 4)}
    cells = {rows: [] for rows in row_counts}
    with torch.inference_mode():
        for model in models.values():
            fused, rows_max = model.decode_layers, max(row_counts)
            model.setup_caches(rows_max, 1024)
            prompt = torch.randint(0, VOCAB, (1, 200 * rows_max))
            model.forward_packed(prompt, Packed(list(range(rows_max)), [0] * rows_max, [200] * rows_max),
                                 torch.tensor([0]))  # the caches filled; one position's logits
            for rows in row_counts:
                def step(layers, rows=rows):
                    def go():
                        model.decode_layers = layers
                        for i in range(8):  # over the same positions: each step writes what the last one did
                            model.forward_packed(prompt[:, :rows], Packed(list(range(rows)), [200] * rows, [1] * rows))
                        model.decode_layers = fused
                    return go
                best = best_of(rounds, {"modules": step(None), "one call": step(fused)})
                cells[rows].append(f"{best['modules'] / 8 * 1e3:.1f} / **{best['one call'] / 8 * 1e3:.1f}**")
            model.clear_caches()
    for rows in row_counts:
        print(f"| {rows} | " + " | ".join(cells[rows]) + " |")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--rows", default="1,4,8,16,64,256")
    p.add_argument("--step-rows", default="1,16,64")
    p.add_argument("--rounds", type=int, default=3)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    if decode_attention.library() is None or quantized_matmul.library() is None:
        raise SystemExit("the kernels are not available here (see the warning above)")
    attention(args.rounds)
    products(args.rounds, [int(r) for r in args.rows.split(",")])
    steps(args.rounds, [int(r) for r in args.step_rows.split(",")])


if __name__ == "__main__":
    main()
