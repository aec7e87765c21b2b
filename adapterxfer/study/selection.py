"""How well each proxy of `adapterxfer select` picks intermediates, against the scores the study's grid measured.

Per target, regime and language (and the zero-shot average), each seed's intermediates are ranked by the
proxy's scores of that seed's modules and set against what their arms scored on the target (headline
metric, that seed's arm). Two families of figures:

As the literature scores it (ESM-LogME's evaluation code, hf-dataset-selector ``utils/eval_utils.py``;
ETT, Poth et al. 2021), on each arm's absolute score ``s`` (a fraction):

- NDCG: over the whole ranking, gains ``2^(100 s) - 1`` discounted by ``log2(rank + 1)``, over the ideal
  ranking's, x 100;
- Regret@k: ``(best s - best s within the proxy's top k) / best s`` x 100, the best over the ranked
  intermediates (ESM-LogME's maximum also spans a target's own row where it is a source too; here no
  intermediate is the target);
- Spearman's rho of the proxy's scores and the arms' scores.

Gain-relative (this project's first definition; not comparable with published figures), on each arm's
gain over its seed's baseline: NDCG@3 with relevance the gain above the worst intermediate's, and
Regret@k divided by the best *gain* (n/a where no intermediate gains).

Each is the mean over seeds with a t interval over seeds (stats.seed_interval). Random: the exact
expectation under a uniformly random ranking (rho: 0). p: the exact permutation p-value of the proxy
against random ranking: the share of ways to rank each seed's modules independently at random whose
mean over seeds is at least as good as the proxy's (every permutation is enumerated for banks of up to
EXACT_UP_TO intermediates, and the seeds' distributions combined exactly; past EXACT_LIMIT combinations,
MONTE_CARLO random rankings, and the p-value says so). Ties among a proxy's scores keep the bank's order.
A module counts only where the manifest hash `select` recorded is the one of the study's current run of that
phase (a module retrained since was ranked as another one).
"""

from __future__ import annotations

import json
from itertools import permutations
from math import comb, prod
from pathlib import Path

import numpy as np
from scipy.stats import rankdata

from ..proxies import PROXIES
from ..selection import TARGET
from ..tasks import get_task
from .phases import BASELINE
from .stats import seed_interval

K = 3
RANDOM = "random (expected)"
AVERAGE = "zero-shot avg"
EXACT_UP_TO = 9  # intermediates in a bank whose permutations are all enumerated (9! = 362,880)
EXACT_LIMIT = 5_000_000  # distinct partial sums over seeds kept for the exact combination
MONTE_CARLO = 100_000
TOLERANCE = 1e-9  # a permutation scoring within this of the proxy counts as at least as good


def _discounts(k: int) -> np.ndarray:
    return 1 / np.log2(np.arange(2, k + 2))


def _ndcg(gains: np.ndarray, orders: np.ndarray, k: int | None = None) -> np.ndarray | None:
    """NDCG of each ranking (rows of module indices, best first) at k (None: the whole ranking)."""
    k = orders.shape[1] if k is None else min(k, orders.shape[1])
    ideal = float(np.sort(gains)[::-1][:k] @ _discounts(k))
    return None if ideal == 0 else gains[orders[:, :k]] @ _discounts(k) / ideal


def _regret(values: np.ndarray, orders: np.ndarray, k: int) -> np.ndarray | None:
    best = float(values.max())
    return None if best <= 0 else (best - values[orders[:, :k]].max(axis=1)) / best


def _spearman(values: np.ndarray, orders: np.ndarray) -> np.ndarray | None:
    """Spearman's rho of each ranking (as scores: the first gets n, the last 1) and ``values``."""
    if np.ptp(values) == 0:
        return None
    n = orders.shape[1]
    ranks = np.empty(orders.shape)
    np.put_along_axis(ranks, orders, np.broadcast_to(np.arange(n, 0, -1.0), orders.shape), axis=1)
    truth = rankdata(values) - (n + 1) / 2
    ranks -= (n + 1) / 2
    return ranks @ truth / np.sqrt((ranks ** 2).sum(axis=1) * (truth ** 2).sum())


def _scaled(values, factor: float = 100.0):
    return None if values is None else factor * values


