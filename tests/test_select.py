"""`adapterxfer select` on tiny modules: proxies, LogME, the bank of mixed tasks and regimes, bad input."""

import itertools
import json
import shutil

import numpy as np
import pytest
from scipy.stats import multivariate_normal, t

from adapterxfer.cli import main
from adapterxfer.logme import _spectrum, evidence, fit, logme
from adapterxfer.proxies import PROXIES, Inputs, Labelled
from adapterxfer.study import selection
from adapterxfer.study.selection import (GAIN_RELATIVE, LITERATURE, all_rankings, metrics, permutation_p,
                                          random_metrics)
from adapterxfer.study.stats import seed_interval

STEPS = ["max_steps=2", "eval_every=2", "batch_size=4", "max_length=32", "precision=fp32", "lr=1e-2"]


@pytest.fixture(scope="module")
def bank(tmp_path_factory, tiny_backbone, fixture_home):
    """A bank of three intermediates: LoRA verses-xref and verses-next, full verses-xref above a frozen layer."""
    root = tmp_path_factory.mktemp("bank")
    trained = {"lora-xref": ["task=verses-xref", "regime=lora"], "lora-next": ["task=verses-next", "regime=lora"],
               "full-xref": ["task=verses-xref", "regime=full", "frozen_layers=1", "lr=1e-4"]}
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("ADAPTERXFER_HOME", str(fixture_home))
        for name, extra in trained.items():
            assert main(["train", f"backbone={tiny_backbone.path}", f"output_dir={root / name}", *STEPS, *extra,
                         "eval_langs=en"]) == 0
    return root


def select(capsys, *args) -> tuple[int, str, str]:
    code = main(["select", *args])
    out, err = capsys.readouterr()
    return code, out, err


def test_select_ranks_every_module_with_each_proxy(bank, tmp_path, capsys):
    out_file = tmp_path / "selection.json"
    code, out, _ = select(capsys, "--target", "verses-genre", "--langs", "fr,zh", "--bank", str(bank),
                          "--sample", "16", "--json", str(out_file))
    assert code == 0
    [result] = json.loads(out_file.read_text())
    assert sorted(m["name"] for m in result["modules"]) == ["full-xref", "lora-next", "lora-xref"]
    assert result["strictly_zero_shot"] is True and set(result["rankings"]) == {"target", "fr", "zh"}
    target = result["rankings"]["target"]
    for proxy in PROXIES:
        assert sorted(target[m][proxy]["rank"] for m in target) in ([1, 2, 3], [1, 1, 3], [1, 2, 2], [1, 1, 1])
    assert all(target[m][proxy]["seconds"] > 0 for m in target for proxy in ("logme", "probe"))
    # semb reads the intermediate's data on the backbone: both verses-xref modules score alike, and the
    # second reuses the first's embedding (no seconds of its own)
    assert target["lora-xref"]["semb"]["score"] == target["full-xref"]["semb"]["score"]
    assert [target[m]["semb"]["seconds"] > 0 for m in ("full-xref", "lora-next", "lora-xref")] == [True, True, False]
    assert result["rankings"]["fr"] == target  # without target-language text, the same ranking
    assert "fr: the same ranking as target" in out
    # 16 examples on tiny-xlmr's 32 dimensions: select says what that does to LogME
    assert result["logme"] == {"formula": "exact", "examples": 16, "dimensions": 32}
    assert "logme: 16 examples on 32 feature dimensions: the sample spans at most 16 of the 32 directions" in out
    assert "--logme-reference computes its formula" in out


def test_logme_reference_flag_uses_the_reference_formula_and_says_so(bank, tmp_path, capsys):
    files = {flag: tmp_path / f"{flag}.json" for flag in ("exact", "reference")}
    for flag, out_file in files.items():
        extra = ["--logme-reference"] if flag == "reference" else []
        code, out, _ = select(capsys, "--target", "verses-genre", "--langs", "fr", "--bank", str(bank),
                              "--sample", "16", "--json", str(out_file), *extra)
        assert code == 0
    exact, reference = (json.loads(files[flag].read_text())[0] for flag in ("exact", "reference"))
    assert reference["logme"]["formula"] == "reference"
    assert "logme: the reference formula (thuml/LogME" in out
    for module in ("full-xref", "lora-next", "lora-xref"):
        ours, theirs = (result["rankings"]["target"][module] for result in (exact, reference))
        assert theirs["logme"]["score"] != pytest.approx(ours["logme"]["score"], abs=1e-3)
        assert theirs["probe"]["score"] == ours["probe"]["score"]  # the other proxies are untouched


