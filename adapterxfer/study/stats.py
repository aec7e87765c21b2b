"""Statistics of a study: seeds, seed-paired contrasts with seed-aware t intervals, Holm, the
minimum detectable effect, and whether an intermediate learned anything.

A score is a target's zero-shot average: the task's headline metric (the first its METRICS entry
returns) averaged over the evaluated languages other than the training language.

The difference of two arms, seed by seed, is ``D_s = mu + b_s + e_s``: ``b_s`` is training
randomness (seed to seed), ``e_s`` the test set's sampling error. Seeds and test items are crossed
(every seed is scored on the same items), so part of ``e_s`` is shared by all seeds: the items on
which one arm is better whatever the seed. The variance of the mean over S seeds is

    Var(mean D) = s^2(D_s) / S   +   Cov(e_s, e_t), s != t

where the sample variance of the per-seed differences already holds each seed's own item noise,
and the covariance of the item errors between different seeds adds the shared part (zero when
items do not favour an arm consistently). Item errors come from a delete-a-cluster jackknife of
each seed's difference, over clusters of test items (items of one cluster err together):

- ``item``: each test item alone;
- ``chapter`` / ``book``: verses refs ``book:chapter:verse`` (verses-genre's label is a property of
  the book, so ``book`` is the honest unit for it).

A test item's ``ref`` names it across languages: items of different languages with the same ref are
translations of one item (the verses, XQuAD / MLQA question ids, XNLI / PAWS-X pair indexes), and
one cluster deletion removes it from every language, so parallel languages are resampled together.
Items without a ref are their own cluster in their language. Metrics that are a mean over items
(accuracy, SQuAD / MLQA F1 and EM) delete per-item scores exactly, one cluster at a time; any other
(seqeval F1) is recomputed by its METRICS function with each of at most ``JACKKNIFE_GROUPS`` groups
of clusters left out.

The interval is ``mean D +- t * se`` with Satterthwaite's degrees of freedom for the two parts (S-1
for the seeds, clusters-1 for the items). A seeded simulation (``study.coverage``) checks that it
covers a true difference 95% of the time with 3, 5 and 6 seeds, whether seeds, items or clusters of
items dominate, and with heavy-tailed seeds. With one seed there is no seed variance to measure: the
interval is over the test items only and holds for that seed's models alone.

Where the arms' difference varies at a level above the resampled one (by book, resampling chapters),
the interval is too narrow: the report also resamples at the next coarser level (``coarser_level``;
an XTREME test set's unit above the item, ``item_groups``) and headlines the wider (``widest``). Two
failures no clustering here repairs, which the simulation shows and the report warns of: a plan kept
because its variance looked small (adaptive stopping; a confirmation on held-out items and new seeds
is the remedy), and errors tied across clusters by the hub distractors of a fixed candidate pool.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import stats as scipy_stats

from ..errors import UserError
from ..kinds import KINDS
from ..metrics import METRICS, score_rows
from ..tasks import get_task

# Metrics recomputed on each jackknife replicate: their clusters are dealt into this many groups.
JACKKNIFE_GROUPS = 50


def metric_value(metric: str, rows: list[dict], lang: str) -> float:
    """The headline value of ``metric`` on prediction rows {ref, label, prediction}."""
    return float(next(iter(score_rows(metric, rows, lang).values())))


def mean_sd(values) -> tuple[float, float | None]:
    """Mean and sample standard deviation (None from a single value)."""
    values = np.asarray(values, dtype=float)
    return float(values.mean()), (float(values.std(ddof=1)) if len(values) > 1 else None)


def cluster_ids(refs: list, level: str, groups: dict | None = None) -> list:
    """The cluster of each test item: its ref (item), or the ref's "book:chapter" or "book"; with ``groups``
    ({ref: its group}, a level the test data names: see ``item_groups``), its group."""
    if groups is not None:
        return [f"#{index}" if ref is None else groups.get(ref, ref) for index, ref in enumerate(refs)]
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


def parallel_languages(refs: dict[str, list]) -> bool:
    """Whether the languages' test items are translations of shared items (refs in common)."""
    named = [{ref for ref in lang_refs if ref is not None} for lang_refs in refs.values()]
    return len(named) > 1 and any(a & b for i, a in enumerate(named) for b in named[i + 1:])


