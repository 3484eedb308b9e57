"""Tool calling through the official client: calls are generated under each function's parameter schema, so
their arguments always validate; tool_choice and parallel_tool_calls decide whether and how often to call."""

import json
from typing import Literal

import openai
import pytest
from pydantic import BaseModel, ConfigDict

from serving import MODEL
from tinythink.serve.tools import MAX_PARALLEL_CALLS, CallBuffer, grammar, parse_calls


class WeatherArgs(BaseModel):
    model_config = ConfigDict(extra="forbid")
    city: str
    unit: Literal["celsius", "fahrenheit"]


class TimeArgs(BaseModel):
    model_config = ConfigDict(extra="forbid")
    timezone: str


def function(name: str, description: str, args: type[BaseModel]) -> dict:
    schema = args.model_json_schema()
    schema.pop("title", None)
    return {"type": "function", "function": {"name": name, "description": description, "parameters": schema,
                                             "strict": True}}


WEATHER = function("get_weather", "The current weather in a city.", WeatherArgs)
TIME = function("get_time", "The current time in a time zone.", TimeArgs)
ASK = [{"role": "user", "content": "What is the weather like in Paris today?"}]
ARGS = {"get_weather": WeatherArgs, "get_time": TimeArgs}


def check_calls(choice, allowed=("get_weather", "get_time")):
    assert choice.finish_reason == "tool_calls" and choice.message.content is None
    assert choice.message.tool_calls
    for call in choice.message.tool_calls:
        assert call.type == "function" and call.id.startswith("call_") and call.function.name in allowed
        ARGS[call.function.name].model_validate_json(call.function.arguments)  # raises if invalid
    return choice.message.tool_calls


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_required_calls_validate_and_the_conversation_goes_on(client, seed):
    r = client.chat.completions.create(model=MODEL, messages=ASK, tools=[WEATHER, TIME], tool_choice="required",
                                       parallel_tool_calls=False, temperature=0.8, seed=seed,
                                       max_completion_tokens=160)
    calls = check_calls(r.choices[0])
    # the reply goes back into the conversation as it came, followed by each call's result
    messages = ASK + [r.choices[0].message.model_dump(exclude_none=True)] + [
        {"role": "tool", "tool_call_id": c.id, "content": json.dumps({"temperature": 18, "sky": "clear"})}
        for c in calls]
    r2 = client.chat.completions.create(model=MODEL, messages=messages, tools=[WEATHER, TIME], tool_choice="none",
                                        temperature=0, max_completion_tokens=40)
    assert r2.choices[0].finish_reason in ("stop", "length") and r2.choices[0].message.tool_calls is None
    assert r2.choices[0].message.content


def test_named_function_and_single_call(client):
    r = client.chat.completions.create(model=MODEL, messages=ASK, tools=[WEATHER, TIME], temperature=0,
                                       tool_choice={"type": "function", "function": {"name": "get_time"}},
                                       max_completion_tokens=120)
    assert len(check_calls(r.choices[0], allowed=("get_time",))) == 1
    r = client.chat.completions.create(model=MODEL, messages=ASK, tools=[WEATHER, TIME], tool_choice="required",
                                       parallel_tool_calls=False, n=3, temperature=1.0, seed=5,
                                       max_completion_tokens=120)
    assert all(len(check_calls(c)) == 1 for c in r.choices)


def test_streamed_calls_equal_the_whole_reply(client):
    kwargs = dict(model=MODEL, messages=ASK, tools=[WEATHER], tool_choice="required", temperature=0,
                  max_completion_tokens=4 * 40)
    whole = client.chat.completions.create(**kwargs).choices[0].message.tool_calls
    deltas, finish = [], None
    for chunk in client.chat.completions.create(stream=True, **kwargs):
        if chunk.choices:
            deltas += chunk.choices[0].delta.tool_calls or []
            finish = chunk.choices[0].finish_reason or finish
    assert finish == "tool_calls" and 1 <= len(whole) <= MAX_PARALLEL_CALLS
    assert [(d.index, d.function.name, d.function.arguments) for d in deltas] == \
        [(i, c.function.name, c.function.arguments) for i, c in enumerate(whole)]


def test_auto_lets_the_model_choose_and_streaming_agrees(client):
    for messages in (ASK, [{"role": "user", "content": "Say hello to my cat."}]):
        kwargs = dict(model=MODEL, messages=messages, tools=[WEATHER, TIME], temperature=0, max_completion_tokens=80)
        choice = client.chat.completions.create(**kwargs).choices[0]
        streamed, calls = "", []
        for chunk in client.chat.completions.create(stream=True, **kwargs):
            if chunk.choices:
                streamed += chunk.choices[0].delta.content or ""
                calls += chunk.choices[0].delta.tool_calls or []
        if choice.message.tool_calls:
            check_calls(choice)
            assert [c.function.arguments for c in calls] == [c.function.arguments for c in choice.message.tool_calls]
        else:
            assert choice.message.content and not choice.message.content.startswith("<")
            assert streamed == choice.message.content and not calls


def test_tool_errors(client):
    def bad(**kwargs):
        with pytest.raises(openai.BadRequestError) as e:
            client.chat.completions.create(model=MODEL, max_completion_tokens=8, **{"messages": ASK, **kwargs})
        return e.value.body

    assert bad(tool_choice="required")["param"] == "tool_choice"
    assert "not among tools" in bad(tools=[WEATHER], tool_choice={"type": "function",
                                                                  "function": {"name": "nope"}})["message"]
    assert bad(messages=ASK + [{"role": "tool", "content": "{}"}])["param"] == "messages.1.tool_call_id"
    odd = {"type": "function", "function": {"name": "f", "parameters": {
        "type": "object", "properties": {"x": {"type": "string", "format": "hostname-ish"}}}}}
    body = bad(tools=[odd], tool_choice="required")
    assert body["param"] == "tools" and "hostname-ish" in body["message"]
    assert bad(tools=[{"type": "function", "function": {"name": "has space"}}])["param"] == "tools.0.function.name"


def test_reasoning_then_a_constrained_answer(client):
    schema = {"type": "object", "properties": {"answer": {"type": "integer"}}, "required": ["answer"],
              "additionalProperties": False}
    r = client.chat.completions.create(model=MODEL, reasoning_effort="low", temperature=0, max_completion_tokens=60,
                                       messages=[{"role": "user", "content": "What is 3 + 4?"}],
                                       response_format={"type": "json_schema",
                                                        "json_schema": {"name": "n", "schema": schema}})
    message = r.choices[0].message
    assert message.reasoning_content and r.usage.completion_tokens_details.reasoning_tokens > 0
    assert isinstance(json.loads(message.content)["answer"], int)


def test_parsing_and_buffering():
    call = '<tool_call>\n{"name": "f", "arguments": {"a": [1, "</tool_call>"]}}\n</tool_call>'
    calls = parse_calls(call + "\n" + call.replace('"f"', '"g"'))
    assert [(c.name, json.loads(c.arguments)) for c in calls] == [("f", {"a": [1, "</tool_call>"]}),
                                                                  ("g", {"a": [1, "</tool_call>"]})]
    assert parse_calls("hello") is None and parse_calls(call[:-3]) is None and parse_calls(call + " trailing") is None
    buffer = CallBuffer()
    assert [buffer.feed(t) for t in ("\n", "Hi", " there")] == ["", "\nHi", " there"]
    buffer = CallBuffer()
    assert [buffer.feed(t) for t in (call[:5], call[5:])] == ["", ""]
    assert buffer.finish()[0][0].name == "f"
    assert "TEXT" not in grammar([WEATHER["function"]], must_call=True, parallel=False)
