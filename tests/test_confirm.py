"""A study a lab can publish, on the tiny backbone and the fixture corpus: the report checks that the arms of
every contrast trained on the same items (study/matching.py), and a plan is explored on one share of the test
items, then confirmed once on the held-out share with new seeds (study/confirmation.py)."""

import json
import shutil
from pathlib import Path

import pytest
import yaml

from adapterxfer.cli import main
from adapterxfer.retrieval import BACKBONE_ENGLISH
from adapterxfer.shares import Share
from adapterxfer.study.confirmation import History, plan_hash
from adapterxfer.study.plan import CONFIRM, read_plan
from adapterxfer.study.report import one_prediction
from adapterxfer.study.results import FILE, Results

PLAN = {
    "description": "tiny stand-in of the demo: random tiny XLM-R on the fixture corpus",
    "seeds": [1, 2],
    "targets": ["verses-retrieval"],
    "intermediates": ["verses-xref-bi", "verses-xref-bi-multi"],
    "regimes": ["lora"],
    "clusters": {"verses-retrieval": "chapter"},
    "evaluation": {"langs": ["ar", "tr"], "queries": 20, "candidates": 40, "precision": "fp32"},
    "phase": {"max_steps": 4, "eval_every": 4, "batch_size": 8, "max_length": 48, "precision": "fp32",
              "group_by_length": True, "lr": 1.0e-3},
    "contrasts": [{"name": "multilingual", "run": "lora/verses-xref-bi-multi", "versus": "lora/verses-xref-bi",
                   "primary": True},
                  {"name": "english-vs-backbone", "run": "lora/verses-xref-bi", "versus": "lora/baseline"}],
    "statistics": {"effect": 0.02},
}


def run_study(folder: Path, backbone, **changes) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    plan = folder / "plan.yaml"
    plan.write_text(yaml.safe_dump({**PLAN, "backbone": str(backbone.path), "output": str(folder / "study"),
                                    **changes}))
    assert main(["study", "run", str(plan)]) == 0
    return folder / "study"


def contrast_cells(report: str) -> dict[str, list[str]]:
    """Contrast name -> the cells of its row in report.md's contrast table."""
    rows = report.split("## Contrasts")[1].split("\n## ")[0].splitlines()
    cells = [[cell.strip() for cell in row.strip("|").split("|")] for row in rows if row.startswith("| ")]
    return {row[0].removesuffix(" (primary)"): row for row in cells[1:]}


