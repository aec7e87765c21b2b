"""Pure metric functions (no torch, no models): the project's own, and the XTREME / XTREME-R ones.

The XTREME functions score exactly like google-research/xtreme ``evaluate.py`` and return its dicts
(values in percent, its key names); ``adapterxfer.scoring`` reads the official folder layout.
"""

from dataclasses import dataclass
from itertools import chain
from typing import Any, Callable

from .basic import accuracy, token_accuracy
from .qa import mlqa_scores, normalize_mlqa_answer, normalize_squad_answer, qa_list_scores, squad_scores
from .xtreme import (accuracy_scores, bucc_scores, lareqa_scores, mewslix_scores, overall_scores,
                     tagging_scores, task_summary)

@dataclass(frozen=True)
class Metric:
    """A task's metric: ``compute(predictions, references, lang)`` gives {name: value}, every value a fraction
    in [0, 1] (the official XTREME functions above report percent; ``adapterxfer score`` keeps their units);
    ``dev_metric`` names the value whose best English-dev score chooses the checkpoint kept (the dev score);
    ``per_item(prediction, reference, lang)``, where a set's value is the mean of its items' values, gives an
    item's (clustered statistics use it; a test checks that the mean equals ``compute``), else None (the
    statistics recompute the metric on subsets)."""
    compute: Callable[[list, list, str], dict]
    dev_metric: str
    per_item: Callable[[Any, Any, str], float] | None = None

    def __call__(self, predictions: list, references: list, lang: str) -> dict:
        return self.compute(predictions, references, lang)


def _right(prediction, reference, lang: str) -> float:
    return float(prediction == reference)


def _qa_item(lang_aware: bool):
    def one(prediction, answers, lang: str) -> float:
        return qa_list_scores([prediction], [answers], lang if lang_aware else None)["f1"] / 100
    return one


# A task names its metric by key. Retrieval predictions are the index of the retrieved candidate; the gold
# index is the query's own. Mining rows hold mined "src\ttgt" lines against gold lines; ranking rows hold one
# query's ranked candidate ids against its gold ids. Both are scored over all rows together.
METRICS = {
    "accuracy": Metric(lambda predictions, references, lang: {"accuracy": accuracy(predictions, references)},
                       "accuracy", _right),
    "accuracy@1": Metric(lambda predictions, references, lang: {"accuracy@1": accuracy(predictions, references)},
                         "accuracy@1", _right),
    # Tagging: one tag list per sentence. QA: one answer text per question, gold = its answer texts.
    "seqeval": Metric(lambda predictions, references, lang: fractions(tagging_scores(predictions, references)), "f1"),
    "squad": Metric(lambda predictions, references, lang: fractions(qa_list_scores(predictions, references)),
                    "f1", _qa_item(False)),
    "mlqa": Metric(lambda predictions, references, lang: fractions(qa_list_scores(predictions, references, lang)),
                   "f1", _qa_item(True)),
    # MLM: each row's hits at its corrupted tokens (see kinds/mlm.py), pooled over all rows.
    "mlm_accuracy": Metric(lambda predictions, references, lang: {
        "accuracy": sum(map(sum, predictions)) / max(1, sum(map(len, predictions)))}, "accuracy"),
    "token_accuracy": Metric(lambda predictions, references, lang: {
        "accuracy": token_accuracy(predictions, references)}, "accuracy"),
    "bucc_f1": Metric(lambda predictions, references, lang: fractions(
        bucc_scores(list(chain(*predictions)), list(chain(*references)))), "f1"),
    "mrr@20": Metric(lambda predictions, references, lang: fractions(
        mewslix_scores(dict(enumerate(predictions)), dict(enumerate(references)))), "map@20"),
    "map@20": Metric(lambda predictions, references, lang: fractions(
        lareqa_scores(dict(enumerate(predictions)), dict(enumerate(references)))), "map@20"),
}


def score_rows(metric: str, rows: list[dict], lang: str) -> dict:
    """``METRICS[metric]`` on prediction rows {ref, label, prediction}, as evaluation writes them."""
    return METRICS[metric]([row["prediction"] for row in rows], [row["label"] for row in rows], lang)


def fractions(percent: dict) -> dict:
    return {name: value / 100 for name, value in percent.items()}


__all__ = ["METRICS", "Metric", "score_rows", "accuracy", "fractions",
           "token_accuracy", "accuracy_scores",
           "tagging_scores", "bucc_scores", "lareqa_scores",
           "mewslix_scores", "squad_scores", "mlqa_scores", "normalize_squad_answer",
           "normalize_mlqa_answer", "task_summary", "overall_scores"]
