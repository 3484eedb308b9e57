"""The response types the OpenAPI document shows are the bodies the real server sends: every kind of chat and
completions reply (logprobs, several choices, a thought, tool calls, self-consistency, streamed chunks with
usage) validates against them, and they forbid any field they do not name."""

import json

import httpx
import pytest
from pydantic import ValidationError

from tinythink.serve.errors import ErrorResponse
from tinythink.serve.responses import ChatCompletion, ChatCompletionChunk, Completion, Health, Model, ModelList

from serving import KEY, MODEL

AUTH = {"Authorization": f"Bearer {KEY}"}
WEATHER = {"type": "function", "function": {"name": "get_weather", "description": "the weather in a city",
                                            "parameters": {"type": "object", "properties": {"city": {"type": "string", "maxLength": 24}},
                                                           "required": ["city"]}}}


def post(server, path, body):
    r = httpx.post(server[0] + path, json={"model": MODEL, "max_tokens": 12, **body}, headers=AUTH, timeout=120)
    assert r.status_code == 200, r.text
    return r


def events(response) -> list[dict]:
    lines = [line.removeprefix("data: ") for line in response.text.splitlines() if line.startswith("data: ")]
    assert lines[-1] == "[DONE]"
    return [json.loads(line) for line in lines[:-1]]


CHATS = {
    "plain, two choices, logprobs": {"n": 2, "seed": 1, "temperature": 0.8, "logprobs": True, "top_logprobs": 2},
    "a thought": {"reasoning_effort": "low", "max_tokens": 24},
    "a tool call": {"tools": [WEATHER], "tool_choice": "required", "max_tokens": 80, "parallel_tool_calls": False,
                    "messages": [{"role": "user", "content": "What is the weather like in Paris today?"}]},
    "self-consistency": {"reasoning_effort": "high", "max_tokens": 48, "seed": 3},
}


@pytest.mark.parametrize("extra", CHATS.values(), ids=CHATS.keys())
def test_chat_replies_are_the_documented_type(server, extra):
    body = {"messages": [{"role": "user", "content": "What is 2 + 3? Answer with the number."}], **extra}
    reply = ChatCompletion.model_validate(post(server, "/v1/chat/completions", body).json())
    choice = reply.choices[0]
    if "logprobs" in extra:
        assert len(reply.choices) == 2 and len(choice.logprobs.content[0].top_logprobs) == 2
    if extra.get("reasoning_effort"):
        assert reply.usage.completion_tokens_details is not None
    if "tools" in extra:
        assert choice.finish_reason == "tool_calls" and choice.message.tool_calls[0].function.name == "get_weather"
    if extra.get("reasoning_effort") == "high":
        assert choice.self_consistency.samples == 5
    streamed = events(post(server, "/v1/chat/completions",
                           {**body, "stream": True, "stream_options": {"include_usage": True}}))
    chunks = [ChatCompletionChunk.model_validate(e) for e in streamed]
    assert chunks[-1].usage is not None and chunks[-1].usage.total_tokens > 0


def test_completions_are_the_documented_type(server):
    body = {"prompt": ["The capital of France is", "One, two,"], "logprobs": 2, "echo": True}
    reply = Completion.model_validate(post(server, "/v1/completions", body).json())
    assert len(reply.choices) == 2 and reply.choices[0].logprobs.token_logprobs[0] is None  # echoed first token
    for e in events(post(server, "/v1/completions", {**body, "echo": False, "stream": True})):
        Completion.model_validate(e)


def test_the_types_refuse_a_field_they_do_not_name_and_the_document_shows_them(server):
    reply = post(server, "/v1/chat/completions", {"messages": [{"role": "user", "content": "Hi"}]}).json()
    with pytest.raises(ValidationError, match="surprise"):
        ChatCompletion.model_validate({**reply, "surprise": 1})
    doc = httpx.get(server[0] + "/openapi.json").json()
    for path, name in (("/v1/chat/completions", "ChatCompletion"), ("/v1/completions", "Completion")):
        ok = doc["paths"][path]["post"]["responses"]["200"]
        assert ok["content"]["application/json"]["schema"] == {"$ref": f"#/components/schemas/{name}"}
        assert "text/event-stream" in ok["content"]
        assert {"400", "401", "404", "413", "429"} <= set(doc["paths"][path]["post"]["responses"])
    message = doc["components"]["schemas"]["AssistantMessage"]["properties"]
    assert {"content", "reasoning_content", "tool_calls", "refusal"} <= set(message)


def test_models_health_and_errors_are_the_documented_types(server):
    models = ModelList.model_validate(httpx.get(server[0] + "/v1/models", headers=AUTH).json())
    assert Model.model_validate(httpx.get(f"{server[0]}/v1/models/{models.data[0].id}", headers=AUTH).json())
    assert MODEL in Health.model_validate(httpx.get(server[0] + "/health").json()).models
    bad = [httpx.get(server[0] + "/v1/models/nothing", headers=AUTH),  # 404
           httpx.get(server[0] + "/v1/models"),  # 401
           httpx.post(server[0] + "/v1/chat/completions", json={"model": MODEL, "messages": []}, headers=AUTH),
           httpx.get(server[0] + "/v1/chat/completions", headers=AUTH)]  # 405
    assert [r.status_code for r in bad] == [404, 401, 400, 405]
    for r in bad:
        ErrorResponse.model_validate(r.json())
    doc = httpx.get(server[0] + "/openapi.json").json()
    for path, operations in doc["paths"].items():  # FastAPI's 422 is never sent: a bad request is a 400
        for operation in operations.values():
            assert "422" not in operation["responses"], path
            if path.startswith("/v1/"):
                assert operation["responses"]["401"]["content"]["application/json"]["schema"] == {
                    "$ref": "#/components/schemas/ErrorResponse"}, path
