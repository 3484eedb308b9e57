"""What every task asks of a served model: the reply to a chat (free, or held to a JSON schema by constrained
decoding), and the probability of each of several given replies, scored together in one batch.
"""

from __future__ import annotations

import asyncio
import json
import math

from tinythink.engine.sampling import SamplingParams
from tinythink.errors import TinythinkError
from tinythink.serve.host import ModelHost


class UnfinishedAnswer(TinythinkError):
    """The model's JSON answer was cut off by max_tokens."""


class TaskModel:
    def __init__(self, host: ModelHost, documents=None, screening=None):
        self.host = host
        self.tokenizer = host.llm.tokenizer
        self.documents = documents  # a retrieval.index.DocumentIndex for answers from the server's documents
        self.screening = screening  # the server's safety screening of this request (safety.filter), if any

    @property
    def name(self) -> str:
        return self.host.name

    def prompt(self, messages: list[dict]) -> list[int]:
        prompt = self.tokenizer.encode(self.host.llm.template.render(messages), add_special_tokens=False)
        if len(prompt) + 1 > self.host.engine.context:
            raise TinythinkError(f"the task's prompt is {len(prompt)} tokens; the model's context holds "
                                 f"{self.host.engine.context}: shorten the text")
        return prompt

    async def write(self, messages: list[dict], max_tokens: int, schema: dict | None = None,
                    temperature: float = 0.0) -> str:
        """The reply's text; with a schema, decoding is constrained so that it is JSON matching it."""
        grammar = self.host.grammars.json_schema(schema) if schema is not None else None
        params = SamplingParams(max_tokens=max_tokens, temperature=temperature, seed=0)
        text = []
        async for chunk in self.host.stream(self.prompt(messages), params, [], grammar):
            text.append(chunk.text)
        return "".join(text)

    async def write_json(self, messages: list[dict], schema: dict, max_tokens: int) -> dict:
        text = await self.write(messages, max_tokens, schema)
        try:
            return json.loads(text)
        except json.JSONDecodeError:  # cut by max_tokens before the JSON closed
            raise UnfinishedAnswer(f"the model's answer did not complete within {max_tokens} tokens (max_tokens)"
                                   ) from None

    async def log_likelihoods(self, messages: list[dict], replies: list[str]) -> list[float]:
        """log P(reply, then the end of the turn | the chat) for each reply: one request each, submitted together
        so that the engine runs them as one batch (the shared prompt is prefilled once, through its prefix cache)."""
        prompt = self.prompt(messages)
        params = SamplingParams(max_tokens=0, prompt_logprobs=0, score_from=len(prompt))
        continuations = [self.tokenizer.encode(self.turn_end(messages, r), add_special_tokens=False) for r in replies]

        async def score(continuation: list[int]) -> float:
            entries = None
            async for chunk in self.host.stream(prompt + continuation, params, []):
                entries = chunk.prompt_logprobs if chunk.prompt_logprobs is not None else entries
            return sum(lp for _, lp, _ in entries)  # the reply's tokens only (score_from)

        return await asyncio.gather(*(score(c) for c in continuations))

    def turn_end(self, messages: list[dict], reply: str) -> str:
        """The text after the prompt when the assistant says `reply`: the reply and the template's end of turn, so
        that a reply is scored as the whole answer (not "bill" as a likely start of "billing")."""
        template = self.host.llm.template
        head = template.render(messages)
        whole = template.render(messages + [{"role": "assistant", "content": reply}], add_generation_prompt=False)
        if not whole.startswith(head):  # a template that rewrites earlier turns: the reply alone, then stop
            return reply
        return whole[len(head):].rstrip("\n")

    async def probabilities(self, messages: list[dict], replies: list[str]) -> list[float]:
        """The replies' probabilities given that the answer is one of them (their likelihoods normalized)."""
        logs = await self.log_likelihoods(messages, replies)
        top = max(logs)
        weights = [math.exp(v - top) for v in logs]
        return [w / sum(weights) for w in weights]
