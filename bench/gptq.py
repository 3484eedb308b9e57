"""Calibrated int4 (GPTQ) against round-to-nearest at several group sizes, and against llama.cpp's own run of the
same weights as Q4_1, on held-out perplexity: the built-in corpus's held-out documents (compress/corpus.py), which
neither calibration nor training sees.

    python bench/gptq.py MODEL [--sequences 32] [--calibration 128]

Use a model whose weights are really float (a distilled student, a Hugging Face checkpoint): a model dequantized
from a Q4_1 or K-quant GGUF lies on a 32-weight grid already, which round-to-nearest at group size 32 recovers
almost exactly.
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time
from pathlib import Path

import torch

from tinythink.compress import corpus, export_gguf, gptq
from tinythink.compress.data import PackedData, pack
from tinythink.compress.importance import lm_loss
from tinythink.compress.make import input_widths
from tinythink.model.load import load_model
from tinythink.model.quantize import quantize_model, run_rest_in
from tinythink.text.chat_template import ChatTemplate


def llama_cpp_loss(path: Path, data: PackedData) -> float | None:
    """Mean next-token loss of llama.cpp's run of a GGUF file, document by document."""
    try:
        import llama_cpp
    except ImportError:
        return None
    llm = llama_cpp.Llama(model_path=str(path), logits_all=True, n_ctx=data.seq_len + 8, n_threads=2, verbose=False)
    total, n = 0.0, 0
    for row in range(len(data)):
        tokens, docs, labels = data.tokens[row], data.documents[row], data.labels[row]
        for d in docs.unique().tolist():
            at = (docs == d).nonzero()[:, 0]
            ids, lab = tokens[at].tolist(), labels[at]
            if not bool((lab != -100).any()):
                continue
            llm.reset()
            llm.eval(ids)
            logits = torch.tensor(llm.scores[:len(ids)], dtype=torch.float32)
            keep = lab != -100
            total += torch.nn.functional.cross_entropy(logits[keep], lab[keep], reduction="sum").item()
            n += int(keep.sum())
    llm.close()
    return total / n


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("model")
    p.add_argument("--sequences", type=int, default=32, help="held-out sequences of 512 tokens")
    p.add_argument("--calibration", type=int, default=128, help="calibration sequences of 512 tokens")
    p.add_argument("--groups", default="32,64,128")
    a = p.parse_args()
    torch.set_num_threads(2)
    base = load_model(a.model)
    tok = base.tokenizer
    train_docs, held_docs = corpus.documents(tok, ChatTemplate(tok.chat_template, tok.bos_token, tok.eos_token))
    held = PackedData(pack(held_docs, 512), split="heldout")
    held = held.subset(list(range(min(a.sequences, len(held)))))
    train = PackedData(pack(train_docs, 512))
    calibration = train.subset(train.indices(0, a.calibration))
    rows = [("float32", lm_loss(base.model, held), 0.0)]
    fits = [g for g in map(int, a.groups.split(",")) if all(w % g == 0 for w in input_widths(base.config))]
    for g in fits:
        for method in ("RTN", "GPTQ"):
            model = load_model(a.model).model.float()
            start = time.perf_counter()
            if method == "RTN":
                quantize_model(model, 4, g)
            else:
                gptq.quantize_model(model, calibration, 4, g, progress=False)
            seconds = time.perf_counter() - start
            run_rest_in(model, torch.float32)  # activations in float32 around the int4 layers, on our kernels
            rows.append((f"int4 {method} g{g}", lm_loss(model, held), seconds))
            print(f"{rows[-1][0]}: {math.exp(rows[-1][1]):.3f}", file=sys.stderr, flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        path = export_gguf.write(base.model, tok, Path(tmp) / "q4_1.gguf", "q4_1", progress=False)
        cpp = llama_cpp_loss(path, held)
    if cpp is not None:
        rows.append(("llama.cpp Q4_1 (same weights)", cpp, 0.0))
    tokens = int((held.labels != -100).sum())
    print(f"\nHeld-out perplexity of {a.model} on {tokens:,} tokens of the built-in corpus's held-out documents; "
          f"GPTQ calibrated on {a.calibration} x 512 training tokens\n")
    print("| weights | perplexity | vs float32 | quantizing s |\n|---|---|---|---|")
    for name, loss, seconds in rows:
        print(f"| {name} | {math.exp(loss):.3f} | {math.exp(loss - rows[0][1]) - 1:+.2%} | "
              + (f"{seconds:.0f} |" if seconds else " |"))


if __name__ == "__main__":
    main()
