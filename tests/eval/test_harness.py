"""The lm-evaluation-harness bridge, run as documented: our exported tasks, lm-eval's local-chat-completions
model, a live `tinythink serve`; its scores must equal ours on the same examples."""

import json
import os
import subprocess
import sys
from pathlib import Path

from tinythink.eval.evaluate import Target, evaluate

MODEL, LIMIT = "smollm2-135m", 8


def test_lm_eval_scores_our_tasks_as_we_do(served, tmp_path):
    tasks = tmp_path / "tasks"
    exported = subprocess.run([sys.executable, "-m", "tinythink.cli", "eval", MODEL, "--suite", "light", "--limit",
                               str(LIMIT), "--endpoint", served.url, "--export-lm-eval", str(tasks)],
                              capture_output=True, text=True, timeout=600)
    assert exported.returncode == 0, exported.stderr[-2000:]
    command = exported.stdout.strip().splitlines()[-1].split()  # the printed lm_eval command, run as printed
    assert command[0] == "lm_eval" and "tinythink_sentiment,tinythink_intent" in command
    command[0] = str(Path(sys.executable).parent / "lm_eval")
    env = {**os.environ, "OPENAI_API_KEY": served.key, "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1"}
    ran = subprocess.run(command + ["--output_path", str(tmp_path / "out")], capture_output=True, text=True,
                         timeout=1200, env=env, cwd=tmp_path)
    assert ran.returncode == 0, ran.stderr[-3000:]
    harness = json.loads(next((tmp_path / "out").rglob("results_*.json")).read_text())["results"]

    ours = evaluate(Target(MODEL, endpoint=served.url, api_key=served.key), None, "sentiment,intent", LIMIT, None,
                    tmp_path / "ours", concurrency=4)
    for name in ("sentiment", "intent"):
        assert harness[f"tinythink_{name}"]["exact_match,first-label"] == ours["tasks"][name]["model"]["score"]
