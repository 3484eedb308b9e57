"""Tiny random models and data for the compression tests: real components, small enough to train in seconds.

A module of its own (not conftest.py), so that test files and scripts can import it by a name no other test folder uses."""

import torch

from tinythink.compress.data import Document
from tinythink.model.config import ModelConfig
from tinythink.model.transformer import Transformer


def tiny_config(**overrides) -> ModelConfig:
    base = dict(vocab_size=96, dim=32, n_layers=3, n_heads=4, n_kv_heads=2, intermediate_size=48, max_seq_len=64)
    return ModelConfig(**{**base, **overrides})


def tiny_model(seed: int = 0, **overrides) -> Transformer:
    torch.manual_seed(seed)
    model = Transformer(tiny_config(**overrides))
    with torch.no_grad():  # norms and biases away from their defaults, so that slicing them is really tested
        for name, p in model.named_parameters():
            if "norm" in name:
                p.copy_(1 + 0.1 * torch.randn_like(p))
            elif name.endswith("bias"):
                p.copy_(0.1 * torch.randn_like(p))
    return model


def patterned_documents(n: int, seed: int = 0, vocab: int = 96) -> list[Document]:
    """Documents a small model can learn: arithmetic progressions of token ids."""
    g = torch.Generator().manual_seed(seed)
    docs = []
    for _ in range(n):
        start, stride = torch.randint(1, vocab, (2,), generator=g).tolist()
        length = int(torch.randint(8, 40, (1,), generator=g))
        docs.append(Document([(start + i * stride) % vocab for i in range(length)]))
    return docs


