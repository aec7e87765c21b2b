"""`adapterxfer demo`: the baseline and STILTs on the embedded benchmark, then one report.

The plan comes from a YAML file (configs/demo.yaml). Each phase writes its own output
folder under the demo root; a re-run reuses every phase whose manifest records the same
configuration, so an interrupted demo resumes where it stopped.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from . import artifacts, backbones
from .config import RunConfig, read_yaml, from_dict
from .errors import UserError
from .metrics import majority_rate
from .pipeline import evaluate_model, train_phase
from .report import write_report
from .tasks import get_task

PLAN_KEYS = {"backbone", "seed", "target", "intermediates", "retrieval_task", "retrieval_layer",
             "eval_langs", "phase", "intermediate_phase"}


def run_demo(plan_file: str, output: str) -> list[dict]:
    started = time.perf_counter()
    plan = _read_plan(plan_file)
    root = Path(output)
    backbone = backbones.resolve(plan["backbone"])
    target = plan["target"]

    def phase(task: str, name: str, init_from: Path | None = None) -> Path:
        settings = plan.get("phase", {}) | (plan.get("intermediate_phase", {}) if task != target else {})
        config = from_dict({**settings, "task": task, "regime": "full", "backbone": plan["backbone"],
                            "seed": plan["seed"], "eval_langs": plan.get("eval_langs", []),
                            "output_dir": str(root / "full" / name), "overwrite": True,
                            "init_from": [str(init_from)] if init_from else []}, source=plan_file)
        return _reuse_or_train(config)

    results = _majority_rows(target, plan.get("eval_langs", []))
    models = {None: phase(target, "baseline")}
    for intermediate in plan["intermediates"]:
        stilts = phase(intermediate, intermediate)
        models[intermediate] = phase(target, f"{intermediate}-{target}", init_from=stilts)
        results += _retrieval_rows(plan, stilts, root / "retrieval" / intermediate, "full", intermediate)
    results += _retrieval_rows(plan, str(backbone.path), root / "retrieval" / "backbone", "backbone", None)
    for intermediate, folder in models.items():
        scores = json.loads((folder / "scores.json").read_text())
        results += _rows(scores, "full", intermediate, target)

    minutes = (time.perf_counter() - started) / 60
    (root / "results.json").write_text(json.dumps(results, indent=1) + "\n")
    report = write_report(root / "report.md", results, target, plan["retrieval_task"],
                          title=f"adapterxfer demo: full-model STILTs on {backbone.name}",
                          note=f"Wall time {minutes:.1f} min; seed {plan['seed']}; plan {plan_file}.")
    print(report)
    print(f"wrote {root / 'report.md'} and {root / 'results.json'}")
    return results


def _read_plan(plan_file: str) -> dict:
    plan = read_yaml(plan_file)
    unknown = set(plan) - PLAN_KEYS
    if unknown:
        raise UserError(f"{plan_file}: unknown key {sorted(unknown)[0]!r} (allowed: {', '.join(sorted(PLAN_KEYS))})")
    for key in ("backbone", "seed", "target", "intermediates", "retrieval_task"):
        if key not in plan:
            raise UserError(f"{plan_file}: key {key!r} is required")
    for task in [plan["target"], plan["retrieval_task"], *plan["intermediates"]]:
        get_task(task)
    return plan


def _reuse_or_train(config: RunConfig) -> Path:
    out = config.resolved_output_dir()
    if artifacts.is_artifact(out) and artifacts.read_manifest(out, verify=False).get("config") == vars(config):
        print(f"reusing {out} (same configuration)")
        return out
    return train_phase(config)


def _retrieval_rows(plan: dict, model: str | Path, out: Path, regime: str, intermediate: str | None) -> list[dict]:
    scores = evaluate_model(str(model), plan["retrieval_task"], plan.get("eval_langs", []), out,
                            layer=plan.get("retrieval_layer", -1))
    return _rows(scores, regime, intermediate, plan["retrieval_task"])


def _majority_rows(target: str, langs: list[str]) -> list[dict]:
    task = get_task(target)
    train_labels = [row["label"] for row in task.rows("train")]
    scores = {lang: {task.metric: majority_rate(train_labels, [r["label"] for r in task.rows("test", lang)])}
              for lang in task.check_langs(langs)}
    return _rows(scores, "majority", None, target)


def _rows(scores: dict, regime: str, intermediate: str | None, task: str) -> list[dict]:
    return [{"regime": regime, "intermediate": intermediate, "task": task, "lang": lang,
             "metric": metric, "value": round(value, 4)}
            for lang, by_metric in scores.items() for metric, value in by_metric.items()]

