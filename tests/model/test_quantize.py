"""Weight-only int8/int4 layers against float references, and quantized models end to end."""

import pytest
import torch
from torch import nn

from tinythink.engine.generate import generate
from tinythink.engine.sampling import SamplingParams
from tinythink.model import quantized_matmul
from tinythink.model.load import load_model
from tinythink.model.kv_cache import KV_DTYPE
from tinythink.model.quantize import Int4Linear, Int8Linear

torch.manual_seed(0)
LINEAR = nn.Linear(576, 192, bias=True)
X = torch.randn(5, 3, 576)


def rel_err(a, b):
    return ((a.float() - b.float()).norm() / b.float().norm()).item()


@pytest.mark.parametrize("make", [Int8Linear.from_float, lambda l: Int4Linear.from_float(l, 32),
                                  lambda l: Int4Linear.from_float(l, 64)])
@pytest.mark.parametrize("kernel", ["ours", "pytorch"])
def test_kernel_equals_its_dequantized_weights(make, kernel, monkeypatch):
    if kernel == "pytorch":  # as where ours cannot be built: PyTorch's, in bfloat16
        monkeypatch.setattr(quantized_matmul, "library", lambda: None)
    q = make(LINEAR)
    # ours: int8 activations at these 15 rows where the CPU has AVX2; PyTorch's: bfloat16 ones
    x = quantized_matmul.as_multiplied(X, 8 if isinstance(q, Int8Linear) else 4) if kernel == "ours" \
        else X.bfloat16().float()
    reference = torch.nn.functional.linear(x, q.dequantize(), q.bias.float())
    # ours computes in float32; PyTorch's differs by bfloat16 rounding of activations, scales and outputs
    assert rel_err(q(X), reference) < (1e-5 if kernel == "ours" else 1e-2)


def test_quantization_error_is_bounded():
    """Round to nearest: at most half a step, plus what storing scales (and minimums) in bfloat16 adds."""
    w = LINEAR.weight.detach()
    q8, q4 = Int8Linear.from_float(LINEAR), Int4Linear.from_float(LINEAR, 32)
    step8 = w.abs().amax(dim=1, keepdim=True) / 127
    bf16_scale_error = (q8.scales.float()[:, None] - step8).abs() * 127
    assert ((q8.dequantize() - w).abs() <= step8 / 2 + bf16_scale_error + 1e-7).all()
    groups = w.reshape(192, -1, 32)
    lo = groups.amin(-1)
    step4 = (groups.amax(-1) - lo) / 15
    sm = q4.scales_mins.float().transpose(0, 1)  # (N, K/G, 2)
    bf16_error = (sm[..., 0] - step4).abs() * 15 + (sm[..., 1] - lo).abs()
    bound = (step4 / 2 + bf16_error).repeat_interleave(32, dim=1)
    assert ((q4.dequantize() - w).abs() <= bound + 1e-7).all()
    full = LINEAR(X)
    assert rel_err(q8(X), full) < 0.02 and rel_err(q4(X), full) < 0.15


def test_int4_group_size_must_divide_inputs():
    with pytest.raises(ValueError, match="not a multiple of the group size"):
        Int4Linear.from_float(nn.Linear(576, 8), 128)


# Held-out prose written for this test (not from any training set we know of).
HELD_OUT = (
    "When the storm reached the harbour town late on Thursday, most of the fishing boats had already been pulled "
    "onto the shingle. The harbour master, a patient woman who had watched forty winters come and go, walked the "
    "length of the sea wall twice before she was satisfied. Children pressed their faces to the windows of the "
    "school, which had closed early, and counted the waves that broke over the lighthouse. By evening the power "
    "had failed in the lower streets, and the bakery on the corner handed out bread by candlelight. Nobody could "
    "remember a storm like it, although the older fishermen claimed that the winter of their childhood had been "
    "worse. In the morning the beach was covered with seaweed, broken crates and a single green bottle, which a "
    "boy carried home as if it were treasure. The town council met that afternoon to discuss repairs to the pier, "
    "the cost of which, the treasurer warned, would exceed the entire budget for the coming year.")
PROMPT = "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n"


@pytest.fixture(scope="module")
def int8(default_gguf):
    return load_model(str(default_gguf), quantize=8)


