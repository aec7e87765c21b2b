"""A study with a tagging target (PAN-X, seqeval F1) and a QA target (XQuAD, SQuAD F1/EM) after the
SQuAD intermediate, on the XTREME fixtures (tests/fixtures/xtreme, read as $ADAPTERXFER_DATA_DIR) and
the tiny backbone: end to end, with statistics, the XTREME aggregates and the plots."""

import sqlite3

import pytest
import yaml

from adapterxfer.cli import main
from adapterxfer.study.results import FILE
from fixtures.make_xtreme_fixtures import ROOT

PLAN = {
    "description": "stand-in data: the XTREME fixtures in the Hub schemas",
    "seeds": [1, 2],
    "targets": ["panx", "xquad"],
    "intermediates": ["squad"],
    "regimes": ["full"],
    "phase": {"max_steps": 2, "eval_every": 2, "batch_size": 2, "precision": "fp32", "eval_batch_size": 8,
              "max_length": 32, "lr": 5.0e-2},
    "target_phase": {"eval_langs": ["en", "de"]},
    "task_phase": {"squad": {"max_length": 160}, "xquad": {"max_length": 160}},  # QA windows exceed doc_stride 128
    "contrasts": [{"name": "squad-on-xquad", "target": "xquad", "run": "full/squad", "versus": "full/baseline",
                   "primary": True},
                  {"name": "squad-on-panx", "target": "panx", "run": "full/squad", "versus": "full/baseline"}],
    "statistics": {"effect": 0.02},
}


@pytest.fixture(scope="module")
def study(tmp_path_factory, tiny_backbone):
    folder = tmp_path_factory.mktemp("xtreme-study")
    plan = folder / "plan.yaml"
    plan.write_text(yaml.safe_dump({**PLAN, "backbone": str(tiny_backbone.path), "output": str(folder / "study")}))
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("ADAPTERXFER_DATA_DIR", str(ROOT))
        assert main(["study", "run", str(plan)]) == 0
    return folder / "study"


def test_tagging_and_qa_targets_are_recorded_with_their_metrics(study):
    with sqlite3.connect(study / FILE) as db:
        assert db.execute("SELECT count(*) FROM runs").fetchone() == (10,)  # 2 seeds x (squad + 2 x 2 targets)
        metrics = dict(db.execute("SELECT task, group_concat(DISTINCT metric) FROM scores GROUP BY task"))
        assert set(metrics["panx"].split(",")) == {"f1", "precision", "recall"}
        assert set(metrics["xquad"].split(",")) == {"f1", "exact_match"}
        tags = db.execute("SELECT label, prediction FROM predictions WHERE task = 'panx' LIMIT 1").fetchone()
        assert tags[0].startswith('["') and tags[1].startswith('["')  # one tag list per sentence


def test_report_has_statistics_xtreme_aggregates_and_plots(study):
    report = (study / "report.md").read_text()
    # QA has no chance level; its final dev F1 must beat step 0, which 2 steps of a random tiny model do not
    degenerate = "(degenerate: one prediction for every item in de, en)"  # the same answer to every question
    assert (f"**Primary contrast, squad-on-xquad** (xquad): full/squad (squad not learned) {degenerate} minus "
            f"full/baseline {degenerate}") in report
    with sqlite3.connect(study / FILE) as db:  # the contrast recomputes seqeval F1 from the stored predictions
        f1 = dict(db.execute("SELECT key, value FROM scores JOIN runs ON run = identity "
                             "WHERE scores.task = 'panx' AND lang = 'de' AND metric = 'f1'"))
    per_seed = [f1[f"seed{s}/full/panx/squad"] - f1[f"seed{s}/full/panx/baseline"] for s in (1, 2)]
    assert any(per_seed)
    assert (f"| squad-on-panx | panx | full/squad (squad not learned) {degenerate} | full/baseline {degenerate} | "
            f"{per_seed[0]:+.3f}, {per_seed[1]:+.3f} |") in report  # each arm: one tag for every word
    assert "## panx (seqeval): arms" in report and "## xquad (squad): arms" in report
    # XQuAD's questions share paragraphs: resampled by paragraph too; PAN-X's sentences name no coarser unit
    assert "resampled by item and by paragraph, the next coarser level" in report
    assert "resampled by item; the test data names no level coarser than item" in report
    assert "| squad-on-xquad (primary) | xquad |" in report and "item (" in report and "; paragraph (" in report
    assert "## XTREME aggregates" in report and "## XTREME-R aggregates" in report
    assert "(2/40)" in report and "(2/11)" in report  # PAN-X and XQuAD: 2 of XTREME's languages scored
    assert "| full | squad | 2 |  |  | n/a | n/a | " in report and "| **not learned** |" in report
    for name in ("gain-full.png", "pareto.png", "contrast-squad-on-xquad.png", "contrast-squad-on-panx.png"):
        assert (study / name).read_bytes()[:4] == b"\x89PNG"