@dataclass(frozen=True)
class Difference:
    """A seed-paired difference of zero-shot averages (run - versus) with its t interval."""

    seeds: tuple[int, ...]
    per_seed: tuple[float, ...]
    mean: float
    sd: float | None
    low: float
    high: float
    se: float
    df: float
    p: float
    clusters: int  # clusters of test items (over all languages; a parallel item counts once)

    @property
    def one_seed(self) -> bool:
        """The interval is over test items only: it holds for this seed, seed variance unmeasured."""
        return len(self.seeds) == 1

    def mde(self, alpha: float, power: float) -> float:
        """The minimum detectable effect (with one seed a lower bound: seed variance is left out)."""
        return minimum_detectable_effect(self.se, alpha, power, self.df)


def paired_difference(run: dict, versus: dict, langs: list[str], metric: str, level: str,
                      alpha: float = 0.05, groups: dict | None = None) -> Difference | None:
    """``run`` and ``versus``: {seed: {lang: prediction rows}}, the same test items in the same order;
    ``groups``: {lang: {ref: group}} where ``level`` is one the test data names (``item_groups``).

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
    jackknife, clusters = _jackknife_groups(refs, level, metric, groups)
    per_seed, errors = [], []
    for s in seeds:
        ours, ours_deleted = _deleted_averages(run[s], langs, jackknife, metric)
        theirs, theirs_deleted = _deleted_averages(versus[s], langs, jackknife, metric)
        deleted = ours_deleted - theirs_deleted
        per_seed.append(ours - theirs)
        errors.append((len(deleted) - 1) / len(deleted) * (deleted.mean() - deleted))
    return _t_interval(tuple(seeds), np.array(per_seed), np.array(errors), clusters, alpha)


def clustered_differences(run: dict, versus: dict, langs: list[str], metric: str, levels: tuple[str, ...],
                          alpha: float = 0.05, difference=None, groups: dict | None = None) -> dict:
    """``paired_difference`` at each cluster level of ``levels`` (``difference``: it, or a function of
    its signature); ``groups``: {level: {lang: {ref: group}}} for levels the test data names."""
    difference, groups = difference or paired_difference, groups or {}
    return {level: difference(run, versus, langs, metric, level, alpha=alpha,
                              **({"groups": groups[level]} if level in groups else {}))
            for level in levels}


def widest(differences: dict[str, Difference | None]) -> Difference | None:
    """The widest interval of several clusterings of one contrast: where clusterings disagree, the
    coarser one's errors may be real, and the narrower interval would claim more than the items hold."""
    found = [d for d in differences.values() if d is not None]
    return max(found, key=lambda d: d.high - d.low) if found else None


def coarser_level(level: str, refs) -> str | None:
    """The next coarser cluster level than ``level`` for test items with ``refs``: verses refs
    (book:chapter:verse) go item -> chapter -> book; other refs have no coarser level in their
    names (None)."""
    named = [ref for ref in refs if ref is not None]
    if not named or any(len(str(ref).split(":")) != 3 for ref in named):
        return None
    return {"item": "chapter", "chapter": "book"}.get(level)


def item_groups(task, refs: dict[str, list]) -> dict[str, dict] | None:
    """{lang: {ref: its group}} by the task's ``test_group`` field, for the evaluated items ``refs`` ({lang:
    refs}): in each language, the items sharing the field's value form one group, named by the first ref
    among them (translations group alike, so the names agree across languages). None where the task names
    no group or its test rows are not the evaluated ones."""
    if not task.test_group:
        return None
    field = task.test_group[1]
    out = {}
    for lang, evaluated in refs.items():
        rows = task.rows("test", lang)
        if [row.get("ref") for row in rows] != list(evaluated) or any(field not in row for row in rows):
            return None
        first = {}
        for row in rows:
            first.setdefault(row[field], row["ref"])
        out[lang] = {row["ref"]: first[row[field]] for row in rows}
    return out


def hub_share(arms: list[dict], langs: list[str], top: int = 10) -> tuple[int, float] | None:
    """For retrieval against a fixed pool (each prediction the index of the candidate retrieved): the wrong
    answers of ``arms`` ({seed: {lang: rows}}) over every seed and language, and the share of them that went to
    each language's ``top`` candidates retrieved wrongly most often (pooled over languages). None where
    predictions are not candidate indices or nothing is wrong."""
    wrong, to_hubs = 0, 0
    for lang in langs:
        rows = [row for arm in arms for by_lang in arm.values() for row in by_lang.get(lang, [])]
        if not rows or not all(isinstance(row["prediction"], int) for row in rows):
            return None
        chosen = np.array([row["prediction"] for row in rows if row["prediction"] != row["label"]], dtype=int)
        if len(chosen):
            wrong += len(chosen)
            to_hubs += int(np.sort(np.bincount(chosen))[::-1][:top].sum())
    return (wrong, to_hubs / wrong) if wrong else None


