"""`study run --smoke` on the shipped plans, on the tiny backbone (a stand-in for XLM-R and me5-small):

- a subset of configs/xstilts.yaml derived from it (``xstilts_subset``) on the XTREME fixtures (stand-ins
  for the Hub's data, in its layouts): every target (and LAReQA, the XTREME-R target the plan leaves
  out), every intermediate, every regime and every transfer of the plan, each zero-shot target in two
  languages; every phase runs into <output>-smoke, XCOPA after its SIQA stage, and the report holds a row
  for every target, the XTREME / XTREME-R aggregates and the best intermediate per target in every regime;
- configs/demo_gpu.yaml, every phase, on the fixture bible.db in three of its languages.

The whole of configs/xstilts.yaml in miniature (511 phases) is `make smoke` (RESULTS.md has its time).
"""

import json
import sqlite3
from pathlib import Path

import pytest
import yaml

from adapterxfer.cli import main
from adapterxfer.study.plan import expand, load_plan
from adapterxfer.study.results import FILE
from adapterxfer.tasks import TASKS, get_task, xtreme
from fixtures.make_xtreme_fixtures import ROOT
from extras import adapterhub

REPO = Path(__file__).resolve().parents[1]
EXTRA_TARGETS = ["lareqa"]
FIXTURE_LANGS = ["en", "de", "zh"]  # of configs/demo_gpu.yaml's 22 languages, three the fixture bible.db holds


def xstilts_subset(plan: dict) -> dict:
    """The plan with each intermediate in one place: the members of a multi-task set train only in it
    (multitask(<set>)); the primary contrast's intermediates train sequentially in its regime; each other
    intermediate sequentially in a regime that has none yet (else in turn). Targets score two languages."""
    primary = next(c for c in plan["contrasts"] if c.get("primary"))
    placed = {arm.split("/")[1]: [arm.split("/")[0]] for arm in (primary["run"], primary["versus"])}
    joint = {task for members in plan["multitask"].values() for task in members}
    placed |= {task: [] for task in plan["intermediates"] if task in joint and task not in placed}
    rest = [task for task in plan["intermediates"] if task not in placed]
    sequential = plan["transfers"]["sequential"]
    empty = [regime for regime in sequential if [regime] not in placed.values()] or sequential
    placed |= {task: [empty[index % len(empty)]] for index, task in enumerate(rest)}
    targets = plan["targets"] + EXTRA_TARGETS
    langs = {t: {"eval_langs": list(get_task(t).languages)[:2]} for t in targets if get_task(t).trainable}
    return {**plan, "targets": targets, "intermediate_regimes": placed, "contrasts": [primary],
            "task_phase": {t: {**plan["task_phase"].get(t, {}), **langs.get(t, {})}
                           for t in {*plan["task_phase"], *langs}},
            "evaluation": {**plan["evaluation"], "langs": ["de"]}}


def run_smoke(plan: dict, folder: Path, backbone: Path) -> dict:
    """``plan`` with its output in ``folder``, run with --smoke on ``backbone``, from the repository (the plans
    name their recipes relative to it)."""
    plan_file = folder / "plan.yaml"
    plan_file.write_text(yaml.safe_dump({**plan, "output": str(folder / "study")}))
    assert main(["study", "run", str(plan_file), "--smoke", "--backbone", str(backbone)]) == 0
    return {"plan": plan_file, "root": folder / "study-smoke", "real": folder / "study",
            "graph": expand(load_plan(str(plan_file), True, str(backbone)))}


@pytest.fixture
def xtreme_data(monkeypatch):
    """The XTREME fixtures as the data folder, offline, from the repository."""
    monkeypatch.setenv("ADAPTERXFER_DATA_DIR", str(ROOT))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setitem(TASKS, "ccg", xtreme.spec("ccg"))  # its tag set is read from the data folder
    monkeypatch.chdir(REPO)
    return yaml.safe_load((REPO / "configs" / "xstilts.yaml").read_text())


