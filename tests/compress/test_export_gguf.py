"""GGUF export: our loader reads the file back, and llama.cpp (llama-cpp-python) loads it and generates the
greedy tokens we generate, for the default model (llama architecture) and a pruned one (deci)."""

import pytest
import torch

from tinythink.compress import export_gguf, prune
from tinythink.compress.importance import measure
from tinythink.compress.prune import Target
from tinythink.engine.generate import generate
from tinythink.engine.sampling import SamplingParams
from tinythink.model.config import LayerShape
from tinythink.model.gguf_file import GGUFFile
from tinythink.model.load import load_model

PROMPT = "<|im_start|>user\nWhat is the capital of France? Answer in one sentence.<|im_end|>\n<|im_start|>assistant\n"


TEXT = ("The city council met on Tuesday to discuss the new budget. Members argued about funding for the public "
        "library, which has seen more visitors this year than in any year before. In the end they agreed to keep its "
        "opening hours and to repair the roof before winter, paying for it from the reserve.")


def greedy(model, ids, n=32):
    """Our greedy tokens with a float32 KV cache: the export is what these tests compare, and bfloat16 keys can
    break a near tie another way than llama.cpp's float16 ones."""
    kv_dtype, model.kv_dtype = model.kv_dtype, torch.float32
    try:
        return list(generate(model, ids, SamplingParams(max_tokens=n, temperature=0), frozenset()))
    finally:
        model.kv_dtype = kv_dtype
        model.clear_caches()


def llama_cpp_greedy(path, ids, n=32):
    import llama_cpp

    llm = llama_cpp.Llama(model_path=str(path), n_ctx=256, n_threads=2, verbose=False)
    out = []
    for token in llm.generate(ids, temp=0.0, top_k=1, repeat_penalty=1.0):
        out.append(token)
        if len(out) == n:
            break
    llm.close()
    return out


@pytest.fixture(scope="module")
def f16_file(ours, tmp_path_factory):
    path = tmp_path_factory.mktemp("gguf") / "smollm2-f16.gguf"
    return export_gguf.write(ours.model, ours.tokenizer, path, "f16", name="smollm2-135m", license="apache-2.0",
                             progress=False)


def test_our_loader_reads_the_export_back(ours, f16_file):
    back = load_model(str(f16_file))
    assert back.config == ours.config and back.license == "apache-2.0"
    assert back.tokenizer.encode(PROMPT) == ours.tokenizer.encode(PROMPT)
    assert back.tokenizer.chat_template == ours.tokenizer.chat_template
    ids = torch.tensor([ours.tokenizer.encode(PROMPT)])
    with torch.no_grad():
        diff = (back.model(ids) - ours.model(ids)).abs().max()
    assert diff < 0.05  # float16 weights


@pytest.mark.parametrize("kind", ["q8_0", "q4_0", "q4_1"])
def test_quantized_types_load_and_keep_the_model(ours, kind, tmp_path):
    path = export_gguf.write(ours.model, ours.tokenizer, tmp_path / f"m-{kind}.gguf", kind, progress=False)
    types = GGUFFile(path).tensor_types()
    assert types[kind.upper()] >= 7 * ours.config.n_layers and types["Q8_0"] >= 1 and types["F32"] == 61
    ids = torch.tensor([ours.tokenizer.encode(TEXT)])
    with torch.no_grad():
        a, b = (torch.nn.functional.cross_entropy(m(ids)[0, :-1], ids[0, 1:]).item()
                for m in (load_model(str(path)).model, ours.model))
    assert abs(a - b) < 0.05 * b  # requantizing the Q4_1 weights costs some perplexity, not the model


def test_llama_cpp_generates_our_greedy_tokens(ours, f16_file):
    ids = ours.tokenizer.encode(PROMPT)
    back = load_model(str(f16_file))
    assert llama_cpp_greedy(f16_file, ids) == greedy(back.model, ids)


def test_int4_in_groups_of_32_goes_to_q4_1_as_it_is(default_gguf, tmp_path):
    int4 = load_model(str(default_gguf), quantize=4, group_size=32)
    path = export_gguf.write(int4.model, int4.tokenizer, tmp_path / "int4.gguf", "q4_1", progress=False)
    back = load_model(str(path))
    q = back.model.layers[3].self_attn.q_proj.weight  # dequantized by gguf from the Q4_1 blocks we wrote
    assert torch.allclose(q, int4.model.layers[3].self_attn.q_proj.dequantize(), atol=2e-3)


def test_a_pruned_model_exports_as_deci_and_llama_cpp_runs_it(ours, tmp_path):
    from tinythink.compress.data import Document, PackedData, pack

    text = ("The quick brown fox jumps over the lazy dog. " * 8 + "Paris is the capital of France. ") * 4
    data = PackedData(pack([Document(ours.tokenizer.encode(text))] * 4, 128))
    importance = measure(ours.model, data, data, progress=False)
    c = ours.config
    shapes = [LayerShape(9, 3, 1024 if i % 2 else 768) for i in range(24)]
    shapes[5] = LayerShape(6, 2, 512)
    small = prune.apply(ours.model, prune.plan(c, importance, Target(layers=24, layer_shapes=shapes)))
    path = export_gguf.write(small, ours.tokenizer, tmp_path / "pruned.gguf", "f16", progress=False)
    assert GGUFFile(path).arch == "deci"
    back = load_model(str(path))
    assert [back.config.layer(i) for i in range(24)] == shapes
    ids = ours.tokenizer.encode(PROMPT)
    assert llama_cpp_greedy(path, ids) == greedy(back.model, ids)
