"""Our transformer against Hugging Face transformers on the same weights, in float32."""

import pytest
import torch
from transformers import AutoModelForCausalLM, LlamaConfig, Qwen2Config

from tinythink.model.hf_checkpoint import config_from_hf, load_state_dict, save_hf_dir
from tinythink.model.load import build_model, load_model

PROMPT = "<|im_start|>user\nWhy is the sky blue? Explain in two sentences, then give 3 facts.<|im_end|>\n"


def max_diff(a, b) -> float:
    return (a - b).abs().max().item()


def test_smollm2_gguf_logits_match_transformers(ours, hf_model):
    ids = torch.tensor([ours.tokenizer.encode(PROMPT)])
    with torch.no_grad():
        diff = max_diff(ours.model(ids), hf_model(ids).logits)
    print(f"SmolLM2-135M Q4_1 GGUF: max |logit diff| = {diff:.3g} over {ids.shape[1]} positions")
    assert diff < 1e-4


@pytest.mark.parametrize("kv_dtype, within", [(torch.float32, 1e-4), (torch.bfloat16, 0.5)])
def test_cached_forward_equals_full_forward(ours, kv_dtype, within):
    ids = torch.tensor([ours.tokenizer.encode(PROMPT)])
    T = ids.shape[1]
    with torch.no_grad():
        full = ours.model(ids)
        ours.model.clear_caches()
        ours.model.setup_caches(1, T, kv_dtype)
        first = ours.model(ids[:, :10], input_pos=torch.arange(10))
        steps = [ours.model(ids[:, t:t + 1], input_pos=torch.tensor([t])) for t in range(10, T)]
        ours.model.clear_caches()
    cached = torch.cat([first] + steps, dim=1)
    assert max_diff(full, cached) < within
    assert torch.equal(full.argmax(-1), cached.argmax(-1))


TINY = dict(vocab_size=320, hidden_size=64, intermediate_size=160, num_hidden_layers=3, max_position_embeddings=256)
CONFIGS = {
    "llama-gqa-untied-llama3-rope": LlamaConfig(
        **TINY, num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=False, rope_theta=500000.0,
        rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                      "original_max_position_embeddings": 32}),
    "llama-mha-tied-bias": LlamaConfig(**TINY, num_attention_heads=4, num_key_value_heads=4, tie_word_embeddings=True,
                                       attention_bias=True),
    "qwen2-gqa-bias-untied": Qwen2Config(**TINY, num_attention_heads=4, num_key_value_heads=1,
                                         tie_word_embeddings=False, rope_theta=1000000.0),
    "qwen2-gqa-bias-tied": Qwen2Config(**TINY, num_attention_heads=8, num_key_value_heads=2, tie_word_embeddings=True),
}


def random_hf_model(config):
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32).eval()
    with torch.no_grad():  # random biases and norms too, so that they are really exercised
        for name, p in model.named_parameters():
            if name.endswith("bias") or "norm" in name:
                p.copy_(torch.randn_like(p) * 0.1 + (1.0 if "norm" in name else 0.0))
    return model


@pytest.mark.parametrize("name", list(CONFIGS))
def test_tiny_random_model_matches_transformers(name, tmp_path):
    hf = random_hf_model(CONFIGS[name])
    hf.save_pretrained(tmp_path)
    sd = load_state_dict(tmp_path)
    model = build_model(config_from_hf(tmp_path, sd), sd, tmp_path)
    ids = torch.randint(0, 320, (2, 40), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        diff = max_diff(model(ids), hf(ids).logits)
    print(f"{name}: max |logit diff| = {diff:.3g}")
    assert diff < 1e-5


def test_non_uniform_layers_match_a_masked_uniform_model(tmp_path):
    """A pruned model (layer 0 loses a KV group and its query heads, layer 1 loses MLP neurons) equals the
    uniform reference with those heads' output columns and those neurons' down-projection columns zeroed."""
    hf = random_hf_model(LlamaConfig(**TINY, num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=False))
    hd = 16
    keep_neurons = torch.arange(0, 160, 2)  # layer 1 keeps every other neuron
    with torch.no_grad():
        hf.model.layers[0].self_attn.o_proj.weight[:, 2 * hd:] = 0  # query heads 2, 3 (KV group 1)
        hf.model.layers[1].mlp.down_proj.weight[:, 1::2] = 0
    hf.save_pretrained(tmp_path / "uniform")
    sd = load_state_dict(tmp_path / "uniform")
    a0, m1 = "layers.0.self_attn.", "layers.1.mlp."
    sd[a0 + "q_proj.weight"] = sd[a0 + "q_proj.weight"][: 2 * hd]
    sd[a0 + "k_proj.weight"] = sd[a0 + "k_proj.weight"][:hd]
    sd[a0 + "v_proj.weight"] = sd[a0 + "v_proj.weight"][:hd]
    sd[a0 + "o_proj.weight"] = sd[a0 + "o_proj.weight"][:, : 2 * hd]
    for proj in ("gate_proj", "up_proj"):
        sd[m1 + proj + ".weight"] = sd[m1 + proj + ".weight"][keep_neurons]
    sd[m1 + "down_proj.weight"] = sd[m1 + "down_proj.weight"][:, keep_neurons]
    pruned = build_model(config_from_hf(tmp_path / "uniform", sd), sd, tmp_path)
    c = pruned.config
    assert (c.layer(0).n_heads, c.layer(0).n_kv_heads, c.layer(1).intermediate_size) == (2, 1, 80)
    assert not c.uniform
    ids = torch.randint(0, 320, (1, 30), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        reference = hf(ids).logits
        assert max_diff(pruned(ids), reference) < 1e-5
    # and the pruned model survives a save/load round trip through an HF-style directory
    save_hf_dir(pruned, tmp_path / "pruned", bos_id=None, eos_ids=[0])
    sd2 = load_state_dict(tmp_path / "pruned")
    reloaded = build_model(config_from_hf(tmp_path / "pruned", sd2), sd2, tmp_path)
    assert reloaded.config.layer(1).intermediate_size == 80
    with torch.no_grad():
        assert max_diff(reloaded(ids), reference) < 1e-5


def test_bfloat16_load_stays_close(default_gguf, ours):
    bf16 = load_model(str(default_gguf), torch.bfloat16)
    ids = torch.tensor([ours.tokenizer.encode(PROMPT)])
    with torch.no_grad():
        a, b = ours.model(ids)[0, -1], bf16.model(ids)[0, -1]
    assert a.argmax() == b.argmax()
    assert torch.nn.functional.cosine_similarity(a, b, dim=0) > 0.99