def test_unlabelled_target_text_ranks_each_language_and_says_so(bank, capsys, tmp_path):
    out_file = tmp_path / "selection.json"
    code, out, _ = select(capsys, "--target", "verses-retrieval", "--langs", "fr", "--bank", str(bank),
                          "--sample", "8", "--unlabelled-target-text", "--json", str(out_file))
    assert code == 0
    [result] = json.loads(out_file.read_text())
    assert result["strictly_zero_shot"] is False
    assert result["proxies"]["logme"]["not_applicable"].startswith("needs one class label")
    fr, target = result["rankings"]["fr"], result["rankings"]["target"]
    assert fr["lora-xref"]["logme"] == {"score": None, "rank": None, "seconds": 0.0}
    assert fr["lora-xref"]["semb"]["score"] != target["lora-xref"]["semb"]["score"]
    assert "not strictly zero-shot" in out and "logme: n/a" in out


def test_several_targets_share_one_backbone_and_the_intermediates_embeddings(bank, capsys, tmp_path):
    out_file = tmp_path / "selection.json"
    code, out, _ = select(capsys, "--target", "verses-genre,verses-retrieval", "--langs", "fr", "--bank", str(bank),
                          "--sample", "8", "--json", str(out_file))
    assert code == 0
    genre, retrieval = json.loads(out_file.read_text())
    assert (genre["target"], retrieval["target"]) == ("verses-genre", "verses-retrieval")
    assert "select verses-genre from" in out and "select verses-retrieval from" in out
    # the intermediates' mean embeddings were computed for the first target: the second pays its own text only
    first, second = genre["rankings"]["target"], retrieval["rankings"]["target"]
    assert all(first[m]["semb"]["seconds"] > 0 for m in ("full-xref", "lora-next"))
    assert second["full-xref"]["semb"]["seconds"] > 0  # the retrieval target's own text
    assert second["lora-next"]["semb"]["seconds"] == second["lora-xref"]["semb"]["seconds"] == 0.0


@pytest.mark.parametrize("args, message", [
    (["--target", "verses-nope"], "unknown task 'verses-nope'"),
    (["--target", "verses-genre", "--langs", "klingon"], "unknown language or translation 'klingon'"),
])
def test_bad_target_or_language_is_one_line(bank, capsys, args, message):
    code, out, err = select(capsys, *args, "--bank", str(bank))
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_empty_bank_is_one_line(tmp_path, capsys):
    code, _, err = select(capsys, "--target", "verses-genre", "--bank", str(tmp_path))
    assert code == 2 and err.strip() == (f"adapterxfer: error: bank {tmp_path}: holds no intermediate module "
                                         "(no folder with a manifest.json of an intermediate phase under it)")


def test_module_of_another_backbone_is_one_line(bank, tmp_path, capsys):
    other = tmp_path / "bank"
    for name in ("lora-xref", "lora-next"):
        shutil.copytree(bank / name, other / name)
    manifest = json.loads((other / "lora-next" / "manifest.json").read_text())
    manifest["backbone"]["weight_hash"] = "sha256:another"
    (other / "lora-next" / "manifest.json").write_text(json.dumps(manifest))
    code, _, err = select(capsys, "--target", "verses-genre", "--bank", str(other), "--sample", "8")
    assert code == 2 and "lora-next: a module trained on backbone" in err and "weight hashes differ" in err
    assert len(err.strip().splitlines()) == 1


def test_study_plan_without_outputs_is_one_line(tmp_path, capsys, tiny_backbone):
    from test_study import write_plan

    plan = write_plan(tmp_path, tiny_backbone)
    code, _, err = select(capsys, "--target", "verses-genre", "--bank", str(plan))
    assert code == 2 and "none of its 4 intermediate phases has a current output" in err


