"""Structured outputs: every answer parses and validates, because decoding is constrained by the schema."""

import json
from typing import Annotated, Literal

import openai
import pytest
from pydantic import BaseModel, Field

from serving import MODEL

Short = Annotated[str, Field(max_length=30)]


class Address(BaseModel):
    city: Short
    country: Short


class Person(BaseModel):
    name: Short
    age: int
    mood: Literal["happy", "sad", "neutral"]
    address: Address
    hobbies: Annotated[list[Short], Field(max_length=3)]


PROMPTS = ["Invent a person who lives in Paris and likes painting.",
           "Describe a grumpy old fisherman from Norway as a person record.",
           "Make up a student called Ana."]


@pytest.mark.parametrize("prompt", PROMPTS)
def test_parse_with_a_pydantic_model(client, prompt):
    r = client.chat.completions.parse(model=MODEL, messages=[{"role": "user", "content": prompt}],
                                      response_format=Person, temperature=0.7, seed=1, max_completion_tokens=200)
    person = r.choices[0].message.parsed
    assert isinstance(person, Person)  # parsed and validated by the client, nested object, enum and all
    assert r.choices[0].finish_reason == "stop"
    assert len(person.hobbies) <= 3 and person.mood in ("happy", "sad", "neutral")


def test_streamed_json_object(client):
    stream = client.chat.completions.create(model=MODEL, stream=True, temperature=0, max_tokens=200,
                                            response_format={"type": "json_object"}, messages=[
                                                {"role": "user", "content": "Reply in JSON: what is the capital of France?"}])
    chunks = [c for c in stream if c.choices]
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert isinstance(json.loads("".join(c.choices[0].delta.content or "" for c in chunks)), dict)


def test_n_choices_all_validate(client):
    schema = {"type": "object", "properties": {"answer": {"type": "string", "enum": ["yes", "no"]},
                                               "confidence": {"type": "number", "minimum": 0, "maximum": 1}},
              "required": ["answer", "confidence"], "additionalProperties": False}
    r = client.chat.completions.create(model=MODEL, n=4, temperature=1.0, seed=3, max_tokens=60,
                                       messages=[{"role": "user", "content": "Is the sky blue?"}],
                                       response_format={"type": "json_schema",
                                                        "json_schema": {"name": "a", "schema": schema, "strict": True}})
    for choice in r.choices:
        value = json.loads(choice.message.content)
        assert value["answer"] in ("yes", "no") and 0 <= value["confidence"] <= 1 and set(value) == {"answer",
                                                                                                    "confidence"}


def test_unsupported_schema_feature_is_a_400_naming_it(client):
    schema = {"type": "object", "properties": {"host": {"type": "string", "format": "hostname-ish"}}}
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "x"}],
                                       response_format={"type": "json_schema",
                                                        "json_schema": {"name": "h", "schema": schema}})
    assert "hostname-ish" in e.value.body["message"] and e.value.body["param"] == "response_format.json_schema"
