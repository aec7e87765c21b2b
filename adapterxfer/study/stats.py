"""Statistics of a study: seeds, seed-paired contrasts, a two-level bootstrap, Holm, the minimum
detectable effect, and whether an intermediate learned anything.

A score is a target's zero-shot average: the task's headline metric (the first its METRICS entry
returns) averaged over the evaluated languages other than the training language.

Two-level bootstrap. Seeds and test items are crossed, not nested: every seed's model is scored on
the same test items. So each replicate resamples both factors independently (the "pigeonhole"
bootstrap of Owen 2007): the seeds with replacement, and the clusters of test items with
replacement. Items are resampled in clusters because items of one cluster err together:

- ``item``: each test item alone (items without a ref, as XTREME's, are always their own cluster);
- ``chapter`` / ``book``: verses refs ``book:chapter:verse``. verses-genre's label is a property of
  the book (66 books, 8 genres), so its items cluster by book: resampling verses, or chapters, as if
  independent would make intervals too narrow. ``book`` is the honest choice for it.

When every language is scored on the same refs (the verses: translations of the same test verses),
one draw of clusters serves all languages, as a verse's translations err together; otherwise each
language's items are resampled on their own. Metrics that are a mean over items (accuracy, SQuAD /
MLQA F1 and EM) are resampled from per-item scores; any other (seqeval F1) is recomputed by its
METRICS function on each replicate's items.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import stats as scipy_stats

from ..errors import UserError
from ..kinds import KINDS
from ..metrics import METRICS
from ..tasks import get_task

# Metrics whose value over a set is the mean of their value on each item (checked by a test).
ITEM_MEANS = ("accuracy", "accuracy@1", "squad", "mlqa")
# Kinds with one gold label per item: chance is the best constant prediction.
CHANCE_KINDS = ("classification", "pair_encoder", "multiple_choice")


def metric_value(metric: str, rows: list[dict], lang: str) -> float:
    """The headline value of ``metric`` on prediction rows {ref, label, prediction}."""
    scores = METRICS[metric]([r["prediction"] for r in rows], [r["label"] for r in rows], lang)
    return float(next(iter(scores.values())))


def mean_sd(values) -> tuple[float, float | None]:
    """Mean and sample standard deviation (None from a single value)."""
    values = np.asarray(values, dtype=float)
    return float(values.mean()), (float(values.std(ddof=1)) if len(values) > 1 else None)


def cluster_ids(refs: list, level: str) -> list:
    """The cluster of each test item: its ref (item), or the ref's "book:chapter" or "book"."""
    if level == "item" or any(ref is None for ref in refs):
        return [ref if ref is not None else f"#{index}" for index, ref in enumerate(refs)]
    parts = 1 if level == "book" else 2
    ids = []
    for ref in refs:
        fields = str(ref).split(":")
        if len(fields) != 3:
            raise UserError(f"cluster level {level!r} needs verses refs book:chapter:verse, got ref {ref!r}; "
                            "use clusters: item for this target")
        ids.append(":".join(fields[:parts]))
    return ids


@dataclass(frozen=True)
class Difference:
    """A seed-paired difference of zero-shot averages (run - versus) with its bootstrap distribution."""

    seeds: tuple[int, ...]
    per_seed: tuple[float, ...]
    mean: float
    sd: float | None
    low: float
    high: float
    se: float
    p: float
    clusters: int  # clusters of test items resampled (summed over strata)

    def mde(self, alpha: float, power: float) -> float:
        return minimum_detectable_effect(self.se, alpha, power)


def paired_difference(run: dict, versus: dict, langs: list[str], metric: str, level: str,
                      resamples: int = 2000, seed: int = 0, alpha: float = 0.05) -> Difference | None:
    """``run`` and ``versus``: {seed: {lang: prediction rows}}, the same test items in the same order.

    Returns None when the two share no seed."""
    seeds = sorted(set(run) & set(versus))
    if not seeds or not langs:
        return None
    refs = {lang: [r["ref"] for r in run[seeds[0]][lang]] for lang in langs}
    for s in seeds:
        for arm in (run, versus):
            for lang in langs:
                if [r["ref"] for r in arm[s][lang]] != refs[lang]:
                    raise UserError(f"seed {s}, language {lang}: the two arms were scored on different test items")
    rng = np.random.default_rng(seed)
    weights, clusters = _cluster_weights(refs, level, resamples, rng)
    differences = np.empty((resamples, len(seeds)))
    per_seed = []
    for column, s in enumerate(seeds):
        differences[:, column] = (_resampled_average(run[s], langs, weights, metric)
                                  - _resampled_average(versus[s], langs, weights, metric))
        per_seed.append(float(np.mean([metric_value(metric, run[s][lang], lang) for lang in langs])
                              - np.mean([metric_value(metric, versus[s][lang], lang) for lang in langs])))
    drawn = rng.integers(0, len(seeds), size=(resamples, len(seeds)))
    replicates = differences[np.arange(resamples)[:, None], drawn].mean(axis=1)
    low, high = np.quantile(replicates, [alpha / 2, 1 - alpha / 2])
    p = min(1.0, 2 * min(float((replicates <= 0).mean()), float((replicates >= 0).mean())))
    mean, sd = mean_sd(per_seed)
    return Difference(tuple(seeds), tuple(per_seed), mean, sd, float(low), float(high),
                      float(replicates.std(ddof=1)), p, clusters)


