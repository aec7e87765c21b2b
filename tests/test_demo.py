"""The demo plan on the tiny backbone: every regime's baseline and STILTs rows, fusion, the
multilingual intermediate, retrieval, the report, and resuming from finished phases."""

import json
from pathlib import Path

import pytest
import yaml

from adapterxfer.cli import main
from adapterxfer.demo import read_plan

PLAN = """
backbone: {backbone}
seed: 1
target: verses-genre
intermediates: [verses-xref, verses-next]
retrieval_task: verses-retrieval
retrieval_layer: 1
retrieval_langs: [fr, zh]
eval_langs: [en, fr, zh]
regimes: [full, lora, bottleneck]
fusion: [bottleneck]
extra_intermediates: {{lora: [verses-xref-multi]}}
regime_phase: {{lora: {{lr: 1.0e-3}}}}
phase: {{max_steps: 2, eval_every: 2, batch_size: 4, max_length: 48, precision: fp32, probe_steps: 5,
         probe_examples: 8}}
compare: [[lora, verses-xref-multi, verses-xref]]
"""
LONGER = """
regimes: [lora, madx]
merge: [lora]
multitask: [lora]
retrieval_regimes: [lora]
lang_adapter_task: verses-text
madx_ablation: true
"""


def test_demo_plan_writes_matched_rows_and_resumes(tmp_path, tiny_backbone, capsys):
    plan = tmp_path / "plan.yaml"
    plan.write_text(PLAN.format(backbone=tiny_backbone.path))
    out = tmp_path / "demo"
    assert main(["demo", "--config", str(plan), "--output", str(out)]) == 0
    rows = json.loads((out / "results.json").read_text())
    genre = {(r["regime"], r["intermediate"]) for r in rows if r["task"] == "verses-genre"}
    assert genre == {("majority", None),
                     *((regime, i) for regime in ("full", "lora", "bottleneck")
                       for i in (None, "verses-xref", "verses-next")),
                     ("lora", "verses-xref-multi"), ("bottleneck", "fusion(verses-xref+verses-next)")}
    retrieval = {(r["regime"], r["intermediate"]) for r in rows if r["task"] == "verses-retrieval"}
    assert ("backbone", None) in retrieval and ("lora", "verses-next") in retrieval
    for row in rows:
        assert set(row) >= {"regime", "intermediate", "task", "lang", "metric", "value"}
        assert 0.0 <= row["value"] <= 1.0
    trained = [r for r in rows if r["regime"] in ("full", "lora", "bottleneck") and r["task"] == "verses-genre"]
    assert all(r["trainable_parameters"] > 0 and r["artifact_mb"] > 0 and r["english_dev"] is not None
               for r in trained)
    full = next(r for r in trained if r["regime"] == "full")["trainable_parameters"]
    assert all(r["trainable_parameters"] < full for r in trained if r["regime"] != "full")
    report = (out / "report.md").read_text()
    assert "| lora +verses-xref-multi |" in report and "avg non-en" in report
    for (regime, intermediate), run in {(r["regime"], r["intermediate"]): r for r in trained}.items():
        if intermediate is None:
            assert "zero_shot_gain" not in run
            continue
        baseline = next(r for r in trained if r["regime"] == regime and r["intermediate"] is None)
        assert run["zero_shot_gain"] == pytest.approx(run["zero_shot_avg"] - baseline["zero_shot_avg"], abs=1e-3)
        low, high = run["zero_shot_gain_ci95"]
        assert low <= run["zero_shot_gain"] <= high
    (comparison,) = json.loads((out / "comparisons.json").read_text())
    assert [comparison[key] for key in ("regime", "run", "versus")] == ["lora", "verses-xref-multi", "verses-xref"]
    by_run = {r["intermediate"]: r for r in trained if r["regime"] == "lora"}
    assert comparison["zero_shot_gain"] == pytest.approx(
        by_run["verses-xref-multi"]["zero_shot_avg"] - by_run["verses-xref"]["zero_shot_avg"], abs=1e-3)
    assert "| lora | verses-xref-multi | verses-xref |" in report

    capsys.readouterr()
    assert main(["demo", "--config", str(plan), "--output", str(out)]) == 0
    assert capsys.readouterr().out.count("reusing") == 18  # 3 regimes x 5 phases, xref-multi x 2, fusion


def test_longer_plan_adds_merge_multitask_and_madx_with_its_ablation(tmp_path, tiny_backbone):
    plan = tmp_path / "plan.yaml"
    base = PLAN.format(backbone=tiny_backbone.path).replace("regimes: [full, lora, bottleneck]\n", "")
    plan.write_text(base.replace("fusion: [bottleneck]\n", "") + LONGER)
    out = tmp_path / "demo"
    assert main(["demo", "--config", str(plan), "--output", str(out)]) == 0
    rows = json.loads((out / "results.json").read_text())
    genre = {(r["regime"], r["intermediate"], r.get("variant")) for r in rows if r["task"] == "verses-genre"}
    joint = "verses-xref+verses-next"
    assert {("lora", f"merge({joint})", None), ("lora", f"multitask({joint})", None)} <= genre
    madx = {(i, v) for regime, i, v in genre if regime == "madx"}
    plain = {None, "verses-xref", "verses-next"}
    assert madx == {(i, v) for i in plain for v in (None, "source-language adapter at test")}
    assert sorted(p.name for p in (out / "madx").glob("lang-*")) == ["lang-en", "lang-fr", "lang-zh"]
    retrieval = {r["regime"] for r in rows if r["task"] == "verses-retrieval"}
    assert retrieval == {"backbone", "lora"}
    report = (out / "report.md").read_text()
    assert "| madx +verses-xref [source-language adapter at test] |" in report


@pytest.mark.parametrize("name", ["demo.yaml", "demo_full.yaml"])
def test_shipped_demo_plans_are_valid(name):
    plan = read_plan(str(Path(__file__).resolve().parents[1] / "configs" / name))
    assert plan["eval_langs"] == [] and plan["regimes"][:3] == ["full", "lora", "bottleneck"]


BAD_PLANS = {  # changes to a valid plan -> the one line that refuses it, before any training
    "unknown task": ({"intermediates": ["verses-nope"]}, "unknown task 'verses-nope'"),
    "typo in a phase block": ({"regime_phase": {"lora": {"max_step": 3}}},
                              "plan.yaml: regime_phase.lora: unknown key 'max_step'"),
    "comparison of a run not made": ({"compare": [["lora", "verses-xref", "verses-nope"]]},
                                     "compare entry ['lora', 'verses-xref', 'verses-nope'] must be [regime, run, run], "
                                     "a regime of the plan and two of its runs (null (the baseline), verses-xref)"),
    "comparison in a regime not run": ({"compare": [["madx", "verses-xref", None]]},
                                       "compare entry ['madx', 'verses-xref', None] must be [regime, run, run]"),
    "comparison not a triple": ({"compare": ["lora"]}, "compare entry 'lora' must be"),
}


@pytest.mark.parametrize("changes, message", BAD_PLANS.values(), ids=BAD_PLANS)
def test_bad_demo_plan_is_one_line(tmp_path, capsys, changes, message):
    plan = tmp_path / "plan.yaml"
    plan.write_text(yaml.safe_dump({"backbone": "me5-small", "seed": 1, "target": "verses-genre",
                                    "intermediates": ["verses-xref"], "retrieval_task": "verses-retrieval",
                                    "regimes": ["lora"], **changes}))
    assert main(["demo", "--config", str(plan), "--output", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert not (tmp_path / "out").exists()
