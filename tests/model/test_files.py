"""Weights in and out: HF export round trip, and clear one-line errors for bad files."""

import json
import shutil

import numpy as np
import pytest
import torch
from gguf import GGUFWriter
from safetensors.torch import save_file

from tinythink.errors import ModelFileError, TinythinkError
from tinythink.model.load import load_model

PROMPT = "<|im_start|>user\nName three primary colours.<|im_end|>\n<|im_start|>assistant\n"


@pytest.fixture(scope="module")
def exported(ours, tmp_path_factory):
    out = tmp_path_factory.mktemp("export") / "smollm2-hf"
    ours.save_hf(out)
    return out


def test_export_loads_in_transformers_with_the_same_logits(ours, exported):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    assert sorted(p.name for p in exported.iterdir()) == [
        "config.json", "generation_config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"]
    hf = AutoModelForCausalLM.from_pretrained(exported, dtype=torch.float32).eval()
    hf_tok = AutoTokenizer.from_pretrained(exported)
    ids = ours.tokenizer.encode(PROMPT)
    assert hf_tok(PROMPT)["input_ids"] == ids
    messages = [{"role": "user", "content": "hi"}]
    assert hf_tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True).startswith("<|im_start|>")
    with torch.no_grad():
        assert (hf(torch.tensor([ids])).logits - ours.model(torch.tensor([ids]))).abs().max().item() == 0.0


def test_export_reloads_in_tinythink(ours, exported):
    again = load_model(str(exported))
    assert again.format == "hf" and again.config.n_layers == 30
    assert again.tokenizer.stop_ids == ours.tokenizer.stop_ids
    assert again.tokenizer.chat_template == ours.tokenizer.chat_template
    ids = torch.tensor([ours.tokenizer.encode(PROMPT)])
    with torch.no_grad():
        assert torch.equal(again.model(ids), ours.model(ids))


def test_sharded_checkpoint_loads(ours, exported, tmp_path):
    from safetensors.torch import load_file

    shard_dir = tmp_path / "sharded"
    shutil.copytree(exported, shard_dir)
    (shard_dir / "model.safetensors").unlink()
    sd = load_file(exported / "model.safetensors")
    names = sorted(sd)
    half = len(names) // 2
    weight_map = {}
    for i, part in enumerate((names[:half], names[half:])):
        file = f"model-0000{i + 1}-of-00002.safetensors"
        save_file({k: sd[k] for k in part}, shard_dir / file)
        weight_map.update({k: file for k in part})
    (shard_dir / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    ids = torch.tensor([ours.tokenizer.encode(PROMPT)])
    with torch.no_grad():
        assert torch.equal(load_model(str(shard_dir)).model(ids), ours.model(ids))


def expect_error(path, pattern):
    with pytest.raises(ModelFileError, match=pattern) as info:
        load_model(str(path))
    message = str(info.value)
    assert "\n" not in message and str(path) in message
    return message


def test_truncated_gguf(default_gguf, tmp_path):
    cut = tmp_path / "cut.gguf"
    data = default_gguf.read_bytes()
    cut.write_bytes(data[: len(data) // 2])
    expect_error(cut, "truncated")
    cut.write_bytes(data[:2000])  # cut inside the metadata
    expect_error(cut, "truncated or corrupt")


def test_not_a_gguf(tmp_path):
    junk = tmp_path / "junk.gguf"
    junk.write_bytes(b"\x89PNG not a model at all" * 10)
    expect_error(junk, "not a GGUF file")


def test_corrupt_gguf_metadata(default_gguf, tmp_path):
    bad = tmp_path / "bad.gguf"
    data = bytearray(default_gguf.read_bytes()[:4096])
    data[8:24] = b"\xff" * 16  # absurd tensor and key counts
    bad.write_bytes(bytes(data))
    expect_error(bad, "truncated or corrupt")


def tiny_gguf(path, arch="llama", tensor_type=None):
    w = GGUFWriter(str(path), arch)
    w.add_block_count(1)
    w.add_embedding_length(8)
    w.add_head_count(2)
    w.add_head_count_kv(1)
    w.add_feed_forward_length(16)
    w.add_tensor("token_embd.weight", np.zeros((10, 8), dtype=np.float32))
    if tensor_type is not None:
        w.add_tensor("blk.0.attn_q.weight", np.zeros((8, 66), dtype=np.uint8), raw_dtype=tensor_type)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def test_unsupported_architecture(tmp_path):
    message = expect_error(tiny_gguf(tmp_path / "m.gguf", arch="mamba"), "architecture 'mamba' is not supported")
    assert "llama, qwen2" in message


def test_incomplete_model(tmp_path):
    expect_error(tiny_gguf(tmp_path / "m.gguf"), "incomplete model")


def test_unsupported_tensor_type(tmp_path):
    from gguf import GGMLQuantizationType

    from tinythink.model.gguf_file import GGUFFile

    f = GGUFFile(tiny_gguf(tmp_path / "m.gguf", tensor_type=GGMLQuantizationType.IQ2_XXS))
    with pytest.raises(ModelFileError, match="type IQ2_XXS, which is not supported"):
        f.tensor("blk.0.attn_q.weight")


def test_pickle_weights_are_refused_not_loaded(exported, tmp_path):
    d = tmp_path / "pickled"
    d.mkdir()
    shutil.copy(exported / "config.json", d)
    (d / "pytorch_model.bin").write_bytes(b"cos\nsystem\n(S'echo pwned'\ntR.")  # a malicious pickle
    expect_error(d, "never unpickles")


def test_corrupt_safetensors(exported, tmp_path):
    d = tmp_path / "corrupt"
    shutil.copytree(exported, d)
    data = (d / "model.safetensors").read_bytes()
    (d / "model.safetensors").write_bytes(data[: len(data) // 3])
    expect_error(d, "truncated or corrupt safetensors")


def test_unsupported_model_type(exported, tmp_path):
    d = tmp_path / "other"
    shutil.copytree(exported, d)
    config = json.loads((d / "config.json").read_text())
    (d / "config.json").write_text(json.dumps({**config, "model_type": "gpt_neox"}))
    expect_error(d, "model_type 'gpt_neox' is not supported")


def test_unknown_reference():
    with pytest.raises(TinythinkError, match="not a known model name"):
        load_model("no-such-model")


def test_a_model_given_by_path_is_named_by_its_file(default_gguf, exported):
    # a short id for the API (the file's general.name is free text with spaces: "SmolLM2 135M Instruct ...")
    assert load_model(str(default_gguf)).name == default_gguf.stem == "SmolLM2-135M-Instruct.Q4_1"
    assert load_model(str(exported)).name == "smollm2-hf"
