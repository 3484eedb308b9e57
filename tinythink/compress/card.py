"""The model card `tinythink make` writes (DIR/README.md): teacher, recipe, data, tokens, time, machine, figures."""

from __future__ import annotations

from dataclasses import asdict


def _hours(seconds: float) -> str:
    return f"{seconds / 3600:.2f} h" if seconds >= 3600 else f"{seconds / 60:.1f} min"


def model_card(settings, records: dict, command: str) -> str:
    from tinythink.eval.evaluate import machine

    s = asdict(settings)
    lines = [f"# {settings.out.rstrip('/').split('/')[-1]}", "",
             f"A model made by `tinythink make` from **{settings.teacher}**.", "",
             "## Recipe", "", "```", command, "```", "",
             "| setting | value |", "|---|---|"]
    quantizing = ("method", "group_size") if settings.quantize else ()
    lines += [f"| {k} | {v} |" for k, v in s.items() if v is not None and k != "out"
              and (k not in ("method", "group_size") or k in quantizing)]
    data = records.get("data", {})
    if data:
        lines += ["", "## Data", "", f"{data['train_sequences']:,} training sequences of {data['seq_len']} tokens "
                  f"({data['trained_tokens']:,} trained tokens), {data['heldout_sequences']} held out. Sources:", ""]
        lines += [f"- {name}: {license}" for name, license in data["sources"].items()]
    prune = records.get("prune")
    if prune:
        lines += ["", "## Pruning", "", f"Shape: {prune['shape']}: {prune['parameters']:,} parameters of the teacher's "
                  f"{prune['teacher_parameters']:,} ({prune['non_embedding']:,} of {prune['teacher_non_embedding']:,} "
                  f"without embeddings). Held-out loss before distillation {prune['pruned_loss']:.3f} "
                  f"(teacher {prune['teacher_scoring_loss']:.3f}); importance from {prune['calibration_tokens']:,} "
                  "calibration tokens."]
    distill = records.get("distill")
    if distill:
        lines += ["", "## Distillation", "", f"{distill['tokens']:,} tokens in {distill['step']} steps, "
                  f"{_hours(distill['seconds'])}; teacher {distill['teacher']}; loss {settings.loss} at temperature "
                  f"{settings.temperature}. Curve: `distill/loss.png`, log: `distill/train.jsonl`."]
    quant = records.get("quantize")
    if quant:
        lines += ["", "## Quantization", "", f"int{quant['bits']} by {quant['method'].upper()}"
                  + (f", groups of {quant['group_size']}" if quant["bits"] == 4 else "") + "."]
    ev = records.get("evaluate")
    if ev:
        lines += ["", "## Figures", "", f"Machine: {machine()}.", "",
                  "| stage | parameters | held-out perplexity | decode tok/s | 8 streams tok/s | prefill@128 tok/s "
                  "| peak RSS MB |", "|---|---|---|---|---|---|---|"]
        for name, r in ev["stages"].items():
            lines.append(f"| {name} | {r['parameters'] / 1e6:.1f} M | {r['perplexity']:.2f} | {r['decode_tok_s']:.1f} | "
                         f"{r['streams8_tok_s']:.1f} | {r['prefill_tok_s']:.0f} | {r['peak_rss_mb']:.0f} |")
        lines += ["", f"`tinythink eval` of the final model against the teacher ({ev['suite']}, {ev['limit']} test "
                  "examples a task; report in `evaluate/report.md`):", "",
                  "| suite | model | teacher | retention [95% interval] |", "|---|---|---|---|"]
        for suite, a in ev["aggregates"].items():
            r = a["retention"]
            lines.append(f"| {suite} | {a['model']:.3f} | {a['reference']:.3f} | {r['value']:.2f} "
                         f"[{r['ci'][0]:.2f}, {r['ci'][1]:.2f}] |")
    export = records.get("export")
    if export:
        lines += ["", "## Files", ""] + [f"- `{name}`: {size:,} bytes" for name, size in export["files"].items()]
        lines += ["", f"Serve it: `tinythink serve -m {settings.out}`."]
    times = [(stage, r.get("stage_seconds", 0)) for stage, r in records.items()]
    lines += ["", "Time per stage: " + ", ".join(f"{stage} {_hours(t)}" for stage, t in times) + "."]
    return "\n".join(lines) + "\n"
