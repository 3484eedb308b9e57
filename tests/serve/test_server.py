"""The real server on a free localhost port, driven by the official openai client and raw HTTP."""

import threading
import time

import httpx
import openai
import pytest

from serving import KEY, MODEL

FRANCE = [{"role": "user", "content": "What is the capital of France?"}]


def test_chat_completion(client):
    r = client.chat.completions.create(model=MODEL, messages=FRANCE, temperature=0)
    assert r.object == "chat.completion" and r.id.startswith("chatcmpl-") and r.model == MODEL
    assert r.system_fingerprint.startswith("tinythink-")
    choice = r.choices[0]
    assert "Paris" in choice.message.content and choice.message.role == "assistant"
    assert choice.finish_reason == "stop"
    assert r.usage.prompt_tokens > 10 and 0 < r.usage.completion_tokens < 30
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens


def test_streaming_equals_non_streaming_and_reports_usage(client):
    kw = dict(model=MODEL, messages=[{"role": "user", "content": "Name three fruits."}], temperature=0, max_tokens=40)
    whole = client.chat.completions.create(**kw)
    chunks = list(client.chat.completions.create(**kw, stream=True, stream_options={"include_usage": True}))
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == [whole.choices[0].finish_reason]
    assert chunks[-1].usage.completion_tokens == whole.usage.completion_tokens


def test_length_limit_and_stop_strings(client):
    r = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "Count from 1 to 50."}],
                                       temperature=0, max_completion_tokens=5)
    assert r.choices[0].finish_reason == "length" and r.usage.completion_tokens == 5
    r = client.chat.completions.create(model=MODEL, messages=FRANCE, temperature=0, stop=["Paris"])
    assert r.choices[0].finish_reason == "stop" and "Paris" not in r.choices[0].message.content


def test_n_and_seed(client):
    kw = dict(model=MODEL, messages=[{"role": "user", "content": "Write a sentence about cats."}], temperature=1.0,
              max_tokens=20, n=3, seed=42)
    a, b = client.chat.completions.create(**kw), client.chat.completions.create(**kw)
    texts = [c.message.content for c in a.choices]
    assert [c.index for c in a.choices] == [0, 1, 2]
    assert texts == [c.message.content for c in b.choices]  # the same seed, the same samples
    assert len(set(texts)) > 1  # but each choice samples on its own


def test_completions_with_prompt_list_and_echo(client):
    r = client.completions.create(model=MODEL, prompt=["The capital of France is", "One, two,"], max_tokens=4,
                                  temperature=0, echo=True)
    assert r.object == "text_completion" and len(r.choices) == 2
    assert r.choices[0].text.startswith("The capital of France is") and "Paris" in r.choices[0].text
    assert r.choices[1].text.startswith("One, two,")


