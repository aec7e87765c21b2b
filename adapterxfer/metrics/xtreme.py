"""The non-QA XTREME / XTREME-R metrics and the official aggregation, as google-research/xtreme's
``evaluate.py`` computes them: values in percent, under the official key names."""

from __future__ import annotations

import warnings
from typing import Mapping, Sequence


from .basic import accuracy

MEWSLIX_TOP_K = 20


def accuracy_scores(predictions: Sequence, references: Sequence) -> dict:
    """XNLI, PAWS-X, Tatoeba, XCOPA: exact equality of the label strings (or JSON values)."""
    if not references:
        raise ValueError("no examples to score")
    return {"accuracy": accuracy(predictions, references) * 100}


def tagging_scores(predictions: Sequence[Sequence[str]], references: Sequence[Sequence[str]]) -> dict:
    """PAN-X and UD-POS: seqeval's default (non-strict) entity F1 over tag sequences.

    UD-POS tags go to seqeval unchanged, as official, so seqeval reads "PRON" as tag "P" with type
    "RON"; the numbers therefore depend on the seqeval version (pinned 1.2.2).
    """
    from seqeval.metrics.sequence_labeling import precision_recall_fscore_support  # sklearn: a second to import

    with warnings.catch_warnings():  # "NOUN seems not to be NE tag", undefined-metric warnings
        warnings.simplefilter("ignore")
        # one pass for the three: seqeval's f1_score, precision_score and recall_score each make it (micro)
        precision, recall, f1, _ = precision_recall_fscore_support(references, predictions, average="micro")
    return {"f1": f1 * 100, "precision": precision * 100, "recall": recall * 100}


def bucc_scores(predictions: Sequence[str], references: Sequence[str]) -> dict:
    """BUCC: precision/recall/F1 of the set of predicted "src\\ttgt" lines against the gold set.

    With no correct pair every value is the int 0, as official (no division).
    """
    gold = {tuple(line.split("\t")) for line in references}
    predicted = {tuple(line.split("\t")) for line in predictions}
    correct = len(gold & predicted)
    precision = recall = f1 = 0
    if correct:
        precision, recall = correct / len(predicted), correct / len(gold)
        f1 = 2 * precision * recall / (precision + recall)
    return {"f1": f1 * 100, "precision": precision * 100, "recall": recall * 100}


def mewslix_scores(predictions: Mapping[str, Sequence[str]], references: Mapping[str, Sequence[str]]) -> dict:
    """Mewsli-X: mean reciprocal rank of the gold entity in the top 20, reported as "map@20".

    references: example id -> [gold entity id] (stripped); predictions: example id -> ranked entity
    ids. A missing prediction scores 0; no references gives 0.
    """
    reciprocal_ranks = []
    for example_id, golds in references.items():
        gold = golds[0].strip()
        top = predictions.get(example_id, [])[:MEWSLIX_TOP_K]
        reciprocal_ranks.append(next((1.0 / rank for rank, p in enumerate(top, 1) if p == gold), 0.0))
    mrr = sum(reciprocal_ranks) / len(reciprocal_ranks) if reciprocal_ranks else 0.0
    return {f"map@{MEWSLIX_TOP_K}": mrr * 100}


def lareqa_scores(predictions: Mapping[str, Sequence[str]], references: Mapping[str, Sequence[str]]) -> dict:
    """LAReQA: mean average precision over the top 20, in percent.

    references: query id -> its gold candidate ids; predictions: query id -> ranked candidate ids.
    """
    total = 0.0
    for key, golds in references.items():
        hits, precision_sum = 0, 0.0
        for position, candidate in enumerate(predictions.get(key, [])[:MEWSLIX_TOP_K], 1):
            if candidate in golds:
                hits += 1
                precision_sum += hits / position
        total += precision_sum / min(len(golds), MEWSLIX_TOP_K)
    return {f"map@{MEWSLIX_TOP_K}": 100 * total / max(1, len(references))}


# A task's headline "avg_metric" when it is not QA: the first of these it has. Tatoeba scored by a
# study is named accuracy@1 (the official scorer calls it accuracy).
_HEADLINE = ("avg_f1", "avg_accuracy", "avg_accuracy@1", f"avg_map@{MEWSLIX_TOP_K}")


def task_summary(per_language: Mapping[str, Mapping[str, float]], qa: bool) -> dict:
    """Official per-task block: {metric: {lang: value}}, then avg_<metric>, then avg_metric.

    avg_metric is (avg_exact_match + avg_f1) / 2 for QA tasks. A task with no languages (LAReQA,
    which the official scorer lists without scoring) gives {}.
    """
    summary: dict = {}
    for lang, scores in per_language.items():
        for metric, value in scores.items():
            summary.setdefault(metric, {})[lang] = value
    summary.update({f"avg_{metric}": sum(values.values()) / len(values) for metric, values in summary.items()})
    if qa:
        summary["avg_metric"] = (summary["avg_exact_match"] + summary["avg_f1"]) / 2
    else:
        headline = next((key for key in _HEADLINE if key in summary), None)
        if headline:
            summary["avg_metric"] = summary[headline]
    return summary


def overall_scores(detailed: Mapping[str, Mapping], tasks: Sequence[str],
                   groups: Mapping[str, Sequence[str]]) -> dict:
    """``all_task`` (mean avg_metric of every benchmark task), then each group whose tasks are all scored.

    The official scorer sums all_task over a set, whose order varies between runs (last-bit
    differences); here the sum is in task order. Where a task cannot have an avg_metric (XTREME-R's
    LAReQA), all_task is left out; the official scorer leaves it out too, or crashes.
    """
    def mean(names):
        return sum(detailed[name]["avg_metric"] for name in names) / len(names)

    overall = {}
    if all("avg_metric" in detailed.get(task, {}) for task in tasks):
        overall["all_task"] = mean(tasks)
    for group, members in groups.items():
        if all(task in detailed for task in members):
            overall[group] = mean(members)
    return overall
