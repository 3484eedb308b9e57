"""Continuous batching: many requests share one model, joining and leaving at token boundaries.

Each admitted request owns one row ("slot") of a preallocated KV-cache pool. Every engine step is one
forward pass over a packed batch: one token for every request that is generating, plus prompt chunks of
as many waiting prompts as fit in a budget of `prefill_chunk` tokens (so a long prompt never stalls the
others for long, and many short prompts are prefilled together, in the same matrix products). Requests
differ freely in length, sampling settings and stop conditions. A prefix cache lets requests that share a
prompt prefix copy its KV instead of recomputing it.

The engine works on token ids. It can be driven inline (`tokens()` steps it as needed) or from its own
thread (`start()`), in which case other threads submit, consume and cancel safely.
"""

from __future__ import annotations

import heapq
import itertools
import queue
import sys
import threading
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import torch

from tinythink.engine.generate import check_prompt
from tinythink.engine.prefix_cache import PrefixCache
from tinythink.engine.sampling import Sampler, SamplingParams, token_logprobs
from tinythink.model.packed_batch import Packed
from tinythink.model.transformer import Transformer

_DONE = None  # end-of-stream marker in a request's event queue


LOOP_NGRAM, LOOP_REPEATS = 12, 3  # a thought whose last 12 tokens it has already written 3 times is looping


@dataclass(eq=False)
class Thinking:
    """An enforced thinking budget: once `budget` tokens are spent in thought, the model tries to stop before
    closing its thought, or the thought repeats itself (its last LOOP_NGRAM tokens seen LOOP_REPEATS times
    before: small models loop), the engine writes `close_ids` itself and the model goes on to answer. In the
    answer, tokens that would open or close another thought are refused, and so is stopping before it says
    anything."""
    budget: int
    close_ids: list[int]
    is_closed: Callable[[list[int]], bool]  # does this output already close the thought?
    reopens: Callable[[list[int]], bool] | None = None  # would these answer tokens start another thought?
    blank: Callable[[list[int]], bool] | None = None  # are these answer tokens only whitespace so far?
    tokens: int | None = None  # thinking tokens, once the thought is closed
    forcing: list[int] = field(default_factory=list)
    ngrams: dict[tuple[int, ...], int] = field(default_factory=dict)  # the thought's n-grams, counted
    closed_by: str | None = None  # "model", "budget", "stop" or "loop"

    def looping(self, thought: list[int]) -> bool:
        """Counts the thought's newest n-gram; true once it has been written LOOP_REPEATS times before."""
        if len(thought) < LOOP_NGRAM:
            return False
        key = tuple(thought[-LOOP_NGRAM:])
        self.ngrams[key] = self.ngrams.get(key, 0) + 1
        return self.ngrams[key] > LOOP_REPEATS


