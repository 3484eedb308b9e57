"""The guard: the sentence encoder, then a small head that scores each label (OpenAI's categories, any harm,
prompt injection, the sensitive domains). The head and its thresholds ship as one safetensors file (weights,
and the labels, thresholds and recipe figures as JSON in its metadata): nothing is unpickled."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from tinythink.errors import TinythinkError
from tinythink.model.load import dtype_named
from tinythink.safety.encoder import SentenceEncoder, load_encoder
from tinythink.safety.labels import CATEGORIES, CATEGORY_LABELS, EXTRA, PARENT
from tinythink.safety.language import other_language

SHIPPED = Path(__file__).parent / "data" / "guard.safetensors"


class GuardHead(torch.nn.Module):
    """(b, dim) sentence vectors -> (b, labels) logits."""

    def __init__(self, dim: int, hidden: int, labels: int, dropout: float = 0.1):
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.Linear(dim, hidden), torch.nn.GELU(), torch.nn.Dropout(dropout),
                                       torch.nn.Linear(hidden, labels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


@dataclass
class Verdict:
    """One text's scores, and which labels cross their thresholds."""
    scores: dict[str, float]  # every label the guard has, in [0, 1]
    over: dict[str, bool]
    language: str | None = None  # set: the text is in this other language, not scored (every score 0, none over)

    def moderation(self) -> dict:
        """OpenAI's moderation result. Whether a text is flagged is the `harmful` score's call (one threshold,
        so false positives do not add up over categories); a flagged text is in each category over its own
        threshold, or else in its highest-scoring one. A category without labelled data reports its parent's
        score, and is never flagged on its own."""
        scores = {c: self.scores[c] if c in self.scores else self.scores[PARENT[c]] for c in CATEGORIES}
        flagged = self.over["harmful"]
        categories = {c: flagged and c in CATEGORY_LABELS and self.over[c] for c in CATEGORIES}
        if flagged and not any(categories.values()):
            categories[max(CATEGORY_LABELS, key=lambda c: scores[c])] = True
        return {"flagged": flagged, "categories": categories, "category_scores": scores,
                "category_applied_input_types": {c: ["text"] for c in CATEGORIES},
                # beyond OpenAI's shape: extra fields its client keeps
                "prompt_injection": self.over["prompt_injection"],
                "requires_human_review": any(self.over[d] for d in EXTRA[1:]),
                "extra_scores": {label: self.scores[label] for label in ["harmful", *EXTRA]},
                "screened": self.language is None, "language": self.language}


class Guard:
    def __init__(self, encoder: SentenceEncoder, head: GuardHead, labels: list[str], thresholds: dict[str, float],
                 card: dict | None = None):
        self.encoder, self.head, self.labels, self.thresholds = encoder, head.eval(), labels, thresholds
        self.card = card or {}

    def check(self, texts: list[str]) -> list[Verdict]:
        """Each text's verdict; texts in another language than English are not scored (safety/language.py)."""
        languages = [other_language(t) for t in texts]
        english = [t for t, language in zip(texts, languages) if language is None]
        with torch.inference_mode():
            probs = iter(torch.sigmoid(self.head(self.encoder.encode(english))).tolist() if english else [])
        verdicts = []
        for language in languages:
            scores = dict(zip(self.labels, next(probs) if language is None else [0.0] * len(self.labels)))
            verdicts.append(Verdict(scores, {k: language is None and v >= self.thresholds[k]
                                             for k, v in scores.items()}, language))
        return verdicts

    def save(self, path: Path):
        state = {k: v.contiguous() for k, v in self.head.state_dict().items()}
        hidden = self.head.net[0].out_features
        meta = {"labels": self.labels, "thresholds": self.thresholds, "hidden": hidden, "card": self.card}
        save_file(state, str(path), metadata={"tinythink.guard": json.dumps(meta)})

    @classmethod
    def load(cls, path: Path | None = None, encoder: SentenceEncoder | None = None) -> Guard:
        path = Path(path or SHIPPED)
        try:
            with safe_open(str(path), "pt") as f:
                meta = json.loads((f.metadata() or {})["tinythink.guard"])
                state = {k: f.get_tensor(k) for k in f.keys()}
        except (SafetensorError, KeyError, json.JSONDecodeError, OSError) as e:
            raise TinythinkError(f"{path}: not a tinythink guard file ({e})") from None
        encoder = encoder or load_encoder(dtype=dtype_named("auto"))
        head = GuardHead(encoder.dim, meta["hidden"], len(meta["labels"]))
        try:
            head.load_state_dict(state)
        except RuntimeError as e:
            raise TinythinkError(f"{path}: the guard's weights do not fit its head ({e})") from None
        return cls(encoder, head, meta["labels"], meta["thresholds"], meta.get("card"))
