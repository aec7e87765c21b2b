"""Pure metric functions: predictions and references in, one number out. No model imports."""

from __future__ import annotations

import re
from typing import Sequence


def accuracy(predictions: Sequence, references: Sequence) -> float:
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions for {len(references)} references")
    if not references:
        return 0.0
    return sum(p == r for p, r in zip(predictions, references)) / len(references)


def content_words(text: str) -> frozenset[str]:
    """The lower-cased words of ``text`` longer than 3 letters: what word-overlap rules compare."""
    return frozenset(word for word in re.findall(r"\w+", text.lower()) if len(word) > 3)


def jaccard(x: frozenset, y: frozenset) -> float:
    """|x & y| / |x | y|; 0 for two empty sets (the union counted, not built: the corpus tasks call this millions
    of times)."""
    common = len(x & y)
    return common / ((len(x) + len(y) - common) or 1)


def token_accuracy(predictions: Sequence[Sequence], references: Sequence[Sequence]) -> float:
    """Accuracy over every token of every sequence (CCG supertagging)."""
    if [len(p) for p in predictions] != [len(r) for r in references]:
        raise ValueError("predicted and gold sequences differ in length")
    return accuracy([t for p in predictions for t in p], [t for r in references for t in r])