def _cluster_weights(refs: dict[str, list], level: str, resamples: int, rng) -> tuple[dict, int]:
    """{lang: (resamples, items) array of how often each item is drawn}, and the number of clusters."""
    ids = {lang: cluster_ids(lang_refs, level) for lang, lang_refs in refs.items()}
    lists = list(refs.values())
    parallel = all(ref is not None for ref in lists[0]) and all(other == lists[0] for other in lists[1:])
    strata = [list(refs)] if parallel else [[lang] for lang in refs]
    weights, total = {}, 0
    for stratum in strata:
        universe = sorted(set(ids[stratum[0]]))
        counts = rng.multinomial(len(universe), np.full(len(universe), 1 / len(universe)), size=resamples)
        column = {cluster: index for index, cluster in enumerate(universe)}
        for lang in stratum:
            weights[lang] = counts[:, [column[c] for c in ids[lang]]]
        total += len(universe)
    return weights, total


def _resampled_average(items: dict[str, list[dict]], langs: list[str], weights: dict, metric: str) -> np.ndarray:
    """The zero-shot average on every replicate's items: (resamples,)."""
    values = []
    for lang in langs:
        rows, drawn = items[lang], weights[lang]
        if metric in ITEM_MEANS:
            each = np.array([metric_value(metric, [row], lang) for row in rows])
            values.append(drawn @ each / drawn.sum(axis=1))
        else:
            positions = np.arange(len(rows))
            values.append(np.array([metric_value(metric, [rows[i] for i in np.repeat(positions, counts)], lang)
                                    for counts in drawn]))
    return np.mean(values, axis=0)


def holm(pvalues: list[float]) -> list[float]:
    """Holm's step-down adjusted p-values (family-wise error), in the input order."""
    order = np.argsort(pvalues, kind="stable")
    adjusted, running = [0.0] * len(pvalues), 0.0
    for rank, index in enumerate(order):
        running = max(running, min(1.0, (len(pvalues) - rank) * pvalues[index]))
        adjusted[index] = running
    return adjusted


def minimum_detectable_effect(se: float, alpha: float, power: float) -> float:
    """The smallest true difference a two-sided test at ``alpha`` detects with probability ``power``."""
    return float((scipy_stats.norm.ppf(1 - alpha / 2) + scipy_stats.norm.ppf(power)) * se)


@dataclass(frozen=True)
class Learned:
    chance: float
    low: float
    high: float

    @property
    def learned(self) -> bool:
        return self.low > self.chance


def learned(task_name: str, dev_scores: list[float], alpha: float = 0.05) -> Learned | None:
    """Whether an intermediate's English dev score (mean over seeds) is above chance, within its
    Clopper-Pearson interval over the dev items. Chance is the best constant prediction on the dev set
    (the majority class; for multiple choice the most frequent answer position). None for kinds
    without one gold label per item. ``a+b`` (multi-task): the mean over its tasks, as its dev score."""
    tasks = [get_task(name) for name in task_name.split("+")]
    if not dev_scores or any(task.kind not in CHANCE_KINDS for task in tasks):
        return None
    chances, units, sizes = [], [], []
    for task in tasks:
        gold = KINDS[task.kind].references(task.rows("dev", task.source_lang))
        score = METRICS[task.metric]
        name = next(iter(score(gold, gold, task.source_lang)))
        units.append(score(gold, gold, task.source_lang)[name])  # a perfect score: 1 or 100
        chances.append(max(score([c] * len(gold), gold, task.source_lang)[name] for c in set(gold)))
        sizes.append(len(gold))
    unit, n = float(np.mean(units)), min(sizes)
    observed = round(float(np.mean(dev_scores)) / unit * n)
    interval = scipy_stats.binomtest(min(max(observed, 0), n), n).proportion_ci(1 - alpha)
    return Learned(float(np.mean(chances)), interval.low * unit, interval.high * unit)


def by_seen(scores: dict[str, float], seen: frozenset[str]) -> dict[str, float]:
    """Averages of {lang: score} over all languages, and apart over those an intermediate trained on
    (seen) and the rest (unseen); the last two only when ``seen`` names some of them."""
    averages = {"all": float(np.mean(list(scores.values())))}
    if seen & set(scores):
        for name, keep in (("seen", True), ("unseen", False)):
            values = [v for lang, v in scores.items() if (lang in seen) == keep]
            if values:
                averages[name] = float(np.mean(values))
    return averages
