"""Trivial baselines on an intermediate task's English dev set, which "learned" must beat.

- ``majority``: the most frequent training label (multiple choice: the most frequent answer position);
- ``word overlap`` (pair classification): the best rule "content-word overlap (Jaccard) above t ->
  label x, else label y", fitted on a seeded sample of training rows, never on dev.
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


def baseline_predictions(task: TaskSpec, dev_rows: list[dict]) -> dict[str, list]:
    """{baseline name: its prediction for each dev row}: majority, and word overlap for pair tasks."""
    train = task.read("train", task.train_lang, TRAIN_SAMPLE, 0)
    labels = KINDS[task.kind].references(train)
    majority = Counter(labels).most_common(1)[0][0]
    predictions = {"majority": [majority] * len(dev_rows)}
    if task.kind in ("classification", "pair_encoder") and "text_pair" in train[0]:
        rule = fit_overlap_rule(overlaps(train), labels)
        predictions["word overlap"] = rule.predict(overlaps(dev_rows))
    return predictions
