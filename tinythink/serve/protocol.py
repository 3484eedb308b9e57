"""OpenAI-compatible request bodies, each field defined once, validated by pydantic.

Unknown fields are rejected (400, naming the field) rather than silently ignored, and so are fields that
tinythink does not honour yet: a client never gets an answer that quietly ignored what it asked for.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from tinythink.request_body import RequestBody


class Strict(BaseModel):
    """A response body or a part of one (unknown fields are an error of ours)."""
    model_config = ConfigDict(extra="forbid")


class TextPart(RequestBody):
    type: Literal["text"]
    text: str


class FunctionCall(RequestBody):
    name: str
    arguments: str  # a JSON object, as text


class MessageToolCall(RequestBody):
    id: str
    type: Literal["function"] = "function"
    function: FunctionCall


class ChatMessage(RequestBody):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[TextPart] | None = None
    name: str | None = None
    tool_calls: list[MessageToolCall] | None = None  # an assistant's earlier calls
    tool_call_id: str | None = None  # which call a tool message answers
    # what our own replies carry, so a reply can be appended to the conversation as it came
    refusal: str | None = None
    reasoning_content: str | None = None  # earlier reasoning is not shown to the model again, as OpenAI does

    def text(self) -> str:
        if isinstance(self.content, list):
            return "".join(part.text for part in self.content)
        return self.content or ""


class FunctionDefinition(RequestBody):
    name: Annotated[str, Field(pattern=r"^[a-zA-Z0-9_-]{1,64}$")]
    description: str | None = None
    parameters: dict | None = None  # a JSON schema; the arguments always validate against it
    strict: bool | None = None  # arguments are always generated under the schema, strict or not


class Tool(RequestBody):
    type: Literal["function"]
    function: FunctionDefinition


class FunctionName(RequestBody):
    name: str


class NamedToolChoice(RequestBody):
    type: Literal["function"]
    function: FunctionName


class StreamOptions(RequestBody):
    include_usage: bool = False


class JSONSchemaFormat(RequestBody):
    name: str
    schema_: dict = Field(default_factory=dict, alias="schema")
    strict: bool | None = None
    description: str | None = None


class ResponseFormat(RequestBody):
    type: Literal["text", "json_object", "json_schema"] = "text"
    json_schema: JSONSchemaFormat | None = None


class SamplingFields(RequestBody):
    model: str
    max_tokens: Annotated[int, Field(ge=1)] | None = None
    temperature: Annotated[float, Field(ge=0, le=2)] = 1.0
    top_p: Annotated[float, Field(ge=0, le=1)] = 1.0
    n: Annotated[int, Field(ge=1, le=16)] = 1
    stream: bool = False
    stream_options: StreamOptions | None = None
    stop: str | Annotated[list[str], Field(max_length=4)] | None = None
    seed: int | None = None
    presence_penalty: Annotated[float, Field(ge=-2, le=2)] = 0.0
    frequency_penalty: Annotated[float, Field(ge=-2, le=2)] = 0.0
    logit_bias: dict[str, Annotated[float, Field(ge=-100, le=100)]] | None = None
    user: str | None = None

    def stop_list(self) -> list[str]:
        return [self.stop] if isinstance(self.stop, str) else list(self.stop or [])


class ChatCompletionRequest(SamplingFields):
    messages: Annotated[list[ChatMessage], Field(min_length=1, max_length=1024)]
    max_completion_tokens: Annotated[int, Field(ge=1)] | None = None
    response_format: ResponseFormat | None = None
    logprobs: bool = False
    top_logprobs: Annotated[int, Field(ge=0, le=20)] | None = None
    reasoning_effort: Literal["minimal", "low", "medium", "high"] | None = None
    tools: Annotated[list[Tool], Field(max_length=128)] | None = None
    tool_choice: Literal["none", "auto", "required"] | NamedToolChoice | None = None
    parallel_tool_calls: bool = True


# a prompt's text: not empty (the handler says so in words)
Text = Annotated[str, Field(json_schema_extra={"minLength": 1})]


class CompletionRequest(SamplingFields):
    # text, several texts, token ids, or several lists of token ids
    prompt: (Text | Annotated[list[Text], Field(min_length=1, max_length=16)] | Annotated[list[int], Field(min_length=1)]
             | Annotated[list[Annotated[list[int], Field(min_length=1)]], Field(min_length=1, max_length=16)])
    max_tokens: Annotated[int, Field(ge=0)] | None = 16  # OpenAI's default; 0 (with echo) scores the prompt only
    echo: bool = False
    logprobs: Annotated[int, Field(ge=0, le=20)] | None = None  # each token's logprob and this many alternatives
