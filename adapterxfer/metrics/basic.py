"""Pure metric functions: predictions and references in, one number out. No model imports."""

from __future__ import annotations

import random
import re
from typing import Sequence


def accuracy(predictions: Sequence, references: Sequence) -> float:
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions for {len(references)} references")
    if not references:
        return 0.0
    return sum(p == r for p, r in zip(predictions, references)) / len(references)


def majority_rate(train_labels: Sequence, references: Sequence) -> float:
    """Accuracy of always predicting the most frequent training label."""
    majority = max(set(train_labels), key=list(train_labels).count)
    return accuracy([majority] * len(references), references)


def content_words(text: str) -> frozenset[str]:
    """The lower-cased words of ``text`` longer than 3 letters: what word-overlap rules compare."""
    return frozenset(word for word in re.findall(r"\w+", text.lower()) if len(word) > 3)


def jaccard(x: frozenset, y: frozenset) -> float:
    """|x & y| / |x | y|; 0 for two empty sets."""
    return len(x & y) / (len(x | y) or 1)


def token_accuracy(predictions: Sequence[Sequence], references: Sequence[Sequence]) -> float:
    """Accuracy over every token of every sequence (CCG supertagging)."""
    if [len(p) for p in predictions] != [len(r) for r in references]:
        raise ValueError("predicted and gold sequences differ in length")
    return accuracy([t for p in predictions for t in p], [t for r in references for t in r])


def bootstrap_interval(values: Sequence[float], resamples: int = 2000, seed: int = 0,
                       level: float = 0.95) -> tuple[float, float]:
    """Percentile interval of the mean of ``values``, resampled with replacement (Efron 1979).

    With ``values`` the per-item differences between two systems scored on the same test items,
    this is the paired bootstrap of Koehn (2004): an interval that excludes 0 means the difference
    is unlikely to come from the sample of test items alone.
    """
    if not values:
        raise ValueError("no values to resample")
    rng = random.Random(seed)
    n = len(values)
    means = sorted(sum(values[rng.randrange(n)] for _ in range(n)) / n for _ in range(resamples))
    tail = (1 - level) / 2
    return means[int(tail * resamples)], means[min(resamples - 1, int((1 - tail) * resamples))]


def split_seen(scores_by_lang: dict[str, float], seen: Sequence[str]) -> dict[str, float | None]:
    """The mean score over the languages in ``seen`` (those an intermediate task trained on, its
    ``TaskSpec.seen_languages``) and over the others: {"seen": mean, "unseen": mean}, None for an
    empty group. A translation id ("fr-l") counts as its language ("fr")."""
    groups = {"seen": [], "unseen": []}
    for lang, value in scores_by_lang.items():
        groups["seen" if lang.split("-")[0] in seen else "unseen"].append(value)
    return {name: sum(values) / len(values) if values else None for name, values in groups.items()}
