"""`tinythink eval`: a suite run against a model (and a reference), scored, compared and written out."""

from __future__ import annotations

import datetime
import json
import platform
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from tinythink.eval import report, score as scoring
from tinythink.errors import TinythinkError
from tinythink.eval.run import Endpoint, local_endpoint, run_tasks, summarize
from tinythink.eval.tasks import SEEDS, SUITE_VERSION, Task, suite


@dataclass
class Target:
    """What to evaluate: a model run here, or a model behind an OpenAI-compatible endpoint."""
    model: str
    endpoint: str | None = None  # base URL, e.g. http://127.0.0.1:8080/v1
    api_key: str | None = None
    dtype: str = "auto"  # bfloat16 where the CPU computes in it natively, else float32
    quantize: int | None = None

    @contextmanager
    def open(self, effort: str | None, concurrency: int):
        if self.endpoint:
            yield Endpoint(self.endpoint, self.model, self.api_key, concurrency, effort), {
                "name": self.model, "endpoint": self.endpoint}
        else:
            with local_endpoint(self.model, self.dtype, self.quantize, concurrency, effort=effort) as opened:
                yield opened


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import torch

    return f"{cpu}, {torch.get_num_threads()} threads"


def versions() -> dict:
    out = {"python": platform.python_version()}
    for name in ("tinythink", "torch", "reasoning-gym", "rouge-score", "openai", "llguidance"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return out


def run_suite(target: Target, tasks: list[Task], examples: dict, effort: str | None, concurrency: int) -> tuple:
    with target.open(effort, concurrency) as (endpoint, info):
        # scoring options by log-likelihood needs our tokenizer and a server that scores prompts: local only
        loglik = endpoint.tokenizer is not None
        start = time.perf_counter()
        results = run_tasks(endpoint, tasks, examples, loglik)
        info["wall_s"] = time.perf_counter() - start  # the suite's: tasks overlap, their times do not add up
    return results, info


def recorded(run: Path, tasks: list[Task], examples: dict, effort: str | None,
             name: str | None = None) -> tuple[dict, dict]:
    """A model an earlier run evaluated (its model, or whichever of its model and reference is called `name`),
    from its directory (results.json and samples.jsonl), scored on the same test examples: a reference evaluated
    once serves every model compared with it."""
    try:
        earlier = json.loads((run / "results.json").read_text())
        settings, models = earlier["settings"], earlier["models"]
        side = "model" if name is None else next((who for who, m in models.items() if m.get("name") == name), None)
        if side is None:
            raise TinythinkError(f"{run}: evaluated {' and '.join(m.get('name', '?') for m in models.values())}, "
                                 f"not {name}")
        rows: dict[str, dict] = {}
        for line in (run / "samples.jsonl").read_text().splitlines():
            row = json.loads(line)
            if row.pop("who") == side:
                rows.setdefault(row.pop("task"), {})[row["id"]] = row
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise TinythinkError(f"{run}: not the directory of a tinythink eval run ({e})") from None
    if earlier.get("suite_version") != SUITE_VERSION or settings.get("generated_task_seed") != SEEDS["test"]:
        raise TinythinkError(f"{run}: made by another version of the suite ({earlier.get('suite_version')}; this "
                             f"one is {SUITE_VERSION}): evaluate the reference again")
    versions = earlier.get("task_versions", {})  # runs before task versions hold version 1 of every task
    changed = [t for t in tasks if versions.get(t.name, 1) != t.version]
    if changed:
        which = ", ".join(f"{t.name} (its version {versions.get(t.name, 1)}; this one is {t.version})" for t in changed)
        raise TinythinkError(f"{run}: made on other test items of {which}: evaluate the reference again")
    if settings.get("effort") != effort:
        raise TinythinkError(f"{run}: run with effort {settings.get('effort')}, this run asks {effort}")
    scored = {}
    for task in tasks:
        by_id = rows.get(task.name, {})
        missing = [e.id for e in examples[task.name] if e.id not in by_id]
        if missing:
            raise TinythinkError(f"{run}: has no {task.name} results for {len(missing)} of these examples (e.g. "
                                 f"{missing[0]}): use that run's suite and the same --limit or less")
        wall = earlier["tasks"][task.name][side]["speed"]["wall_s"]
        scored[task.name] = summarize(task, [by_id[e.id] for e in examples[task.name]], wall)
    return scored, {**models[side], "recorded": str(run), "recorded_created": earlier.get("created")}


def evaluate(model: Target, reference: Target | Path | None, suite_name: str, limit: int | None,
             effort: str | None, out: Path, concurrency: int = 16, command: str = "",
             recorded_name: str | None = None) -> dict:
    """`reference`: a model to run, or the directory of an earlier run that evaluated it on these examples (its
    model, or the one of its two called `recorded_name`)."""
    tasks = suite(suite_name)
    examples = {t.name: t.examples("test", limit) for t in tasks}
    earlier = recorded(reference, tasks, examples, effort, recorded_name) \
        if isinstance(reference, Path) else None  # checked first
    print(f"evaluating {model.model} on {len(tasks)} tasks, {sum(map(len, examples.values()))} examples"
          + (f"; then {reference.model} on the same" if isinstance(reference, Target) else ""), file=sys.stderr,
          flush=True)
    scored, model_info = run_suite(model, tasks, examples, effort, concurrency)
    results = {"suite_version": SUITE_VERSION, "task_versions": {t.name: t.version for t in tasks}, "command": command,
               "created": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
               "machine": machine(), "packages": versions(),
               "settings": {"suite": suite_name, "limit": limit, "effort": effort, "split": "test",
                            "generated_task_seed": SEEDS["test"], "bootstrap": {"draws": scoring.DRAWS,
                                                                                 "seed": scoring.SEED},
                            "temperature": 0, "concurrency": concurrency},
               "models": {"model": model_info}, "tasks": {name: {"model": r} for name, r in scored.items()}}
    if reference is not None:
        ref_scored, ref_info = earlier or run_suite(reference, tasks, examples, effort, concurrency)
        results["models"]["reference"] = ref_info
        groups: dict[str, list] = {}
        for name, r in ref_scored.items():
            entry = results["tasks"][name]
            entry["reference"] = r
            m = [row["score"] for row in entry["model"]["rows"]]
            ref = [row["score"] for row in r["rows"]]
            entry["retention"] = scoring.retention(m, ref)
            if "loglik" in r:
                entry["loglik_retention"] = scoring.retention([row["loglik_score"] for row in entry["model"]["rows"]],
                                                              [row["loglik_score"] for row in r["rows"]])
            groups.setdefault(r["suite"], []).append((m, ref))
        results["aggregates"] = {
            s: {"model": scoring.mean([scoring.mean(m) for m, _ in pairs]),
                "reference": scoring.mean([scoring.mean(r) for _, r in pairs]),
                "retention": scoring.aggregate_retention(pairs)}
            for s, pairs in groups.items() if s in ("light", "reasoning")}
    report.write(out, results)
    return results
