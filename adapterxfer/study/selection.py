"""How well each proxy of `adapterxfer select` picks intermediates, against the gains the study's grid measured.

Per target, regime and language (and the zero-shot average), each seed's intermediates are ranked by the
proxy's scores of that seed's modules and set against their measured gains (the seed's arm minus the seed's
baseline, headline metric):

- NDCG@3: the discounted gain of the proxy's top 3 over that of the best 3, relevance being each gain above
  the worst intermediate's (so the worst counts 0); n/a where all gains are equal;
- Regret@k (ETT, Poth et al. 2021; ESM-LogME): (best gain - best gain within the proxy's top k) / best gain;
  n/a where no intermediate gains (best gain <= 0);
- Spearman's rho of the proxy's scores and the gains.

Each is the mean over seeds with a t interval over seeds (stats.seed_interval). The random baseline is the
expected value of each metric under a uniformly random ranking, in closed form (rho: 0). Ties among a
proxy's scores keep the bank's order. A module counts only where the manifest hash `select` recorded is the
one of the study's current run of that phase (a module retrained since was ranked as another one).
"""

from __future__ import annotations

import json
from math import comb
from pathlib import Path

import numpy as np
from scipy.stats import spearmanr

from ..proxies import PROXIES
from ..selection import TARGET
from ..tasks import get_task
from .phases import BASELINE
from .stats import seed_interval

K = 3
METRICS = ("NDCG@3", "Regret@1", "Regret@3", "Spearman")
RANDOM = "random (expected)"
AVERAGE = "zero-shot avg"


def _discounts(k: int) -> np.ndarray:
    return 1 / np.log2(np.arange(2, k + 2))


def ndcg(scores: np.ndarray, gains: np.ndarray, k: int = K) -> float | None:
    relevance = gains - gains.min()
    ideal = float(np.sort(relevance)[::-1][:k] @ _discounts(min(k, len(gains))))
    if ideal == 0:
        return None
    top = np.argsort(-scores, kind="stable")[:k]
    return float(relevance[top] @ _discounts(len(top))) / ideal


def regret(scores: np.ndarray, gains: np.ndarray, k: int) -> float | None:
    best = float(gains.max())
    if best <= 0:
        return None
    return (best - float(gains[np.argsort(-scores, kind="stable")[:k]].max())) / best


def spearman(scores: np.ndarray, gains: np.ndarray) -> float | None:
    if np.ptp(scores) == 0 or np.ptp(gains) == 0:
        return None
    return float(spearmanr(scores, gains).statistic)


def metrics(scores: np.ndarray, gains: np.ndarray) -> dict[str, float | None]:
    return {"NDCG@3": ndcg(scores, gains), "Regret@1": regret(scores, gains, 1), "Regret@3": regret(scores, gains, 3),
            "Spearman": spearman(scores, gains)}


def random_metrics(gains: np.ndarray) -> dict[str, float | None]:
    """Each metric's expectation over the uniformly random rankings of ``gains``, exactly."""
    n, relevance = len(gains), gains - gains.min()
    ideal = float(np.sort(relevance)[::-1][:K] @ _discounts(min(K, n)))
    ordered = np.sort(gains)[::-1]

    def expected_regret(k: int) -> float | None:
        if ordered[0] <= 0:
            return None
        k = min(k, n)  # the best of a random k-subset is the j-th largest with probability C(n-j, k-1) / C(n, k)
        best = sum(ordered[j - 1] * comb(n - j, k - 1) for j in range(1, n - k + 2)) / comb(n, k)
        return float((ordered[0] - best) / ordered[0])

    return {"NDCG@3": float(relevance.mean() * _discounts(min(K, n)).sum()) / ideal if ideal else None,
            "Regret@1": expected_regret(1), "Regret@3": expected_regret(3),
            "Spearman": 0.0 if np.ptp(gains) else None}


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
                        "seed's modules), against their measured gains over the baseline (that seed's arm minus "
                        "its baseline). NDCG@3: relevance is each gain above the worst intermediate's; Regret@k: "
                        "(best gain - best gain in the proxy's top k) / best gain (n/a: no intermediate gains); "
                        "Spearman's rho of scores and gains. Mean over seeds [95% t interval over seeds]. Random: "
                        "the exact expectation under a uniformly random ranking.", *tables])


def _table(study, result: dict, regime: str) -> str:
    target = result["target"]
    per_seed = _seed_gains(study, result, regime)
    if not per_seed:
        return ""
    langs = list(next(iter(per_seed.values()))[1])
    proxies = [name for name, info in result["proxies"].items() if not info["not_applicable"] and name in PROXIES]
    lines = [f"### {target} ({regime}): {len(next(iter(per_seed.values()))[0])} intermediates, "
             f"{len(per_seed)} seed(s)", "",
             "| language | proxy | " + " | ".join(METRICS) + " |", "|---|---|" + "---|" * len(METRICS)]
    for lang in langs:
        for name in [*proxies, RANDOM]:
            values = {seed: (random_metrics(gains[lang]) if name == RANDOM else
                             metrics(_scores(result, modules, lang, name), gains[lang]))
                      for seed, (modules, gains) in per_seed.items()}
            lines.append(f"| {lang} | {name} | " + " | ".join(_cell(values, metric) for metric in METRICS) + " |")
    lines += ["", _compute(study, result, regime, proxies, per_seed)]
    if result["unlabelled_target_text"]:
        lines.append("The proxies read unlabelled target-language text: not strictly zero-shot selection.")
    return "\n".join(lines)


def _seed_gains(study, result: dict, regime: str) -> dict[int, tuple[list[str], dict[str, np.ndarray]]]:
    """seed -> (its modules in the bank, {language or AVERAGE: the gain of each}) where the seed has a
    measured gain for two or more of the bank's intermediates."""
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
        gains = {lang: np.array([_headline(study, key, lang) - _headline(study, base, lang) for _, key in pairs])
                 for lang in langs}
        out[seed] = ([name for name, _ in pairs], {AVERAGE: np.mean(list(gains.values()), axis=0), **gains})
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


def _cell(values: dict[int, dict], metric: str) -> str:
    defined = {seed: v[metric] for seed, v in values.items() if v[metric] is not None}
    if not defined:
        return "n/a"
    interval = seed_interval(defined)
    return f"{interval.mean:.3f} [{interval.low:.3f}, {interval.high:.3f}]" + (
        f" ({len(defined)} of {len(values)} seeds)" if len(defined) < len(values) else "")


def _compute(study, result: dict, regime: str, proxies: list[str], per_seed: dict) -> str:
    """Each proxy's seconds over the ranked modules against the grid's training seconds for this target."""
    modules = {name for names, _ in per_seed.values() for name in names}
    ranking = result["rankings"][TARGET]
    grid = sum(run["train_seconds"] or 0 for run in study.runs.values() if run["action"] == "train"
               and run["regime"] == regime and run["role"] in ("intermediate", "stage", "target")
               and run["target"] in (None, result["target"]))
    spent = {name: sum(ranking[module][name]["seconds"] for module in modules) for name in proxies}
    return ("Compute: " + "; ".join(f"{name} {seconds:.1f} s ({seconds / grid:.1%} of the grid)" if grid else
                                    f"{name} {seconds:.1f} s" for name, seconds in spent.items())
            + f"; the grid trained {grid:.0f} s (its intermediates and this target's phases; evaluation time not "
              "recorded). A proxy's seconds include the features it reads (logme and probe share theirs).")
