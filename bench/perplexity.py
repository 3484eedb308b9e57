"""Perplexity of the default model on the held-out prose of tests/model/test_quantize.py: tinythink's float32,
int8 and int4 variants as served (made ready for inference: a quantized model's tied head is int8), and
llama.cpp's own run of the same Q4_1 file (llama-cpp-python, `make bench-deps`), all on the same token ids, with
each one's top-1 agreement with tinythink's float32 (the Q4_1 weights dequantized).

    python bench/perplexity.py
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "model"))
from test_quantize import HELD_OUT  # noqa: E402  the text the quantization tests use

from tinythink.model import registry  # noqa: E402
from tinythink.model.inference import prepare_for_inference  # noqa: E402
from tinythink.model.load import load_model  # noqa: E402


def llama_cpp_logits(gguf: str, ids: list[int]) -> torch.Tensor | None:
    try:
        import llama_cpp
    except ImportError:
        return None
    llm = llama_cpp.Llama(model_path=gguf, logits_all=True, n_ctx=max(512, len(ids)), n_threads=2, verbose=False)
    llm.eval(ids)
    scores = torch.tensor(llm.scores[:len(ids)], dtype=torch.float32)
    llm.close()  # now, not at interpreter exit, where llama-cpp-python's finalizer fails
    return scores


def main():
    torch.set_num_threads(2)
    gguf = str(registry.resolve("smollm2-135m"))
    reference = load_model(gguf)
    ids = reference.tokenizer.encode(HELD_OUT)
    target = torch.tensor(ids[1:])
    logits = {}
    with torch.inference_mode():
        for name, bits in (("tinythink float32", None), ("tinythink int8", 8), ("tinythink int4", 4)):
            model = prepare_for_inference(load_model(gguf, quantize=bits).model)
            logits[name] = model(torch.tensor([ids]))[0].float()
    cpp = llama_cpp_logits(gguf, ids)
    if cpp is not None:
        logits["llama.cpp Q4_1"] = cpp
    base = logits["tinythink float32"]
    print(f"\nPerplexity on {len(ids)} tokens of held-out prose ({Path(gguf).name})\n")
    print("| runtime | perplexity | top-1 agreement with tinythink float32 |\n|---|---|---|")
    for name, lg in logits.items():
        ppl = math.exp(torch.nn.functional.cross_entropy(lg[:-1], target).item())
        agree = (lg[:-1].argmax(-1) == base[:-1].argmax(-1)).float().mean().item()
        print(f"| {name} | {ppl:.3f} | {agree:.3f} |")


if __name__ == "__main__":
    main()
