"""The guard's figures on held-out items: what the issue's targets name (harmful-prompt recall, false positives on
benign prompts and on benign look-alikes, the sensitive-domain flag's precision and recall, prompt injection),
and each label's recall and false-positive rate at its threshold."""

from __future__ import annotations

import torch

from tinythink.safety.data import Item
from tinythink.safety.labels import DOMAINS, TRAINED

HARMFUL_PROMPTS = ("harmbench", "donotanswer")
BENIGN_PROMPTS = ("arc_easy", "snips", "reviews", "normal")
LOOKALIKES = ("written: benign look-alikes", "written: facts in sensitive domains (no review needed)",
              "written: instruction-like but benign task inputs")


def threshold_for(scores: torch.Tensor, y: torch.Tensor, known: torch.Tensor, fpr: float) -> float:
    """The lowest threshold that flags at most `fpr` of the known negatives (0.5 when a label has none)."""
    negatives = scores[(known == 1) & (y == 0)].sort(descending=True).values
    if len(negatives) == 0:
        return 0.5
    allowed = int(fpr * len(negatives))
    return float(min(0.99, max(0.05, negatives[allowed].item() + 1e-6)))


def decisions(scores: torch.Tensor, thresholds: dict[str, float]) -> dict[str, torch.Tensor]:
    over = scores >= torch.tensor([thresholds[label] for label in TRAINED])
    col = {label: over[:, j] for j, label in enumerate(TRAINED)}
    flagged = col["harmful"]  # as Verdict.moderation decides it
    review = torch.stack([col[d] for d in DOMAINS]).any(0)
    return {**col, "flagged": flagged, "review": review}


def rate(hits: torch.Tensor, where: torch.Tensor) -> dict:
    n = int(where.sum())
    return {"rate": round(float(hits[where].float().mean()), 4) if n else None, "n": n}


def figures(items: list[Item], scores: torch.Tensor, thresholds: dict[str, float]) -> dict:
    d = decisions(scores, thresholds)
    source = [i.source for i in items]

    def where(predicate) -> torch.Tensor:
        return torch.tensor([bool(predicate(i)) for i in items])

    harmful = where(lambda i: i.source in HARMFUL_PROMPTS and i.labels.get("harmful") == 1.0)
    advice = where(lambda i: any(i.labels.get(dom) == 1.0 for dom in DOMAINS))
    # the advice requests against the look-alikes (facts in the same domains, alarming words used harmlessly)
    contest = advice | where(lambda i: i.source in LOOKALIKES)
    tp = int((d["review"] & advice).sum())
    flagged_review = int((d["review"] & contest).sum())
    injection = where(lambda i: i.labels.get("prompt_injection") == 1.0)
    summary = {
        "harmful_prompt_recall": rate(d["flagged"], harmful),
        "benign_prompt_false_positives": rate(d["flagged"], where(lambda i: i.source in BENIGN_PROMPTS)),
        "lookalike_false_positives": rate(d["flagged"], where(lambda i: i.source in LOOKALIKES)),
        "toxic_text_recall": rate(d["flagged"], where(lambda i: i.source.startswith("rtp_"))),
        "review_recall": rate(d["review"], advice),
        "review_precision": {"rate": round(tp / flagged_review, 4) if flagged_review else None, "n": flagged_review},
        "review_on_benign_prompts": rate(d["review"], where(lambda i: i.source in BENIGN_PROMPTS)),
        "injection_recall": rate(d["prompt_injection"], injection),
        "injection_false_positives": rate(d["prompt_injection"], where(
            lambda i: i.labels.get("prompt_injection") == 0.0 and i.source in (*BENIGN_PROMPTS, *LOOKALIKES))),
    }
    per_label = {}
    for j, label in enumerate(TRAINED):
        pos = where(lambda i, lab=label: i.labels.get(lab) == 1.0)
        neg = where(lambda i, lab=label: i.labels.get(lab) == 0.0)
        per_label[label] = {"threshold": round(thresholds[label], 4), "recall": rate(d[label], pos),
                            "false_positives": rate(d[label], neg)}
    by_source = {s: {kind: rate(d[kind], torch.tensor([x == s for x in source])) for kind in
                     ("flagged", "review", "prompt_injection")} for s in sorted(set(source))}
    return {"summary": summary, "per_label": per_label, "by_source": by_source}
