"""configs/compose.yaml, the composition study: what it expands to, and its smoke run (exploration and
confirmation) on the tiny backbone (a stand-in for me5-small) and the fixture bible.db (a stand-in for the
real corpus, in its schema)."""

import json
from pathlib import Path

import pytest
import yaml

from adapterxfer.cli import main
from adapterxfer.study.plan import expand, expand_confirmation, load_plan

REPO = Path(__file__).resolve().parents[1]
PLAN = REPO / "configs" / "compose.yaml"
PAIR = "verses-book+verses-testament"
LORA_ARMS = ["baseline", "verses-book", "verses-testament", f"merge-cat({PAIR})", f"merge-ties({PAIR})",
             f"merge-dare_ties({PAIR})", f"multitask({PAIR})"]


@pytest.fixture(scope="module")
def graph():
    return expand(load_plan(str(PLAN)))


def test_every_composition_is_an_arm(graph):
    labels = [arm.label for arm in graph.arms]
    lora = [f"lora/{arm}" for arm in LORA_ARMS]
    assert labels == [label for arm in lora for label in (arm, f"lora/arithmetic({arm.split('/')[1]})")] + [
        "madx/baseline", "madx/arithmetic(baseline)", "dora/baseline", "vera/baseline"]
    assert len(graph.phases) == 29  # 7 lora and 4 other targets, 8 arithmetic and language phases each, 3 inter.


def test_merges_variants_and_regimes_reach_their_phases(graph):
    target = {phase.arm: phase.settings for phase in graph.phases.values()
              if phase.role == "target" and phase.regime == "lora"}
    assert [(target[f"merge-{name}({PAIR})"]["merge"], target[f"merge-{name}({PAIR})"]["merge_density"])
            for name in ("cat", "ties", "dare_ties")] == [("cat", None), ("ties", 0.5), ("dare_ties", 0.5)]
    assert all(target[f"merge-{name}({PAIR})"]["transfer"] == "merge" for name in ("cat", "ties", "dare_ties"))
    dora, vera = (graph.phases[f"seed1/{name}/verses-genre/baseline"].settings for name in ("dora", "vera"))
    assert (dora["regime"], dora["peft_method"], dora["peft"]) == (
        "peft", "lora", {"r": 8, "lora_alpha": 16, "lora_dropout": 0.1, "use_dora": True})
    assert (vera["regime"], vera["peft_method"], vera["peft"]) == ("peft", "vera", {"r": 256})
    assert dora["frozen_layers"] == vera["frozen_layers"] == target["baseline"]["frozen_layers"] == 8
    assert graph.phases["seed1/madx/verses-genre/baseline"].settings["frozen_layers"] == 0
    languages = [key for key in graph.phases if "/lang/" in key]
    assert languages == [f"seed1/{regime}/lang/{lang}" for regime in ("lora", "madx") for lang in ("en", "de", "tl", "zh")]
    arithmetic = graph.phases["seed1/lora/verses-genre/arithmetic-baseline"]
    assert arithmetic.lang_modules == tuple(languages[:4]) and arithmetic.init_from == ("seed1/lora/verses-genre/baseline",)


def test_every_arm_of_a_seed_trains_alike(graph):
    """Matched arms: every target phase trains the same steps, batch and items order (seed) on the same data."""
    keys = ("max_steps", "batch_size", "seed", "eval_langs", "test_share", "held_out", "held_out_by", "probe_steps")
    targets = [phase.settings for phase in graph.phases.values() if phase.role == "target" and phase.action == "train"
               and phase.settings["transfer"] != "arithmetic"]
    assert len(targets) == 10 and len({tuple(repr(s[k]) for k in keys) for s in targets}) == 1


def test_the_confirmation_runs_the_primary_alone_on_three_new_seeds():
    plan = load_plan(str(PLAN))
    confirm = expand_confirmation(plan)
    assert sorted(confirm.phases) == sorted(f"confirm/seed{seed}/lora/{name}" for seed in (13, 14, 15) for name in (
        "verses-book", "verses-testament", "verses-genre/baseline", f"verses-genre/merge-ties-{PAIR}"))
    assert {arm.label for arm in confirm.arms} == {"lora/baseline", f"lora/merge-ties({PAIR})"}


@pytest.mark.slow
@pytest.mark.adapters
def test_the_composition_study_runs_whole_in_miniature(tmp_path, tiny_backbone, fixture_home, monkeypatch):
    """Exploration then confirmation, every phase, on the fixture bible.db's en, de and zh."""
    from test_study_smoke import recorded, run_smoke
    monkeypatch.setenv("ADAPTERXFER_HOME", str(fixture_home))
    monkeypatch.chdir(REPO)
    plan = yaml.safe_load(PLAN.read_text())
    smoke = run_smoke({**plan, "target_phase": {"eval_langs": ["en", "de", "zh"]}}, tmp_path, tiny_backbone.path)
    assert set(recorded(smoke)) == set(smoke["graph"].phases) and len(smoke["graph"].phases) == 27
    merged = json.loads((smoke["root"] / f"seed1/lora/verses-genre/merge-ties-{PAIR}/manifest.json").read_text())
    assert (merged["config"]["merge"], merged["config"]["merge_density"]) == ("ties", 0.5)
    assert json.loads((smoke["root"] / "seed1/dora/verses-genre/baseline/manifest.json").read_text())[
        "module_kind"] == "lora"
    assert json.loads((smoke["root"] / "seed1/vera/verses-genre/baseline/manifest.json").read_text())[
        "module_kind"] == "vera"
    assert main(["study", "confirm", str(smoke["plan"]), "--smoke", "--backbone", str(tiny_backbone.path)]) == 0
    report = (smoke["root"] / "report.md").read_text()
    for name in ("ties-vs-none (primary)", "dora-vs-lora", "vera-vs-lora", "arithmetic-vs-madx-stacking"):
        assert f"| {name} |" in report
    assert "## Exploration and confirmation" in report and "## Arms matched item for item" in report
    confirmed = [line for line in report.splitlines() if line.startswith("| ties-vs-none | confirmation | 13, 14, 15 |")]
    assert len(confirmed) == 1 and "matched: same items, steps and batch, 3 seeds" in confirmed[0]