def recorded(smoke) -> dict[str, str]:
    with sqlite3.connect(smoke["root"] / FILE) as db:
        return dict(db.execute("SELECT key, action FROM runs"))


def test_the_subset_keeps_every_target_intermediate_regime_and_transfer_of_the_plan(xtreme_data, tmp_path):
    plan_file = tmp_path / "plan.yaml"
    plan_file.write_text(yaml.safe_dump(xstilts_subset(xtreme_data)))
    graph = expand(load_plan(str(plan_file), True, "tiny-xlmr"))
    phases = graph.phases.values()
    trained = {part for p in phases if p.role == "intermediate" for part in p.task.split("+")}
    assert trained == {part for task in xtreme_data["intermediates"] for part in task.split("+")}
    assert {"mnli+wiki-mlm", "anli-plus+mnli+qqp+squad+squad2+hellaswag+ccg+cosmosqa+commonsenseqa"} <= {
        p.task for p in phases if p.role == "intermediate"}
    assert {p.target for p in phases if p.target} == set(xtreme_data["targets"] + EXTRA_TARGETS)
    assert {p.regime for p in phases if p.role == "target"} == set(xtreme_data["regimes"])
    assert {arm.label for arm in graph.arms if arm.target == "xnli"} == {
        "full/baseline", "full/mnli", "full/mnli-translate-mix", "full/multitask(english-9)", "lora/baseline",
        "lora/xnli-translate-train", "bottleneck/baseline", "bottleneck/mnli+wiki-mlm"}
    assert len(graph.phases) == 101


@pytest.mark.slow
@pytest.mark.adapters
def test_the_xstilts_subset_runs_every_phase_once_and_reports_every_target(xtreme_data, tmp_path, tiny_backbone,
                                                                            capsys):
    """One smoke run (make test's workers would each run it for a test of their own), three checks."""
    smoke = run_smoke(xstilts_subset(xtreme_data), tmp_path, tiny_backbone.path)
    every_phase_ran_once_into_its_own_folder(smoke)
    xcopa_trained_after_its_siqa_stage(smoke, capsys, tiny_backbone)
    report_has_every_target_the_benchmark_averages_and_the_best_intermediate(smoke)


def every_phase_ran_once_into_its_own_folder(smoke):
    assert not smoke["real"].exists()
    runs = recorded(smoke)
    assert set(runs) == set(smoke["graph"].phases) and len(runs) == 101
    steps = {json.loads((smoke["root"] / key / "manifest.json").read_text())["config"]["max_steps"]
             for key, action in runs.items() if action == "train"}
    assert steps == {2}  # the plan's recipes' steps, in miniature


def xcopa_trained_after_its_siqa_stage(smoke, capsys, tiny_backbone):
    root = smoke["root"]
    manifest = json.loads((root / "seed1/full/xcopa/mnli/manifest.json").read_text())
    stage = json.loads((root / "seed1/full/xcopa/mnli.siqa/manifest.json").read_text())
    assert [p["task"] for p in manifest["parents"]] == ["siqa"]
    assert [p["task"] for p in stage["parents"]] == ["mnli"]
    assert json.loads((root / "seed1/full/xcopa/baseline.siqa/manifest.json").read_text())["parents"] == []
    capsys.readouterr()
    assert main(["study", "status", str(smoke["plan"]), "--smoke", "--backbone", str(tiny_backbone.path)]) == 0
    status = capsys.readouterr().out
    assert "current  seed1/full/xcopa/mnli.siqa\n" in status and status.rstrip().endswith(
        "101 current, 0 stale, 0 to run, 0 waiting")


