"""extract: fields from a short document, as JSON that matches the user's schema (constrained decoding)."""

from __future__ import annotations

import json

from pydantic import Field, field_validator

from tinythink.tasks.base import Task, TaskRequest, TaskResponse
from tinythink.tasks.model import TaskModel
from tinythink.tasks.prompts import user


# what the schema field takes, as a JSON schema (an_object says it in words)
OBJECT_SCHEMA = {"required": ["type", "properties"],
                 "properties": {"type": {"const": "object"},
                                "properties": {"type": "object", "minProperties": 1,
                                               "additionalProperties": {"type": "object"}}}}


class ExtractRequest(TaskRequest):
    text: str = Field(min_length=1, description="the document to read")
    schema_: dict = Field(alias="schema", description="a JSON schema of type object: the fields to extract "
                          "(a field's description tells the model what it holds)", json_schema_extra=OBJECT_SCHEMA)
    max_tokens: int = Field(256, ge=8, le=2048, description="room for the JSON answer")

    @field_validator("schema_")
    @classmethod
    def an_object(cls, schema):
        properties = schema.get("properties")
        if schema.get("type") != "object" or not isinstance(properties, dict) or not properties or \
                not all(isinstance(spec, dict) for spec in properties.values()):
            raise ValueError('the schema must be {"type": "object", "properties": {...}} with at least one field, '
                             'each described by a schema (an object)')
        return schema


class ExtractResponse(TaskResponse):
    data: dict = Field(description="the fields, matching the schema")


def fields(schema: dict) -> str:
    lines = []
    for name, spec in schema["properties"].items():
        kind, about = spec.get("type", "value"), spec.get("description")
        lines.append(f"- {name} ({kind})" + (f": {about}" if about else ""))
    return "\n".join(lines)


async def run(model: TaskModel, r: ExtractRequest) -> ExtractResponse:
    schema = {"required": list(r.schema_["properties"]), **r.schema_}  # every field, so the answer has them all
    chat = user(f"Extract these fields from the text:\n{fields(schema)}\n\nText: {r.text}\n\nAnswer in JSON with "
                f"the keys {json.dumps(list(schema['properties']))}, using only what the text says.")
    return ExtractResponse(model=model.name, data=await model.write_json(chat, schema, r.max_tokens))


TASK = Task("extract", "fields from a short document, as JSON matching your schema", ExtractRequest, ExtractResponse,
            run)
