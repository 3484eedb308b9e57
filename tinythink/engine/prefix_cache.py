"""A bounded cache of prompt-prefix KV, in fixed-size blocks, with least-recently-used eviction.

A block is keyed by the whole token prefix that ends with it, so a hit on block b means every block
before it is the same too. Requests that share a system prompt, few-shot examples or a document copy
those blocks into their KV rows instead of recomputing them.

A block written by a request that scored its prompt (echo with logprobs) also keeps the logprob entries of
its own tokens, each given everything before it: a block's key covers every token its entries depend on. So
scoring requests share prefixes too: the options of a multiple-choice question, scored one prompt each, compute
their shared context once.

The engine stores a prompt's blocks as each prefill chunk completes, and holds back a waiting request whose next
uncached block a prompt being prefilled is about to store, so requests that arrive together share too.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from dataclasses import dataclass

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


@dataclass
class Block:
    layers: list[tuple[torch.Tensor, torch.Tensor]]  # (k, v) per layer, each (kv_heads, block, head_dim)
    # with a scored prompt: how many alternatives its entries carry, and the entries of the block's tokens
    # (the very first token of a prompt has none)
    top: int | None = None
    entries: list | None = None

    @property
    def nbytes(self) -> int:  # the KV; entries are a few dozen bytes a token
        return sum(k.nbytes + v.nbytes for k, v in self.layers)


class PrefixCache:
    def __init__(self, model: Transformer, block: int = 8, budget_bytes: int = 64 << 20):
        self.model, self.block, self.budget = model, block, budget_bytes
        self.blocks: OrderedDict[bytes, Block] = OrderedDict()
        self.bytes = 0

    def keys(self, tokens: list[int]) -> list[bytes]:
        """The key of each complete block of `tokens`."""
        return _block_keys(tokens, self.block)

    def cached_blocks(self, keys: list[bytes], scoring: int | None = None) -> int:
        """How many of the leading blocks `keys` name are cached (for a scoring request: with its entries)."""
        n = 0
        for key in keys:
            block = self.blocks.get(key)
            if block is None or scoring is not None and block.top != scoring:
                break
            n += 1
        return n

    def lookup(self, keys: list[bytes], slot: int, scoring: int | None = None) -> tuple[int, list]:
        """Copy the longest cached run of the blocks `keys` name into cache row `slot`; returns its length in
        tokens and, for a request scoring its prompt with `scoring` alternatives a token, the logprob entries
        of its tokens (all but the first); only blocks that carry such entries count then."""
        n, entries = 0, []
        for key in keys[:self.cached_blocks(keys, scoring)]:
            block = self.blocks[key]
            self.blocks.move_to_end(key)
            for layer, (k, v) in zip(self.model.layers, block.layers):
                cache = layer.self_attn.kv_cache
                cache.k[slot, :, n:n + self.block] = k
                cache.v[slot, :, n:n + self.block] = v
            if scoring is not None:
                entries += block.entries
            n += self.block
        return n, entries

    def store(self, keys: list[bytes], slot: int, first: int, scoring: int | None = None, entries: list = ()):
        """Remember the blocks `keys` name from block `first` on (their tokens are in cache row `slot`); a
        request that scored its prompt with `scoring` alternatives passes its `entries` (for tokens[1:])."""
        for i, key in enumerate(keys[first:], first):
            lo, hi = i * self.block, (i + 1) * self.block
            scored = {"top": scoring, "entries": entries[max(lo - 1, 0):hi - 1]} if scoring is not None else {}
            known = self.blocks.get(key)
            if known is not None:
                if scored and known.top is None:  # computed by a generating request: now it can score too
                    known.top, known.entries = scored["top"], scored["entries"]
                continue
            self.blocks[key] = block = Block([(b.self_attn.kv_cache.k[slot, :, lo:hi].clone(),
                                               b.self_attn.kv_cache.v[slot, :, lo:hi].clone())
                                              for b in self.model.layers], **scored)
            self.bytes += block.nbytes
            while self.bytes > self.budget and self.blocks:
                _, evicted = self.blocks.popitem(last=False)
                self.bytes -= evicted.nbytes
