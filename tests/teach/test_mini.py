"""The shipped tinythink-mini: its adapter is the one its card names, what it learnt holds no evaluation test item,
and it loads by name as the default model, answering in the evaluation's formats."""

import gzip
import hashlib
import json

import torch

from tinythink.engine.sampling import SamplingParams
from tinythink.llm import LLM
from tinythink.eval.tasks import SENTIMENT_PROMPT, TASKS
from tinythink.model.load import load_model
from tinythink.model.registry import DEFAULT_MODEL, resolve
from tinythink.teach import traces

MINI = resolve("tinythink-mini")


def test_the_adapter_is_the_one_its_card_names():
    card = json.loads((MINI / "card.json").read_text())
    assert hashlib.sha256((MINI / "adapter_model.safetensors").read_bytes()).hexdigest() == card["adapter_sha256"]
    assert card["base"] == "smollm2-135m" and len(card["teacher_sha256"]) == 64
    with gzip.open(MINI / "training.jsonl.gz", "rt") as f:
        rows = [json.loads(line) for line in f]
    assert len(rows) == sum(card["rows"].values())
    assert (MINI / "adapter_model.safetensors").stat().st_size < 50 << 20


def test_nothing_it_learnt_is_an_evaluation_test_item():
    with gzip.open(MINI / "training.jsonl.gz", "rt") as f:
        rows = [json.loads(line) for line in f]
    dev = [r for r in rows if r["job"].startswith("dev/")]
    assert dev and all(TASKS[r["job"].split("/")[1]].split_of(r["id"].split("/", 2)[2]) == "dev" for r in dev)
    choice = traces.CHOICE_TASKS
    # every fixed set's test prompts: light, reasoning and safety (harmful requests the mini learnt to refuse are dev)
    test_prompts = {e.messages[-1]["content"] for task in TASKS.values() if not task.generated and not task.api
                    for e in task.examples("test")}
    assert not any(r["messages"][-1]["content"] in test_prompts for r in rows)
    # reasoning traces over choice questions carry the dev question's id
    traced = [r for r in rows if r.get("dataset") in choice]
    assert traced and all(TASKS[r["dataset"]].split_of(r["id"].removeprefix(r["dataset"] + "-")) == "dev"
                          for r in traced)
    # teacher-answered rows over evaluation inputs carry the dev example's id
    for r in rows:
        ident = r["id"].split("/", 1)[-1]
        if ident.startswith("eval-"):
            task, example_id = ident.removeprefix("eval-").split("-", 1)
            assert TASKS[task].split_of(example_id) == "dev", r["id"]


def test_it_is_the_default_and_answers_in_the_evaluations_format():
    assert DEFAULT_MODEL == "tinythink-mini"
    mini, base = load_model("tinythink-mini"), load_model("smollm2-135m")
    assert mini.name == "tinythink-mini" and mini.config == base.config
    assert not torch.equal(mini.model.layers[0].mlp.down_proj.weight, base.model.layers[0].mlp.down_proj.weight)
    prompt = SENTIMENT_PROMPT.format(text="I loved every minute of this film, the best evening in months.")
    chunks = LLM(mini).chat([{"role": "user", "content": prompt}], SamplingParams(max_tokens=8, temperature=0.0))
    assert "".join(c.text for c in chunks).strip().lower().rstrip(".") == "positive"
