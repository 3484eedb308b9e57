"""Loading's kernels (model/weight_formats.py) and the GGUF reader against the `gguf` package, which follows
llama.cpp's own formulas; and the direct int8 load and the int8 embeddings against what they replace."""

import numpy as np
import pytest
import torch
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType as QT, GGUFReader
from gguf.quants import dequantize as numpy_dequantize

from tinythink.model import weight_formats
from tinythink.model.gguf_file import GGUFFile, read_header
from tinythink.model.load import load_model
from tinythink.model.quantize import Int8Embedding, Int8Linear


def reference(raw: np.ndarray, qtype: QT, rows: int, cols: int) -> torch.Tensor:
    return torch.from_numpy(np.array(numpy_dequantize(raw.reshape(rows, -1), qtype), dtype=np.float32)
                            ).reshape(rows, cols)


@pytest.mark.parametrize("qtype", weight_formats.KERNEL_TYPES, ids=lambda t: t.name)
def test_every_block_type_dequantizes_as_the_gguf_package_does(qtype):
    rows, cols = 7, 1024
    raw = weight_formats.random_blocks(qtype, rows * cols // GGML_QUANT_SIZES[qtype][0],
                                       np.random.default_rng(int(qtype))).reshape(-1)
    want = reference(raw, qtype, rows, cols)
    got = weight_formats.dequantize(raw, qtype, rows, cols, torch.empty(rows, cols))
    assert weight_formats.library() is not None
    assert want.abs().max() > 0 and torch.allclose(got, want, rtol=1e-5, atol=1e-6 * float(want.abs().max()))


def test_without_the_kernel_the_gguf_package_dequantizes(no_kernels):
    raw = weight_formats.random_blocks(QT.Q4_K, 4, np.random.default_rng(0)).reshape(-1)
    assert weight_formats.library() is None
    got = weight_formats.dequantize(raw, QT.Q4_K, 2, 512, torch.empty(2, 512))
    assert torch.equal(got, reference(raw, QT.Q4_K, 2, 512))


def test_int8_rows_are_pytorchs_rounding_in_blocks_and_without_the_kernel(monkeypatch):
    w = torch.randn(300, 96, dtype=torch.bfloat16)
    codes, scales = weight_formats.quantize_int8_rows(w, rows=64)
    assert weight_formats.library() is not None
    monkeypatch.setattr(weight_formats, "library", lambda: None)
    torch_codes, torch_scales = weight_formats.quantize_int8_rows(w, rows=64)  # PyTorch's operators, in blocks
    assert torch.allclose(scales, torch_scales, rtol=1e-6, atol=0)  # -ffast-math: amax * (1 / 127)
    assert (codes.int() - torch_codes.int()).abs().max() <= 1
    assert (codes == torch_codes).float().mean() > 0.999
    assert (codes.float() * scales[:, None] - w.float()).abs().max() <= scales.max() / 2 + 1e-6


def test_the_header_reads_as_the_gguf_package_reads_it(default_gguf):
    metadata, tensors = read_header(default_gguf)
    reader = GGUFReader(default_gguf)
    assert metadata == {k: f.contents() for k, f in reader.fields.items() if not k.startswith("GGUF.")}
    assert len(metadata["tokenizer.ggml.tokens"]) == 49152
    assert {t.name: (tuple(int(d) for d in t.shape), t.tensor_type, t.data_offset, t.n_bytes)
            for t in reader.tensors} == {t.name: (t.shape, t.tensor_type, t.offset, t.n_bytes)
                                         for t in tensors.values()}


def test_every_tensor_of_the_default_file_reads_as_the_gguf_package_reads_it(default_gguf):
    f, reader = GGUFFile(default_gguf), GGUFReader(default_gguf)
    for t in reader.tensors[:40]:  # every type the file holds (Q8_0 embeddings, Q4_1 projections, F32 norms)
        shape = tuple(int(d) for d in reversed(t.shape))
        want = reference(np.asarray(t.data), t.tensor_type, int(np.prod(shape[:-1])), shape[-1]).reshape(shape)
        assert torch.allclose(f.tensor(t.name), want, rtol=1e-5, atol=1e-6), t.name
        assert torch.equal(f.tensor(t.name, torch.bfloat16, rows_per_chunk=1000), want.to(torch.bfloat16))


def test_an_int8_load_reads_int8_rows_as_quantizing_the_float_model_gives(default_gguf, ours):
    int8 = load_model(str(default_gguf), quantize=8).model
    for name in ("layers.0.self_attn.q_proj", "layers.0.self_attn.k_proj", "layers.5.mlp.down_proj"):
        want = Int8Linear.from_weight(ours.model.get_submodule(name).weight)  # q and k: after undoing the rotary
        got = int8.get_submodule(name)  # interleave, which permutes rows: the codes and scales go along
        assert torch.equal(got.weight, want.weight) and torch.equal(got.scales, want.scales), name


def untied_copy(ours, tmp_path):
    """SmolLM2 with an output head of its own (the embeddings' weights, copied), written as GGUF."""
    from tinythink.compress import export_gguf
    from tinythink.model.transformer import Transformer

    config = ours.model.config
    with torch.device("meta"):
        model = Transformer(type(config)(**{**vars(config), "tie_embeddings": False}))
    state = {k: v.clone() for k, v in ours.model.state_dict().items()}
    state["lm_head.weight"] = state["embed_tokens.weight"].clone()
    model.load_state_dict(state, assign=True)
    return export_gguf.write(model.eval(), ours.tokenizer, tmp_path / "untied.gguf", "q8_0", progress=False)


def test_an_untied_quantized_model_keeps_its_table_in_bfloat16_until_inference_makes_it_int8(ours, tmp_path):
    from tinythink.model.inference import prepare_for_inference

    path = untied_copy(ours, tmp_path)
    q = load_model(str(path), quantize=8).model
    assert not q.config.tie_embeddings and q.embed_tokens.weight.dtype == torch.bfloat16
    assert q.norm.weight.dtype == torch.float32 and q.lm_head.weight.dtype == torch.int8
    ids = torch.tensor([ours.tokenizer.encode("The harbour master watched forty winters come and go.")])
    with torch.inference_mode():
        before = q(ids)
        embeddings = q.embed(ids)
        prepare_for_inference(q)
        after, looked_up = q(ids), q.embed(ids)
    assert type(q.embed_tokens) is Int8Embedding and looked_up.dtype == embeddings.dtype == torch.float32
    assert "embed_tokens.weight" not in q.state_dict()  # the bfloat16 table is gone
    rel = float((looked_up - embeddings).norm() / embeddings.norm())
    assert 0 < rel < 0.02  # int8 rows: ~1%
    assert (before.argmax(-1) == after.argmax(-1)).float().mean() > 0.9
