"""A packed batch: the new tokens of several sequences in one row, as continuous batching runs them.

Linear layers see all the tokens at once. Attention runs per sequence, over its own KV-cache row, except for
decoding sequences (one new token each): those attend together, in one call of tinythink's decode kernel
(model/decode_attention.py) or, where it cannot run, in a few SDPA calls over contiguous ranges of cache rows,
each row masked to its own length. An SDPA call reads every row of its range up to the range's longest length,
so one call over all rows reads about twice the keys and values the rows can see when short and long requests
decode together (an evaluation's mix); `row_ranges` splits the rows where that saves more than a call costs.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import torch
from torch import Tensor

# What one more SDPA call over a range of cache rows costs (its mask, gathering queries, scattering outputs: ~50 µs),
# in row-positions of keys and values read (~0.2 µs each for SmolLM2-135M's float32 KV on a 2-core AVX2 EPYC)
CALL_COST = 256


def row_ranges(visible: list[int], call_cost: int = CALL_COST) -> list[tuple[int, int]]:
    """Contiguous ranges [lo, hi) of cache rows that together hold every decoding row (visible > 0, the
    positions it attends to), chosen to minimise the positions read (rows x the range's longest) plus
    `call_cost` per range. Rows not decoding may sit inside a range, or between ranges."""
    n = len(visible)
    best, start = [0] * (n + 1), [0] * (n + 1)  # best[j]: cost of covering rows < j; its last range starts at start[j]
    for j in range(1, n + 1):
        if not visible[j - 1]:  # a row not decoding ends no range
            best[j], start[j] = best[j - 1], j
            continue
        best[j], longest = None, 0
        for i in range(j - 1, -1, -1):
            longest = max(longest, visible[i])
            if visible[i]:  # ranges start at decoding rows
                cost = best[i] + (j - i) * longest + call_cost
                if best[j] is None or cost < best[j]:
                    best[j], start[j] = cost, i
    ranges, j = [], n
    while j > 0:
        if start[j] == j:
            j -= 1
        else:
            ranges.append((start[j], j))
            j = start[j]
    return ranges[::-1]


@dataclass
class Packed:
    """Sequence i has `lengths[i]` new tokens, to be written into KV-cache row `slots[i]` from position
    `starts[i]`; the tokens lie in the batch in that order."""
    slots: list[int]
    starts: list[int]
    lengths: list[int]

    def __post_init__(self):
        lengths = torch.tensor(self.lengths)
        self.token_slots = torch.tensor(self.slots).repeat_interleave(lengths)  # (N,)
        self.positions = torch.cat([torch.arange(s, s + n) for s, n in zip(self.starts, self.lengths)])  # (N,)
        self.ends = lengths.cumsum(0)  # each sequence's last token is at ends[i] - 1
        # Decoding sequences (one new token each) attend together: their tokens, cache rows and visible lengths
        self.single = [i for i, n in enumerate(self.lengths) if n == 1]
        self.decode_tokens = self.ends[self.single] - 1
        self.decode_slots = torch.tensor([self.slots[i] for i in self.single], dtype=torch.int64)
        self.decode_lengths = torch.tensor([self.starts[i] + 1 for i in self.single], dtype=torch.int64)
        # Each other sequence attends on its own: (first token, slot, start, length, mask)
        self.others = [(int(self.ends[i]) - n, self.slots[i], self.starts[i], n,
                        None if self.starts[i] == 0 else  # causal from 0: no mask
                        torch.arange(self.starts[i] + n) <= torch.arange(self.starts[i], self.starts[i] + n)[:, None])
                       for i, n in enumerate(self.lengths) if n > 1]

    @cached_property
    def decoding(self) -> list[tuple[Tensor, Tensor, int, int, int, Tensor | None]]:
        """For SDPA, where the decode kernel cannot run: the decoding tokens attend range by range, each range
        one call (their tokens, their rows within the range, lo, hi, the longest length L, a mask (hi - lo, 1, 1,
        L) or None when every row sees all L). Rows not decoding see only position 0, so their dummy outputs stay
        finite."""
        if not self.single:
            return []
        visible = [0] * (max(self.slots[i] for i in self.single) + 1)
        for i in self.single:
            visible[self.slots[i]] = self.starts[i] + 1
        ranges = []
        for lo, hi in row_ranges(visible):
            mine = [i for i in self.single if lo <= self.slots[i] < hi]
            seen = torch.tensor([max(v, 1) for v in visible[lo:hi]])
            mask = None if bool((seen == seen.max()).all()) else \
                (torch.arange(int(seen.max())) < seen[:, None])[:, None, None]
            ranges.append((self.ends[mine] - 1, torch.tensor([self.slots[i] - lo for i in mine]), lo, hi,
                           int(seen.max()), mask))
        return ranges
