"""A bounded cache of prompt-prefix KV, in fixed-size blocks, with least-recently-used eviction.

A block is keyed by the whole token prefix that ends with it, so a hit on block b means every block
before it is the same too. Requests that share a system prompt, few-shot examples or a document copy
those blocks into their KV rows instead of recomputing them.

A block written by a request that scored its prompt (echo with logprobs) also keeps the logprob entries of
its own tokens, each given everything before it: a block's key covers every token its entries depend on. So
scoring requests share prefixes too: the options of a multiple-choice question, scored one prompt each, compute
their shared context once.
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
        self.hits = self.lookups = 0  # in tokens

    def lookup(self, tokens: list[int], slot: int, scoring: int | None = None) -> tuple[int, list]:
        """Copy the longest cached prefix of `tokens` into cache row `slot`; returns its length and, for a
        request scoring its prompt with `scoring` alternatives a token, the logprob entries of the prefix's
        tokens (all but the first); only blocks that carry such entries count then.

        At least one token is always left uncached, so the request still computes its next-token logits.
        """
        n, entries = 0, []
        for key in _block_keys(tokens[:len(tokens) - 1], self.block):
            block = self.blocks.get(key)
            if block is None or scoring is not None and block.top != scoring:
                break
            self.blocks.move_to_end(key)
            for layer, (k, v) in zip(self.model.layers, block.layers):
                cache = layer.self_attn.kv_cache
                cache.k[slot, :, n:n + self.block] = k
                cache.v[slot, :, n:n + self.block] = v
            if scoring is not None:
                entries += block.entries
            n += self.block
        self.lookups += len(tokens)
        self.hits += n
        return n, entries

    def store(self, tokens: list[int], slot: int, start: int, scoring: int | None = None, entries: list = ()):
        """Remember the complete blocks of `tokens` (already in cache row `slot`) from position `start` on;
        a request that scored its prompt with `scoring` alternatives passes its `entries` (for tokens[1:])."""
        for i, key in enumerate(_block_keys(tokens, self.block)):
            lo, hi = i * self.block, (i + 1) * self.block
            scored = {"top": scoring, "entries": entries[max(lo - 1, 0):hi - 1]} if scoring is not None else {}
            known = self.blocks.get(key)
            if known is not None:
                if scored and known.top is None:  # computed by a generating request: now it can score too
                    known.top, known.entries = scored["top"], scored["entries"]
                continue
            if lo < start - start % self.block:
                continue
            self.blocks[key] = block = Block([(b.self_attn.kv_cache.k[slot, :, lo:hi].clone(),
                                               b.self_attn.kv_cache.v[slot, :, lo:hi].clone())
                                              for b in self.model.layers], **scored)
            self.bytes += block.nbytes
            while self.bytes > self.budget and self.blocks:
                _, evicted = self.blocks.popitem(last=False)
                self.bytes -= evicted.nbytes