def answer_reserve(max_tokens: int) -> int:
    """Tokens of `max_tokens` that a thought may never take, so that an answer always has room: a quarter, at
    least 32 (at most half of a small limit)."""
    return min(max(32, max_tokens // 4), max_tokens // 2)


@dataclass(eq=False)
class Request:
    id: int
    prompt: list[int]
    params: SamplingParams
    stop_ids: frozenset[int]
    sampler: Sampler
    slot: int | None = None
    pos: int = 0  # how many of this request's tokens are in its KV row
    cached_tokens: int = 0  # prompt tokens taken from the prefix cache
    block_keys: list[bytes] = field(default_factory=list)  # prefix-cache keys of the prompt's complete blocks
    output: list[int] = field(default_factory=list)
    finish_reason: str | None = None  # "stop", "length" or "cancelled"
    events: queue.SimpleQueue = field(default_factory=queue.SimpleQueue)
    listener: Callable[[], None] | None = None  # called (from the engine's thread) after each new event
    thinking: Thinking | None = None
    prompt_logprobs: list = field(default_factory=list)  # with params.prompt_logprobs: entries for prompt[1:]
    background: bool = False  # batch work: admitted only when no interactive request waits, never to every slot

    @property
    def done(self) -> bool:
        return self.finish_reason is not None


def kv_bytes_per_token(model: Transformer) -> int:
    itemsize = torch.empty((), dtype=model.kv_dtype).element_size()
    return sum(2 * b.self_attn.n_kv_heads * b.self_attn.head_dim * itemsize for b in model.layers)


class BatchEngine:
    def __init__(self, model: Transformer, max_batch: int = 16, context: int | None = None,
                 kv_budget_bytes: int | None = 1 << 30, prefill_chunk: int = 256, prefix_block: int = 8,
                 prefix_cache_bytes: int = 64 << 20):
        """A KV budget of None gives every slot the whole `context` (which must then be given).

        Prefix-cache blocks are small (8 tokens) because short prompts share short prefixes: support tickets
        share the 30 tokens of the chat template's system turn and user header, of which 8-token blocks reuse
        24 and 64-token blocks none (200 tickets: 33.9 s -> 25.4 s). The prefix cache's 64 MB hold ~1,400
        tokens of SmolLM2-135M's float32 KV (~2,800 in bfloat16): a long system prompt or few-shot examples; the least recently
        used blocks go first, so prefixes in use stay."""
        if prefill_chunk % prefix_block:
            raise ValueError("prefill_chunk must be a multiple of prefix_block")
        if kv_budget_bytes is None:
            if context is None:
                raise ValueError("a KV pool sized by its context needs the context")
            kv_budget_bytes = max_batch * context * kv_bytes_per_token(model)
        per_slot = kv_budget_bytes // (max_batch * kv_bytes_per_token(model))
        self.context = min(context or model.config.max_seq_len, model.config.max_seq_len, per_slot)
        if self.context < 16:
            raise ValueError(f"a KV budget of {kv_budget_bytes} bytes leaves {self.context} tokens per slot")
        self.model, self.max_batch = model, max_batch
        self.prefill_chunk, self.prefix_block = prefill_chunk, prefix_block
        model.clear_caches()
        with torch.inference_mode():
            model.setup_caches(max_batch, self.context)
        self.prefix_cache = PrefixCache(model, prefix_block, prefix_cache_bytes) if prefix_cache_bytes else None
        self.free = list(range(max_batch))  # a heap: the lowest slots first keeps the batch compact
        self.incoming: deque[Request] = deque()  # submitted since the last step (appended without the lock)
        self.waiting: deque[Request] = deque()  # interactive requests
        self.background: deque[Request] = deque()  # batch work, behind them
        self.reserved = max(1, max_batch // 4)  # slots background requests leave free for interactive ones
        self.prefilling: deque[Request] = deque()
        self.decoding: dict[int, Request] = {}  # slot -> request
        self.lock = threading.RLock()
        self.wakeup = threading.Event()
        self.ids = itertools.count()
        self.thread: threading.Thread | None = None
        self.stopping = False

    # ---- the public side, safe from any thread

    def submit(self, prompt: list[int], params: SamplingParams, stop_ids=frozenset(),
               listener: Callable[[], None] | None = None, constraint=None, thinking: Thinking | None = None,
               background: bool = False) -> Request:
        check_prompt(prompt, self.context)
        req = Request(next(self.ids), list(prompt), params, frozenset(stop_ids),
                      Sampler(params, prompt, self.model.config.vocab_size, constraint), listener=listener,
                      thinking=thinking, background=background)
        if self.prefix_cache is not None:
            req.block_keys = self.prefix_cache.keys(req.prompt)
        self.incoming.append(req)  # no lock: a step may be running, and submitting must not wait for it
        self.wakeup.set()
        return req

    def cancel(self, req: Request):
        """Stop a request; its slot is free for the next step."""
        with self.lock:
            if not req.done:
                for queue_ in (self.incoming, self.background if req.background else self.waiting):
                    try:
                        queue_.remove(req)
                    except ValueError:
                        pass
                self._finish(req, "cancelled")

    def tokens(self, req: Request) -> Iterator[int]:
        """The request's tokens as they come; runs the engine inline when no engine thread does."""
        while True:
            if self.thread is None:
                while req.events.empty():
                    self.step()
            item = req.events.get()
            if item is _DONE:
                return
            yield item

    def generate(self, prompts: list[list[int]], params: SamplingParams | list[SamplingParams],
                 stop_ids=frozenset()) -> list[list[int]]:
        """Run a whole batch of prompts to completion; returns each one's generated tokens."""
        params = params if isinstance(params, list) else [params] * len(prompts)
        reqs = [self.submit(p, sp, stop_ids) for p, sp in zip(prompts, params)]
        while not all(r.done for r in reqs):
            self.step()
        return [r.output for r in reqs]

    @property
    def queued(self) -> int:
        """Interactive requests waiting for a slot (those submitted since the last step too)."""
        return len(self.waiting) + sum(not r.background for r in list(self.incoming))

    @property
    def active(self) -> int:
        return len(self.prefilling) + len(self.decoding)

    def start(self):
        """Run the engine in a background thread.

        The engine thread lets go of the GIL around each of a step's ~600 tensor operations and, while the server's
        threads (or a client's, in the same process) run Python, waits up to the interpreter's switch interval to
        get it back: 5 ms by default. A 0.5 ms interval made an evaluation (64 concurrent streamed requests, server
        and client in one process) ~9% faster (docs/BENCHMARKS.md); it applies to the whole process."""
        sys.setswitchinterval(min(sys.getswitchinterval(), 0.0005))
        if self.thread is None:
            self.stopping = False
            self.thread = threading.Thread(target=self._loop, name="tinythink-engine", daemon=True)
            self.thread.start()

    def stop(self):
        if self.thread is not None:
            self.stopping = True
            self.wakeup.set()
            self.thread.join()
            self.thread = None

    def _loop(self):
        while not self.stopping:
            if not self.step():
                self.wakeup.wait(0.05)
                self.wakeup.clear()

    # ---- one step

    @torch.inference_mode()
    def step(self) -> bool:
        """Admit, then one forward pass: a token for every generating request and prompt chunks for those
        prefilling. False when idle."""
        with self.lock:
            self._admit()
            decoding = list(self.decoding.values())
            chunks = self._prefill_chunks()
            if not decoding and not chunks:
                return False
            tokens = [req.output[-1] for req in decoding]
            for req, end in chunks:
                tokens += req.prompt[req.pos:end]
            packed = Packed([r.slot for r in decoding] + [r.slot for r, _ in chunks],
                            [r.pos for r in decoding] + [r.pos for r, _ in chunks],
                            [1] * len(decoding) + [end - r.pos for r, end in chunks])
            # logits where a token is sampled: each decode token, each prompt's last token; for prompt
            # scoring, every position of its chunk
            at = [range(i, i + 1) for i in range(len(decoding))]
            for i, (req, end) in enumerate(chunks, len(decoding)):
                lo, hi = int(packed.ends[i]) - (end - req.pos), int(packed.ends[i])
                first = lo + max(0, self._scored_from(req) - req.pos)
                at.append(range(min(first, hi), hi) if req.params.prompt_logprobs is not None else
                          range(hi - 1, hi) if end == len(req.prompt) else range(0))
            needed = torch.tensor([i for positions in at for i in positions], dtype=torch.long)
            logits = self.model.forward_packed(torch.tensor([tokens]), packed, needed)
            rows = iter(logits)
            for req in decoding:
                req.pos += 1
                self._emit(req, self._next_token(req, next(rows)))
            for (req, end), positions in zip(chunks, at[len(decoding):]):
                self._prefilled(req, end, torch.stack([next(rows) for _ in positions]) if positions else None)
            return True

    def _admit(self):
        """Interactive requests take free slots first; background ones only what is left beyond the reserve."""
        while self.incoming:
            req = self.incoming.popleft()
            (self.background if req.background else self.waiting).append(req)
        in_flight = self._admit_from(self.waiting, 0, None)
        if not self.waiting:
            self._admit_from(self.background, self.reserved, in_flight)

    def _admit_from(self, waiting: deque[Request], keep_free: int, in_flight):
        held = []
        while waiting and len(self.free) > keep_free:
            req = waiting.popleft()
            if self.prefix_cache is not None:
                in_flight = self._blocks_in_flight() if in_flight is None else in_flight
                scoring, shared, _ = self._cache_plan(req)
                keys = req.block_keys[:shared]
                hit = self.prefix_cache.cached_blocks(keys, scoring)
                kinds = in_flight.get(keys[hit], ()) if hit < len(keys) else ()
                if kinds and (scoring is None or scoring in kinds):
                    held.append(req)  # a prompt being prefilled now stores that block within a step or so
                    continue
            req.slot = heapq.heappop(self.free)
            if self.prefix_cache is not None:
                cached, entries = self.prefix_cache.lookup(keys, req.slot, scoring)
                req.pos = req.cached_tokens = cached
                if scoring is not None and req.pos:
                    # the cached tokens' entries come with them; the first uncached token's needs the logits of
                    # the last cached position, which is computed again
                    req.prompt_logprobs, req.pos = entries, req.pos - 1
                for key in req.block_keys[cached // self.prefix_block:]:
                    in_flight.setdefault(key, set()).add(scoring)
            self.prefilling.append(req)
        waiting.extendleft(reversed(held))
        return in_flight

    def _blocks_in_flight(self) -> dict[bytes, set[int | None]]:
        """Prefix-cache blocks that prompts being prefilled will store, each with the kinds they will store it
        as (None: keys and values; k: scored, with k alternatives a token). A waiting request whose next uncached
        block is among them waits for it rather than computing it again: options of a multiple-choice question
        sent at once, or chats with one system prompt arriving together, compute their shared prefix once."""
        in_flight: dict[bytes, set[int | None]] = {}
        for req in self.prefilling:
            scoring, _, stored = self._cache_plan(req)
            for key in req.block_keys[req.pos // self.prefix_block:stored]:
                in_flight.setdefault(key, set()).add(scoring)
        return in_flight

    def _cache_plan(self, req: Request) -> tuple[int | None, int, int]:
        """(the prefix-cache kind of the request's blocks, how many of its complete blocks it takes from the
        cache, how many it stores there). At least one token stays uncached, so the request still computes its
        next-token logits; a request that scores only a reply (score_from) shares the blocks before it as plain
        keys and values, and only those."""
        p = req.params
        if p.prompt_logprobs is not None and p.score_from > 0:
            before = min(p.score_from - 1, len(req.prompt) - 1) // self.prefix_block
            return None, before, before
        return p.prompt_logprobs, (len(req.prompt) - 1) // self.prefix_block, len(req.block_keys)

    def _prefill_chunks(self) -> list[tuple[Request, int]]:
        """(request, end) for the prompts that fit this step's token budget, first come first served."""
        chunks, room = [], self.prefill_chunk
        for req in self.prefilling:
            end = min(len(req.prompt), req.pos + room)
            if end < len(req.prompt):
                # chunks end on prefix-cache block boundaries, so a cached prefix and a computed one are the same
                end -= end % self.prefix_block
            if end <= req.pos:
                break
            chunks.append((req, end))
            room -= end - req.pos
        return chunks

    def _scored_from(self, req: Request) -> int:
        """The first prompt position whose logits this request needs, when it scores its prompt."""
        return max(req.pos, req.params.score_from - 1)

    def _prefilled(self, req: Request, end: int, logits: torch.Tensor | None):
        first = self._scored_from(req)
        if req.params.prompt_logprobs is not None and first < end:  # position p's logits score token p + 1
            targets = torch.tensor(req.prompt[first + 1:end + 1])
            req.prompt_logprobs += token_logprobs(logits[:len(targets)], targets, req.params.prompt_logprobs)
        if self.prefix_cache is not None:  # chunk by chunk, so requests waiting for a block get it soon
            scoring, _, stored = self._cache_plan(req)
            self.prefix_cache.store(req.block_keys[:min(end // self.prefix_block, stored)], req.slot,
                                    req.pos // self.prefix_block, scoring, req.prompt_logprobs)
        req.pos = end
        if end < len(req.prompt):
            return
        self.prefilling.remove(req)
        if req.params.max_tokens == 0:  # scored, nothing to generate
            self._finish(req, "length")
            return
        self.decoding[req.slot] = req
        self._emit(req, self._next_token(req, logits[-1]))

    def _next_token(self, req: Request, logits: torch.Tensor) -> int:
        t = req.thinking
        if t is None:
            return req.sampler(logits)
        if t.tokens is not None:
            answer = req.output[t.tokens:]

            def refuse(token: int) -> bool:  # small models reopen their thought, or stop, where an answer belongs
                if token in req.stop_ids:
                    return t.blank is not None and t.blank(answer)
                return t.reopens is not None and t.reopens(answer + [token])
            return req.sampler(logits, refuse=refuse)
        if not t.forcing and len(req.output) >= t.budget:
            t.forcing, t.closed_by = list(t.close_ids), "budget"  # the budget is spent: close the thought ourselves
        if t.forcing:
            token = t.forcing.pop(0)
        else:
            token = req.sampler(logits, constrained=False)  # a grammar applies to the answer, not the thought
            if token in req.stop_ids:  # no stopping mid-thought: close it, then the model answers
                t.forcing, t.closed_by = list(t.close_ids), "stop"
                token = t.forcing.pop(0)
            elif t.looping(req.output + [token]):  # going round in circles: close it as at the budget
                t.forcing, t.closed_by = list(t.close_ids), "loop"
        if not t.forcing and t.is_closed(req.output + [token]):
            t.tokens = len(req.output) + 1
            t.closed_by = t.closed_by or "model"
        return token

    def _emit(self, req: Request, token: int):
        req.output.append(token)
        self._put(req, token)
        if token in req.stop_ids:
            self._finish(req, "stop")
        elif len(req.output) >= req.params.max_tokens or req.pos + 1 >= self.context:
            self._finish(req, "length")

    def _finish(self, req: Request, reason: str):
        req.finish_reason = reason
        if req.slot is not None:
            if self.decoding.get(req.slot) is req:
                del self.decoding[req.slot]
            if req in self.prefilling:
                self.prefilling.remove(req)
            heapq.heappush(self.free, req.slot)
            req.slot = None
        self._put(req, _DONE)

    @staticmethod
    def _put(req: Request, event):
        req.events.put(event)
        if req.listener is not None:
            req.listener()
