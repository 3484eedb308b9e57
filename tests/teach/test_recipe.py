"""`tinythink teach` end to end, small: the default model as its own (weak) teacher on two jobs and one reasoning
generator, through the real server; rows with provenance, a resumed run that asks nothing again, and an adapter
that loads onto the student."""

import gzip
import hashlib
import json
import shutil

import pytest
import torch

from tinythink.compress import lora
from tinythink.errors import ModelFileError
from tinythink.model.load import load_model
from tinythink.teach.generate import kept, read_done
from tinythink.teach.recipe import Teach, TeachSettings


@pytest.fixture(scope="module")
def taught(tmp_path_factory):
    out = tmp_path_factory.mktemp("teach")
    settings = TeachSettings(teacher="smollm2-135m", out=str(out), per_job=4, problems=3, trace_tokens=96, samples=3,
                             concurrency=12, rank=4, epochs=1.0, jobs=("sentiment", "faq"),
                             datasets=("basic_arithmetic",), dev_answers=(("sentiment", 3), ("arc_easy", 2)))
    return out, settings, Teach(settings, progress=False).run(("answer", "reason", "dev", "train"))


def test_kept_rows_carry_their_provenance(taught):
    out, settings, results = taught
    rows = kept(out / "answers.jsonl")
    assert sum(results["answer"]["sentiment"].values()) == 4 and sum(results["answer"]["faq"].values()) == 4
    for row in rows:
        assert row["teacher_sha256"] and row["settings"]["max_tokens"] and row["messages"][-1]["role"] == "user"
        if row["job"] == "sentiment":
            assert json.loads(row["completion"])["sentiment"] in ("positive", "negative", "neutral")
            assert row["settings"]["n"] == 3
    for row in kept(out / "traces.jsonl"):
        assert row["completion"].startswith("<think>\n") and "</think>" in row["completion"]


def test_a_rerun_asks_the_teacher_nothing_done_already(taught):
    out, settings, results = taught
    asked = sum(c.get("kept", 0) + c.get("dropped", 0) for c in results["answer"].values())
    assert len(read_done(out / "answers.jsonl")) == asked  # kept and dropped items both recorded
    again = Teach(settings, progress=False).run(("answer",))
    assert all(not counts.get("kept") and not counts.get("dropped") for counts in again["answer"].values())


def test_the_adapter_loads_onto_the_student(taught):
    out, _, results = taught
    assert results["train"]["status"] == "done" and (out / "train" / "loss.png").is_file()
    config = json.loads((out / "adapter" / "adapter_config.json").read_text())
    assert config["r"] == 4 and config["base_model_name_or_path"] == "smollm2-135m"
    assert results["train"]["rows"] == len(kept(out / "answers.jsonl")) + len(kept(out / "traces.jsonl")) + 5
    assert results["dev"] == {"dev/sentiment": 3, "dev/arc_easy": 2}
    merged = lora.merge_adapter(load_model("smollm2-135m").model, out / "adapter")
    adapted = load_model(str(out / "adapter"))  # an adapter directory is a model: its base, merged
    assert adapted.name == "adapter" and adapted.format == "gguf+lora" and adapted.tokenizer.vocab_size == 49152
    ids = torch.tensor([[1, 504, 3458, 282, 4649, 314]])
    with torch.no_grad():
        assert torch.equal(adapted.model(ids), merged(ids))
        assert not torch.allclose(adapted.model(ids), load_model("smollm2-135m").model(ids))  # it learnt something
    assert load_model(str(out / "adapter"), quantize=8).model.config.quantization == {"bits": 8, "group_size": 0}


def test_the_adapter_ships_as_a_model_with_its_rows_and_card(taught, tmp_path):
    out, settings, results = taught
    card = Teach(settings, progress=False).ship(tmp_path / "shipped")
    with gzip.open(tmp_path / "shipped" / "training.jsonl.gz", "rt") as f:
        rows = [json.loads(line) for line in f]
    assert len(rows) == sum(card["rows"].values()) == results["train"]["rows"] and card["rows"]["dev/sentiment"] == 3
    assert card["adapter_sha256"] == hashlib.sha256((out / "adapter" / "adapter_model.safetensors").read_bytes()
                                                    ).hexdigest()
    assert card["train"]["status"] == "done" and card["train"]["rows"] == len(rows)  # after a later partial run too
    assert all(r["teacher_sha256"] == card["teacher_sha256"] for r in rows if not r["job"].startswith("dev/"))
    shipped = load_model(str(tmp_path / "shipped"))
    with torch.no_grad():
        ids = torch.tensor([[1, 504, 3458]])
        assert torch.equal(shipped.model(ids), load_model(str(out / "adapter")).model(ids))


def test_a_broken_adapter_says_what_is_wrong(taught, tmp_path):
    out, _, _ = taught
    broken = tmp_path / "broken"
    shutil.copytree(out / "adapter", broken)
    (broken / "adapter_config.json").write_text("{not json")
    with pytest.raises(ModelFileError, match="not a readable adapter config"):
        load_model(str(broken))
