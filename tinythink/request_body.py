"""The base of every request body (the server's OpenAI-compatible requests and the tasks'): JSON types checked as
OpenAI checks them, and unknown fields rejected.

`false` is no number and "5" no integer (pydantic's strict mode). An integer is a number, and a number without a
fractional part (13.0) is an integer, as JSON Schema counts them: the published schema says "integer", and a
client that computed 13.0 sent what it says.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, model_validator


def whole_numbers_as_integers(value):
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, list):  # lists of token ids; objects are converted by their own models
        return [whole_numbers_as_integers(v) for v in value]
    return value


class RequestBody(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    @model_validator(mode="before")
    @classmethod
    def _integral_numbers(cls, data):
        # a float field then gets an int, which strict mode still takes as a number
        return {k: whole_numbers_as_integers(v) for k, v in data.items()} if isinstance(data, dict) else data
