"""Simulated studies of two arms whose true difference is 0, to check that the intervals of
``stats.paired_difference`` cover it as often as they claim (tests/test_study_stats.py and
scripts/stats_coverage.py run it).

Every arm, seed, language and test item gets a probability of a right answer,
``0.6 + seed shift + item shift``: the seed shift (sd ``seed_sd``) is the arm's training randomness
and changes with the seed; the item shift (sd ``item_sd``) is how much the arm suits that item (or,
with ``chapters``, that chapter of verses, in every language) and is the same for every seed. The
answer is then drawn right or wrong. Both arms draw from the same distributions, so the expected
difference over seeds and items is exactly 0.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .stats import paired_difference

BASE_ACCURACY = 0.6


@dataclass(frozen=True)
class Setting:
    langs: int
    items: int  # per language (with chapters: verses per chapter)
    seed_sd: float
    item_sd: float
    chapters: int = 0  # > 0: items are verses of this many chapters, shared by all languages

    @property
    def level(self) -> str:
        return "chapter" if self.chapters else "item"


SETTINGS = {
    # XTREME-like: languages with their own items, an item noise well below the seed-to-seed one
    "seed-dominated": Setting(langs=2, items=60, seed_sd=0.08, item_sd=0.0),
    # items that suit one arm whatever the seed, no training randomness
    "item-dominated": Setting(langs=1, items=50, seed_sd=0.0, item_sd=0.2),
    # verses-like: parallel languages, items that err together by chapter, some seed noise
    "clustered": Setting(langs=2, items=3, seed_sd=0.01, item_sd=0.15, chapters=12),
}
# One seed: the interval is over test items, so it covers the truth of that seed's models, not 0.
ONE_SEED = Setting(langs=2, items=100, seed_sd=0.03, item_sd=0.0)


def simulated_arm(setting: Setting, seeds: int, rng: np.random.Generator) -> tuple[dict, np.ndarray]:
    """{seed: {lang: prediction rows}} of one arm (label 1, prediction 1 when right), and its seed shifts."""
    units = setting.chapters or setting.items
    per_item = setting.items if setting.chapters else 1
    refs = ([f"1:{chapter}:{verse}" for chapter in range(1, units + 1) for verse in range(1, per_item + 1)]
            if setting.chapters else [None] * setting.items)
    # parallel chapters share the item shift in every language; independent items draw their own
    shared = rng.normal(0, setting.item_sd, units) if setting.chapters else None
    item_shift = {lang: np.repeat(shared, per_item) if setting.chapters else rng.normal(0, setting.item_sd, units)
                  for lang in range(setting.langs)}
    arm, shifts = {}, rng.normal(0, setting.seed_sd, seeds)
    for seed, shift in enumerate(shifts, 1):
        arm[seed] = {}
        for lang in range(setting.langs):
            right = rng.random(len(refs)) < np.clip(BASE_ACCURACY + shift + item_shift[lang], 0.02, 0.98)
            arm[seed][f"l{lang}"] = [{"ref": ref, "label": 1, "prediction": ok}
                                     for ref, ok in zip(refs, right.astype(int).tolist())]
    return arm, shifts


def coverage(setting: Setting, seeds: int, studies: int, seed: int = 0, alpha: float = 0.05,
             difference=paired_difference) -> dict[str, float]:
    """Over ``studies`` simulated studies, with ``difference`` (``paired_difference`` or a function of its
    signature): how often the interval covers the true 0; how often it covers the difference of the
    drawn seeds' shifts (the truth for those seeds' models, up to the clipping of probabilities);
    how often p < alpha; and the mean width."""
    rng = np.random.default_rng(seed)
    langs = [f"l{lang}" for lang in range(setting.langs)]
    covered, covered_given_seeds, rejected, widths = 0, 0, 0, []
    for _ in range(studies):
        (run, run_shifts), (versus, versus_shifts) = simulated_arm(setting, seeds, rng), simulated_arm(setting, seeds, rng)
        result = difference(run, versus, langs, "accuracy", setting.level, alpha=alpha)
        covered += result.low <= 0 <= result.high
        covered_given_seeds += result.low <= float(np.mean(run_shifts - versus_shifts)) <= result.high
        rejected += result.p < alpha
        widths.append(result.high - result.low)
    return {"coverage": covered / studies, "coverage_given_seeds": covered_given_seeds / studies,
            "rejection": rejected / studies, "width": float(np.mean(widths))}
