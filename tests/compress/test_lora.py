"""LoRA: it trains (held-out loss falls), saves as a PEFT adapter that PEFT itself loads to the same logits, and
merges into the base weights at load."""

import json

import pytest
import torch

from tinythink.compress import lora
from tinythink.compress.objectives import LanguageModeling
from tinythink.compress.trainer import TrainSettings, train
from tinythink.errors import ModelFileError
from tinythink.model.hf_checkpoint import save_hf_dir

from tiny_models import tiny_model


def test_a_short_lora_run_lowers_held_out_loss_and_trains_only_the_adapter(tiny_data, tmp_path):
    data, held = tiny_data
    model = lora.add_lora(tiny_model(), rank=8, alpha=16)
    base = {k: v.clone() for k, v in model.state_dict().items() if "lora_" not in k}
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    settings = TrainSettings(steps=30, lr=1e-2, warmup_steps=2, micro_batch=4, eval_every=10, eval_batches=2,
                             save_every=30, precision="float32")
    train(model, LanguageModeling(), data, held, settings, tmp_path, progress=False)
    rows = [json.loads(line) for line in (tmp_path / "train.jsonl").read_text().splitlines()]
    held_ce = [r["eval_ce"] for r in rows if "eval_ce" in r]
    assert held_ce[-1] < held_ce[0] - 0.1, held_ce
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in base.items())  # the base stays frozen


def test_a_saved_adapter_merges_to_the_trained_model(tmp_path):
    model = lora.add_lora(tiny_model(), rank=4, alpha=8)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, lora.LoRALinear):
                m.lora_B.normal_(0, 0.1)
    ids = torch.tensor([[3, 1, 4, 1, 5, 9, 2, 6]])
    with torch.no_grad():
        want = model(ids)
    lora.save_adapter(model, tmp_path / "adapter", "tiny", dtype=torch.float32)
    config = json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())
    assert config["peft_type"] == "LORA" and config["r"] == 4 and config["lora_alpha"] == 8
    merged = lora.merge_adapter(tiny_model(), tmp_path / "adapter")
    with torch.no_grad():
        assert (merged(ids) - want).abs().max() < 1e-5
        assert (lora.merged(model)(ids) - want).abs().max() < 1e-5
    with pytest.raises(ModelFileError, match="another base model"):
        lora.merge_adapter(tiny_model(dim=48), tmp_path / "adapter")


def test_peft_loads_our_adapter_to_the_same_logits(tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    base = tiny_model()
    save_hf_dir(base, tmp_path / "base", None, [0])
    model = lora.add_lora(tiny_model(), rank=4, alpha=8)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, lora.LoRALinear):
                m.lora_B.normal_(0, 0.1)
    lora.save_adapter(model, tmp_path / "adapter", str(tmp_path / "base"), dtype=torch.float32)
    hf = AutoModelForCausalLM.from_pretrained(str(tmp_path / "base"), dtype=torch.float32)
    peft_model = PeftModel.from_pretrained(hf, str(tmp_path / "adapter")).eval()
    ids = torch.tensor([[3, 1, 4, 1, 5, 9, 2, 6]])
    with torch.no_grad():
        assert (peft_model(ids).logits - model(ids)).abs().max() < 1e-4
