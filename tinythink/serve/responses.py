"""OpenAI-compatible response bodies (chat, completions, models, moderations, health; errors: errors.py), as the OpenAPI
document describes them: OpenAI's fields, and the few tinythink adds (reasoning_content, self_consistency, the
content filter's review and flags). The endpoints build their bodies as dicts, streamed or not; tests/serve/test_responses.py
checks real ones against these types, which forbid any field they do not name, so the document stays true.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from tinythink.serve.errors import errors
from tinythink.serve.protocol import MessageToolCall, Strict

FinishReason = Literal["stop", "length", "tool_calls", "content_filter"]


class ReasoningTokens(Strict):
    reasoning_tokens: int


class Usage(Strict):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    completion_tokens_details: ReasoningTokens | None = Field(None, description="with reasoning_effort")


class Screened(Strict):
    """What the content filter adds to a response when it is on."""
    requires_human_review: bool | None = Field(None, description="a medical, legal or financial request or reply")
    review_domains: list[str] | None = None
    safety_flags: list[str] | None = Field(None, description="moderation categories flagged, prompt_injection")


class SelfConsistency(Strict):
    samples: int
    answer: str | None = Field(description="the majority's answer; null when the replies had none to vote on")
    agreement: float | None = Field(description="the fraction of samples that reached it")
    sampled_tokens: int = Field(description="the tokens all the samples generated together")


class TopLogprob(Strict):
    token: str
    logprob: float
    bytes: list[int]


class TokenLogprob(TopLogprob):
    top_logprobs: list[TopLogprob]


class ChoiceLogprobs(Strict):
    content: list[TokenLogprob]


class AssistantMessage(Strict):
    role: Literal["assistant"]
    content: str | None
    refusal: str | None = None
    reasoning_content: str | None = Field(None, description="the thought, with reasoning_effort")
    tool_calls: list[MessageToolCall] | None = None


class ChatChoice(Strict):
    index: int
    message: AssistantMessage
    logprobs: ChoiceLogprobs | None
    finish_reason: FinishReason
    self_consistency: SelfConsistency | None = Field(None, description="at reasoning_effort high")


class ChatCompletion(Screened):
    id: str
    object: Literal["chat.completion"]
    created: int
    model: str
    system_fingerprint: str
    choices: list[ChatChoice]
    usage: Usage


class ToolCallDelta(MessageToolCall):
    index: int


class Delta(Strict):
    role: Literal["assistant"] | None = None
    content: str | None = None
    refusal: str | None = None
    reasoning_content: str | None = None
    tool_calls: list[ToolCallDelta] | None = None


class ChunkChoice(Strict):
    index: int
    delta: Delta
    logprobs: ChoiceLogprobs | None
    finish_reason: FinishReason | None
    self_consistency: SelfConsistency | None = None


class ChatCompletionChunk(Screened):
    """One server-sent event of a streamed reply (`data: {...}`, then `data: [DONE]`)."""
    id: str
    object: Literal["chat.completion.chunk"]
    created: int
    model: str
    system_fingerprint: str
    choices: list[ChunkChoice]
    usage: Usage | None = Field(None, description="the last chunk, with stream_options.include_usage")


class CompletionLogprobs(Strict):
    tokens: list[str]
    token_logprobs: list[float | None]
    top_logprobs: list[dict[str, float] | None]
    text_offset: list[int]


class CompletionChoice(Strict):
    index: int
    text: str
    logprobs: CompletionLogprobs | None
    finish_reason: FinishReason | None


class Completion(Screened):
    """A completion, or (streamed) one server-sent event of it."""
    id: str
    object: Literal["text_completion"]
    created: int
    model: str
    system_fingerprint: str
    choices: list[CompletionChoice]
    usage: Usage | None = None


class Model(Strict):
    id: str
    object: Literal["model"]
    created: int
    owned_by: str


class ModelList(Strict):
    object: Literal["list"]
    data: list[Model]


class ModelLoad(Strict):
    active: int = Field(description="requests being generated")
    waiting: int = Field(description="requests queued for a slot")


class Health(Strict):
    status: Literal["ok"]
    models: dict[str, ModelLoad]


class ModerationResult(Strict):
    flagged: bool
    categories: dict[str, bool]
    category_scores: dict[str, float]
    category_applied_input_types: dict[str, list[str]]
    prompt_injection: bool = Field(description="beyond OpenAI's shape: the text tries to override instructions")
    requires_human_review: bool = Field(description="beyond OpenAI's shape: a medical, legal or financial text")
    extra_scores: dict[str, float] = Field(description="the guard's scores of harmful, injection and the domains")
    screened: bool = Field(description="beyond OpenAI's shape: false for a text in another language than English, "
                           "which the guard cannot read: it is not scored (every score 0) and never flagged")
    language: str | None = Field(description="the other language (ISO 639-1) of a text not screened")


class Moderation(Strict):
    id: str
    model: str
    results: list[ModerationResult]


ERRORS = errors({400: "a bad request: the error's message and param say what was wrong",
                 404: "no such model is served", 413: "the body or the prompt is too large",
                 429: "the server's queue is full"})


def documented(model: type[BaseModel], chunk: type[BaseModel]) -> dict:
    """A route's responses in the OpenAPI document: a JSON body, or with `stream` server-sent events (the schema of
    one event: its data a chunk as JSON, or the closing [DONE]; the app adds the chunk's schema to the document's
    components, see STREAM_CHUNKS); errors in OpenAI's shape."""
    data = {"anyOf": [{"const": "[DONE]"},
                      {"type": "string", "contentMediaType": "application/json",
                       "contentSchema": {"$ref": f"#/components/schemas/{chunk.__name__}"}}]}
    event = {"type": "object", "required": ["data"], "properties": {"data": data}}
    return {**ERRORS, 200: {"model": model, "description": f"{model.__name__}; with stream: true, server-sent events, each "
                                                  f"`data:` a {chunk.__name__}, then `data: [DONE]`",
                  "content": {"text/event-stream": {"schema": event}}}}


# the chunks that only streams send, which no route's JSON response names
STREAM_CHUNKS = (ChatCompletionChunk,)