def test_completions_score_prompts_for_evaluation_harnesses(client, server):
    import torch

    text = "The capital of France is Paris. The capital of Italy is Rome. " * 25  # over one prefill chunk
    r = client.completions.create(model=MODEL, prompt=text, max_tokens=0, echo=True, logprobs=2)
    lp = r.choices[0].logprobs
    assert r.choices[0].text == text and "".join(lp.tokens) == text
    assert len(lp.tokens) == r.usage.prompt_tokens > 256 and r.usage.completion_tokens == 0
    assert lp.token_logprobs[0] is None and lp.top_logprobs[0] is None
    assert lp.text_offset == [len("".join(lp.tokens[:i])) for i in range(len(lp.tokens))]
    llm = server[1].llm
    ids = llm.tokenizer.encode(text)
    with torch.inference_mode():
        expected = torch.log_softmax(llm.model(torch.tensor([ids]))[0], dim=-1)  # a plain forward pass
    # the engine's cache keeps keys and values in bfloat16: a plain pass agrees to a few hundredths
    assert lp.token_logprobs[1:] == pytest.approx([expected[i, t].item() for i, t in enumerate(ids[1:])], abs=0.05)
    for i, top in enumerate(lp.top_logprobs[1:]):
        assert len(top) == 2 and max(top.values()) == pytest.approx(expected[i].max().item(), abs=0.05)
    # token ids as the prompt (its prefix is cached with 2 alternatives a token: asked for 1, it is scored again),
    # then generation
    kw = dict(model=MODEL, prompt=ids, max_tokens=5, echo=True, logprobs=1, temperature=0)
    whole = client.completions.create(**kw).choices[0]
    assert whole.text.startswith(text) and whole.logprobs.tokens[:len(ids)] == lp.tokens
    assert whole.logprobs.token_logprobs[1:len(ids)] == pytest.approx(lp.token_logprobs[1:], abs=1e-4)
    assert len(whole.logprobs.tokens) == len(ids) + 5 and "".join(whole.logprobs.tokens) == whole.text
    chunks = [c.choices[0] for c in client.completions.create(stream=True, **kw) if c.choices]
    assert "".join(c.text for c in chunks) == whole.text
    assert [t for c in chunks if c.logprobs for t in c.logprobs.tokens] == whole.logprobs.tokens
    assert [o for c in chunks if c.logprobs for o in c.logprobs.text_offset] == whole.logprobs.text_offset
    for bad, param in ((dict(max_tokens=0), "max_tokens"), (dict(prompt=[1, 10 ** 6]), "prompt")):
        with pytest.raises(openai.BadRequestError) as e:
            client.completions.create(**{"model": MODEL, "prompt": "Hi", **bad})
        assert e.value.body["param"] == param


def test_a_participant_name_reaches_the_model(client):
    named = [{"role": "user", "name": "Alice", "content": "What is my name?"}]
    plain = [{"role": "user", "content": "What is my name?"}]
    a, b = (client.chat.completions.create(model=MODEL, messages=m, max_tokens=1) for m in (named, plain))
    assert a.usage.prompt_tokens > b.usage.prompt_tokens  # "Alice: " is in the prompt


def test_models(client):
    assert [m.id for m in client.models.list().data] == [MODEL]
    assert client.models.retrieve(MODEL).id == MODEL
    with pytest.raises(openai.NotFoundError) as e:
        client.chat.completions.create(model="gpt-4o", messages=FRANCE)
    assert e.value.body["code"] == "model_not_found"


def test_bad_requests_get_openai_errors(client, server):
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model=MODEL, messages=FRANCE, temperature=5)
    assert e.value.body["param"] == "temperature"
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model=MODEL, messages=[{"role": "wizard", "content": "hi"}])
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model=MODEL, messages=[])
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model=MODEL, messages=FRANCE, max_tokens=0)
    assert e.value.body["param"] == "max_tokens"
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "word " * 1100}])
    assert e.value.body["code"] == "context_length_exceeded"
    for field, value in (("temperature", False), ("max_tokens", "5")):  # JSON types, as OpenAI checks them
        with pytest.raises(openai.BadRequestError) as e:
            client.chat.completions.create(model=MODEL, messages=FRANCE, extra_body={field: value})
        assert e.value.body["param"] == field, field
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model=MODEL, messages=FRANCE, extra_body={"max_tokens": 2.5})
    assert e.value.body["param"] == "max_tokens"
    whole = client.chat.completions.create(model=MODEL, messages=FRANCE, extra_body={"max_tokens": 2.0})
    assert whole.usage.completion_tokens <= 2  # 2.0 is the integer 2, as JSON Schema counts it
    url = server[0] + "/v1/chat/completions"
    headers = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}
    r = httpx.post(url, content=b'{"model": "smollm2-135m", "messages": [', headers=headers)
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_json"
    r = httpx.post(url, content=b"{" + b" " * (70 << 10) + b"}", headers=headers)
    assert r.status_code == 413 and r.json()["error"]["type"] == "invalid_request_error"

    def chunked():  # no Content-Length: the limit must hold while the body arrives
        yield b'{"model": "smollm2-135m", "messages": [{"role": "user", "content": "'
        for _ in range(3 << 6):
            yield b"word " * 3276
        yield b'"}]}'

    r = httpx.post(url, content=chunked(), headers=headers)
    assert r.status_code == 413 and r.json()["error"]["code"] == "request_too_large"
    small = (b'{"model": "smollm2-135m", "max_tokens": 2, "messages": [{"role": "user", "content": "Hi"}]}',)
    assert httpx.post(url, content=iter(small), headers=headers).status_code == 200  # a small chunked body is fine
    assert httpx.get(server[0] + "/health").json()["status"] == "ok"  # and it keeps serving
    r = httpx.get(url, headers=headers)  # a wrong method: 405, saying which one is allowed
    assert r.status_code == 405 and r.headers["allow"] == "POST" and r.json()["error"]["message"]


