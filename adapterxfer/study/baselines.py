"""Trivial baselines on an intermediate task's English dev set, which "learned" must beat.

- ``majority``: the most frequent training label (multiple choice: the most frequent answer position);
- ``word overlap``: for pair classification the best rule "content-word overlap (Jaccard) above t ->
  label x, else label y"; for choices of a context (multiple choice, bi-encoder), the choice overlapping
  the context most, or least, whichever is right more often. Fitted on a seeded sample of training rows,
  never on dev.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from ..kinds import KINDS
from ..metrics.basic import content_words, jaccard
from ..tasks.spec import TaskSpec

TRAIN_SAMPLE = 2000  # training rows the baselines are fitted on


@dataclass(frozen=True)
class OverlapRule:
    threshold: float
    above: object  # the label predicted when the overlap exceeds the threshold
    below: object

    def predict(self, overlaps: list[float]) -> list:
        return [self.above if overlap > self.threshold else self.below for overlap in overlaps]


def overlaps(rows: list[dict]) -> list[float]:
    """The Jaccard overlap of the two texts' content words, pair by pair."""
    return [jaccard(content_words(row["text"]), content_words(row["text_pair"])) for row in rows]


def accuracy_of(predictions: list, labels: list) -> float:
    return sum(p == g for p, g in zip(predictions, labels)) / len(labels)


def fit_overlap_rule(values: list[float], labels: list) -> OverlapRule:
    """The threshold rule of best accuracy on these overlaps and labels (the first of ties)."""
    classes = sorted(set(labels))
    rules = [OverlapRule(threshold, above, below) for threshold in sorted(set(values))
             for above in classes for below in classes if above != below]
    return max(rules, key=lambda rule: accuracy_of(rule.predict(values), labels))


def choice_overlaps(rows: list[dict]) -> list[list[float]]:
    """The Jaccard overlap of each choice's content words with the context's, row by row."""
    return [[jaccard(content_words(row["context"]), content_words(choice)) for choice in row["choices"]]
            for row in rows]


def pick_by_overlap(values: list[list[float]], most: bool) -> list[int]:
    """Each row's choice of highest (``most``) or lowest overlap; the first of ties."""
    best = max if most else min
    return [row.index(best(row)) for row in values]


def baseline_predictions(task: TaskSpec, dev_rows: list[dict]) -> dict[str, list]:
    """{baseline name: its prediction for each dev row}: majority, and word overlap for pair tasks."""
    train = task.read("train", task.train_lang, TRAIN_SAMPLE, 0)
    labels = KINDS[task.kind].references(train)
    majority = Counter(labels).most_common(1)[0][0]
    predictions = {"majority": [majority] * len(dev_rows)}
    if "text_pair" in train[0]:
        rule = fit_overlap_rule(overlaps(train), labels)
        predictions["word overlap"] = rule.predict(overlaps(dev_rows))
    elif "context" in train[0] and "choices" in train[0]:
        train_overlaps = choice_overlaps(train)
        most = max((True, False), key=lambda m: accuracy_of(pick_by_overlap(train_overlaps, m), labels))
        predictions["word overlap"] = pick_by_overlap(choice_overlaps(dev_rows), most)
    return predictions
