"""Sampling settings and the sampler that turns one step's logits into a token id.

Order of operations follows Hugging Face's: penalties and biases, then temperature, then top-k,
top-p and min-p filtering, then a draw from a seeded generator (or argmax at temperature 0).
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import Tensor

from tinythink.errors import TinythinkError


class InvalidSettingError(TinythinkError, ValueError):
    """A sampling or generation setting out of its allowed range."""


@dataclass
class SamplingParams:
    max_tokens: int = 256
    temperature: float = 1.0  # 0 means greedy
    top_k: int = 0  # 0 means off
    top_p: float = 1.0
    min_p: float = 0.0
    repetition_penalty: float = 1.0  # HF-style, over prompt and output tokens
    frequency_penalty: float = 0.0  # OpenAI-style, over output tokens: minus penalty * count
    presence_penalty: float = 0.0  # OpenAI-style, over output tokens: minus penalty once present
    logit_bias: dict[int, float] = field(default_factory=dict)
    seed: int | None = None
    logprobs: int | None = None  # record each chosen token's log-probability and this many alternatives
    prompt_logprobs: int | None = None  # also score the prompt's tokens (alternatives as above)
    score_from: int = 0  # with prompt_logprobs: score only prompt[score_from:] (a reply after a shared prompt)

    def __post_init__(self):
        checks = [
            (self.max_tokens >= 1 or (self.max_tokens == 0 and self.prompt_logprobs is not None),
             "max_tokens must be at least 1 (0 only to score a prompt)"),
            (0.0 <= self.temperature <= 2.0, "temperature must be between 0 and 2"),
            (self.top_k >= 0, "top_k must be 0 (off) or positive"),
            (0.0 <= self.top_p <= 1.0, "top_p must be in [0, 1]"),
            (0.0 <= self.min_p <= 1.0, "min_p must be between 0 and 1"),
            (0.0 < self.repetition_penalty <= 10.0, "repetition_penalty must be in (0, 10]"),
            (-2.0 <= self.frequency_penalty <= 2.0, "frequency_penalty must be between -2 and 2"),
            (-2.0 <= self.presence_penalty <= 2.0, "presence_penalty must be between -2 and 2"),
            (all(-100 <= b <= 100 for b in self.logit_bias.values()), "logit_bias values must be between -100 and 100"),
            (all(k is None or 0 <= k <= 20 for k in (self.logprobs, self.prompt_logprobs)),
             "top_logprobs must be between 0 and 20"),
            (self.score_from >= 0, "score_from must not be negative"),
        ]
        for ok, message in checks:
            if not ok:
                raise InvalidSettingError(message)

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0


def token_logprobs(logits: Tensor, targets: Tensor, top: int) -> list[tuple[int, float, list[tuple[int, float]]]]:
    """logits (T, vocab) and the tokens that followed, targets (T,) -> the sampler's logprob entries for them,
    with `top` alternatives each (the model's own distribution: no penalties apply to a prompt)."""
    return logprob_entries(torch.log_softmax(logits.float(), dim=-1), targets, top)


def logprob_entries(logp: Tensor, targets: Tensor, top: int) -> list[tuple[int, float, list[tuple[int, float]]]]:
    """Log-probabilities (T, vocab) and the chosen tokens (T,) -> (token, its logprob, [(alternative,
    logprob)] * top) per position."""
    chosen = logp.gather(-1, targets[:, None])[:, 0].tolist()
    if not top:
        return [(t, lp, []) for t, lp in zip(targets.tolist(), chosen)]
    values, indices = torch.topk(logp, top)
    return [(t, lp, list(zip(i, v))) for t, lp, i, v in zip(targets.tolist(), chosen, indices.tolist(),
                                                            values.tolist())]


MAX_REFUSED = 8  # tokens refused in a row before the sampler takes what it drew


class Sampler:
    """Samples one sequence's tokens; remembers what it has seen for the penalties."""

    def __init__(self, params: SamplingParams, prompt: list[int], vocab_size: int, constraint=None):
        self.p = params
        self.constraint = constraint  # a grammar (engine.constraint.Constraint) the output must follow
        # with params.logprobs: (token, its log-probability, [(alternative, log-probability), ...]) per token
        self.logprobs: list[tuple[int, float, list[tuple[int, float]]]] = []
        self.generator = torch.Generator().manual_seed(params.seed if params.seed is not None
                                                       else random.getrandbits(63))
        self.seen = torch.zeros(vocab_size, dtype=torch.bool)  # prompt + output, for repetition_penalty
        self.seen[torch.tensor(prompt, dtype=torch.long)] = True
        self.counts = torch.zeros(vocab_size)  # output only, for frequency/presence penalties
        if params.logit_bias:
            if any(not 0 <= t < vocab_size for t in params.logit_bias):
                raise InvalidSettingError(f"logit_bias token ids must be between 0 and {vocab_size - 1}")
            self.bias = torch.zeros(vocab_size)
            self.bias[list(params.logit_bias)] = torch.tensor(list(params.logit_bias.values()))
        else:
            self.bias = None

    def __call__(self, logits: Tensor, constrained: bool = True, refuse: Callable[[int], bool] | None = None) -> int:
        """logits (vocab,) float32 -> the next token id; records it. `constrained=False` samples outside the
        grammar (a thought before a constrained answer), which then starts at the next constrained call. A token
        that `refuse` rejects is masked and another sampled (at most MAX_REFUSED times)."""
        constraint = self.constraint if constrained else None
        logits = self.adjust(logits)
        # log-probabilities of the model's distribution (after penalties and bias; before temperature,
        # filtering and any grammar), as OpenAI reports them
        logp = torch.log_softmax(logits, dim=-1) if self.p.logprobs is not None else None
        if constraint is not None:
            constraint.mask(logits)
        token = int(self.sample(logits))
        for _ in range(MAX_REFUSED if refuse is not None else 0):
            if not refuse(token):
                break
            logits[token] = float("-inf")
            if torch.isinf(logits).all():
                break
            token = int(self.sample(logits))
        if logp is not None:
            self.logprobs += logprob_entries(logp[None], torch.tensor([token]), self.p.logprobs)
        if constraint is not None:
            constraint.accept(token)
        self.seen[token] = True
        self.counts[token] += 1
        return token

    def adjust(self, logits: Tensor) -> Tensor:
        """Logits after penalties and bias: what log-probabilities are reported from."""
        p = self.p
        logits = logits.clone()
        if p.repetition_penalty != 1.0:
            seen = logits[self.seen]
            logits[self.seen] = torch.where(seen > 0, seen / p.repetition_penalty, seen * p.repetition_penalty)
        if p.frequency_penalty:
            logits -= p.frequency_penalty * self.counts
        if p.presence_penalty:
            logits -= p.presence_penalty * (self.counts > 0).float()
        if self.bias is not None:
            logits += self.bias
        return logits

    def sample(self, logits: Tensor) -> Tensor:
        p = self.p
        if p.greedy:
            return logits.argmax()
        logits = logits / p.temperature
        if p.top_k and p.top_k < logits.numel():
            kth = torch.topk(logits, p.top_k).values[-1]
            logits = logits.masked_fill(logits < kth, float("-inf"))
        probs = torch.softmax(logits, dim=-1)
        if p.top_p < 1.0:
            sorted_probs, order = probs.sort(descending=True)
            # drop a token when the tokens ranked above it already hold top_p of the mass
            # (the top token always stays: top_p 0 is greedy, as OpenAI takes it)
            drop = (sorted_probs.cumsum(-1) - sorted_probs) >= p.top_p
            drop[0] = False
            probs = probs.scatter(0, order, sorted_probs.masked_fill(drop, 0.0))
        if p.min_p > 0.0:
            probs = probs.masked_fill(probs < p.min_p * probs.max(), 0.0)
        return torch.multinomial(probs, 1, generator=self.generator)[0]
