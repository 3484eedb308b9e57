"""OpenAI's Files and Batch APIs on the real server (a `tinythink serve` process), through the official client:
a 200-line batch answers every custom_id once; a server killed with SIGKILL mid-batch resumes it after a restart,
losing and repeating no line; cancel keeps the answers so far; a bad input file fails the batch naming its lines;
uploads over the file limit get 413."""

import json
import os
import signal
import subprocess
import sys
import time

import httpx
import openai
import pytest

from serving import KEY, MODEL, free_port


class Server:
    def __init__(self, data_dir, *extra):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen([sys.executable, "-m", "tinythink.cli", "serve", "-m", MODEL, "--port", str(self.port),
                                      "--api-key", KEY, "--data-dir", str(data_dir), "--context", "512",
                                      "--dtype", "float32", "--no-safety", *extra], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, text=True)
        deadline = time.time() + 120
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(self.proc.stderr.read())
            try:
                if httpx.get(self.url + "/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        self.client = openai.OpenAI(base_url=self.url + "/v1", api_key=KEY, max_retries=0, timeout=60)

    def kill(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(30)


@pytest.fixture
def data_dir(tmp_path):
    return tmp_path / "data"


@pytest.fixture
def server(data_dir):
    s = Server(data_dir)
    yield s
    s.stop()


def upload(client, tmp_path, lines: list[dict], name: str = "in.jsonl"):
    path = tmp_path / name
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    with path.open("rb") as f:
        return client.files.create(file=f, purpose="batch")


def chat_lines(n: int) -> list[dict]:
    return [{"custom_id": f"q-{i}", "method": "POST", "url": "/v1/chat/completions",
             "body": {"model": MODEL, "messages": [{"role": "user", "content": f"Say the number {i}."}],
                      "max_tokens": 3}} for i in range(n)]


def classify_lines(n: int) -> list[dict]:
    return [{"custom_id": f"t-{i}", "method": "POST", "url": "/v1/tasks/classify",
             "body": {"text": f"Ticket {i}: my invoice shows the wrong amount.", "labels": ["billing", "technical"]}}
            for i in range(n)]


def wait(client, batch_id: str, until=("completed", "failed", "cancelled", "expired"), timeout=600, seen=None):
    deadline = time.time() + timeout
    while time.time() < deadline:
        batch = client.batches.retrieve(batch_id)
        if seen is not None:
            seen.append(batch.status)
        if batch.status in until:
            return batch
        time.sleep(0.3)
    raise AssertionError(f"batch still {batch.status} after {timeout} s: {batch.request_counts}")


def answers(client, file_id: str) -> list[dict]:
    return [json.loads(line) for line in client.files.content(file_id).text.splitlines()]


def test_two_hundred_lines_each_answered_once_while_chat_stays_served(server, tmp_path):
    c = server.client
    f = upload(c, tmp_path, chat_lines(200))
    assert c.files.retrieve(f.id).bytes == (tmp_path / "in.jsonl").stat().st_size
    batch = c.batches.create(input_file_id=f.id, endpoint="/v1/chat/completions", completion_window="24h",
                             metadata={"job": "numbers"})
    assert batch.status == "validating" and batch.metadata == {"job": "numbers"}
    reply = c.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "Hi"}], max_tokens=4)
    assert reply.choices[0].message.content is not None  # interactive requests go on while the batch runs
    seen = []
    done = wait(c, batch.id, seen=seen)
    assert done.status == "completed" and "in_progress" in seen
    assert done.request_counts.total == 200 and done.request_counts.completed == 200 and done.request_counts.failed == 0
    out = answers(c, done.output_file_id)
    assert sorted(line["custom_id"] for line in out) == sorted(f"q-{i}" for i in range(200))
    assert all(line["response"]["status_code"] == 200 and line["response"]["body"]["object"] == "chat.completion"
               for line in out)
    assert done.error_file_id is None
    assert batch.id in [b.id for b in c.batches.list()]
    assert {f.id, done.output_file_id} <= {x.id for x in c.files.list()}


