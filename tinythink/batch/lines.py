"""A batch's input file, checked as OpenAI checks it before running anything: one JSON object a line, each with a
unique custom_id, method POST, the batch's endpoint as url, and a body; and the output and error files' lines."""

from __future__ import annotations

import json
from dataclasses import dataclass

from tinythink.tasks import TASKS

ENDPOINTS = ("/v1/chat/completions", "/v1/completions", *(f"/v1/tasks/{name}" for name in TASKS))
MAX_LINES = 50_000


@dataclass
class Line:
    idx: int
    custom_id: str
    body: dict


def endpoint_error(endpoint: str) -> str | None:
    if endpoint not in ENDPOINTS:
        return f"endpoint must be one of {', '.join(ENDPOINTS)}; got {endpoint!r}"
    return None


def parse(content: bytes, endpoint: str) -> tuple[list[Line], list[dict]]:
    """(the lines, []) or ([], errors in the batch's `errors.data` shape)."""
    errors, lines, seen = [], [], set()

    def error(n: int, code: str, message: str, param: str | None = None):
        errors.append({"code": code, "message": message, "param": param, "line": n})

    try:
        text = content.decode("utf-8")
    except UnicodeDecodeError as e:
        return [], [{"code": "invalid_encoding", "message": f"the input file is not UTF-8: {e}", "param": None,
                     "line": None}]
    rows = [(n, raw) for n, raw in enumerate(text.splitlines(), 1) if raw.strip()]
    if not rows:
        return [], [{"code": "empty_file", "message": "the input file has no lines", "param": None, "line": None}]
    if len(rows) > MAX_LINES:
        return [], [{"code": "too_many_lines", "message": f"the input file has {len(rows)} lines; a batch takes "
                     f"at most {MAX_LINES}", "param": None, "line": None}]
    for n, raw in rows:
        try:
            item = json.loads(raw)
        except json.JSONDecodeError as e:
            error(n, "invalid_json_line", f"line {n} is not JSON: {e}")
            continue
        if not isinstance(item, dict):
            error(n, "invalid_json_line", f"line {n} is not a JSON object")
            continue
        custom_id = item.get("custom_id")
        if not isinstance(custom_id, str) or not custom_id:
            error(n, "missing_required_parameter", f"line {n} has no custom_id (a string)", "custom_id")
        elif custom_id in seen:
            error(n, "duplicate_custom_id", f"line {n}: the custom_id {custom_id!r} is used more than once",
                  "custom_id")
        seen.add(custom_id)
        if item.get("method") != "POST":
            error(n, "invalid_method", f"line {n}: method must be POST", "method")
        if item.get("url") != endpoint:
            error(n, "mismatched_endpoint", f"line {n}: url {item.get('url')!r} is not the batch's endpoint "
                  f"{endpoint}", "url")
        body = item.get("body")
        if not isinstance(body, dict):
            error(n, "invalid_body", f"line {n}: body must be a JSON object", "body")
        elif body.get("stream"):
            error(n, "invalid_body", f"line {n}: a batch cannot stream", "body.stream")
        if not errors:
            lines.append(Line(len(lines), custom_id, body))
    return ([], errors[:100]) if errors else (lines, [])


def drop_cut_line(path) -> None:
    """An answers file appended line by line may end in a line cut by a kill: that line goes (its request runs
    again on resume)."""
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        with path.open("r+b") as f:
            f.truncate(data.rfind(b"\n") + 1)


def output_line(custom_id: str, status_code: int, body: dict, request_id: str) -> str:
    """A line of the output file (2xx) or the error file (the rest), as OpenAI writes them."""
    return json.dumps({"id": request_id, "custom_id": custom_id,
                       "response": {"status_code": status_code, "request_id": request_id, "body": body},
                       "error": None})
