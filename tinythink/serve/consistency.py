"""Self-consistency (Wang et al., 2023): several thoughts sampled for one question, in one batch, and the reply whose
final answer most of them reach is the one returned, with the samples' agreement as its confidence.

It applies where a reply ends in a short answer (a number, a word or a short phrase, as `tinythink.eval.parse`
reads them); for free-form replies the samples do not vote and the first one is returned.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass

from tinythink.eval import parse
from tinythink.text.reasoning import ReasoningSplitter
from tinythink.text.stream import TextChunk

SHORT = 48  # characters: a longer "answer" is prose, not something to vote on


@dataclass
class Vote:
    samples: int
    chosen: int  # which sample is returned
    answer: str | None  # the majority answer; None when the replies had none to vote on
    agreement: float | None  # the fraction of samples that reached it

    def info(self) -> dict:
        return {"samples": self.samples, "answer": self.answer, "agreement": self.agreement}


def answer_key(reply: str) -> str | None:
    """The final answer of a reply (its answer part, after any thought), normalised for counting; None if none."""
    value = parse.number(reply)
    if value is not None:
        return parse.format_number(value)
    short = parse.short_answer(reply)
    if short is None or len(short) > SHORT:
        return None
    return " ".join(short.lower().strip(" .!").split())


def vote(answers: list[str]) -> Vote:
    """answers: each sample's answer part."""
    keys = [answer_key(a) for a in answers]
    counts = Counter(k for k in keys if k is not None)
    if not counts:
        return Vote(len(answers), 0, None, None)
    best = max(counts.values())
    winner = next(k for k in keys if k is not None and counts[k] == best)  # ties: the first sample's answer
    return Vote(len(answers), keys.index(winner), winner, best / len(answers))


def answer_part(text: str, thinking: bool) -> str:
    if not thinking:
        return text
    splitter = ReasoningSplitter()
    (_, a1), (_, a2) = splitter.feed(text), splitter.flush()
    return a1 + a2


async def replay(samples: list[AsyncIterator[TextChunk]], thinking: bool) -> tuple[AsyncIterator[TextChunk], dict]:
    """Runs every sample to its end (together, so they share the engine's batch), votes, and gives back the chosen
    sample's chunks to stream as if it were the only one, and the vote (info() form), which is filled in once
    the stream has been started."""
    info: dict = {}

    async def collect(stream: AsyncIterator[TextChunk]) -> list[TextChunk]:
        return [chunk async for chunk in stream]

    async def chosen() -> AsyncIterator[TextChunk]:
        tasks = [asyncio.ensure_future(collect(s)) for s in samples]
        try:
            runs = await asyncio.gather(*tasks)
        finally:
            for t in tasks:
                t.cancel()
        result = vote([answer_part("".join(c.text for c in run), thinking) for run in runs])
        info.update(result.info(), sampled_tokens=sum(len(c.token_ids) for run in runs for c in run))
        for chunk in runs[result.chosen]:
            yield chunk

    return chosen(), info