def test_logme_is_the_exact_gaussian_evidence_at_its_fitted_alpha_beta():
    rng = np.random.default_rng(0)
    for n, d in ((20, 5), (6, 10)):  # more examples than features, and fewer
        features, y = rng.normal(size=(n, d)), (rng.random(n) > 0.5).astype(float)
        fitted = fit(_spectrum(features), y)
        covariance = np.eye(n) / fitted.beta + features @ features.T / fitted.alpha
        exact = multivariate_normal(np.zeros(n), covariance).logpdf(y) / n
        assert fitted.evidence == pytest.approx(exact, abs=1e-12)


def test_logme_on_a_known_case_and_its_invariance_to_rotations():
    # one feature, y = x: evidence at alpha = beta = 1 is log N([1, -1]; 0, I + x x^T) / 2
    x, y = np.array([[1.0], [-1.0]]), np.array([1.0, -1.0])
    assert evidence(_spectrum(x), y, 1.0, 1.0) == pytest.approx(
        (-np.log(2 * np.pi) - 0.5 * np.log(3.0) - 0.5 * (2 / 3)) / 2, abs=1e-12)
    rng = np.random.default_rng(1)
    features, labels = rng.normal(size=(40, 6)), rng.integers(0, 3, 40)
    rotation, _ = np.linalg.qr(rng.normal(size=(6, 6)))
    assert logme(features @ rotation, labels) == pytest.approx(logme(features, labels), abs=1e-10)
    informative = np.hstack([np.eye(3)[labels], rng.normal(size=(40, 3)) * 0.1])
    assert logme(informative, labels) > logme(features, labels)


def _sine_features(n: int, d: int) -> tuple[np.ndarray, np.ndarray]:
    i, j = np.meshgrid(np.arange(n), np.arange(d), indexing="ij")
    return np.sin(0.7 * i * (j + 1) + j), np.arange(n) % 3


@pytest.mark.parametrize("n, d, theirs", [(12, 30, 2.1476123956545385), (40, 6, -0.5998204709081545)])
def test_logme_reference_formula_equals_thuml_logme(n, d, theirs):
    """``theirs``: thuml/LogME's ``LogME().fit(f, y)`` (commit 56551ca, numba's jit left out) on these features,
    computed outside this repository. With fewer examples than dimensions it is far from the exact evidence."""
    features, labels = _sine_features(n, d)
    assert logme(features, labels, reference=True) == pytest.approx(theirs, abs=1e-12)
    exact = logme(features, labels)
    if n < d:
        assert exact == pytest.approx(-0.5391590491715296, abs=1e-12)
    else:  # more examples than dimensions: the two agree up to the reference's last iteration
        assert exact == pytest.approx(theirs, abs=1e-9)


def test_probe_and_semb_on_hand_made_features():
    train = Labelled(np.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9]]), np.array([0, 0, 1, 1]))
    dev = Labelled(np.array([[1.0, 0.2], [0.2, 1.0], [0.6, 0.5]]), np.array([0, 1, 1]))
    inputs = Inputs(train, dev, np.array([1.0, 0.0]), np.array([1.0, 1.0]))
    assert PROXIES["probe"].score(inputs) == pytest.approx(2 / 3)  # the third dev point leans to class 0
    assert PROXIES["semb"].score(inputs) == pytest.approx(1 / np.sqrt(2))


VALUES = np.array([0.50, 0.70, 0.40, 0.60])  # the arms' absolute scores; the baseline scores 0.60
SCORES = np.array([4.0, 1.0, 3.0, 2.0])  # the proxy ranks the modules 0, 2, 3, 1


def test_literature_metrics_on_a_hand_computed_ranking():
    """ESM-LogME's definitions (hf-dataset-selector's compute_DCG / get_regret, x 100) from their formulas."""
    got = metrics(SCORES, VALUES, 0.60)
    gain = lambda module: 2 ** (100 * VALUES[module]) - 1
    dcg = gain(0) + gain(2) / np.log2(3) + gain(3) / np.log2(4) + gain(1) / np.log2(5)
    ideal = gain(1) + gain(3) / np.log2(3) + gain(0) / np.log2(4) + gain(2) / np.log2(5)
    assert got["NDCG"] == pytest.approx(100 * dcg / ideal, rel=1e-12)
    assert got["Regret@1"] == pytest.approx(100 * (0.70 - 0.50) / 0.70, abs=1e-12)
    assert got["Regret@3"] == pytest.approx(100 * (0.70 - 0.60) / 0.70, abs=1e-12)
    assert got["Spearman"] == pytest.approx(-0.8, abs=1e-12)  # 1 - 6 * 18 / (4 * 15)
    assert metrics(np.ones(4), VALUES, 0.60)["Spearman"] is None  # a proxy that cannot tell the modules apart


