"""The tasks over HTTP on the real server: POST /v1/tasks/NAME answers in the task's response type, the OpenAPI
document types every task's request and response, and bad requests get OpenAI-shaped errors."""

import httpx
import pytest

from serving import KEY, MODEL
from tinythink.tasks import TASKS

HEADERS = {"Authorization": f"Bearer {KEY}"}
BODIES = {
    "classify": {"text": "Please refund the second charge on my card.", "labels": ["billing", "technical"]},
    "sentiment": {"text": "What a wonderful day at the beach!"},
    "keywords": {"text": "Heavy rain flooded the main road in Leeds on Sunday, closing the city centre.", "n": 3},
    "extract": {"text": "Meeting with Dana Reyes on 3 March at 10:00.",
                "schema": {"type": "object", "properties": {"person": {"type": "string"}}}},
    "summarize": {"text": "The library opens a new wing next week. It holds 20,000 books and a cafe.", "sentences": 1},
    "email-reply": {"text": "Can we move our call to Thursday?", "max_tokens": 60},
    "triage": {"text": "The website shows error 500 on checkout."},
    "report": {"notes": ["3 bugs fixed", "release on 12 May"], "max_tokens": 80},
    "answer": {"question": "When does the library open?", "max_tokens": 40,
               "passages": ["The library opens at 9 am on weekdays.", "Parking is free on Sundays."]},
}


@pytest.fixture(scope="module")
def http(server):
    with httpx.Client(base_url=server[0], headers=HEADERS, timeout=120) as c:
        yield c


def test_every_task_answers_in_its_type(http):
    assert set(BODIES) == set(TASKS)
    for name, body in BODIES.items():
        r = http.post(f"/v1/tasks/{name}", json=body)
        assert r.status_code == 200, (name, r.text)
        answer = TASKS[name].Response.model_validate(r.json())
        assert answer.model == MODEL
    r = http.post("/v1/tasks/classify", json=BODIES["classify"]).json()
    assert sum(r["probabilities"].values()) == pytest.approx(1) and r["label"] in ("billing", "technical")
    assert all(k.lower() in BODIES["keywords"]["text"].lower()
               for k in http.post("/v1/tasks/keywords", json=BODIES["keywords"]).json()["keywords"])


def test_the_openapi_document_types_each_tasks_request_and_response(http):
    doc = http.get("/openapi.json").json()
    for name, task in TASKS.items():
        post = doc["paths"][f"/v1/tasks/{name}"]["post"]
        request = post["requestBody"]["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[1]
        response = post["responses"]["200"]["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[1]
        assert request == task.Request.__name__ and response == task.Response.__name__
        assert post["operationId"] == "task_" + name.replace("-", "_")  # clean names for generated clients
        assert {"400", "404", "413", "429"} <= set(post["responses"])
        fields = doc["components"]["schemas"][request]["properties"]
        assert all(f.get("description") for f in fields.values()), request  # every option documented


def test_bad_task_requests_get_openai_shaped_errors(http):
    cases = [({"text": "x", "labels": ["a"]}, "labels"), ({"labels": ["a", "b"]}, "text"),
             ({"text": "x", "labels": ["a", "b"], "temperature": 2}, "temperature"),
             ({"text": "x", "labels": ["a", "b"], "model": "nope"}, "model")]
    for body, param in cases:
        r = http.post("/v1/tasks/classify", json=body)
        error = r.json()["error"]
        assert r.status_code == (404 if param == "model" else 400), r.text
        assert param in error["message"] and error["type"] == "invalid_request_error"
    assert http.post("/v1/tasks/translate", json={"text": "x"}).status_code == 404
    r = http.post("/v1/tasks/extract", json={"text": "x", "schema": {"type": "object", "properties": {
        "n": {"type": "integer", "minimum": 5, "maximum": 1}}}})
    assert r.status_code == 400 and "schema" in r.json()["error"]["message"]
    unauthorized = httpx.post(str(http.base_url) + "/v1/tasks/sentiment", json={"text": "x"})
    assert unauthorized.status_code == 401
