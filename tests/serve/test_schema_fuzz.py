"""Every operation of the server's OpenAPI document, fuzzed by Schemathesis against the real server: no request
gets a 5xx, every response matches the document (status, content type, body), requests the document forbids are
rejected, and requests it allows are accepted, except where a rule is one JSON Schema cannot state (named below)."""

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis.config import SchemathesisConfig
from schemathesis.core.failures import FailureGroup
from schemathesis.generation import GenerationMode
from schemathesis.specs.openapi.checks import negative_data_rejection, positive_data_acceptance

from tinythink.llm import LLM
from tinythink.model.load import dtype_named, load_model
from tinythink.serve.app import ServerSettings, create_app
from tinythink.serve.host import ModelHost

from serving import BUDGETS, KEY, MODEL, running

# operations with rules across fields or on server state, which a schema-valid request can break (a 400 or 404
# that says which rule): these may answer 400 to schema-valid requests as well as 2xx and 404
CROSS_FIELD_RULES = {
    "POST /v1/chat/completions": "a tool message names the call it answers; tool_choice names a given tool; a "
                                 "response_format schema must be decodable",
    "POST /v1/completions": "token ids are in the vocabulary",
    "POST /v1/tasks/classify": "descriptions and examples name given labels; 'none' is no label with allow_none",
    "POST /v1/tasks/triage": "descriptions name given categories",
    "POST /v1/tasks/extract": "the schema must be decodable, and the answer fit in max_tokens",
    "POST /v1/files": "a batch file's lines must be requests",
    "POST /v1/batches": "the input file must exist and have purpose batch",
}
# multipart form fields carry no JSON types (a "number" is text there), so the document's types cannot be broken
UNTYPED = {"POST /v1/files"}
# generated lengths held short, so that each request takes a moment (tasks' minimum max_tokens is at most 32)
MAX_TOKENS = 32

CONFIG = SchemathesisConfig.from_dict({
    "headers": {"Authorization": f"Bearer {KEY}"},
    "phases": {"coverage": {"enabled": False}},  # boundary values of every field: thousands of requests
})


@pytest.fixture(scope="module")
def api(tmp_path_factory):
    # the safety filter off: it blocks some random text, a 400 no schema can foresee (tests/serve/test_safety_api.py
    # tests it)
    host = ModelHost(MODEL, LLM(load_model(MODEL, dtype_named("auto"))), max_batch=8, max_queue=64, context=512)
    app = create_app({MODEL: host}, ServerSettings(api_keys=[KEY], max_body_bytes=64 << 10, thinking_budgets=BUDGETS,
                                                   data_dir=tmp_path_factory.mktemp("data")))
    with running(app) as url:
        yield schemathesis.openapi.from_url(url + "/openapi.json", config=CONFIG)
    host.close()


def body_fields(operation) -> dict:
    """The properties of the operation's JSON request body, from the document."""
    content = operation.definition.raw.get("requestBody", {}).get("content", {})
    ref = content.get("application/json", {}).get("schema", {}).get("$ref")
    schemas = operation.schema.raw_schema["components"]["schemas"]
    return schemas[ref.rsplit("/", 1)[-1]].get("properties", {}) if ref else {}


def held_short(case, fields: dict) -> None:
    body = case.body if isinstance(case.body, dict) else {}
    if isinstance(body.get("model"), str):
        body["model"] = MODEL  # the one model served, so requests reach the task or the engine
    for key in ("max_tokens", "max_completion_tokens"):
        if key in fields and (not isinstance(body.get(key), int) or body[key] > MAX_TOKENS):
            body[key] = MAX_TOKENS  # also where absent: a chat's default is the rest of the context
    if isinstance(body.get("n"), int):
        body["n"] = min(body["n"], 2)


def over_context(response) -> list:
    """A schema-valid prompt may still not fit the model's context (every text-taking operation's one rule that
    no schema can state): then a 400 that says so is right."""
    if response.status_code == 400 and "context holds" in response.text:
        return [positive_data_acceptance]
    return []


# (the pytest plugin's `from_fixture` does not run under pytest 9: Hypothesis is driven here instead, one operation
# and generation mode at a time, and every failure reported at the end)
@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_every_operation_keeps_to_its_document(api, mode):
    failures = {}
    for operation in (result.ok() for result in api.get_all_operations()):
        fields = body_fields(operation)
        rules = [positive_data_acceptance] if operation.label in CROSS_FIELD_RULES else []
        rules += [negative_data_rejection] if operation.label in UNTYPED else []

        @given(case=operation.as_strategy(generation_mode=mode))
        @settings(max_examples=10, deadline=None, database=None, derandomize=True,  # the same cases every run
                  suppress_health_check=list(HealthCheck))
        def keeps_to_it(case):
            if mode == GenerationMode.POSITIVE:  # (a request the document forbids is sent as it was made)
                held_short(case, fields)
            response = case.call(timeout=120)
            case.validate_response(response, excluded_checks=rules + over_context(response))

        try:
            keeps_to_it()
        except Unsatisfiable:  # nothing can break this operation's document (no parameters, or only strings)
            assert mode == GenerationMode.NEGATIVE
        except (Exception, FailureGroup) as e:
            failures[operation.label] = str(e)
    assert not failures, "\n\n".join(f"{label}: {text}" for label, text in failures.items())
