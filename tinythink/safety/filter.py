"""The filters a request passes through: its input checked before the model is called, its output checked as it
is generated (held back by the policy's window of tokens, released once checked, cut off with
`finish_reason: "content_filter"` when it crosses a block threshold), and an audit log of what was blocked or
flagged. One `Screening` a request gathers what the response reports (human review, flags)."""

from __future__ import annotations

import asyncio
import hashlib
import json
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

from tinythink.safety.guard import Guard, Verdict
from tinythink.safety.policy import Decision, Policy, load_policy
from tinythink.text.stream import TextChunk

CHECKED_TAIL_CHARS = 600  # each output check reads the held text and this much already released before it
REFUSAL = "I can't help with that request."


async def windows(stream: AsyncIterator[TextChunk], tokens: int) -> AsyncIterator[list[TextChunk]]:
    """The stream's chunks in groups of at least `tokens` tokens; the last group ends with the stream."""
    held: list[TextChunk] = []
    async for chunk in stream:
        held.append(chunk)
        if chunk.finish_reason or sum(len(c.token_ids) for c in held) >= tokens:
            yield held
            held = []
    if held:
        yield held


def merged(verdicts: list[Verdict]) -> Verdict:
    """Several texts of one request as one verdict: each label's highest score, and the first other language."""
    scores = {k: max(v.scores[k] for v in verdicts) for k in verdicts[0].scores}
    return Verdict(scores, {k: any(v.over[k] for v in verdicts) for k in verdicts[0].over},
                   next((v.language for v in verdicts if v.language), None))


class SafetyFilter:
    def __init__(self, guard: Guard, policy: Policy, metrics=None):
        self.guard, self.policy, self.metrics = guard, policy, metrics
        self._audit_lock = threading.Lock()
        if policy.audit_path is not None:
            policy.audit_path.parent.mkdir(parents=True, exist_ok=True)

    @classmethod
    def load(cls, policy: Path | None = None, data_dir: Path | None = None, metrics=None) -> SafetyFilter:
        """The shipped guard, under the policy in the file `policy` (or the built-in one)."""
        return cls(Guard.load(), load_policy(policy, data_dir), metrics)

    async def verdict(self, texts: list[str]) -> Verdict:
        # in a thread: the encoder's products release the GIL, and the event loop keeps serving streams
        return merged(await asyncio.to_thread(self.guard.check, texts))

    def screening(self, endpoint: str, key: str | None) -> Screening:
        return Screening(self, endpoint, key)

    def audit(self, endpoint: str, key: str | None, side: str, decision: Decision, text: str):
        if self.metrics is not None:
            if decision.blocked:
                self.metrics.safety_blocked.labels(side).inc()
            elif decision.action == "flag":
                self.metrics.safety_flagged.labels(side).inc()
            if decision.review:
                self.metrics.safety_review.labels(side).inc()
        if self.policy.audit_path is None or decision.action == "allow":
            return
        record = {"time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "endpoint": endpoint, "side": side,
                  "action": decision.action, "categories": decision.categories, "review": decision.review,
                  "prompt_injection": decision.injection, "language": decision.language,
                  "key_id": hashlib.sha256(key.encode()).hexdigest()[:12] if key else None,
                  "scores": {k: round(v, 3) for k, v in decision.scores.items() if v >= 0.1},
                  "text_sha256": hashlib.sha256(text.encode()).hexdigest()}
        if self.policy.audit_text:
            record["text"] = text
        with self._audit_lock, open(self.policy.audit_path, "a") as f:
            f.write(json.dumps(record) + "\n")


@dataclass
class Screening:
    """One request's checks, and what its response must carry."""
    filter: SafetyFilter
    endpoint: str
    key: str | None
    review: set[str] = field(default_factory=set)
    flags: set[str] = field(default_factory=set)
    injection: bool = False

    async def check(self, side: str, texts: list[str]) -> Decision:
        texts = [t for t in texts if t.strip()]
        if not texts:
            return Decision("allow", [], [], False, {})
        decision = self.filter.policy.decide(side, await self.filter.verdict(texts))
        self.review.update(decision.review)
        self.injection |= decision.injection
        if decision.action == "flag":
            self.flags.update(decision.categories)
        if decision.language is not None:
            self.flags.add("other_language")
        self.filter.audit(self.endpoint, self.key, side, decision, "\n\n".join(texts))
        return decision

    async def guarded(self, stream: AsyncIterator[TextChunk]) -> AsyncIterator[TextChunk]:
        """The stream, each window of tokens released only once the text so far passes the output check."""
        released, groups = "", windows(stream, self.filter.policy.stream_window_tokens)
        try:
            async for group in groups:
                text = "".join(c.text for c in group)
                if (await self.check("output", [released[-CHECKED_TAIL_CHARS:] + text])).blocked:
                    yield TextChunk("", [], finish_reason="content_filter")
                    return
                for c in group:
                    yield c
                released += text
        finally:
            await groups.aclose()
            await stream.aclose()  # a blocked or abandoned reply stops generating at once

    def fields(self) -> dict:
        """What a response carries beyond OpenAI's shape."""
        out = {"requires_human_review": bool(self.review)}
        if self.review:
            out["review_domains"] = sorted(self.review)
        if self.flags or self.injection:
            out["safety_flags"] = sorted(self.flags | ({"prompt_injection"} if self.injection else set()))
        return out

    def disclaimer(self) -> str:
        return self.filter.policy.disclaimer(sorted(self.review)) if self.review else ""