def test_gain_relative_metrics_on_a_hand_computed_ranking():
    got = metrics(SCORES, VALUES, 0.60, GAIN_RELATIVE)  # gains -0.1, +0.1, -0.2, 0
    relevance, ideal, discounts = [0.1, 0.0, 0.2], [0.3, 0.2, 0.1], [1, 1 / np.log2(3), 0.5]
    assert got["NDCG@3"] == pytest.approx(np.dot(relevance, discounts) / np.dot(ideal, discounts), abs=1e-12)
    assert got["Regret@1"] == pytest.approx((0.1 - -0.1) / 0.1, abs=1e-12)
    assert got["Regret@3"] == pytest.approx((0.1 - 0.0) / 0.1, abs=1e-12)
    assert metrics(SCORES, VALUES, 0.80, GAIN_RELATIVE)["Regret@1"] is None  # no intermediate gains


@pytest.mark.parametrize("family", [LITERATURE, GAIN_RELATIVE], ids=["literature", "gain-relative"])
def test_random_baseline_is_the_mean_over_every_permutation(family):
    values = np.array([0.55, 0.75, 0.35, 0.65, 0.60])
    every = [metrics(np.array(order, dtype=float), values, 0.6, family) for order in itertools.permutations(range(5))]
    expected = random_metrics(values, 0.6, family)
    for metric in family:
        assert expected[metric] == pytest.approx(np.mean([m[metric] for m in every]), abs=1e-9)


def test_permutation_p_values_by_hand():
    """Three modules: of the 6 rankings, 2 put the best first, 1 is the ideal order; rho takes 1, 0.5 (twice),
    -0.5 (twice) and -1. Two seeds: independent rankings of each, 36 pairs."""
    values = np.array([0.9, 0.8, 0.7])
    orders = all_rankings(3)
    null = {name: function(values, values, orders) * (1 if higher else -1)
            for name, (function, _, higher) in LITERATURE.items()}
    assert permutation_p([0.0], [null["Regret@1"]]) == (pytest.approx(1 / 3), True)  # regret 0: the best first
    assert permutation_p([0.0, 0.0], [null["Regret@1"]] * 2) == (pytest.approx(1 / 9), True)
    assert permutation_p([100.0, 100.0], [null["NDCG"]] * 2) == (pytest.approx(1 / 36), True)
    assert permutation_p([0.5], [null["Spearman"]]) == (pytest.approx(1 / 2), True)
    # rho 1 and 0.5: the pairs summing to 1.5 or more are (1, 1), (1, 0.5) x 2 and (0.5, 1) x 2
    assert permutation_p([1.0, 0.5], [null["Spearman"]] * 2) == (pytest.approx(5 / 36), True)
    assert permutation_p([-1.0], [null["Spearman"]]) == (pytest.approx(1.0), True)


def test_permutation_p_of_a_perfect_proxy_over_eight_intermediates_is_one_in_8_factorial():
    values = np.linspace(0.4, 0.6, 8)
    orders = all_rankings(8)
    assert orders.shape == (40_320, 8)
    function, _, _ = LITERATURE["NDCG"]
    null = function(values, values, orders)
    p, exact = permutation_p([100.0], [null])
    assert exact and p == pytest.approx(1 / 40_320)


def test_permutation_p_falls_back_to_monte_carlo_and_says_so(monkeypatch):
    values = np.array([0.9, 0.8, 0.7, 0.6])
    function, _, _ = LITERATURE["Spearman"]
    null = function(values, values, all_rankings(4))
    exact, _ = permutation_p([0.8, 0.6, 0.4], [null] * 3)
    monkeypatch.setattr(selection, "EXACT_LIMIT", 10)
    draw = lambda index, rng, count: function(values, values, rng.permuted(np.tile(np.arange(4), (count, 1)), axis=1))
    p, is_exact = selection.permutation_p([0.8, 0.6, 0.4], [null] * 3, draw)
    assert not is_exact and p == pytest.approx(exact, abs=0.005)  # 100,000 draws: se about 0.001


