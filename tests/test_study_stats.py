"""The study statistics on hand-built predictions: exact differences, intervals, clusters, Holm, MDE,
the chance check of intermediates and seen / unseen averages."""

import math

import pytest
from scipy import stats as scipy_stats

from adapterxfer.errors import UserError
from adapterxfer.metrics import METRICS
from adapterxfer.study.baselines import accuracy_of, choice_overlaps, pick_by_overlap
from adapterxfer.study.coverage import CASES, SETTINGS, coverage
from adapterxfer.study.stats import (by_seen, cluster_ids, clustered_differences,
                                     coarser_level, holm, learned, metric_value, minimum_detectable_effect,
                                     item_groups, paired_difference, widest)
from adapterxfer.tasks import get_task
from adapterxfer.tasks.spec import TaskSpec

REFS = ["1:1:1", "1:1:2", "1:2:1", "2:1:1", "2:1:2", "3:4:5"]  # books 1, 2, 3; chapters 1:1, 1:2, 2:1, 3:4


def rows(correct: list[bool], refs=REFS) -> list[dict]:
    return [{"ref": ref, "label": 1, "prediction": 1 if ok else 0} for ref, ok in zip(refs, correct)]


def arm(*per_seed: list[bool], langs=("fr", "de"), refs=REFS) -> dict:
    """{seed: {lang: rows}}: the same correctness in every language."""
    return {seed: {lang: rows(correct, refs) for lang in langs} for seed, correct in enumerate(per_seed, 1)}


ITEM_CASES = {
    "accuracy": ([1, 0, 2, 2], [1, 1, 2, 0]),
    "accuracy@1": ([3, 1], [3, 2]),
    "squad": (["the red bicycle", "Paris", "", "a kettle"], [["red bicycle"], ["paris", "Lyon"], ["x"], ["kettle whistled"]]),
    "mlqa": (["der Hund", "Tee"], [["Hund"], ["Kaffee"]]),
}


@pytest.mark.parametrize("metric", [name for name, metric in METRICS.items() if metric.per_item])
def test_item_mean_metrics_are_the_mean_of_their_items(metric):
    predictions, gold = ITEM_CASES[metric]
    lang = "de" if metric == "mlqa" else "en"
    items = [{"ref": None, "label": g, "prediction": p} for p, g in zip(predictions, gold)]
    whole = metric_value(metric, items, lang)
    assert whole == pytest.approx(sum(metric_value(metric, [item], lang) for item in items) / len(items))
    each = [METRICS[metric].per_item(item["prediction"], item["label"], lang) for item in items]
    assert each == [metric_value(metric, [item], lang) for item in items]
    assert whole == next(iter(METRICS[metric](predictions, gold, lang).values()))


def test_seqeval_f1_is_not_a_mean_over_sentences_so_it_is_recomputed():
    gold = [["B-PER", "O"], ["B-LOC", "I-LOC", "O"]]
    predicted = [["B-PER", "O"], ["O", "O", "O"]]
    items = [{"ref": None, "label": g, "prediction": p} for p, g in zip(predicted, gold)]
    per_sentence = [metric_value("seqeval", [item], "en") for item in items]
    assert metric_value("seqeval", items, "en") != pytest.approx(sum(per_sentence) / 2)  # F1 2/3 vs (1 + 0) / 2
    assert METRICS["seqeval"].per_item is None
    same = paired_difference({1: {"de": items}}, {1: {"de": items}}, ["de"], "seqeval", "item")
    assert (same.mean, same.low, same.high, same.p) == (0.0, 0.0, 0.0, 1.0)
    perfect = [{**item, "prediction": item["label"]} for item in items]
    best = paired_difference({1: {"de": perfect}}, {1: {"de": items}}, ["de"], "seqeval", "item")
    assert best.mean == pytest.approx(metric_value("seqeval", perfect, "de") - metric_value("seqeval", items, "de"))


def test_cluster_ids_by_level():
    assert cluster_ids(REFS, "book") == ["1", "1", "1", "2", "2", "3"]
    assert cluster_ids(REFS, "chapter") == ["1:1", "1:1", "1:2", "2:1", "2:1", "3:4"]
    assert cluster_ids(REFS, "item") == REFS
    assert cluster_ids([None, None], "book") == ["#0", "#1"]  # no ref: every item is its own cluster
    with pytest.raises(UserError, match="cluster level 'book' needs verses refs book:chapter:verse, got ref 'q17'"):
        cluster_ids(["q17"], "book")


