"""The run's outputs: results.json (everything, machine-readable), samples.jsonl (every reply and its score),
report.md (the tables) and two PNG charts (scores with intervals, model vs reference; score vs speed vs size).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

METRIC = {"answer": "accuracy", "choice": "accuracy", "label": "accuracy", "summary": "ROUGE-L F1",
          "refusal": "refusal rate", "compliance": "1 - false-refusal rate"}


def _fmt(value, ci=None, digits=3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    text = f"{value:.{digits}f}"
    if ci and not any(math.isnan(c) for c in ci):
        text += f" [{ci[0]:.{digits}f}, {ci[1]:.{digits}f}]"
    return text


def _mb(n) -> str:
    return "–" if n is None else f"{n / 1e6:,.0f} MB"


def overall_speed(results: dict, who: str) -> dict:
    """The whole suite's speed, over its wall time (tasks overlap at their edges: theirs do not add up)."""
    runs = [t[who]["speed"] for t in results["tasks"].values() if who in t]
    completion, wall = sum(s["completion_tokens"] for s in runs), results["models"][who]["wall_s"]
    return {"completion_tokens": completion, "prompt_tokens": sum(s["prompt_tokens"] for s in runs),
            "wall_s": wall, "completion_tokens_per_s": completion / wall if wall else None}


def write(out: Path, results: dict):
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "samples.jsonl", "w") as f:
        for name, task in results["tasks"].items():
            for who in ("model", "reference"):
                for row in task.get(who, {}).pop("rows", []):
                    f.write(json.dumps({"task": name, "who": who, **row}, ensure_ascii=False, default=str) + "\n")
    (out / "results.json").write_text(json.dumps(results, indent=2, default=str))
    charts(out, results)
    (out / "report.md").write_text(markdown(results))


def facts(model: dict, speed: dict) -> dict[str, str]:
    """One model's column of the speed and memory table."""
    quantized = f" int{model['quantize']}" if model.get("quantize") else ""
    return {"parameters": f"{model['parameters'] / 1e6:,.1f} M" if model.get("parameters") else "–",
            "weights in memory": _mb(model.get("weight_bytes")),
            "dtype / quantization": model.get("dtype", "–") + quantized,
            "peak RSS": _mb(model.get("peak_rss_bytes")),
            "prompt tokens": f"{speed['prompt_tokens']:,}",
            "completion tokens": f"{speed['completion_tokens']:,}",
            "completion tokens/s (concurrent requests)": _fmt(speed["completion_tokens_per_s"], digits=1),
            "wall time": f"{speed['wall_s']:.0f} s"}