def seed_interval(per_seed: dict[int, float], alpha: float = 0.05) -> Difference:
    """Mean of a per-seed value (a rank metric of each seed's models) with its t interval over seeds alone;
    one seed: the value itself, its interval that point (seed variance unmeasured)."""
    seeds = tuple(sorted(per_seed))
    return _t_interval(seeds, np.array([per_seed[s] for s in seeds]), np.zeros((len(seeds), 1)), 0, alpha)


def _jackknife_groups(refs: dict[str, list], level: str, metric: str,
                      groups: dict | None = None) -> tuple[dict[str, np.ndarray], int]:
    """{lang: the jackknife group of each item}, and the number of clusters. A cluster is shared by
    the languages whose items have its ref (translations); an item without a ref is its own."""
    ids = {lang: [f"{lang}\0{cluster}" if ref is None else cluster
                  for ref, cluster in zip(lang_refs, cluster_ids(lang_refs, level, groups and groups[lang]))]
           for lang, lang_refs in refs.items()}
    universe = {cluster: index for index, cluster in enumerate(sorted({c for each in ids.values() for c in each}))}
    count = len(universe) if METRICS[metric].per_item else min(len(universe), JACKKNIFE_GROUPS)
    return {lang: np.array([universe[c] % count for c in each], dtype=int) for lang, each in ids.items()}, len(universe)


def _deleted_averages(items: dict[str, list[dict]], langs: list[str], groups: dict[str, np.ndarray],
                      metric: str) -> tuple[float, np.ndarray]:
    """The zero-shot average, and the average with each jackknife group left out: (groups,). A
    language left with no item by a deletion keeps its whole-set value."""
    count = 1 + max(int(g.max()) for g in groups.values())
    whole, deleted = [], []
    for lang in langs:
        rows, group = items[lang], groups[lang]
        value = metric_value(metric, rows, lang)
        sizes = np.bincount(group, minlength=count)
        left = len(rows) - sizes
        score = METRICS[metric].per_item
        if score:
            each = np.array([score(row["prediction"], row["label"], lang) for row in rows])
            sums = np.bincount(group, weights=each, minlength=count)
            without = np.divide(each.sum() - sums, left, out=np.full(count, value), where=left > 0)
        else:
            without = np.array([metric_value(metric, [row for row, g in zip(rows, group) if g != k], lang)
                                if sizes[k] and left[k] else value for k in range(count)])
        whole.append(value)
        deleted.append(without)
    return float(np.mean(whole)), np.mean(deleted, axis=0)


def _t_interval(seeds: tuple, per_seed: np.ndarray, errors: np.ndarray, clusters: int, alpha: float) -> Difference:
    """``errors``: (seeds, groups) jackknife item errors of each seed's difference."""
    groups = errors.shape[1]
    item_df = max(groups - 1, 1)
    covariance = groups / item_df * errors @ errors.T  # of the item errors, between seeds
    mean, sd = mean_sd(per_seed)
    within = float(np.trace(covariance)) / len(seeds)  # one seed's item variance: shared + its own
    if len(seeds) == 1:
        seed_part, expected_seed_part, seed_df, shared = within, within, item_df, 0.0
    else:
        shared = max(0.0, float(covariance.sum() - np.trace(covariance)) / (len(seeds) * (len(seeds) - 1)))
        seed_part, seed_df = sd ** 2 / len(seeds), len(seeds) - 1.0
        # The per-seed differences vary by at least each seed's own item noise, which the items measure
        # well; flooring the seed part at it in the degrees of freedom keeps a small sd from a few
        # seeds from also shrinking the t quantile (which alone undercovers when items dominate).
        expected_seed_part = max(seed_part, (within - shared) / len(seeds))
    variance = seed_part + shared
    if variance <= 1e-18:  # every seed and every item agree: the difference is what it is
        return Difference(seeds, tuple(map(float, per_seed)), mean, sd, mean, mean, 0.0, np.inf,
                          float(mean == 0.0), clusters)
    df = ((expected_seed_part + shared) ** 2
          / (expected_seed_part ** 2 / seed_df + shared ** 2 / item_df))  # Satterthwaite
    se = variance ** 0.5
    half = scipy_stats.t.ppf(1 - alpha / 2, df) * se
    p = float(2 * scipy_stats.t.sf(abs(mean) / se, df))
    return Difference(seeds, tuple(map(float, per_seed)), mean, sd, mean - half, mean + half, se, float(df), p,
                      clusters)


