"""A bounded cache of prompt-prefix KV, in fixed-size blocks, with least-recently-used eviction.

A block is keyed by the whole token prefix that ends with it, so a hit on block b means every block
before it is the same too. Requests that share a system prompt, few-shot examples or a document copy
those blocks into their KV rows instead of recomputing them.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict

import numpy as np
import torch

from tinythink.model.transformer import Transformer


def _block_keys(tokens: list[int], block: int) -> list[bytes]:
    """Key of each complete block: a running hash of every token up to the block's end."""
    h = hashlib.blake2b(digest_size=16)
    keys = []
    array = np.asarray(tokens, dtype=np.int64)
    for end in range(block, len(tokens) + 1, block):
        h.update(array[end - block:end].tobytes())
        keys.append(h.copy().digest())
    return keys


class PrefixCache:
    def __init__(self, model: Transformer, block: int = 8, budget_bytes: int = 64 << 20):
        self.model, self.block, self.budget = model, block, budget_bytes
        self.blocks: OrderedDict[bytes, list[tuple[torch.Tensor, torch.Tensor]]] = OrderedDict()
        self.bytes = 0
        self.hits = self.lookups = 0  # in tokens

    def lookup(self, tokens: list[int], slot: int) -> int:
        """Copy the longest cached prefix of `tokens` into cache row `slot`; returns its length.

        At least one token is always left uncached, so the request still computes its next-token logits.
        """
        n = 0
        for key in _block_keys(tokens[:len(tokens) - 1], self.block):
            layers = self.blocks.get(key)
            if layers is None:
                break
            self.blocks.move_to_end(key)
            for block, (k, v) in zip(self.model.layers, layers):
                cache = block.self_attn.kv_cache
                cache.k[slot, :, n:n + self.block] = k
                cache.v[slot, :, n:n + self.block] = v
            n += self.block
        self.lookups += len(tokens)
        self.hits += n
        return n

    def store(self, tokens: list[int], slot: int, start: int):
        """Remember the complete blocks of `tokens` (already in cache row `slot`) from position `start` on."""
        for i, key in enumerate(_block_keys(tokens, self.block)):
            lo = i * self.block
            if lo < start - start % self.block or key in self.blocks:
                continue
            layers = [(b.self_attn.kv_cache.k[slot, :, lo:lo + self.block].clone(),
                       b.self_attn.kv_cache.v[slot, :, lo:lo + self.block].clone()) for b in self.model.layers]
            self.blocks[key] = layers
            self.bytes += sum(k.nbytes + v.nbytes for k, v in layers)
            while self.bytes > self.budget and self.blocks:
                _, evicted = self.blocks.popitem(last=False)
                self.bytes -= sum(k.nbytes + v.nbytes for k, v in evicted)
