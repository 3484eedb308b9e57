"""Pieces the tasks' prompts share."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

# a list of labels as the schema states it: distinct, each with a character that is not a space (check_labels
# enforces both, with messages that say so)
Label = Annotated[str, Field(min_length=1, json_schema_extra={"pattern": r"\S"})]


def labels_field(default=..., *, min_length: int, max_length: int, description: str):
    return Field(default, min_length=min_length, max_length=max_length, description=description,
                 json_schema_extra={"uniqueItems": True})


def user(text: str) -> list[dict]:
    return [{"role": "user", "content": text}]


def label_list(labels: list[str], descriptions: dict[str, str]) -> str:
    return "\n".join(f"- {label}" + (f": {descriptions[label]}" if descriptions.get(label) else "") for label in labels)


def check_labels(labels: list[str], descriptions: dict[str, str], what: str = "labels") -> None:
    """Raises ValueError (a validation error in the request types) for duplicate, blank or undescribed labels."""
    if len(set(labels)) != len(labels):
        raise ValueError(f"{what} must be distinct")
    if any(not label.strip() for label in labels):
        raise ValueError(f"{what} must not be blank")
    unknown = set(descriptions) - set(labels)
    if unknown:
        verb = "is" if len(unknown) == 1 else "are"
        raise ValueError(f"descriptions name {', '.join(sorted(unknown))}, which {verb} "
                         f"not among the {what}")