# name: (function of (absolute scores, gains over the baseline, rankings) -> one value per ranking or None,
#        its expectation under a random ranking, whether higher is better)
LITERATURE = {
    "NDCG": (lambda s, g, o: _scaled(_ndcg(2 ** (100 * s) - 1, o)),
             lambda s, g: _scaled(_random_ndcg(2 ** (100 * s) - 1)), True),
    "Regret@1": (lambda s, g, o: _scaled(_regret(s, o, 1)), lambda s, g: _scaled(_random_regret(s, 1)), False),
    "Regret@3": (lambda s, g, o: _scaled(_regret(s, o, 3)), lambda s, g: _scaled(_random_regret(s, 3)), False),
    "Spearman": (lambda s, g, o: _spearman(s, o), lambda s, g: 0.0 if np.ptp(s) else None, True),
}
GAIN_RELATIVE = {
    "NDCG@3": (lambda s, g, o: _ndcg(g - g.min(), o, K), lambda s, g: _random_ndcg(g - g.min(), K), True),
    "Regret@1": (lambda s, g, o: _regret(g, o, 1), lambda s, g: _random_regret(g, 1), False),
    "Regret@3": (lambda s, g, o: _regret(g, o, 3), lambda s, g: _random_regret(g, 3), False),
}


def _random_ndcg(gains: np.ndarray, k: int | None = None) -> float | None:
    """Under a random ranking every position holds each module with equal chance: E[DCG] = mean gain x discounts."""
    k = len(gains) if k is None else min(k, len(gains))
    ideal = float(np.sort(gains)[::-1][:k] @ _discounts(k))
    return None if ideal == 0 else float(gains.mean() * _discounts(k).sum()) / ideal


def _random_regret(values: np.ndarray, k: int) -> float | None:
    ordered, n = np.sort(values)[::-1], len(values)
    if ordered[0] <= 0:
        return None
    k = min(k, n)  # the best of a random k-subset is the j-th largest with probability C(n-j, k-1) / C(n, k)
    best = sum(ordered[j - 1] * comb(n - j, k - 1) for j in range(1, n - k + 2)) / comb(n, k)
    return float((ordered[0] - best) / ordered[0])


def proxy_order(scores: np.ndarray) -> np.ndarray:
    """The proxy's ranking as a (1, n) row of module indices, best first (ties keep the bank's order)."""
    return np.argsort(-scores, kind="stable")[None, :]


def metrics(scores: np.ndarray, values: np.ndarray, baseline: float, family: dict = LITERATURE) -> dict:
    """Each metric of ``family`` for the proxy's ``scores`` against the arms' absolute ``values``."""
    out = {}
    for name, (metric, _, _) in family.items():
        value = None if name == "Spearman" and np.ptp(scores) == 0 else metric(values, values - baseline,
                                                                               proxy_order(scores))
        out[name] = None if value is None else float(value[0])
    return out


def random_metrics(values: np.ndarray, baseline: float, family: dict = LITERATURE) -> dict:
    return {name: expected(values, values - baseline) for name, (_, expected, _) in family.items()}


def all_rankings(n: int) -> np.ndarray | None:
    """Every ranking of n modules, (n!, n); None past EXACT_UP_TO."""
    return np.array(list(permutations(range(n))), dtype=np.int8) if n <= EXACT_UP_TO else None


def permutation_p(observed: list[float], nulls: list[np.ndarray | None], draw=None) -> tuple[float, bool]:
    """P(the sum over seeds of independent draws from each seed's ``nulls`` >= the sum of ``observed``), and
    whether it is exact. A null is the metric of every ranking of that seed's modules (higher is better;
    negate a lower-is-better one); ``draw(seed index, rng, count)`` gives Monte Carlo rankings' metrics
    where a null is None or the combination grows past EXACT_LIMIT."""
    target = sum(observed) - TOLERANCE
    if all(null is not None for null in nulls):
        sums, weights = np.zeros(1), np.ones(1)
        for null in nulls[:-1]:
            values, counts = np.unique(np.round(null, 9), return_counts=True)
            if len(sums) * len(values) > EXACT_LIMIT:
                break
            sums, inverse = np.unique(np.round(sums[:, None] + values[None, :], 9).ravel(), return_inverse=True)
            weights = np.bincount(inverse, weights=(weights[:, None] * counts[None, :]).ravel())
        else:
            last = np.sort(nulls[-1])
            at_least = len(last) - np.searchsorted(last, target - sums, side="left")
            return float(weights @ at_least / prod(len(null) for null in nulls)), True
    rng = np.random.default_rng(0)
    draws = sum(draw(index, rng, MONTE_CARLO) for index in range(len(nulls)))
    return float((1 + np.sum(draws >= target)) / (1 + MONTE_CARLO)), False