def test_seed_interval_is_the_t_interval_over_seeds():
    interval = seed_interval({1: 0.2, 2: 0.4, 3: 0.6})
    half = t.ppf(0.975, 2) * 0.2 / np.sqrt(3)
    assert (interval.mean, interval.low, interval.high) == pytest.approx((0.4, 0.4 - half, 0.4 + half), abs=1e-12)
    assert (seed_interval({1: 0.3}).low, seed_interval({1: 0.3}).high) == (0.3, 0.3)


@pytest.mark.slow
def test_select_over_a_study_feeds_the_reports_selection_section(tmp_path, tiny_backbone, capsys):
    from test_study import write_plan

    plan = write_plan(tmp_path, tiny_backbone, intermediates=["verses-xref", "verses-next"], regimes=["lora"],
                      contrasts=[], clusters={})
    assert main(["study", "run", str(plan)]) == 0
    code, out, _ = select(capsys, "--target", "verses-genre", "--bank", str(plan), "--sample", "8")
    assert code == 0
    out = out[out.index("select verses-genre from"):]  # the table, after the study's own output
    stored = json.loads((tmp_path / "study" / "selection" / "verses-genre.json").read_text())
    assert sorted(m["seed"] for m in stored["modules"]) == [1, 1, 2, 2]
    # printed: one row per intermediate, the mean over its seeds' modules with their sd; a line for each of
    # the languages the plan scores (fr, zh), not for every language of the target
    target = stored["rankings"]["target"]
    for intermediate in ("lora/verses-xref", "lora/verses-next"):
        logme = [target[f"seed{seed}/{intermediate}"]["logme"]["score"] for seed in (1, 2)]
        [row] = [line for line in out.splitlines() if line.startswith(intermediate + " ")]
        assert row.split()[1] == "2" and f"{np.mean(logme):.4f} ±{np.std(logme, ddof=1):.4f} (" in row
    assert "seed1/" not in out
    assert [line.split(":")[0] for line in out.splitlines() if "the same ranking as target" in line] == ["fr", "zh"]
    assert main(["study", "report", str(plan)]) == 0
    report = (tmp_path / "study" / "report.md").read_text()
    section = report[report.index("## Selecting an intermediate"):]
    assert "### verses-genre (lora): 2 intermediates, 2 seed(s)" in section
    for row in ("| zero-shot avg | logme |", "| zero-shot avg | probe |", "| zero-shot avg | semb |",
                "| zero-shot avg | random (expected) |", "| fr | logme |"):
        assert row in section
    assert "| language | proxy | NDCG | p | Regret@1 | p | Regret@3 | p | Spearman | p |" in section
    assert "| proxy | NDCG@3 | Regret@1 | Regret@3 |" in section and "Gain-relative (zero-shot avg" in section
    # two modules a seed, two seeds: 4 ways to rank them; a p-value is a multiple of 1/4
    row = next(line for line in section.splitlines() if line.startswith("| zero-shot avg | logme |"))
    assert float(row.split(" | ")[3]) * 4 in (1.0, 2.0, 3.0, 4.0)
    assert "Compute: logme" in section and "of the grid" in section
    # each module ranked is named with its manifest's hash; one retrained since (its hash is not the study's run's
    # any more) is no longer joined to the gains: its seed keeps one intermediate, too few to rank
    from adapterxfer.artifacts import sha256_file

    assert all(module["manifest_sha256"] == sha256_file(tmp_path / "study" / module["name"] / "manifest.json")
               for module in stored["modules"])
    stored["modules"] = [module | {"manifest_sha256": "sha256:retrained"} if module["name"] == "seed2/lora/verses-next"
                         else module for module in stored["modules"]]
    (tmp_path / "study" / "selection" / "verses-genre.json").write_text(json.dumps(stored))
    assert main(["study", "report", str(plan)]) == 0
    assert "### verses-genre (lora): 2 intermediates, 1 seed(s)" in (tmp_path / "study" / "report.md").read_text()