def markdown(results: dict) -> str:
    models, tasks = results["models"], results["tasks"]
    ref = "reference" in models
    s = results["settings"]
    scope = f"at most {s['limit']} examples per task" if s["limit"] else "all examples"
    lines = [f"# tinythink eval: {models['model']['name']}" + (f" vs {models['reference']['name']}" if ref else ""),
             "", f"Suite `{s['suite']}` (version {results['suite_version']}), test split, {scope}, greedy decoding, "
             f"reasoning effort {s['effort'] or 'none'}; {results['created']} on {results['machine']}.",
             f"Command: `{results['command']}`", "",
             "Scores with 95% bootstrap intervals; retention = model / reference on the same examples (paired "
             "interval). Unparseable replies count as wrong and are listed.", "",
             "## Scores", ""]
    head = "| task | suite | metric | n | model |" + (" reference | retention |" if ref else "") + " unparseable |"
    lines += [head, "|" + "---|" * (head.count("|") - 1)]
    for name, t in tasks.items():
        m = t["model"]
        row = f"| {name} | {m['suite']} | {METRIC[m['kind']]} | {m['n']} | {_fmt(m['score'], m['ci'])} |"
        if ref:
            r = t["reference"]
            row += f" {_fmt(r['score'], r['ci'])} | {_fmt(t['retention']['value'], t['retention']['ci'], 2)} |"
        unparseable = f"{m['unparseable']}" + (f" / {t['reference']['unparseable']}" if ref else "")
        errors = m["errors"] + (t["reference"]["errors"] if ref else 0)
        lines.append(row + f" {unparseable}{f' ({errors} errors)' if errors else ''} |")
    if results.get("aggregates"):
        lines += ["", "## Retention by suite (mean task score, model / reference)", "",
                  "| suite | model | reference | retention |", "|---|---|---|---|"]
        for suite, a in results["aggregates"].items():
            lines.append(f"| {suite} | {_fmt(a['model'])} | {_fmt(a['reference'])} | "
                         f"{_fmt(a['retention']['value'], a['retention']['ci'], 2)} |")
    extra = [(n, t) for n, t in tasks.items() if "loglik" in t["model"] or "macro_f1" in t["model"]]
    if extra:
        lines += ["", "## Choice by log-likelihood (per character) and classification macro-F1", "",
                  "| task | metric | model |" + (" reference |" if ref else ""), "|---|---|---|" + ("---|" if ref else "")]
        for name, t in extra:
            key = "loglik" if "loglik" in t["model"] else "macro_f1"
            row = f"| {name} | {'loglik accuracy' if key == 'loglik' else 'macro-F1'} | " \
                  f"{_fmt(t['model'][key], t['model'][key + '_ci'])} |"
            if ref:
                r = t["reference"]
                row += f" {_fmt(r.get(key), r.get(key + '_ci'))} |"
            lines.append(row)
    lines += ["", "## Speed and memory", "", "| | model |" + (" reference |" if ref else ""),
              "|---|---|" + ("---|" if ref else "")]
    who = ["model", "reference"] if ref else ["model"]
    columns = [facts(models[w], overall_speed(results, w)) for w in who]
    for label in columns[0]:
        lines.append(f"| {label} | " + " | ".join(column[label] for column in columns) + " |")
    lines += ["", "Per task: time to first token (p50) and wall time, from its first request to its last reply (the "
              "tasks share one pool of concurrent requests, so neighbours overlap).", "",
              "| task |" + "".join(f" {w} TTFT | {w} wall |" for w in who), "|---|" + "---|---|" * len(who)]
    for name, t in tasks.items():
        lines.append(f"| {name} |" + "".join(f" {_fmt(t[w]['speed']['ttft_p50_s'], digits=2)} s | "
                                             f"{t[w]['speed']['wall_s']:.0f} s |" for w in who))
    lines += ["", "![scores](scores.png)", "", "![score, speed and size](tradeoff.png)", ""]
    return "\n".join(lines)


def charts(out: Path, results: dict):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models, tasks = results["models"], results["tasks"]
    who = [w for w in ("model", "reference") if w in models]
    names = list(tasks)
    fig, ax = plt.subplots(figsize=(9, 0.45 * len(names) + 1.6))
    height = 0.8 / len(who)
    for k, w in enumerate(who):
        scores = [tasks[n][w]["score"] for n in names]
        errors = [[max(0.0, tasks[n][w]["score"] - tasks[n][w]["ci"][0]) for n in names],
                  [max(0.0, tasks[n][w]["ci"][1] - tasks[n][w]["score"]) for n in names]]
        ys = [i + (k - (len(who) - 1) / 2) * height for i in range(len(names))]
        ax.barh(ys, scores, height=height, xerr=errors, capsize=2, label=models[w]["name"] + f" ({w})",
                color=["#3b6ea8", "#d08c2f"][k])
    ax.set_yticks(range(len(names)), [f"{n} ({METRIC[tasks[n]['model']['kind']]})" for n in names], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.set_xlabel("score (95% bootstrap interval), test split")
    ax.legend(loc="lower right", fontsize=8)
    ax.set_title("Scores per task", fontsize=10)
    fig.tight_layout()
    fig.savefig(out / "scores.png", dpi=120)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    for k, w in enumerate(who):
        scored = [tasks[n][w]["score"] for n in names if tasks[n]["model"]["suite"] != "safety"]
        point = (overall_speed(results, w)["completion_tokens_per_s"] or 0, sum(scored) / max(len(scored), 1))
        size = models[w].get("weight_bytes") or models[w].get("file_bytes") or 0
        ax.scatter(*point, s=60 + size / 1e6 * 2, alpha=0.7, color=["#3b6ea8", "#d08c2f"][k])
        ax.annotate(f"{models[w]['name']}\n{_mb(size) if size else 'size unknown'}", point,
                    textcoords="offset points", xytext=(8, 8), fontsize=8)
    ax.set_xlabel("completion tokens/s over the run (concurrent requests)")
    ax.set_ylabel("mean score, light + reasoning tasks")
    ax.set_title("Score vs speed (marker area: weights in memory)", fontsize=10)
    ax.set_ylim(0, 1)
    ax.set_xlim(left=0)
    ax.margins(x=0.3)
    fig.tight_layout()
    fig.savefig(out / "tradeoff.png", dpi=120)
    plt.close(fig)
