"""A bridge to EleutherAI's lm-evaluation-harness, so our scores can be cross-checked by a harness we did not
write: our classification tasks written as lm-eval task YAMLs over local JSONL files (the same test
examples, prompts and first-label extraction as `tinythink eval`), run by lm-eval's
`local-chat-completions` model against `tinythink serve` (or any OpenAI-compatible server).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from tinythink.eval.tasks import Task

BRIDGED = ("sentiment", "intent")  # label tasks: lm-eval's regex filter finds the first label as our parser does


def task_yaml(task: Task, data_file: Path) -> str:
    pattern = "(?i)(" + "|".join(re.escape(label) for label in task.labels) + ")"
    # JSON is valid YAML: no YAML library needed to write it, and no quoting surprises in the regex
    return json.dumps({
        "task": f"tinythink_{task.name}",
        "dataset_path": "json",
        "dataset_kwargs": {"data_files": {"test": str(data_file.resolve())}},
        "test_split": "test",
        "output_type": "generate_until",
        "doc_to_text": "{{prompt}}",
        "doc_to_target": "{{gold}}",
        "generation_kwargs": {"until": ["\n\n"], "max_gen_toks": task.max_tokens, "do_sample": False,
                              "temperature": 0.0},
        "filter_list": [{"name": "first-label", "filter": [
            {"function": "regex", "regex_pattern": pattern, "fallback": "[unparseable]"},
            {"function": "lowercase"}, {"function": "take_first"}]}],
        "metric_list": [{"metric": "exact_match", "aggregation": "mean", "higher_is_better": True,
                         "ignore_case": True}],
        "metadata": {"version": 1.0},
    }, indent=2) + "\n"


def export(tasks: list[Task], out: Path, limit: int | None) -> list[str]:
    """Writes each bridged task's YAML and test examples under `out`; returns the lm-eval task names."""
    out.mkdir(parents=True, exist_ok=True)
    names = []
    for task in tasks:
        if task.name not in BRIDGED:
            continue
        data = out / f"{task.name}.test.jsonl"
        with open(data, "w") as f:
            for e in task.examples("test", limit):
                f.write(json.dumps({"id": e.id, "prompt": e.messages[0]["content"], "gold": e.gold}) + "\n")
        (out / f"tinythink_{task.name}.yaml").write_text(task_yaml(task, data))
        names.append(f"tinythink_{task.name}")
    return names


def command(model: str, base_url: str, include_path: Path, names: list[str], concurrency: int = 4) -> list[str]:
    """The lm_eval command line that runs the exported tasks against an OpenAI-compatible server."""
    return ["lm_eval", "--model", "local-chat-completions", "--model_args",
            f"model={model},base_url={base_url.rstrip('/')}/chat/completions,num_concurrent={concurrency},"
            "max_retries=1,tokenized_requests=False",
            "--tasks", ",".join(names), "--include_path", str(include_path), "--apply_chat_template"]