@pytest.fixture(scope="module")
def explored(tmp_path_factory, tiny_backbone, fixture_home) -> Path:
    """The plan run once without a confirmation block: every test item explored."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("ADAPTERXFER_HOME", str(fixture_home))
        return run_study(tmp_path_factory.mktemp("explored"), tiny_backbone)


@pytest.mark.slow
def test_the_report_says_when_arms_trained_on_the_same_items(explored):
    report = (explored / "report.md").read_text()
    cells = contrast_cells(report)
    assert "degenerate" not in report
    assert cells["multilingual"][-1] == "matched: same items, steps and batch, 2 seeds"
    assert cells["english-vs-backbone"][-1] == "versus trains nothing (the backbone); 2 seeds"
    side = report.split("## verses-retrieval: target-language side or English side")[1].split("\n## ")[0]
    assert [row.split(" | ")[0] for row in side.splitlines() if row.startswith("| lora/")] == [
        "| lora/verses-xref-bi (verses-xref-bi not learned)",
        "| lora/verses-xref-bi-multi (verses-xref-bi-multi not learned)"]  # 4 steps on a random tiny model
    matched = [row for row in report.splitlines() if row.startswith("| multilingual | ")]
    assert [row.split(" | ")[1:5] for row in matched] == [
        [seed, "verses-xref-bi-multi / verses-xref-bi", "same 32 items", "4 / 4"] for seed in ("1", "2")]


@pytest.mark.slow
def test_a_confirmation_of_items_the_exploration_scored_is_refused(explored, tmp_path, tiny_backbone, capsys):
    root = tmp_path / "study"
    shutil.copytree(explored, root)  # explored without a confirmation block: every test item
    plan = write_plan(tmp_path, tiny_backbone, confirmation=CONFIRMATION)
    capsys.readouterr()
    assert main(["study", "confirm", str(plan)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "the held-out share holds" in err and "the exploration already scored" in err
    assert not History(root).events("confirmation") and not predicted_refs(root, CONFIRM)


@pytest.mark.slow
def test_the_report_says_when_arms_trained_on_different_items(explored, tmp_path, tiny_backbone):
    """Half the steps in the multilingual arm: it draws the first 16 of the same 32 items. (On a copy of the
    explored study: the phases of that arm run again, the others are current.)"""
    shutil.copytree(explored, tmp_path / "study")
    root = run_study(tmp_path, tiny_backbone, task_phase={"verses-xref-bi-multi": {"max_steps": 2, "eval_every": 2}})
    cells = contrast_cells((root / "report.md").read_text())
    assert cells["multilingual"][-1] == (
        "MISMATCH: seed 1: 16 of 16 / 32 items shared; seed 1: steps 2 against 4; "
        "seed 2: 16 of 16 / 32 items shared; seed 2: steps 2 against 4")


CONFIRMATION = {"seeds": [3, 4], "held_out": 0.5, "by": "chapter"}


def write_plan(folder: Path, backbone, **changes) -> Path:
    plan = folder / "plan.yaml"
    plan.write_text(yaml.safe_dump({**PLAN, "backbone": str(backbone.path), "output": str(folder / "study"),
                                    **changes}))
    return plan


def predicted_refs(root: Path, prefix: str = "") -> dict[str, set]:
    """Phase key -> the refs of the test items it scored."""
    results = Results(root / FILE)
    return {key: {row["ref"] for rows in results.predictions(key).values() for row in rows}
            for key in results.runs() if key.startswith(prefix) and results.predictions(key)}


@pytest.mark.slow
def test_exploration_then_one_confirmation_on_held_out_items_and_new_seeds(tmp_path, tiny_backbone, capsys):
    plan = write_plan(tmp_path, tiny_backbone, confirmation=CONFIRMATION)
    root = tmp_path / "study"
    assert main(["study", "run", str(plan)]) == 0
    explore, confirm = Share("explore", 0.5, "chapter"), Share("confirm", 0.5, "chapter")
    explored = predicted_refs(root)
    assert len(explored) == 5 and all(len(refs) == 20 and all(map(explore.keeps, refs)) for refs in explored.values())
    report = (root / "report.md").read_text()
    assert "## Confirmation\n\nNot run yet: every figure above is exploration" in report
    assert "(1 look(s) at contrasts under 1 plan version(s) so far)" in report

    assert main(["study", "confirm", str(plan)]) == 0
    confirmed = predicted_refs(root, CONFIRM)
    assert sorted(confirmed) == [  # the primary contrast's arms alone: no backbone baseline
        f"confirm/seed{s}/lora/verses-retrieval/{arm}" for s in (3, 4) for arm in ("verses-xref-bi", "verses-xref-bi-multi")]
    assert all(len(refs) == 20 and all(map(confirm.keeps, refs)) for refs in confirmed.values())
    [record] = History(root).events("confirmation")
    assert (record["seeds"], record["held_out"], record["by"], record["label"]) == (
        [3, 4], 0.5, {"verses-retrieval": "chapter"}, "first")
    assert (record["looks_before"], record["plans_before"], record["plan_sha256"]) == (
        1, 1, plan_hash(read_plan(str(plan))))
    assert record["contrasts"] == [{"name": "multilingual", "target": "verses-retrieval",
                                    "run": "lora/verses-xref-bi-multi", "versus": "lora/verses-xref-bi"}]
    report = (root / "report.md").read_text()
    section = report.split("## Exploration and confirmation")[1].split("\n## ")[0]
    rows = [row for row in section.splitlines() if row.startswith("| multi")]
    assert [row.split(" | ")[1:4] for row in rows] == [["exploration", "1, 2", "2 zero-shot language(s) x 20 test items"],
                                                      ["confirmation", "3, 4", "2 zero-shot language(s) x 20 test items"]]
    assert "**Primary contrast, multilingual**, confirmed on held-out items and new seeds" in report
    assert "after 1 look(s) at test contrasts under 1 plan version(s)" in report

    capsys.readouterr()
    assert main(["study", "confirm", str(plan)]) == 0  # once: nothing trains, no second record
    out = capsys.readouterr().out
    assert "current" in out and len(History(root).events("confirmation")) == 1
    # the terminal ends with the primary contrast, confirmed first, as the report's header gives it
    assert out.splitlines()[-2:] == [line.replace("**", "") for line in report.splitlines()
                                     if line.startswith("**Primary contrast")]
    assert out.splitlines()[-2].startswith("Primary contrast, multilingual, confirmed on held-out items")

    changed = write_plan(tmp_path, tiny_backbone, confirmation=CONFIRMATION, statistics={"effect": 0.05})
    assert main(["study", "run", str(changed)]) == 2
    assert "the plan changed after its confirmation" in capsys.readouterr().err
    assert main(["study", "confirm", str(changed)]) == 2
    assert "--again REASON" in capsys.readouterr().err
    assert main(["study", "run", str(changed), "--plan-changed", "a larger effect of interest"]) == 0
    assert "**The plan changed after this confirmation**: " in (root / "report.md").read_text()
    assert History(root).events("plan change")[0]["reason"] == "a larger effect of interest"


def test_then_confirm_explores_then_confirms_in_one_command(tmp_path, tiny_backbone, capsys):
    """`study run --then-confirm` (make demo): the exploration, then the confirmation as `study confirm` runs it."""
    plan = write_plan(tmp_path, tiny_backbone, seeds=[1], confirmation={"seeds": [3]},
                      evaluation={**PLAN["evaluation"], "langs": ["ar"], "secondary": False})
    assert main(["study", "run", str(plan), "--then-confirm"]) == 0
    root = tmp_path / "study"
    arms = [f"lora/verses-retrieval/{arm}" for arm in ("verses-xref-bi", "verses-xref-bi-multi")]
    assert sorted(predicted_refs(root)) == ["backbone/verses-retrieval", *(f"confirm/seed3/{arm}" for arm in arms),
                                            *(f"seed1/{arm}" for arm in arms)]
    [record] = History(root).events("confirmation")
    assert (record["seeds"], record["label"], record["looks_before"]) == ([3], "first", 1)
    scored = json.loads((root / "confirm/seed3/lora/verses-retrieval/verses-xref-bi/scores.json").read_text())
    assert sorted(scored["ar"]) == ["accuracy@1", "accuracy@1" + BACKBONE_ENGLISH, "candidates"]  # no secondary
    assert capsys.readouterr().out.splitlines()[-2].startswith("Primary contrast, multilingual, confirmed on held-out")


def test_then_confirm_without_a_confirmation_block_is_refused_before_anything_runs(tmp_path, tiny_backbone, capsys):
    plan = write_plan(tmp_path, tiny_backbone)
    assert main(["study", "run", str(plan), "--then-confirm"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--then-confirm needs a confirmation block in the plan" in err
    assert not (tmp_path / "study").exists()


def test_a_confirmation_reusing_exploration_seeds_is_refused_before_anything_runs(tmp_path, tiny_backbone, capsys):
    plan = write_plan(tmp_path, tiny_backbone, confirmation={"seeds": [2, 5]})
    assert main(["study", "run", str(plan)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "confirmation.seeds reuses the exploration's seeds [2]" in err
    assert not (tmp_path / "study").exists()


def test_one_prediction_for_every_item_is_degenerate():
    rows = lambda *predictions: [{"prediction": p} for p in predictions]
    assert one_prediction(rows(4, 4, 4), "classification") and not one_prediction(rows(4, 4, 1), "classification")
    assert not one_prediction(rows(4), "classification")  # one item says nothing
    assert one_prediction(rows(["O", "O"], ["O"]), "tagging") and not one_prediction(rows(["O"], ["B-PER"]), "tagging")
    assert one_prediction(rows([1, 2], [1, 2]), "ranking") and not one_prediction(rows([1, 2], [2, 1]), "ranking")


@pytest.mark.slow
def test_a_target_arm_predicting_one_class_is_flagged_in_the_report(tmp_path, tiny_backbone):
    """lr 1.0 on the tiny backbone: every test item of every language gets genre 6."""
    root = run_study(tmp_path, tiny_backbone, seeds=[1], targets=["verses-genre"], intermediates=[], contrasts=[],
                     regime_phase={"lora": {"lr": 1.0}}, target_phase={"eval_langs": ["en", "fr"]},
                     phase={**PLAN["phase"], "max_length": 32}, clusters={}, evaluation={})
    predictions = Results(root / FILE).predictions("seed1/lora/verses-genre/baseline")
    assert {lang: {row["prediction"] for row in rows} for lang, rows in predictions.items()} == {"en": {6}, "fr": {6}}
    report = (root / "report.md").read_text()
    assert "| lora/baseline (degenerate: one prediction for every item in en, fr) | 1 |" in report
