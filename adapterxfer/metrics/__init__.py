"""Pure metric functions (no torch, no models): the project's own, and the XTREME / XTREME-R ones.

The XTREME functions score exactly like google-research/xtreme ``evaluate.py`` and return its dicts
(values in percent, its key names); ``adapterxfer.scoring`` reads the official folder layout.
"""

from itertools import chain

from .basic import accuracy, bootstrap_interval, majority_rate, split_seen, token_accuracy
from .qa import mlqa_scores, normalize_mlqa_answer, normalize_squad_answer, qa_list_scores, squad_scores
from .xtreme import (accuracy_scores, bucc_scores, lareqa_scores, mewslix_scores, overall_scores,
                     tagging_scores, task_summary)

# A task names its metric by key. Each function takes (predictions, references, lang) and returns
# {name: value}, every value a fraction in [0, 1] (the official XTREME functions above report percent;
# ``adapterxfer score`` keeps their units). SELECTION names the value English-dev model selection uses.
# Retrieval predictions are the index of the retrieved candidate; the gold index is the query's own.
# Mining rows hold mined "src\ttgt" lines against gold lines; ranking rows hold one query's ranked
# candidate ids against its gold ids. Both are scored over all rows together.
METRICS = {
    "accuracy": lambda predictions, references, lang: {"accuracy": accuracy(predictions, references)},
    "accuracy@1": lambda predictions, references, lang: {"accuracy@1": accuracy(predictions, references)},
    # Tagging: one tag list per sentence. QA: one answer text per question, gold = its answer texts.
    "seqeval": lambda predictions, references, lang: fractions(tagging_scores(predictions, references)),
    "squad": lambda predictions, references, lang: fractions(qa_list_scores(predictions, references)),
    "mlqa": lambda predictions, references, lang: fractions(qa_list_scores(predictions, references, lang)),
    # MLM: each row's hits at its corrupted tokens (see kinds/mlm.py), pooled over all rows.
    "mlm_accuracy": lambda predictions, references, lang: {
        "accuracy": sum(map(sum, predictions)) / max(1, sum(map(len, predictions)))},
    "token_accuracy": lambda predictions, references, lang: {"accuracy": token_accuracy(predictions, references)},
    "bucc_f1": lambda predictions, references, lang: fractions(
        bucc_scores(list(chain(*predictions)), list(chain(*references)))),
    "mrr@20": lambda predictions, references, lang: fractions(
        mewslix_scores(dict(enumerate(predictions)), dict(enumerate(references)))),
    "map@20": lambda predictions, references, lang: fractions(
        lareqa_scores(dict(enumerate(predictions)), dict(enumerate(references)))),
}

SELECTION = {"accuracy": "accuracy", "accuracy@1": "accuracy@1", "seqeval": "f1", "squad": "f1", "mlqa": "f1",
             "mlm_accuracy": "accuracy", "token_accuracy": "accuracy", "bucc_f1": "f1", "mrr@20": "map@20",
             "map@20": "map@20"}


def score_rows(metric: str, rows: list[dict], lang: str) -> dict:
    """``METRICS[metric]`` on prediction rows {ref, label, prediction}, as evaluation writes them."""
    return METRICS[metric]([row["prediction"] for row in rows], [row["label"] for row in rows], lang)


def fractions(percent: dict) -> dict:
    return {name: value / 100 for name, value in percent.items()}


__all__ = ["METRICS", "score_rows", "accuracy", "bootstrap_interval", "fractions", "majority_rate", "split_seen",
           "token_accuracy", "accuracy_scores",
           "tagging_scores", "bucc_scores", "lareqa_scores",
           "mewslix_scores", "squad_scores", "mlqa_scores", "normalize_squad_answer",
           "normalize_mlqa_answer", "task_summary", "overall_scores"]