def test_int8_model_stays_close_to_float(ours, int8):
    text = HELD_OUT
    ids = torch.tensor([ours.tokenizer.encode(text)])
    with torch.inference_mode():
        a, b = ours.model(ids), int8.model(ids)
    agree = (a.argmax(-1) == b.argmax(-1)).float().mean().item()
    ppl = lambda logits: torch.exp(torch.nn.functional.cross_entropy(logits[0, :-1].float(), ids[0, 1:])).item()
    print(f"int8: top-1 agreement {agree:.3f}, perplexity {ppl(b):.3f} vs float32 {ppl(a):.3f}")
    assert agree > 0.9
    assert abs(ppl(b) / ppl(a) - 1) < 0.02
    out = list(generate(int8.model, int8.tokenizer.encode(PROMPT), SamplingParams(max_tokens=20, temperature=0.0),
                        int8.tokenizer.stop_ids))
    assert "Paris" in int8.tokenizer.decode(out)


@pytest.mark.parametrize("bits", [8, 4])
def test_quantized_model_round_trips_through_safetensors(default_gguf, int8, tmp_path, bits):
    m = int8 if bits == 8 else load_model(str(default_gguf), quantize=4)
    m.save_hf(tmp_path)
    again = load_model(str(tmp_path))
    assert again.config.quantization == m.config.quantization
    assert type(again.model.layers[0].mlp.up_proj) is type(m.model.layers[0].mlp.up_proj)
    # several rows at once: the path that crashed on unaligned safetensors buffers
    ids = torch.tensor([m.tokenizer.encode(PROMPT)])
    with torch.inference_mode():
        assert torch.equal(again.model(ids), m.model(ids))


def test_quantized_engine_batch_equals_single(int8):
    from tinythink.engine.batch import BatchEngine

    tok = int8.tokenizer
    prompts = [tok.encode(PROMPT), tok.encode(PROMPT.replace("France", "Italy")), tok.encode("Once upon a time")]
    params = SamplingParams(max_tokens=12, temperature=0.0)
    int8.model.kv_dtype = torch.float32  # to the last digit (bfloat16 keys may round another way in a batch)
    try:
        singles = [list(generate(int8.model, p, params, tok.stop_ids)) for p in prompts]
        engine = BatchEngine(int8.model, max_batch=4, kv_budget_bytes=64 << 20)
        assert engine.generate(prompts, params, tok.stop_ids) == singles
    finally:
        int8.model.clear_caches()
        int8.model.kv_dtype = KV_DTYPE


def test_tied_head_and_embeddings_go_int8_for_inference_only_in_quantized_models(ours, default_gguf):
    from tinythink.model.quantize import Int8Embedding, quantize_embeddings

    q = load_model(str(default_gguf), quantize=4)
    ids = torch.tensor([q.tokenizer.encode(HELD_OUT)])
    with torch.inference_mode():
        before = q.model(ids)
        embeddings = q.model.embed_tokens(ids)
        quantize_embeddings(q.model)
        after = q.model(ids)
        looked_up = q.model.embed_tokens(ids)
    assert type(q.model.lm_head) is Int8Linear and type(q.model.embed_tokens) is Int8Embedding
    assert "embed_tokens.weight" not in q.model.state_dict()  # the float table is gone
    assert looked_up.dtype == embeddings.dtype and 0 < rel_err(looked_up, embeddings) < 0.02  # int8 a row: ~1%
    ppl = lambda logits: torch.exp(torch.nn.functional.cross_entropy(logits[0, :-1].float(), ids[0, 1:])).item()
    print(f"int4, int8 head and embeddings: perplexity {ppl(after):.3f} vs {ppl(before):.3f}")
    assert not torch.equal(before, after) and abs(ppl(after) / ppl(before) - 1) < 0.005
    assert (before.argmax(-1) == after.argmax(-1)).float().mean() > 0.95
    assert type(quantize_embeddings(ours.model).lm_head) is not Int8Linear  # float models keep theirs
    assert q.model.num_parameters() == ours.model.num_parameters() == 134_515_008


def rest_dtypes(default_gguf) -> set[torch.dtype]:
    """The dtypes of a quantized model's norms and embeddings as loaded."""
    return {p.dtype for n, p in load_model(str(default_gguf), quantize=8).model.named_parameters()
            if "norm" in n or "embed" in n}


def test_quantized_models_run_the_rest_in_float32_where_our_kernels_build(default_gguf):
    """Our kernels take float32 activations: a quantized model loads with float32 norms and embeddings wherever
    they build, bfloat16 or not on this CPU."""
    assert rest_dtypes(default_gguf) == {torch.float32}


def test_without_our_kernels_the_rest_runs_in_what_the_cpu_computes_natively(default_gguf, no_kernels):
    from tinythink.model.load import dtype_named

    assert rest_dtypes(default_gguf) == {dtype_named("auto")}
