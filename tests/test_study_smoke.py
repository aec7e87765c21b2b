"""`study run --smoke` on a plan holding every XTREME / XTREME-R target (classification, pair, multiple
choice, tagging, QA, BUCC mining, Tatoeba retrieval, Mewsli-X and LAReQA ranking), on the XTREME fixtures
(stand-ins for the Hub's data, in its layouts) and the tiny backbone (a stand-in for XLM-R): every phase
runs into <output>-smoke, XCOPA after its SIQA stage, and the report holds a row for every target, the
XTREME / XTREME-R aggregates and the best intermediate per target."""

import json
import sqlite3

import pytest
import yaml

from adapterxfer.cli import main
from adapterxfer.study.results import FILE
from adapterxfer.tasks.xtreme import TARGETS
from fixtures.make_xtreme_fixtures import ROOT

# Two languages a target (source first) keep the test in seconds; evaluation-only targets share one list.
LANGS = {"xnli": ["en", "fr"], "pawsx": ["en", "de"], "udpos": ["en", "de"], "panx": ["en", "de"],
         "xquad": ["en", "de"], "mlqa": ["en", "de"], "tydiqa": ["en", "ar"], "xcopa": ["et", "zh"]}
PLAN = {
    "description": "every XTREME / XTREME-R target after one intermediate, in miniature",
    "seeds": [7, 8],
    "targets": list(TARGETS),
    "intermediates": ["mnli"],
    "regimes": ["full"],
    "phase": {"max_steps": 50, "precision": "fp32", "max_length": 32, "lr": 5.0e-2},
    "task_phase": {**{task: {"eval_langs": langs} for task, langs in LANGS.items()},
                   "xquad": {"eval_langs": LANGS["xquad"], "max_length": 160},  # QA windows exceed doc_stride 128
                   "mlqa": {"eval_langs": LANGS["mlqa"], "max_length": 160},
                   "tydiqa": {"eval_langs": LANGS["tydiqa"], "max_length": 160}},
    "evaluation": {"langs": ["de"], "layer": 1},
    "contrasts": [{"name": "mnli-on-xnli", "target": "xnli", "run": "full/mnli", "versus": "full/baseline",
                   "primary": True}],
}


@pytest.fixture(scope="module")
def smoke(tmp_path_factory, tiny_backbone):
    folder = tmp_path_factory.mktemp("smoke")
    plan = folder / "plan.yaml"
    plan.write_text(yaml.safe_dump({**PLAN, "backbone": "xlm-roberta-large", "output": str(folder / "study")}))
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("ADAPTERXFER_DATA_DIR", str(ROOT))
        patch.setenv("HF_HUB_OFFLINE", "1")
        assert main(["study", "run", str(plan), "--smoke", "--backbone", str(tiny_backbone.path)]) == 0
    return {"plan": plan, "root": folder / "study-smoke", "real": folder / "study"}


def test_smoke_runs_every_phase_once_into_its_own_folder(smoke):
    assert not smoke["real"].exists()
    with sqlite3.connect(smoke["root"] / FILE) as db:
        keys = {key for (key,) in db.execute("SELECT key FROM runs")}
        trained = [key for (key,) in db.execute("SELECT key FROM runs WHERE action = 'train'")]
    steps = {json.loads((smoke["root"] / key / "manifest.json").read_text())["config"]["max_steps"] for key in trained}
    trainable = [t for t in TARGETS if t in LANGS]
    assert keys == ({"seed7/full/mnli", "seed7/full/xcopa/baseline.siqa", "seed7/full/xcopa/mnli.siqa"}
                    | {f"seed7/full/{t}/{arm}" for t in trainable for arm in ("baseline", "mnli")}
                    | {f"backbone/{t}" for t in TARGETS if t not in LANGS}
                    | {f"seed7/full/{t}/mnli" for t in TARGETS if t not in LANGS})  # one seed of two
    assert steps == {2} and len(trained) == 19  # the plan's 50 steps, in miniature


def test_xcopa_trains_after_its_siqa_stage_and_the_lineage_says_so(smoke, capsys, tiny_backbone):
    root = smoke["root"]
    manifest = json.loads((root / "seed7/full/xcopa/mnli/manifest.json").read_text())
    stage = json.loads((root / "seed7/full/xcopa/mnli.siqa/manifest.json").read_text())
    assert [p["task"] for p in manifest["parents"]] == ["siqa"]
    assert [p["task"] for p in stage["parents"]] == ["mnli"]
    assert json.loads((root / "seed7/full/xcopa/baseline.siqa/manifest.json").read_text())["parents"] == []
    assert main(["study", "status", str(smoke["plan"]), "--smoke", "--backbone", str(tiny_backbone.path)]) == 0
    status = capsys.readouterr().out
    assert "current  seed7/full/xcopa/mnli.siqa\n" in status and status.rstrip().endswith(
        "27 current, 0 stale, 0 to run, 0 waiting")


def test_report_has_every_target_the_benchmark_averages_and_the_best_intermediate(smoke):
    report = (smoke["root"] / "report.md").read_text()
    for target in TARGETS:
        assert f"## {target} (" in report and f"## {target}: per language" in report
    assert "## XTREME aggregates" in report and "## XTREME-R aggregates" in report
    assert "## Best intermediate per target (full)" in report and "**Winner's curse:**" in report
    best = report[report.index("## Best intermediate per target (full)"):]
    rows = [line.split(" | ") for line in best.splitlines() if line.startswith("| ") and "full/mnli" in line]
    assert sorted(cells[0][2:] for cells in rows) == sorted(TARGETS) and {cells[2] for cells in rows} == {"1"}
    xtreme = next(line for line in report.splitlines() if line.startswith("| XTREME | "))
    assert "9/9: xnli, pawsx, udpos, panx, xquad, mlqa, tydiqa, bucc2018, tatoeba" in xtreme
    assert xtreme.endswith("| +5.4 (Phang et al. 2020 (XLM-R large, full fine-tuning)) |")
    # LAReQA has no official average (the official scorer lists it without scoring it): 9 of XTREME-R's 10
    assert "| XTREME-R | 9/10: xnli, udpos, panx, xquad, mlqa, tydiqa, tatoeba, xcopa, mewslix | " in report


def test_smoke_without_a_backbone_it_can_load_is_one_line_and_writes_nothing(tmp_path, capsys):
    plan = tmp_path / "plan.yaml"
    plan.write_text(yaml.safe_dump({**PLAN, "backbone": "xlm-roberta-large", "output": str(tmp_path / "study")}))
    assert main(["study", "run", str(plan), "--smoke", "--backbone", str(tmp_path / "nowhere")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "nowhere" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["plan.yaml"]
    assert main(["study", "run", str(plan), "--backbone", "tiny-xlmr"]) == 2
    assert "replaces the backbone of a smoke run only; add --smoke" in capsys.readouterr().err


def test_plan_output_under_a_file_is_one_line(tmp_path, capsys):
    (tmp_path / "taken").write_text("")
    plan = tmp_path / "plan.yaml"
    plan.write_text(yaml.safe_dump({**PLAN, "backbone": "tiny-xlmr", "output": str(tmp_path / "taken" / "study")}))
    assert main(["study", "run", str(plan)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{tmp_path}/taken, which is a file, not a folder" in err