def test_a_sure_difference_has_a_point_interval():
    run, versus = arm([True] * 6, [True] * 6), arm([False] * 6, [False] * 6)
    difference = paired_difference(run, versus, ["fr", "de"], "accuracy", "book")
    assert (difference.seeds, difference.per_seed, difference.mean, difference.sd) == ((1, 2), (1.0, 1.0), 1.0, 0.0)
    assert (difference.low, difference.high, difference.p, difference.se, difference.clusters) == (1.0, 1.0, 0.0, 0.0, 3)
    same = paired_difference(run, run, ["fr", "de"], "accuracy", "book")
    assert (same.mean, same.low, same.high, same.p) == (0.0, 0.0, 0.0, 1.0)


def test_seeds_enter_the_mean_and_the_sd():
    """Seed 1: run right on 4 of 6 items more than versus; seed 2: on 2 fewer. Mean 1/6, sd of (4/6, -2/6)."""
    run = arm([True] * 4 + [False] * 2, [False] * 6)
    versus = arm([False] * 6, [True] * 2 + [False] * 4)
    difference = paired_difference(run, versus, ["fr", "de"], "accuracy", "item")
    assert difference.per_seed == pytest.approx((4 / 6, -2 / 6))
    assert difference.mean == pytest.approx(1 / 6) and difference.sd == pytest.approx(math.sqrt(2) / 2)
    assert difference.low < 0 < difference.high  # two seeds that disagree leave the sign open


def test_clustered_errors_widen_the_interval():
    """Errors that follow the book: resampling books, not verses, shows how little 3 books tell."""
    refs = [f"{book}:1:{verse}" for book in (1, 2, 3) for verse in range(1, 11)]
    run = arm([book != 3 for book in (1, 2, 3) for _ in range(10)], refs=refs)
    versus = arm([book == 1 for book in (1, 2, 3) for _ in range(10)], refs=refs)
    by_item = paired_difference(run, versus, ["fr", "de"], "accuracy", "item")
    by_book = paired_difference(run, versus, ["fr", "de"], "accuracy", "book")
    assert by_item.mean == by_book.mean == pytest.approx(1 / 3)
    assert (by_item.clusters, by_book.clusters) == (30, 3)
    # per-book differences 0, 1, 0: se = their sd / sqrt(3), on 3 - 1 degrees of freedom
    assert (by_book.se, by_book.df) == (pytest.approx(1 / 3), pytest.approx(2))
    assert by_book.low == pytest.approx(1 / 3 - scipy_stats.t.ppf(0.975, 2) / 3)
    # 30 independent verses: the usual se of a mean, sd / sqrt(30), on 29 degrees of freedom
    assert (by_item.se, by_item.df) == (pytest.approx(math.sqrt(60 / 261 / 30)), pytest.approx(29))
    assert by_item.low > 0.1


def test_languages_with_their_own_items_are_resampled_apart():
    """No refs (XTREME): each language's items are resampled on their own, item by item."""
    run = {1: {"de": rows([True, True, False], [None] * 3), "ar": rows([True], [None])}}
    versus = {1: {"de": rows([False, True, False], [None] * 3), "ar": rows([False], [None])}}
    difference = paired_difference(run, versus, ["de", "ar"], "accuracy", "item")
    assert difference.clusters == 4 and difference.mean == pytest.approx((1 / 3 + 1) / 2)


def test_translations_of_one_item_are_one_cluster():
    """Parallel languages (the same refs): each item counts once, deleted from every language at once."""
    run, versus = arm([True] * 3 + [False] * 3), arm([False] * 6)
    together = paired_difference(run, versus, ["fr", "de"], "accuracy", "item")
    assert together.clusters == 6 and together.df == pytest.approx(5)
    # fr and de err alike on each item: the se is that of one language's 6 items, not of 12 independent ones
    assert together.se == pytest.approx(math.sqrt(0.3 / 6))
    independent = {1: {lang: rows([True] * 3 + [False] * 3, [None] * 6) for lang in ("fr", "de")}}
    alone = paired_difference(independent, {1: {lang: rows([False] * 6, [None] * 6) for lang in ("fr", "de")}},
                              ["fr", "de"], "accuracy", "item")
    # half the variance of one language, times the jackknife's (K - 1) / K * n / (n - 1) over two strata
    assert alone.clusters == 12 and alone.se == pytest.approx(math.sqrt(0.3 / 6 / 2 * 11 / 12 * 6 / 5))


def test_different_test_items_are_refused():
    other = arm([True] * 6, refs=list(reversed(REFS)))
    with pytest.raises(UserError, match="seed 1, language fr: the two arms were scored on different test items"):
        paired_difference(arm([True] * 6), other, ["fr"], "accuracy", "item")


