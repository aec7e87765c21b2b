"""configs/selection.yaml, the embedded selection grid: what it expands to (its smoke run is a slow test)."""

import re
from pathlib import Path

import pytest
import yaml

from adapterxfer.data.verses import PARAPHRASE_LANGUAGES
from adapterxfer.study.plan import expand, load_plan
from adapterxfer.tasks import get_task

REPO = Path(__file__).resolve().parents[1]
PLAN = REPO / "configs" / "selection.yaml"


@pytest.fixture(scope="module")
def plan() -> dict:
    return yaml.safe_load(PLAN.read_text())


@pytest.fixture(scope="module")
def graph():
    return expand(load_plan(str(PLAN)))


def test_the_grid_has_eight_intermediates_three_targets_two_seeds_in_lora(plan):
    assert len(plan["intermediates"]) == 8 and len(set(plan["intermediates"])) == 8
    assert {get_task(task).role for task in plan["intermediates"]} == {"intermediate"}
    assert plan["targets"] == ["verses-genre", "verses-paraphrase-x", "verses-retrieval"]
    assert plan["regimes"] == ["lora"] and plan["seeds"] == [1, 2]
    assert plan["phase"]["precision"] == plan["evaluation"]["precision"] == "fp32"
    assert plan["phase"]["frozen_layers"] == 8
    # every language of the grid has two translations: the PAWS-X analogue is scored where the others are
    assert set(plan["evaluation"]["langs"]) == set(plan["target_phase"]["eval_langs"]) - {"en"}
    assert set(plan["target_phase"]["eval_langs"]) == set(PARAPHRASE_LANGUAGES)


def test_every_intermediate_target_and_seed_has_its_phase(plan, graph):
    phases = list(graph.phases.values())
    assert len(phases) == 69
    seeds, intermediates = plan["seeds"], plan["intermediates"]
    assert sorted((p.seed, p.task) for p in phases if p.role == "intermediate") == sorted(
        (seed, task) for seed in seeds for task in intermediates)
    for target in ("verses-genre", "verses-paraphrase-x"):
        arms = [(p.seed, p.arm) for p in phases if p.role == "target" and p.target == target]
        assert sorted(arms) == sorted((seed, arm) for seed in seeds for arm in ["baseline", *intermediates])
    evaluated = [(p.seed, p.arm) for p in phases if p.role == "evaluation"]
    assert sorted(evaluated, key=str) == sorted([(None, "baseline")] + [(seed, task) for seed in seeds
                                                                         for task in intermediates], key=str)
    assert {p.regime for p in phases} == {"lora", None}
    assert {p.settings["max_steps"] for p in phases if p.action == "train"} == {24}
    assert len(graph.arms) == 27 and {arm.regime for arm in graph.arms} == {"lora"}


@pytest.mark.slow
def test_the_grid_runs_every_phase_in_miniature(plan, tmp_path, tiny_backbone, fixture_home, monkeypatch):
    """On the fixture bible.db, which holds the two translations of en, fr and de only."""
    from test_study_smoke import recorded, run_smoke
    monkeypatch.setenv("ADAPTERXFER_HOME", str(fixture_home))
    monkeypatch.chdir(REPO)
    contrast = {"name": "bi-retrieval", "target": "verses-retrieval", "run": "lora/verses-xref-bi",
                "versus": "lora/baseline", "primary": True}
    smoke = run_smoke({**plan, "target_phase": {"eval_langs": ["en", "fr", "de"]}, "contrasts": [contrast],
                       "evaluation": {**plan["evaluation"], "langs": ["fr", "de"]}}, tmp_path, tiny_backbone.path)
    assert set(recorded(smoke)) == set(smoke["graph"].phases) and len(smoke["graph"].phases) == 35
    # the plan's frozen_layers 8 cut to leave the tiny backbone's top layer to train
    assert {p.settings["frozen_layers"] for p in smoke["graph"].phases.values() if p.action == "train"} == {1}
    report = (smoke["root"] / "report.md").read_text()
    for target in plan["targets"]:
        assert f"## {target} (" in report
    # retrieval is clustered by chapter: the contrast is also resampled by book, and the fixed pool is flagged
    row = next(line for line in report.splitlines() if line.startswith("| bi-retrieval (primary) |"))
    assert "chapter (" in row and "; book (" in row
    note = next(line for line in report.splitlines() if line.startswith("- Scored against one fixed pool"))
    assert re.search(r"retrieved wrongly most often took: bi-retrieval \(verses-retrieval\): \d+% of [\d,]+\.$", note)