def test_api_key_required(server):
    anonymous = openai.OpenAI(base_url=server[0] + "/v1", api_key="wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        anonymous.models.list()


def test_full_queue_is_429(client, server):
    host = server[1]
    host.max_queue = 0
    try:
        with pytest.raises(openai.RateLimitError):
            client.chat.completions.create(model=MODEL, messages=FRANCE)
    finally:
        host.max_queue = 64


def test_32_concurrent_streams_are_independent(client):
    questions = [f"What is {a} plus {a}?" for a in range(1, 33)]
    expected = {}
    for q in questions[:4]:  # the answers of a few, asked alone
        expected[q] = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": q}],
                                                     temperature=0, max_tokens=16).choices[0].message.content
    results = {}

    def ask(q):
        stream = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": q}],
                                                temperature=0, max_tokens=16, stream=True)
        results[q] = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)

    threads = [threading.Thread(target=ask, args=(q,)) for q in questions]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert len(results) == 32 and all(results.values())
    for q, text in expected.items():
        assert results[q] == text


def test_disconnect_frees_the_slot(server):
    url, host = server
    body = {"model": MODEL, "messages": [{"role": "user", "content": "Tell me a very long story."}],
            "max_tokens": 900, "stream": True}
    with httpx.stream("POST", url + "/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {KEY}"},
                      timeout=60) as r:
        lines = r.iter_lines()
        for _ in range(6):
            next(lines)
        assert host.engine.active == 1
    deadline = time.time() + 10
    while host.engine.active and time.time() < deadline:
        time.sleep(0.05)
    assert host.engine.active == 0


def test_a_client_that_gives_up_on_a_whole_reply_frees_its_slot(server):
    url, host = server
    # 2 x 900 tokens, no stop token allowed: many seconds on any CPU, however fast
    body = {"model": MODEL, "messages": [{"role": "user", "content": "Tell me a very long story."}],
            "max_tokens": 900, "n": 2, "logit_bias": {str(t): -100 for t in host.llm.tokenizer.stop_ids}}
    with pytest.raises(httpx.ReadTimeout):  # the client stops waiting and closes the connection
        httpx.post(url + "/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {KEY}"}, timeout=2)
    deadline = time.time() + 10
    while host.engine.active and time.time() < deadline:
        time.sleep(0.05)
    assert host.engine.active == 0


def test_openapi_document_is_valid_and_says_what_the_api_takes(server):
    from openapi_spec_validator import validate

    doc = httpx.get(server[0] + "/openapi.json").json()
    validate(doc)  # a valid OpenAPI 3.1 document, which importers and client generators accept
    for path in ("/v1/chat/completions", "/v1/completions", "/v1/models", "/v1/models/{model_id}", "/health"):
        assert path in doc["paths"]
    chat = doc["paths"]["/v1/chat/completions"]["post"]
    assert chat["security"] == [{"bearerAuth": []}] and doc["components"]["securitySchemes"]["bearerAuth"]
    fields = doc["components"]["schemas"]["ChatCompletionRequest"]["properties"]
    for name in ("messages", "tools", "tool_choice", "response_format", "reasoning_effort", "logprobs", "stream"):
        assert name in fields
    assert "security" not in doc["paths"]["/health"]["get"]
    assert httpx.get(server[0] + "/docs").status_code == 200