def test_holm_adjusts_in_step_down_order():
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])
    assert holm([]) == []


def test_minimum_detectable_effect_at_80_percent_power_uses_t():
    assert minimum_detectable_effect(0.01, 0.05, 0.8) == pytest.approx((1.959964 + 0.841621) * 0.01, rel=1e-6)
    assert minimum_detectable_effect(0.01, 0.05, 0.8, df=2) == pytest.approx((4.302653 + 1.060660) * 0.01, rel=1e-6)
    assert minimum_detectable_effect(0.01, 0.025, 0.8) > minimum_detectable_effect(0.01, 0.05, 0.8)


@pytest.mark.parametrize("setting", SETTINGS)
def test_intervals_cover_a_true_difference_95_percent_of_the_time(setting):
    """800 simulated studies per setting and seed count, through paired_difference itself: the 95%
    interval covers the true difference 0 within Monte Carlo error (se 0.008), and p < 0.05 as often
    as it misses. The old crossed bootstrap covered 0.80 (3 seeds) where seeds dominate."""
    for seeds in (3, 5):
        result = coverage(SETTINGS[setting], seeds, studies=800, seed=1)
        assert 0.93 <= result["coverage"] <= 0.97, (seeds, result)
        assert result["rejection"] == pytest.approx(1 - result["coverage"])


def test_an_effect_above_the_resampled_level_needs_the_coarser_clustering():
    """The arms' difference varies by book (20 books of 4 chapters); resampling chapters misses it and
    under-covers, resampling books covers, and the wider of the two (what the report headlines) does too."""
    result = coverage(CASES["book-effect"], 6, studies=200, seed=1, levels=("chapter", "book"))
    assert result["chapter"]["coverage"] < 0.85
    assert result["book"]["coverage"] >= 0.93 and result["wider"]["coverage"] >= 0.93
    assert result["wider"]["width"] >= result["book"]["width"] > result["chapter"]["width"]


def test_adaptive_stopping_under_covers():
    """Keeping the smallest-sd of 4 configurations narrows the interval and it no longer covers 95%: only a
    confirmation on new seeds and held-out items restores it (nothing in the interval can)."""
    kept = coverage(SETTINGS["seed-dominated"], 6, studies=300, seed=1, keep_smallest_sd_of=4)
    fixed = coverage(SETTINGS["seed-dominated"], 6, studies=300, seed=1)
    assert kept["coverage"] < 0.92 <= fixed["coverage"]
    assert kept["width"] < 0.9 * fixed["width"]


def test_widest_picks_the_wider_interval():
    run = arm([True] * 3 + [False] * 3, [True] * 2 + [False] * 4)
    versus = arm([False] * 6, [False] * 5 + [True])
    levels = clustered_differences(run, versus, ["fr", "de"], "accuracy", ("item", "book"))
    assert set(levels) == {"item", "book"} and levels["book"].clusters == 3
    wider = max(levels.values(), key=lambda d: d.high - d.low)
    assert widest(levels) is wider and widest({"item": None}) is None


def test_the_next_coarser_level_of_verses_refs_and_none_for_others():
    assert (coarser_level("item", REFS), coarser_level("chapter", REFS), coarser_level("book", REFS)) == (
        "chapter", "book", None)
    assert coarser_level("item", [None, None]) is None  # XTREME without refs: no coarser level named
    assert coarser_level("item", ["xnli-0", "xnli-1"]) is None


def test_items_sharing_a_premise_are_one_cluster_a_level_above_the_item():
    """A stand-in for XNLI's test set (the data is unreachable here): each premise has three hypotheses."""
    refs = [f"xnli-{i}" for i in range(6)]
    rows = {lang: [{"text": f"{lang} premise {i // 3}", "text_pair": "h", "label": 0, "ref": ref}
                   for i, ref in enumerate(refs)] for lang in ("fr", "de")}
    task = TaskSpec(name="xnli-standin", kind="classification", role="target", description="stand-in",
                    languages=("en", "fr", "de"), read=lambda split, lang, limit, seed: rows[lang],
                    metric="accuracy", test_group=("premise", "text"))
    groups = item_groups(task, {"fr": refs, "de": refs})
    assert groups == {lang: dict(zip(refs, ["xnli-0"] * 3 + ["xnli-3"] * 3)) for lang in ("fr", "de")}
    run, versus = arm([True] * 3 + [False] * 3, refs=refs), arm([False] * 6, refs=refs)
    by_premise = paired_difference(run, versus, ["fr", "de"], "accuracy", "premise", groups=groups)
    by_item = paired_difference(run, versus, ["fr", "de"], "accuracy", "item")
    assert (by_premise.clusters, by_item.clusters) == (2, 6) and by_premise.mean == by_item.mean == 0.5
    assert item_groups(task, {"fr": refs[:4]}) is None  # not the evaluated items: no groups
    assert item_groups(get_task("verses-genre"), {"fr": refs}) is None  # the verses name theirs in the ref


