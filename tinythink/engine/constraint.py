"""Grammar-constrained decoding: llguidance masks, at every step, the tokens that would break the grammar
(a JSON schema, or any JSON object), so what the model writes always parses and validates.

llguidance needs no model or framework of its own: it reads the `tokenizers` JSON of our tokenizer.
"""

from __future__ import annotations

import json

import llguidance
import llguidance.torch as llt
import torch

from tinythink.errors import TinythinkError
from tinythink.text.tokenizer import Tokenizer


def compact(schema: dict) -> dict:
    """The schema with JSON written as `{"a": 1, "b": [2, 3]}`: no free whitespace, which small models
    otherwise spend tokens on (and can loop in) until max_tokens."""
    return {**schema, "x-guidance": {"whitespace_flexible": False, "item_separator": ", ", "key_separator": ": "}}


_BITS = torch.arange(32, dtype=torch.int32)


class GrammarError(TinythinkError, ValueError):
    """A schema or grammar that cannot be enforced; the message names the problem."""


class Grammars:
    """Compiles and checks grammars for one tokenizer (the llguidance tokenizer takes ~0.2 s to build)."""

    def __init__(self, tokenizer: Tokenizer, vocab_size: int):
        self.stop_ids = sorted(tokenizer.stop_ids)
        self.ll = llguidance.LLTokenizer(tokenizer.backend.to_str(), n_vocab=vocab_size, eos_token=self.stop_ids)

    def json_schema(self, schema: dict) -> str:
        try:
            grammar = llguidance.LLMatcher.grammar_from_json_schema(json.dumps(compact(schema)))
        except ValueError as e:
            raise GrammarError(f"invalid JSON schema: {e}") from None
        return self._checked(grammar, "JSON schema")

    def lark(self, source: str) -> str:
        """A grammar in llguidance's Lark dialect, which may embed JSON schemas (`%json {...}`)."""
        return self._checked(llguidance.LLMatcher.grammar_from_lark(source), "grammar")

    def _checked(self, grammar: str, what: str) -> str:
        problem = llguidance.LLMatcher.validate_grammar(grammar, self.ll)
        if problem and not problem.startswith("WARNING"):
            raise GrammarError(f"unsupported {what}: {problem}")
        return grammar

    def constraint(self, grammar: str) -> Constraint:
        return Constraint(self, grammar)


class Constraint:
    """One request's grammar state: masks logits before sampling, follows each sampled token."""

    def __init__(self, grammars: Grammars, grammar: str):
        self.grammars = grammars
        self.matcher = llguidance.LLMatcher(grammars.ll, grammar)
        self.bitmask = llt.allocate_token_bitmask(1, grammars.ll.vocab_size)

    def mask(self, logits: torch.Tensor):
        """logits (vocab,), in place: -inf wherever the grammar forbids the token."""
        if self.matcher.is_error():  # cannot happen for tokens we sampled under the mask; end cleanly if it does
            logits.fill_(float("-inf"))
            logits[self.grammars.stop_ids] = 0.0
            return
        llt.fill_next_token_bitmask(self.matcher, self.bitmask, 0)
        # unpack the int32 bitmask ourselves: llguidance's CPU apply_token_bitmask_inplace takes ~7 ms a call
        allowed = ((self.bitmask[0][:, None] >> _BITS) & 1).bool().flatten()[: logits.numel()]
        logits.masked_fill_(~allowed, float("-inf"))

    def accept(self, token: int):
        self.matcher.consume_token(token)
