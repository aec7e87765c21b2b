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
from adapterxfer.study.selection import metrics, ndcg, random_metrics, regret, spearman
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
    assert code == 2 and "none of its 4 intermediate phases has an output" in err


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


def test_probe_and_semb_on_hand_made_features():
    train = Labelled(np.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9]]), np.array([0, 0, 1, 1]))
    dev = Labelled(np.array([[1.0, 0.2], [0.2, 1.0], [0.6, 0.5]]), np.array([0, 1, 1]))
    inputs = Inputs(train, dev, np.array([1.0, 0.0]), np.array([1.0, 1.0]))
    assert PROXIES["probe"].score(inputs) == pytest.approx(2 / 3)  # the third dev point leans to class 0
    assert PROXIES["semb"].score(inputs) == pytest.approx(1 / np.sqrt(2))


def test_rank_metrics_on_a_hand_computed_ranking():
    gains = np.array([0.10, 0.30, -0.10, 0.20])
    scores = np.array([4.0, 1.0, 3.0, 2.0])  # ranks the modules 0, 2, 3, 1
    relevance = [0.2, 0.0, 0.3]  # gains above the worst (-0.10) of the top 3
    ideal = [0.4, 0.3, 0.2]
    discounts = [1, 1 / np.log2(3), 0.5]
    assert ndcg(scores, gains) == pytest.approx(np.dot(relevance, discounts) / np.dot(ideal, discounts), abs=1e-12)
    assert regret(scores, gains, 1) == pytest.approx((0.30 - 0.10) / 0.30, abs=1e-12)
    assert regret(scores, gains, 3) == pytest.approx((0.30 - 0.20) / 0.30, abs=1e-12)
    assert spearman(scores, gains) == pytest.approx(-0.8, abs=1e-12)  # 1 - 6 * 18 / (4 * 15)
    assert regret(scores, -np.abs(gains), 1) is None  # no intermediate gains: regret is undefined


def test_random_baseline_is_the_mean_over_every_permutation():
    gains = np.array([0.10, 0.30, -0.10, 0.20, 0.05])
    every = [metrics(np.array(order, dtype=float), gains) for order in itertools.permutations(range(5))]
    expected = random_metrics(gains)
    for metric in ("NDCG@3", "Regret@1", "Regret@3", "Spearman"):
        assert expected[metric] == pytest.approx(np.mean([m[metric] for m in every]), abs=1e-12)
    assert expected["Regret@1"] == pytest.approx(np.mean([(0.3 - g) / 0.3 for g in gains]), abs=1e-12)


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
    assert "Compute: logme" in section and "of the grid" in section
