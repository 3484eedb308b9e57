"""A batch input file is checked as OpenAI checks it, every problem reported with its line."""

import json

from tinythink.batch.lines import parse


def encode(*lines) -> bytes:
    return "".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines).encode()


def good(i, url="/v1/chat/completions"):
    return {"custom_id": f"r{i}", "method": "POST", "url": url, "body": {"messages": []}}


def test_good_lines_parse_in_order_and_blank_lines_are_skipped():
    lines, errors = parse(encode(good(0), "", good(1)), "/v1/chat/completions")
    assert errors == [] and [(x.idx, x.custom_id) for x in lines] == [(0, "r0"), (1, "r1")]


def test_every_problem_is_named_with_its_line():
    bad = [good(0), "{not json", [1, 2], {**good(3), "custom_id": "r0"}, {**good(4), "method": "GET"},
           good(5, "/v1/completions"), {**good(6), "body": "text"}, {**good(7), "body": {"stream": True}},
           {k: v for k, v in good(8).items() if k != "custom_id"}]
    lines, errors = parse(encode(*bad), "/v1/chat/completions")
    assert lines == []
    assert [(e["line"], e["code"]) for e in errors] == [
        (2, "invalid_json_line"), (3, "invalid_json_line"), (4, "duplicate_custom_id"), (5, "invalid_method"),
        (6, "mismatched_endpoint"), (7, "invalid_body"), (8, "invalid_body"), (9, "missing_required_parameter")]


def test_empty_and_non_utf8_files():
    assert parse(b"\n\n", "/v1/completions")[1][0]["code"] == "empty_file"
    assert parse(b"\xff\xfe", "/v1/completions")[1][0]["code"] == "invalid_encoding"