def report_has_every_target_the_benchmark_averages_and_the_best_intermediate(smoke):
    report = (smoke["root"] / "report.md").read_text()
    targets = yaml.safe_load((REPO / "configs" / "xstilts.yaml").read_text())["targets"] + EXTRA_TARGETS
    for target in targets:
        assert f"## {target} (" in report and f"## {target}: per language" in report
    assert "## XTREME aggregates" in report and "## XTREME-R aggregates" in report and "**Winner's curse:**" in report
    # two steps on the tiny backbone teach no intermediate its task: none is named the best, and the benchmark
    # averages of the best arms, with nothing to average, are left out. lora's one intermediate,
    # xnli-translate-train, trains on XNLI's languages: XNLI has no zero-shot arm there
    for regime, left_out in (("full", []), ("lora", ["xnli"]), ("bottleneck", [])):
        best = report[report.index(f"## Best intermediate per target ({regime})"):].split("\n\n## ")[0]
        rows = [line.split(" | ") for line in best.splitlines() if "| none: no intermediate learned its own task |" in line]
        assert sorted(cells[0][2:] for cells in rows) == sorted(set(targets) - set(left_out))
        assert f"| {regime}/" not in best and "| benchmark |" not in best


@pytest.mark.slow
@pytest.mark.adapters
def test_the_demo_gpu_plan_runs_whole_in_miniature(tmp_path, tiny_backbone, fixture_home, monkeypatch):
    monkeypatch.setenv("ADAPTERXFER_HOME", str(fixture_home))
    monkeypatch.chdir(REPO)
    plan = yaml.safe_load((REPO / "configs" / "demo_gpu.yaml").read_text())
    plan = {**plan, "target_phase": {**plan["target_phase"], "eval_langs": FIXTURE_LANGS},
            "evaluation": {**plan["evaluation"], "langs": FIXTURE_LANGS[1:]}}
    smoke = run_smoke(plan, tmp_path, tiny_backbone.path)
    assert set(recorded(smoke)) == set(smoke["graph"].phases) and len(smoke["graph"].phases) == 62
    report = (smoke["root"] / "report.md").read_text()
    assert "## verses-retrieval (" in report and "## verses-genre (" in report


@pytest.mark.parametrize("change, backbone, says", [
    ({}, "nowhere", "nowhere"),
    adapterhub({"backbone": "nobody/no-such-model"}, None, "backbone 'nobody/no-such-model': not a local folder, "
               "and the Hugging Face Hub is unreachable"),  # without the extra, the plan's bottleneck comes first
    ({"intermediates": ["mnli", "no-such-task"]}, "tiny-xlmr", "unknown task 'no-such-task'"),
    ({"intermediate_phase": {"recipe": "configs/no-such-recipe.yaml"}}, "tiny-xlmr",
     "config file configs/no-such-recipe.yaml does not exist")])
def test_a_smoke_of_what_does_not_exist_is_one_line_and_writes_nothing(tmp_path, capsys, monkeypatch, change,
                                                                        backbone, says):
    monkeypatch.chdir(REPO)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("ADAPTERXFER_HOME", str(tmp_path / "home"))
    plan = tmp_path / "plan.yaml"
    plan.write_text(yaml.safe_dump({**yaml.safe_load((REPO / "configs" / "xstilts.yaml").read_text()),
                                    "output": str(tmp_path / "study"), **change}))
    flags = ["--backbone", str(tmp_path / backbone) if backbone == "nowhere" else backbone] if backbone else []
    assert main(["study", "run", str(plan), "--smoke", *flags]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and says in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["plan.yaml"]


def test_backbone_without_smoke_is_one_line(tmp_path, capsys):
    plan = tmp_path / "plan.yaml"
    plan.write_text((REPO / "configs" / "xstilts.yaml").read_text())
    assert main(["study", "run", str(plan), "--backbone", "tiny-xlmr"]) == 2
    assert "replaces the backbone of a smoke run only; add --smoke" in capsys.readouterr().err


def test_plan_output_under_a_file_is_one_line(tmp_path, capsys):
    (tmp_path / "taken").write_text("")
    plan = tmp_path / "plan.yaml"
    plan.write_text(yaml.safe_dump({"backbone": "tiny-xlmr", "seeds": [1], "targets": ["xnli"],
                                    "output": str(tmp_path / "taken" / "study")}))
    assert main(["study", "run", str(plan)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{tmp_path}/taken, which is a file, not a folder" in err