def selection_section(study, root: Path) -> str:
    """The report's selection section: every <root>/selection/<target>.json that `select --bank PLAN` wrote."""
    tables = [_table(study, json.loads(path.read_text()), regime)
              for path in sorted((root / "selection").glob("*.json"))
              for regime in study.plan["regimes"]]
    tables = [table for table in tables if table]
    if not tables:
        return ""
    return "\n\n".join(["## Selecting an intermediate: proxies against the grid",
                        "Each seed's intermediates ranked by each proxy of `adapterxfer select` (scores of that "
                        "seed's modules), against what their arms scored on the target (that seed's arm). **As the "
                        "literature scores it** (ESM-LogME's evaluation code; ETT), on absolute scores: NDCG over "
                        "the whole ranking with gains 2^(100 x score) - 1, x 100; Regret@k = (best score - best "
                        "score in the proxy's top k) / best score x 100; Spearman's rho. p: exact permutation "
                        "p-value against a uniformly random ranking (one-sided: the share of independent random "
                        "rankings of each seed's modules whose mean over seeds is at least as good; \"MC\": Monte "
                        "Carlo). **Gain-relative** (this project's first definition, not comparable with published "
                        "figures): NDCG@3 with relevance each gain over the baseline above the worst "
                        "intermediate's; Regret@k divided by the best gain (n/a: no intermediate gains). Mean over "
                        "seeds [95% t interval over seeds]. Random: the exact expectation under a uniformly random "
                        "ranking.", *tables])


def _table(study, result: dict, regime: str) -> str:
    target = result["target"]
    per_seed = _seed_scores(study, result, regime)
    if not per_seed:
        return ""
    langs = list(next(iter(per_seed.values()))[1])
    proxies = [name for name, info in result["proxies"].items() if not info["not_applicable"] and name in PROXIES]
    scores = {(seed, lang, name): _scores(result, modules, lang, name)
              for seed, (modules, _, _) in per_seed.items() for lang in langs for name in proxies}
    lines = [f"### {target} ({regime}): {len(next(iter(per_seed.values()))[0])} intermediates, "
             f"{len(per_seed)} seed(s)", "", "As the literature scores it (absolute scores, x 100 but Spearman):", "",
             "| language | proxy | " + " | ".join(f"{name} | p" for name in LITERATURE) + " |",
             "|---|---|" + "---|---:|" * len(LITERATURE)]
    nulls = _Nulls(per_seed)
    for lang in langs:
        for name in proxies:
            cells = []
            for metric in LITERATURE:
                values = {seed: metrics(scores[seed, lang, name], values[lang], base[lang])[metric]
                          for seed, (_, values, base) in per_seed.items()}
                cells += [_cell(values), nulls.p_value(metric, lang, values)]
            lines.append(f"| {lang} | {name} | " + " | ".join(cells) + " |")
        expected = {seed: random_metrics(values[lang], base[lang]) for seed, (_, values, base) in per_seed.items()}
        cells = [cell for metric in LITERATURE for cell in (_cell({s: e[metric] for s, e in expected.items()}), "")]
        lines.append(f"| {lang} | {RANDOM} | " + " | ".join(cells) + " |")
    lines += ["", f"Gain-relative ({AVERAGE}; this project's first definition, not comparable with published "
                  "figures):", "", "| proxy | " + " | ".join(GAIN_RELATIVE) + " |",
              "|---|" + "---|" * len(GAIN_RELATIVE)]
    for name in [*proxies, RANDOM]:
        values = {seed: (random_metrics(values[AVERAGE], base[AVERAGE], GAIN_RELATIVE) if name == RANDOM else
                         metrics(scores[seed, AVERAGE, name], values[AVERAGE], base[AVERAGE], GAIN_RELATIVE))
                  for seed, (_, values, base) in per_seed.items()}
        lines.append(f"| {name} | " + " | ".join(_cell({seed: v[metric] for seed, v in values.items()})
                                                  for metric in GAIN_RELATIVE) + " |")
    lines += ["", _compute(study, result, regime, proxies, per_seed)]
    if result["unlabelled_target_text"]:
        lines.append("The proxies read unlabelled target-language text: not strictly zero-shot selection.")
    return "\n".join(lines)


