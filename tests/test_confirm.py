"""A study a lab can publish, on the tiny backbone and the fixture corpus: the report checks that the arms of
every contrast trained on the same items (study/matching.py)."""

from pathlib import Path

import pytest
import yaml

from adapterxfer.cli import main

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


@pytest.mark.slow
def test_the_report_says_when_arms_trained_on_the_same_items(tmp_path, tiny_backbone):
    report = (run_study(tmp_path, tiny_backbone) / "report.md").read_text()
    cells = contrast_cells(report)
    assert cells["multilingual"][-1] == "matched: same items, steps and batch, 2 seeds"
    assert cells["english-vs-backbone"][-1] == "versus trains nothing (the backbone); 2 seeds"
    matched = [row for row in report.splitlines() if row.startswith("| multilingual | ")]
    assert [row.split(" | ")[1:5] for row in matched] == [
        [seed, "verses-xref-bi-multi / verses-xref-bi", "same 32 items", "4 / 4"] for seed in ("1", "2")]


@pytest.mark.slow
def test_the_report_says_when_arms_trained_on_different_items(tmp_path, tiny_backbone):
    """Half the steps in the multilingual arm: it draws the first 16 of the same 32 items."""
    root = run_study(tmp_path, tiny_backbone, task_phase={"verses-xref-bi-multi": {"max_steps": 2, "eval_every": 2}})
    cells = contrast_cells((root / "report.md").read_text())
    assert cells["multilingual"][-1] == (
        "MISMATCH: seed 1: 16 of 16 / 32 items shared; seed 1: steps 2 against 4; "
        "seed 2: 16 of 16 / 32 items shared; seed 2: steps 2 against 4")
