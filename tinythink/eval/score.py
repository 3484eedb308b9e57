"""Scores with 95% bootstrap intervals, and retention (model score / reference score) with a paired one.

Per-example scores are numbers in [0, 1] (1/0 for right/wrong, ROUGE-L F for a summary); a task's score is
their mean, or macro-F1 over labels for classification. Intervals resample examples with replacement
(percentile bootstrap, 1,000 draws, a fixed seed): the same examples for the model and the reference, so
retention's interval reflects the paired difference, not two independent noises.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

DRAWS, SEED = 1000, 0


def mean(values: Sequence[float]) -> float:
    return float(np.mean(values)) if len(values) else float("nan")


def macro_f1(predicted: Sequence[str | None], gold: Sequence[str]) -> float:
    """Macro-averaged F1 over the gold labels; an unparseable prediction counts against its gold label."""
    scores = []
    for name in sorted(set(gold)):
        tp = sum(p == name and g == name for p, g in zip(predicted, gold))
        fp = sum(p == name and g != name for p, g in zip(predicted, gold))
        fn = sum(p != name and g == name for p, g in zip(predicted, gold))
        scores.append(2 * tp / (2 * tp + fp + fn) if tp else 0.0)
    return float(np.mean(scores)) if scores else float("nan")


def bootstrap(n: int, statistic: Callable[[np.ndarray], float]) -> tuple[float, float]:
    """The 95% percentile interval of statistic(indices) over resampled example indices."""
    if n == 0:
        return float("nan"), float("nan")
    rng = np.random.default_rng(SEED)
    return interval(np.array([statistic(rng.integers(0, n, n)) for _ in range(DRAWS)], dtype=float))


def interval(draws: np.ndarray) -> tuple[float, float]:
    """The 2.5th and 97.5th percentiles of bootstrap draws. Infinite ones (a retention whose resampled reference
    scored 0 where the model did not) stay in, so the interval reaches infinity rather than hiding them."""
    draws = draws[~np.isnan(draws)]
    if not len(draws):
        return float("nan"), float("nan")
    low, high = np.percentile(draws, [2.5, 97.5], method="linear" if np.isfinite(draws).all() else "inverted_cdf")
    return float(low), float(high)


def ratio(a: float, b: float) -> float:
    if b == 0:
        return 1.0 if a == 0 else float("inf")
    return a / b


def retention(model: Sequence[float], reference: Sequence[float]) -> dict:
    """Mean of model / mean of reference over the same examples, with its paired interval."""
    m, r = np.asarray(model, dtype=float), np.asarray(reference, dtype=float)
    value = ratio(m.mean(), r.mean())
    low, high = bootstrap(len(m), lambda i: ratio(m[i].mean(), r[i].mean()))
    return {"value": value, "ci": [low, high]}


def aggregate_retention(pairs: list[tuple[Sequence[float], Sequence[float]]]) -> dict:
    """Retention of a group of tasks: the mean of the tasks' scores, model over reference, each task's
    examples resampled on their own."""
    if not pairs:
        return {"value": float("nan"), "ci": [float("nan"), float("nan")]}
    arrays = [(np.asarray(m, dtype=float), np.asarray(r, dtype=float)) for m, r in pairs]
    value = ratio(np.mean([m.mean() for m, _ in arrays]), np.mean([r.mean() for _, r in arrays]))
    rng = np.random.default_rng(SEED)
    draws = []
    for _ in range(DRAWS):
        picks = [rng.integers(0, len(m), len(m)) for m, _ in arrays]
        draws.append(ratio(np.mean([m[i].mean() for (m, _), i in zip(arrays, picks)]),
                           np.mean([r[i].mean() for (_, r), i in zip(arrays, picks)])))
    return {"value": value, "ci": list(interval(np.array(draws, dtype=float)))}