class _Nulls:
    """Each metric of every ranking of each seed's modules (computed once, shared by the proxies)."""

    def __init__(self, per_seed: dict):
        self.per_seed, self.cache = per_seed, {}

    def _metric(self, seed: int, lang: str, metric: str, orders: np.ndarray) -> np.ndarray:
        _, values, base = self.per_seed[seed]
        function, _, higher = LITERATURE[metric]
        out = function(values[lang], values[lang] - base[lang], orders)
        return out if higher else -out

    def p_value(self, metric: str, lang: str, observed: dict[int, float | None]) -> str:
        seeds = [seed for seed, value in observed.items() if value is not None]
        if not seeds:
            return ""
        for seed in seeds:
            if (seed, lang, metric) not in self.cache:
                orders = all_rankings(len(self.per_seed[seed][0]))
                self.cache[seed, lang, metric] = None if orders is None else self._metric(seed, lang, metric, orders)
        sign = 1 if LITERATURE[metric][2] else -1
        p, exact = permutation_p(
            [sign * observed[seed] for seed in seeds], [self.cache[seed, lang, metric] for seed in seeds],
            lambda index, rng, count: self._metric(seeds[index], lang, metric, rng.permuted(
                np.tile(np.arange(len(self.per_seed[seeds[index]][0])), (count, 1)), axis=1)))
        return f"{p:.3g}" + ("" if exact else " (MC)")


def _seed_scores(study, result: dict, regime: str) -> dict[int, tuple[list[str], dict, dict]]:
    """seed -> (its modules in the bank, {language or AVERAGE: each module's arm's score}, {language or AVERAGE:
    the baseline's score}) where the seed has scores for two or more of the bank's intermediates."""
    target = result["target"]
    baseline = study.graph.arm(f"{regime}/{BASELINE}", target)
    out = {}
    for seed in study.plan["seeds"]:
        base = baseline and study.seeds(baseline).get(seed)
        pairs = [(module["name"], study.seeds(arm)[seed]) for module in result["modules"]
                 if module["seed"] == seed and module["regime"] == regime
                 and module.get("manifest_sha256") == study.runs.get(module["name"], {}).get("output_sha256")
                 for arm in [study.graph.arm(f"{regime}/{module['task']}", target)]
                 if arm is not None and seed in study.seeds(arm)]
        if base is None or len(pairs) < 2:
            continue
        langs = study.zero_shot_langs(target, base)
        values = {lang: np.array([_headline(study, key, lang) for _, key in pairs]) for lang in langs}
        baselines = {lang: _headline(study, base, lang) for lang in langs}
        out[seed] = ([name for name, _ in pairs], {AVERAGE: np.mean(list(values.values()), axis=0), **values},
                     {AVERAGE: float(np.mean(list(baselines.values()))), **baselines})
    return out


def _headline(study, key: str, lang: str) -> float:
    return float(next(iter(study.scores(key)[lang].values())))


def _scores(result: dict, modules: list[str], lang: str, proxy: str) -> np.ndarray:
    """The proxy's scores of ``modules`` in the ranking for ``lang`` (the target's for the average or where
    `select` ranked no such language)."""
    task = get_task(result["target"])
    same = lambda key: key != TARGET and lang != AVERAGE and task.resolve_lang(key) == task.resolve_lang(lang)
    ranking = result["rankings"][next((key for key in result["rankings"] if same(key)), TARGET)]
    return np.array([ranking[module][proxy]["score"] for module in modules])


def _cell(values: dict[int, float | None]) -> str:
    defined = {seed: value for seed, value in values.items() if value is not None}
    if not defined:
        return "n/a"
    interval = seed_interval(defined)
    return f"{interval.mean:.3f} [{interval.low:.3f}, {interval.high:.3f}]" + (
        f" ({len(defined)} of {len(values)} seeds)" if len(defined) < len(values) else "")


def _compute(study, result: dict, regime: str, proxies: list[str], per_seed: dict) -> str:
    """Each proxy's seconds over the ranked modules against the grid's training seconds for this target."""
    modules = {name for names, _, _ in per_seed.values() for name in names}
    ranking = result["rankings"][TARGET]
    grid = sum(run["train_seconds"] or 0 for run in study.runs.values() if run["action"] == "train"
               and run["regime"] == regime and run["role"] in ("intermediate", "stage", "target")
               and run["target"] in (None, result["target"]))
    spent = {name: sum(ranking[module][name]["seconds"] for module in modules) for name in proxies}
    return ("Compute: " + "; ".join(f"{name} {seconds:.1f} s ({seconds / grid:.1%} of the grid)" if grid else
                                    f"{name} {seconds:.1f} s" for name, seconds in spent.items())
            + f"; the grid trained {grid:.0f} s (its intermediates and this target's phases; evaluation time not "
              "recorded). A proxy's seconds include the features it reads (logme and probe share theirs).")
