"""`tinythink batch run` answers a batch file without a server, and a rerun after a cut resumes."""

import json
import subprocess
import sys


def test_batch_run_answers_each_line_once_and_resumes(tmp_path):
    source, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    texts = ["I love it", "It broke on day one", "Fine", "Superb service", "Never again"]
    source.write_text("".join(json.dumps({"custom_id": f"s{i}", "method": "POST", "url": "/v1/tasks/sentiment",
                                          "body": {"text": t}}) + "\n" for i, t in enumerate(texts)))
    out.write_text(json.dumps({"custom_id": "s0", "response": {"status_code": 200, "body": {}}}) + '\n{"custom_')
    r = subprocess.run([sys.executable, "-m", "tinythink.cli", "batch", "run", str(source), str(out)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout.splitlines()[-1]) == {"total": 5, "skipped": 1, "completed": 4, "failed": 0}
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert [line["custom_id"] for line in lines] == ["s0", "s1", "s2", "s3", "s4"]
    assert all(line["response"]["body"]["sentiment"] in ("positive", "negative", "neutral") for line in lines[1:])
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"custom_id": "x", "method": "POST", "url": "/v1/embeddings", "body": {}}\n')
    r = subprocess.run([sys.executable, "-m", "tinythink.cli", "batch", "run", str(bad), str(tmp_path / "o.jsonl")],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and "/v1/embeddings" in r.stderr