def test_metrics(client, server):
    client.chat.completions.create(model=MODEL, messages=FRANCE, temperature=0)
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model=MODEL, messages=FRANCE, top_p=1.5)
    text = httpx.get(server[0] + "/metrics").text
    values = {line.split(" ")[0]: float(line.split(" ")[1]) for line in text.splitlines()
              if line and not line.startswith("#")}
    assert values['tinythink_requests_total{endpoint="/v1/chat/completions",status="200"}'] >= 1
    assert values['tinythink_requests_total{endpoint="/v1/chat/completions",status="400"}'] >= 1
    assert values[f'tinythink_completion_tokens_total{{model="{MODEL}"}}'] >= 7
    assert values[f'tinythink_request_seconds_count{{model="{MODEL}"}}'] >= 1
    assert values[f'tinythink_time_to_first_token_seconds_count{{model="{MODEL}"}}'] >= 1
    assert values[f'tinythink_batch_size{{model="{MODEL}"}}'] == 0
    assert values[f'tinythink_kv_slots_used_ratio{{model="{MODEL}"}}'] == 0
    assert f'tinythink_queue_depth{{model="{MODEL}"}}' in values


def test_cors_is_off_by_default_and_configurable(server):
    preflight = {"Origin": "https://app.example", "Access-Control-Request-Method": "POST"}
    r = httpx.options(server[0] + "/v1/chat/completions", headers=preflight)
    assert "access-control-allow-origin" not in r.headers
    from starlette.testclient import TestClient

    from tinythink.serve.app import ServerSettings, create_app

    app = create_app({}, ServerSettings(cors_origins=["https://app.example"]))
    with TestClient(app) as tc:
        r = tc.options("/v1/chat/completions", headers=preflight)
        assert r.headers["access-control-allow-origin"] == "https://app.example"
        r = tc.options("/v1/chat/completions", headers={**preflight, "Origin": "https://evil.example"})
        assert "access-control-allow-origin" not in r.headers


def test_logprobs_are_the_models_own(client, server):
    import torch

    r = client.chat.completions.create(model=MODEL, messages=FRANCE, temperature=0, logprobs=True, top_logprobs=3)
    content = r.choices[0].logprobs.content
    assert len(content) == r.usage.completion_tokens
    assert b"".join(bytes(e.bytes) for e in content).decode() == r.choices[0].message.content
    for e in content:  # greedy: the chosen token is the most likely one
        assert len(e.top_logprobs) == 3 and e.top_logprobs[0].token == e.token
        assert e.logprob == pytest.approx(e.top_logprobs[0].logprob) and e.logprob <= 0
        assert [t.logprob for t in e.top_logprobs] == sorted((t.logprob for t in e.top_logprobs), reverse=True)
    llm = server[1].llm
    prompt = torch.tensor([llm.chat_prompt(FRANCE)])
    with torch.inference_mode():
        expected = torch.log_softmax(llm.model(prompt)[0, -1], dim=-1)  # a plain forward pass, no cache
    assert content[0].logprob == pytest.approx(expected.max().item(), abs=0.05)  # bfloat16 keys and values
    streamed = [e for c in client.chat.completions.create(model=MODEL, messages=FRANCE, temperature=0, stream=True,
                                                          logprobs=True, top_logprobs=3)
                if c.choices and c.choices[0].logprobs for e in c.choices[0].logprobs.content]
    assert [(e.token, e.logprob) for e in streamed] == [(e.token, e.logprob) for e in content]
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model=MODEL, messages=FRANCE, top_logprobs=2)