def holm(pvalues: list[float]) -> list[float]:
    """Holm's step-down adjusted p-values (family-wise error), in the input order."""
    order = np.argsort(pvalues, kind="stable")
    adjusted, running = [0.0] * len(pvalues), 0.0
    for rank, index in enumerate(order):
        running = max(running, min(1.0, (len(pvalues) - rank) * pvalues[index]))
        adjusted[index] = running
    return adjusted


def minimum_detectable_effect(se: float, alpha: float, power: float, df: float = np.inf) -> float:
    """The smallest true difference a two-sided t test at ``alpha`` with ``df`` degrees of freedom
    detects with probability ``power``."""
    return float((scipy_stats.t.ppf(1 - alpha / 2, df) + scipy_stats.t.ppf(power, df)) * se)




@dataclass(frozen=True)
class Learned:
    """An intermediate task's final English dev evaluation against what it must beat.

    ``score``: the final dev score over seeds with its interval (seeds and dev items); ``chance``:
    1 / the number of answers (None for kinds without one gold label); ``versus``: {baseline: (its dev
    score, final minus it with its interval)}, the baselines being majority, word overlap and step 0."""

    task: str
    score: Difference | None  # None without a chance level (its kind has no single gold label)
    chance: float | None
    versus: dict[str, tuple[float, Difference]]

    @property
    def learned(self) -> bool:
        return bool((self.score is None or self.score.low > self.chance)
                    and all(difference.low > 0 for _, difference in self.versus.values()))


def learned(task_name: str, final: dict[int, list[dict]], step0: dict[int, list[dict]],
            alpha: float = 0.05) -> Learned | None:
    """``final``, ``step0``: {seed: dev prediction rows} of one intermediate task (in dev-set order).
    Each comparison is a seed-paired difference over the dev items, as the contrasts are."""
    from .baselines import baseline_predictions

    task = get_task(task_name)
    seeds = sorted(set(final) & set(step0))
    if not seeds:
        return None
    lang, first = task.source_lang, final[seeds[0]]
    compared = {"step 0": step0}
    chance = None
    if KINDS[task.kind].ONE_ANSWER:
        dev = task.rows("dev", lang)
        answers = len(dev[0]["choices"]) if "choices" in dev[0] else len(task.labels)
        chance = 1 / answers
        for name, predicted in baseline_predictions(task, dev).items():
            rows = [{**row, "prediction": p} for row, p in zip(first, predicted)]
            compared[name] = {seed: rows for seed in seeds}
    # against predictions that are never right, the difference is the score itself, with its interval
    score = None if chance is None else paired_difference(
        {s: {lang: final[s]} for s in seeds}, {s: {lang: [{**row, "prediction": None} for row in final[s]]}
                                               for s in seeds}, [lang], task.metric, "item", alpha)
    versus = {name: (float(np.mean([metric_value(task.metric, rows[s], lang) for s in seeds])),
                     paired_difference({s: {lang: final[s]} for s in seeds}, {s: {lang: rows[s]} for s in seeds},
                                       [lang], task.metric, "item", alpha))
              for name, rows in compared.items()}
    return Learned(task_name, score, chance, versus)


def by_seen(scores: dict[str, float], seen: frozenset[str], language_of=str) -> dict[str, float]:
    """Averages of {lang: score} over all languages, and apart over those an intermediate trained on
    (seen) and the rest (unseen); the last two only when ``seen`` names some of them. ``language_of``
    maps a scored id to its language (a translation id "de-s" is language "de")."""
    averages = {"all": float(np.mean(list(scores.values())))}
    languages = {lang: language_of(lang) for lang in scores}
    if seen & set(languages.values()):
        for name, keep in (("seen", True), ("unseen", False)):
            values = [v for lang, v in scores.items() if (languages[lang] in seen) == keep]
            if values:
                averages[name] = float(np.mean(values))
    return averages
