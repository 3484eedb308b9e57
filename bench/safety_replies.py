"""Make the guard's `replies` data: the default model's greedy replies (float32, 96 tokens) to the evaluation's
ARC-Easy and SNIPS prompts — dev split for training, a quarter of ARC-Easy's test split held out — written to
tinythink/safety/data/replies.jsonl. Run once when the default model changes; `tinythink safety build` reads the
file (so the build does not depend on this CPU's rounding of a generation).

    .venv/bin/python bench/safety_replies.py
"""

import json

import torch

from tinythink.engine.batch import BatchEngine
from tinythink.engine.sampling import SamplingParams
from tinythink.llm import LLM
from tinythink.model.load import load_model
from tinythink.safety.data import REPLIES, benign


def main():
    torch.set_num_threads(2)
    llm = LLM(load_model("smollm2-135m", torch.float32))
    items = benign()
    prompts = [(i.text, "train") for i in items if i.split == "train" and i.source in ("arc_easy", "snips")]
    prompts += [(i.text, "test") for i in [i for i in items if i.split == "test" and i.source == "arc_easy"][::4]]
    ids = [llm.tokenizer.encode(llm.template.render([{"role": "user", "content": p}]), add_special_tokens=False)
           for p, _ in prompts]
    engine = BatchEngine(llm.model, max_batch=16, context=1024)
    outs = engine.generate(ids, SamplingParams(max_tokens=96, temperature=0.0), llm.tokenizer.stop_ids)
    with open(REPLIES, "w") as f:
        for (prompt, split), out in zip(prompts, outs):
            f.write(json.dumps({"prompt": prompt, "reply": llm.tokenizer.decode(out).strip(), "split": split}) + "\n")
    print(f"wrote {len(prompts)} replies to {REPLIES}")


if __name__ == "__main__":
    main()
