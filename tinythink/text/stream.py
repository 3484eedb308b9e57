"""Turning a stream of token ids into a stream of text.

`IncrementalDecoder` emits text only once it is complete: a multi-byte character split across tokens
is held back until its last byte arrives. `StopStrings` holds back text that might be the start of a
stop string, and cuts the stream where one appears.
"""

from __future__ import annotations

from dataclasses import dataclass

from tinythink.text.tokenizer import Tokenizer

_REPLACEMENT = "\ufffd"


class IncrementalDecoder:
    def __init__(self, tokenizer: Tokenizer):
        self.tokenizer = tokenizer
        self.ids: list[int] = []
        self.prefix = 0  # decoding restarts here, so that merges at token boundaries come out right
        self.read = 0  # ids before this have been emitted as text

    def feed(self, token: int) -> str:
        self.ids.append(token)
        done = self.tokenizer.decode(self.ids[self.prefix:self.read])
        text = self.tokenizer.decode(self.ids[self.prefix:])
        if len(text) > len(done) and not text.endswith(_REPLACEMENT):
            self.prefix, self.read = self.read, len(self.ids)
            return text[len(done):]
        return ""

    def flush(self) -> str:
        """Whatever is left, incomplete characters included, at the end of the stream."""
        done = self.tokenizer.decode(self.ids[self.prefix:self.read])
        text = self.tokenizer.decode(self.ids[self.prefix:])
        self.prefix = self.read = len(self.ids)
        return text[len(done):]


class StopStrings:
    def __init__(self, stops: list[str]):
        self.stops = [s for s in stops if s]
        self.pending = ""
        self.stopped = False

    def feed(self, text: str) -> str:
        """The part of the text that is safe to emit now."""
        if self.stopped:
            return ""
        self.pending += text
        cut = min((i for i in (self.pending.find(s) for s in self.stops) if i >= 0), default=-1)
        if cut >= 0:
            self.stopped = True
            out, self.pending = self.pending[:cut], ""
            return out
        hold = max((k for s in self.stops for k in range(1, len(s)) if self.pending.endswith(s[:k])), default=0)
        out, self.pending = self.pending[:len(self.pending) - hold], self.pending[len(self.pending) - hold:]
        return out

    def flush(self) -> str:
        out, self.pending = ("" if self.stopped else self.pending), ""
        return out


@dataclass
class TextChunk:
    text: str  # new text, possibly empty
    token_ids: list[int]  # tokens generated since the last chunk
    finish_reason: str | None = None  # "stop" or "length" on the last chunk
    reasoning_tokens: int = 0  # on the last chunk: how many generated tokens were thinking
    logprobs: list | None = None  # when asked for: the sampler's (token, logprob, alternatives) for token_ids
    prompt_logprobs: list | None = None  # when asked for, on the first chunk: the same for the prompt's tokens


class TextStream:
    """One request's generated token ids -> text chunks: detokenizing, stop tokens, stop strings."""

    def __init__(self, tokenizer: Tokenizer, stop: list[str] = (), stop_ids=None):
        self.decoder, self.stops = IncrementalDecoder(tokenizer), StopStrings(list(stop))
        self.stop_ids = tokenizer.stop_ids if stop_ids is None else stop_ids
        self.pending: list[int] = []
        self.finish_reason: str | None = None

    def feed(self, token: int) -> TextChunk | None:
        """The chunk this token completes, if any; after a stop, the last chunk (with its finish_reason)."""
        if token in self.stop_ids:
            return self.finish("stop")
        self.pending.append(token)
        text = self.stops.feed(self.decoder.feed(token))
        if self.stops.stopped:
            self.finish_reason = "stop"
            chunk, self.pending = TextChunk(text, self.pending, "stop"), []
            return chunk
        if text:
            chunk, self.pending = TextChunk(text, self.pending), []
            return chunk
        return None

    def finish(self, reason: str) -> TextChunk:
        """The last chunk: whatever text was held back, and why the stream ended."""
        self.finish_reason = reason
        chunk = TextChunk(self.stops.feed(self.decoder.flush()) + self.stops.flush(), self.pending, reason)
        self.pending = []
        return chunk