def test_a_batch_survives_sigkill_and_resumes_without_losing_or_repeating_a_line(data_dir, tmp_path):
    first = Server(data_dir, "--batch-concurrency", "2")
    try:
        f = upload(first.client, tmp_path, classify_lines(60))
        batch = first.client.batches.create(input_file_id=f.id, endpoint="/v1/tasks/classify",
                                            completion_window="24h")
        deadline = time.time() + 300
        while first.client.batches.retrieve(batch.id).request_counts.completed < 10:
            assert time.time() < deadline
            time.sleep(0.2)
    finally:
        first.kill()
    second = Server(data_dir)
    try:
        resumed = second.client.batches.retrieve(batch.id)
        assert resumed.status == "in_progress" and 10 <= resumed.request_counts.completed < 60
        done = wait(second.client, batch.id)
        assert done.status == "completed" and done.request_counts.completed == 60
        out = answers(second.client, done.output_file_id)
        ids = [line["custom_id"] for line in out]
        assert sorted(ids) == sorted(f"t-{i}" for i in range(60))  # every line once: none lost, none twice
        assert all(line["response"]["body"]["label"] in ("billing", "technical") for line in out)
    finally:
        second.stop()


def test_cancel_keeps_the_answers_so_far(server, tmp_path):
    c = server.client
    f = upload(c, tmp_path, chat_lines(300))
    batch = c.batches.create(input_file_id=f.id, endpoint="/v1/chat/completions", completion_window="24h")
    deadline = time.time() + 300
    while c.batches.retrieve(batch.id).request_counts.completed < 3:
        assert time.time() < deadline
        time.sleep(0.1)
    assert c.batches.cancel(batch.id).status in ("cancelling", "cancelled")
    done = wait(c, batch.id)
    assert done.status == "cancelled" and 3 <= done.request_counts.completed < 300
    assert len(answers(c, done.output_file_id)) == done.request_counts.completed
    with pytest.raises(openai.ConflictError):
        c.batches.cancel(wait(c, c.batches.create(input_file_id=f.id, endpoint="/v1/chat/completions",
                                                  completion_window="24h").id).id)


def test_bad_inputs_fail_the_batch_or_the_request_saying_why(server, tmp_path):
    c = server.client
    lines = chat_lines(3)
    lines[1]["custom_id"] = "q-0"  # a duplicate
    lines[2]["url"] = "/v1/completions"
    f = upload(c, tmp_path, lines)
    failed = wait(c, c.batches.create(input_file_id=f.id, endpoint="/v1/chat/completions",
                                      completion_window="24h").id)
    assert failed.status == "failed"
    assert [(e.code, e.line) for e in failed.errors.data] == [("duplicate_custom_id", 2), ("mismatched_endpoint", 3)]
    with pytest.raises(openai.BadRequestError, match="endpoint"):
        c.batches.create(input_file_id=f.id, endpoint="/v1/embeddings", completion_window="24h")
    with pytest.raises(openai.NotFoundError):
        c.batches.create(input_file_id="file-nope", endpoint="/v1/chat/completions", completion_window="24h")
    # a line the endpoint rejects goes to the error file; the others are answered
    mixed = chat_lines(2)
    mixed[1]["body"]["temperature"] = 7
    g = upload(c, tmp_path, mixed, "mixed.jsonl")
    done = wait(c, c.batches.create(input_file_id=g.id, endpoint="/v1/chat/completions", completion_window="24h").id)
    assert done.status == "completed" and (done.request_counts.completed, done.request_counts.failed) == (1, 1)
    error = answers(c, done.error_file_id)[0]
    assert error["custom_id"] == "q-1" and error["response"]["status_code"] == 400
    assert c.files.delete(g.id).deleted and g.id not in {x.id for x in c.files.list()}
    with pytest.raises(openai.NotFoundError):
        c.files.retrieve(g.id)


def test_uploads_over_the_file_limit_get_413(data_dir, tmp_path):
    s = Server(data_dir, "--max-file-mb", "0.5")
    try:
        big = tmp_path / "big.jsonl"
        big.write_bytes(b"x" * (1 << 20))
        with big.open("rb") as f, pytest.raises(openai.APIStatusError) as e:
            s.client.files.create(file=f, purpose="batch")
        assert e.value.status_code == 413
        small = tmp_path / "small.jsonl"
        small.write_bytes(b"y" * (300 << 10))  # over the 1 MiB body limit's half, under the file limit
        with small.open("rb") as f:
            assert s.client.files.create(file=f, purpose="batch").bytes == 300 << 10
        r = httpx.post(s.url + "/v1/files", headers={"Authorization": f"Bearer {KEY}"},
                       files={"file": ("a.txt", b"hello")}, data={"purpose": "fine-tune"})
        assert r.status_code == 400 and "purpose" in r.json()["error"]["message"]
        assert not any(p.suffix == ".partial" for p in (data_dir / "files").iterdir())
        assert os.listdir(data_dir / "files") == [s.client.files.list().data[0].id]
    finally:
        s.stop()