def test_learned_means_above_chance_majority_word_overlap_and_step_0():
    """verses-next on the fixture corpus (42 dev items, 4 choices): a model right on every item learned;
    one that answers as it did before training did not, however high its score."""
    task = get_task("verses-next")
    dev = task.rows("dev", task.source_lang)
    gold = [row["label"] for row in dev]
    right = [{"ref": row["ref"], "label": g, "prediction": g} for row, g in zip(dev, gold)]
    first = [{**row, "prediction": 0} for row in right]
    perfect = learned("verses-next", {1: right, 2: right}, {1: first, 2: first})
    assert perfect.chance == 0.25 and perfect.learned is True
    assert (perfect.score.mean, perfect.score.low) == (1.0, 1.0)  # every seed and item right: a point
    assert set(perfect.versus) == {"majority", "word overlap", "step 0"}
    train = task.read("train", "en", 2000, 0)
    train_labels = [row["label"] for row in train]
    majority = max(set(train_labels), key=train_labels.count)
    most = max((True, False), key=lambda m: accuracy_of(pick_by_overlap(choice_overlaps(train), m), train_labels))
    overlap_rule = pick_by_overlap(choice_overlaps(dev), most)  # the choice overlapping the context most (or least)
    assert perfect.versus["word overlap"][0] == pytest.approx(accuracy_of(overlap_rule, gold))
    assert perfect.versus["majority"][0] == pytest.approx(gold.count(majority) / len(gold))
    assert perfect.versus["step 0"][0] == pytest.approx(gold.count(0) / len(gold))
    unchanged = learned("verses-next", {1: right}, {1: right})
    assert unchanged.versus["step 0"][1].mean == 0 and unchanged.learned is False


def test_a_pair_task_must_beat_the_word_overlap_rule():
    task = get_task("verses-xref")
    dev = task.rows("dev", task.source_lang)
    rows = [{"ref": row["ref"], "label": row["label"], "prediction": row["label"]} for row in dev]
    check = learned("verses-xref", {1: rows}, {1: [{**row, "prediction": 0} for row in rows]})
    assert set(check.versus) == {"majority", "word overlap", "step 0"} and check.chance == 0.5
    masked = get_task("verses-mlm")
    mlm = [{"ref": None, "label": [1, 1], "prediction": [1, 0]}] * 3
    no_chance = learned("verses-mlm", {1: mlm}, {1: mlm})
    assert (no_chance.chance, no_chance.score, list(no_chance.versus)) == (None, None, ["step 0"])
    assert masked.kind == "mlm" and not no_chance.learned


def test_averages_over_seen_and_unseen_languages():
    scores = {"de": 0.7, "sw": 0.1, "fr": 0.5}
    assert by_seen(scores, frozenset({"de", "en"})) == pytest.approx({"all": 1.3 / 3, "seen": 0.7, "unseen": 0.3})
    assert by_seen(scores, frozenset()) == pytest.approx({"all": 1.3 / 3})
    # verses scores are keyed by translation id: "de-s" is German, seen by verses-xref-multi
    translations = {"de-s": 0.7, "ko-n": 0.1, "fr-o": 0.5}
    seen = frozenset(get_task("verses-xref-multi").seen_languages)
    assert {"de", "fr"} <= seen and "ko" not in seen
    assert by_seen(translations, seen, get_task("verses-genre").language_of) == pytest.approx(
        {"all": 1.3 / 3, "seen": 0.6, "unseen": 0.1})


@pytest.mark.parametrize("metric, better, worse, gain", [
    ("bucc_f1", ["1\t2", "3\t4"], ["1\t2"], 1.0 - 2 / 3),
    ("mrr@20", ["Q1"], ["Q9", "Q1"], 0.5)])
def test_mining_and_ranking_arms_are_compared(metric, better, worse, gain):
    """BUCC and Mewsli-X rows (lists of mined lines / ranked ids) go through the contrast."""
    gold = ["1\t2", "3\t4"] if metric == "bucc_f1" else ["Q1"]
    rows = lambda prediction: {1: {"de": [{"ref": "q1", "label": gold, "prediction": prediction}]}}
    difference = paired_difference(rows(better), rows(worse), ["de"], metric, "item")
    assert difference.per_seed == (pytest.approx(gain),)
