"""Shared fixtures: the real default model's base (SmolLM2-135M-Instruct's GGUF), and transformers' own reading of
the same file."""

import pytest
import torch

from tinythink.model.load import load_model
from tinythink.model.registry import BASE_MODEL, resolve

torch.set_num_threads(2)


@pytest.fixture(scope="session")
def default_gguf():
    return resolve(BASE_MODEL)


@pytest.fixture(scope="session")
def ours(default_gguf):
    return load_model(str(default_gguf))


@pytest.fixture(scope="session")
def hf_model(default_gguf):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(str(default_gguf.parent), gguf_file=default_gguf.name,
                                                dtype=torch.float32).eval()


@pytest.fixture(scope="session")
def hf_tokenizer(default_gguf):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(default_gguf.parent), gguf_file=default_gguf.name)
