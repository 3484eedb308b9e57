"""The low-code guide's setups that a client can run here: LangChain's ChatOpenAI pointed at the server (chat,
streaming, and structured output through json_schema), and a task endpoint called the way Bubble's API Connector
and Retool's REST resource call it (plain JSON POST with a bearer header)."""

import httpx
from pydantic import BaseModel

from serving import KEY, MODEL


def test_langchain_chat_openai(server):
    from langchain_openai import ChatOpenAI

    llm = ChatOpenAI(base_url=server[0] + "/v1", api_key=KEY, model=MODEL, temperature=0, max_tokens=16,
                     max_retries=0)
    reply = llm.invoke("What is the capital of France?")
    assert isinstance(reply.content, str) and reply.content
    assert reply.response_metadata["finish_reason"] in ("stop", "length")
    streamed = "".join(chunk.content for chunk in llm.stream("What is the capital of France?"))
    assert streamed == reply.content

    class City(BaseModel):
        name: str
        country: str

    city = llm.bind(max_tokens=48).with_structured_output(City, method="json_schema").invoke(
        "Name a city in France as JSON.")
    assert isinstance(city, City) and city.name


def test_a_task_called_as_a_low_code_connector_calls_it(server):
    r = httpx.post(server[0] + "/v1/tasks/sentiment", json={"text": "The update fixed everything, thank you!"},
                   headers={"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}, timeout=60)
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/json")
    body = r.json()
    assert body["sentiment"] in body["probabilities"]
