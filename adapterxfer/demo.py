"""`adapterxfer demo`: baseline and STILTs per regime on the embedded benchmark, then one report.

The plan comes from a YAML file (configs/demo.yaml). For every regime it trains the target
task alone (the baseline) and after each intermediate task, all with the same data, seeds,
step budget and evaluation. Rows that combine the intermediates are opt-in per regime:
``fusion`` (bottleneck), ``merge`` (lora) and ``multitask`` (one module trained on all of them).
``madx`` first trains a language adapter per evaluation language (``lang_adapter_task``, e.g.
verses-text) and, with ``madx_ablation``, also scores every madx target model with the source
language's adapter kept at test time.
Every run after an intermediate task reports its zero-shot gain over the regime's baseline with a
paired-bootstrap interval over test verses; ``compare: [[regime, run, versus], ...]`` adds such
differences between two runs (the research question: verses-xref-multi against verses-xref).
Each phase writes its own output folder under the demo root; a re-run reuses every phase
whose manifest records the same configuration, so an interrupted demo resumes where it stopped.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from . import artifacts, backbones
from .config import RunConfig, from_dict, read_yaml
from .errors import UserError
from .metrics import bootstrap_interval, majority_rate
from .pipeline import evaluate_model, train_phase
from .regimes import get_regime
from .report import write_report
from .tasks import get_task

PLAN_KEYS = {"backbone", "seed", "target", "intermediates", "retrieval_task", "retrieval_layer", "retrieval_langs",
             "retrieval_regimes", "eval_langs", "phase", "intermediate_phase", "task_phase", "regimes", "regime_phase",
             "extra_intermediates", "fusion", "merge", "multitask", "lang_adapter_task", "lang_adapter_phase",
             "madx_ablation", "compare"}
COMBINED = ("fusion", "merge")  # transfer modes over all the intermediates at once
ABLATION = "source-language adapter at test"
REQUIRED = ("backbone", "seed", "target", "intermediates", "retrieval_task")


def run_demo(plan_file: str, output: str) -> list[dict]:
    started = time.perf_counter()
    plan = read_plan(plan_file)
    root = Path(output)
    backbone = backbones.resolve(plan["backbone"])
    target = plan["target"]

    eval_langs = plan.get("eval_langs", [])
    lang_adapters: list[str] = []

    def phase(regime: str, task: str, name: str, parents: list[Path] = (), transfer: str = "sequential",
              **extra) -> Path:
        settings = {**plan.get("phase", {}),  # then the more specific settings win
                    **(plan.get("intermediate_phase", {}) if task != target else {}),
                    **(plan.get("lang_adapter_phase", {}) if "language" in extra else {}),
                    **plan.get("task_phase", {}).get(task, {}),
                    **plan.get("regime_phase", {}).get(regime, {})}
        config = from_dict({**settings, "task": task, "regime": regime, "backbone": plan["backbone"],
                            "seed": plan["seed"], "eval_langs": eval_langs, "output_dir": str(root / regime / name),
                            "overwrite": True, "init_from": [str(p) for p in parents], "transfer": transfer,
                            **({"lang_adapters": lang_adapters} if regime == "madx" else {}), **extra},
                           source=plan_file)
        return _reuse_or_train(config)

    trained: dict[tuple[str, str | None], Path] = {}  # (regime, intermediate) -> target run folder
    results = _majority_rows(target, eval_langs)
    results += _retrieval_rows(plan, str(backbone.path), root / "retrieval" / "backbone", "backbone", None)
    for regime in plan.get("regimes", ["full"]):
        if regime == "madx":  # language adapters first, the source language's leading
            languages = dict.fromkeys(["en", *get_task(target).check_langs(eval_langs)])
            lang_adapters[:] = [str(phase(regime, plan["lang_adapter_task"], f"lang-{lang}", lang_adapters=[],
                                          language=lang)) for lang in languages]
        runs = {None: phase(regime, target, "baseline")}
        intermediates = {}
        for task in plan["intermediates"] + plan.get("extra_intermediates", {}).get(regime, []):
            intermediates[task] = phase(regime, task, task)
            runs[task] = phase(regime, target, f"{task}-{target}", [intermediates[task]])
            if task in plan["intermediates"] and regime in plan.get("retrieval_regimes", [regime]):
                results += _retrieval_rows(plan, intermediates[task], root / "retrieval" / regime / task, regime, task)
        for mode in COMBINED:
            if regime in plan.get(mode, []):
                runs[_combined(mode, plan)] = phase(regime, target, f"{mode}-{target}",
                                                    [intermediates[task] for task in plan["intermediates"]], mode)
        if regime in plan.get("multitask", []):
            runs[_combined("multitask", plan)] = phase(regime, target, f"multitask-{target}",
                                                       [phase(regime, "+".join(plan["intermediates"]), "multitask")])
        trained.update({(regime, intermediate): folder for intermediate, folder in runs.items()})
        for intermediate, folder in runs.items():
            gain = _paired_gain(folder, runs[None]) if intermediate else {}
            results += _run_rows(folder, regime, intermediate, target, gain=gain)
            if regime == "madx" and plan.get("madx_ablation"):
                scores = evaluate_model(str(folder), target, eval_langs, folder.with_name(folder.name + "-source"),
                                        lang_adapter_at_test="source")
                results += _run_rows(folder, regime, intermediate, target, scores, variant=ABLATION)

    comparisons = [{"regime": regime, "run": run, "versus": versus, "task": target,
                    **_paired_gain(trained[(regime, run)], trained[(regime, versus)])}
                   for regime, run, versus in plan.get("compare", [])]
    minutes = (time.perf_counter() - started) / 60
    root.mkdir(parents=True, exist_ok=True)
    (root / "results.json").write_text(json.dumps(results, indent=1) + "\n")
    (root / "comparisons.json").write_text(json.dumps(comparisons, indent=1) + "\n")
    report = write_report(root / "report.md", results, target, plan["retrieval_task"], comparisons=comparisons,
                          title=f"adapterxfer demo: STILTs on {backbone.name}",
                          note=f"Wall time {minutes:.1f} min; seed {plan['seed']}; plan {plan_file}. "
                               "Model selection on the English dev set only.")
    print(report)
    print(f"wrote {root / 'report.md'}, {root / 'results.json'} and {root / 'comparisons.json'}")
    return results


def read_plan(plan_file: str) -> dict:
    plan = read_yaml(plan_file)
    unknown = set(plan) - PLAN_KEYS
    if unknown:
        raise UserError(f"{plan_file}: unknown key {sorted(unknown)[0]!r} (allowed: {', '.join(sorted(PLAN_KEYS))})")
    for key in REQUIRED:
        if key not in plan:
            raise UserError(f"{plan_file}: key {key!r} is required")
    extra = [t for tasks in plan.get("extra_intermediates", {}).values() for t in tasks]
    for task in [plan["target"], plan["retrieval_task"], *plan["intermediates"], *extra,
                 *([plan["lang_adapter_task"]] if "lang_adapter_task" in plan else []), *plan.get("task_phase", {})]:
        get_task(task)
    blocks = {key: plan.get(key, {}) for key in ("phase", "intermediate_phase", "lang_adapter_phase")}
    blocks |= {f"{key}.{name}": block for key in ("task_phase", "regime_phase")
               for name, block in plan.get(key, {}).items()}
    for where, block in blocks.items():  # a typo here fails now, not after the phases before it
        from_dict({**block, "task": plan["target"]}, source=f"{plan_file}: {where}")
    for regime in [*plan.get("regimes", []), *plan.get("regime_phase", {}),
                   *(r for key in (*COMBINED, "multitask", "retrieval_regimes") for r in plan.get(key, []))]:
        get_regime(regime)
    for entry in plan.get("compare", []):
        regime = entry[0] if isinstance(entry, list) and len(entry) == 3 else None
        runs = _run_names(plan, regime) if regime in plan.get("regimes", ["full"]) else []
        if not runs or not all(name in runs for name in entry[1:]):
            names = f" ({', '.join(n or 'null (the baseline)' for n in runs)})" if runs else ""
            raise UserError(f"{plan_file}: compare entry {entry!r} must be [regime, run, run], "
                            f"a regime of the plan and two of its runs{names}")
    if "madx" in plan.get("regimes", []) and "lang_adapter_task" not in plan:
        raise UserError(f"{plan_file}: regime madx needs key 'lang_adapter_task' (e.g. verses-text)")
    return plan


def _run_names(plan: dict, regime: str) -> list[str | None]:
    """The intermediate labels of one regime's target runs, as the report names them (None: the baseline)."""
    return [None, *plan["intermediates"], *plan.get("extra_intermediates", {}).get(regime, []),
            *(_combined(mode, plan) for mode in (*COMBINED, "multitask") if regime in plan.get(mode, []))]


def _combined(mode: str, plan: dict) -> str:
    """The label of a run that starts from all the intermediates at once: fusion(a+b), merge(a+b), ..."""
    return f"{mode}({'+'.join(plan['intermediates'])})"


def _reuse_or_train(config: RunConfig) -> Path:
    out = config.resolved_output_dir()
    if artifacts.is_artifact(out) and artifacts.read_manifest(out, verify=False).get("config") == vars(config):
        print(f"reusing {out} (same configuration)")
        return out
    return train_phase(config)


def _run_rows(folder: Path, regime: str, intermediate: str | None, task: str, scores: dict | None = None,
              variant: str | None = None, gain: dict | None = None) -> list[dict]:
    """Per-language rows of one target run, each carrying the run's cost and selection figures.

    ``scores`` (default: the run's own scores.json) with a ``variant`` label: another evaluation
    of the same model (the madx ablation). ``gain``: its zero-shot gain over the regime's baseline."""
    manifest = artifacts.read_manifest(folder, verify=False)
    scores = scores or json.loads((folder / "scores.json").read_text())
    metric = manifest["dev"]["metric"]
    others = [by_metric[metric] for lang, by_metric in scores.items() if not lang.startswith("en")]
    run = {"trainable_parameters": manifest["trainable_parameters"],
           "artifact_mb": artifacts.size_mb(folder, manifest), "train_seconds": manifest["train_seconds"],
           "peak_rss_mb": manifest["peak_rss_mb"], "english_dev": round(manifest["dev"]["best"], 4),
           "zero_shot": manifest["zero_shot"],
           "zero_shot_avg": round(sum(others) / len(others), 4) if others else None,
           **(gain or {}), **({"variant": variant} if variant else {})}
    return [{**row, **run} for row in _rows(scores, regime, intermediate, task)]


def _paired_gain(run: Path, baseline: Path) -> dict:
    """The run's zero-shot average minus its baseline's, with a 95% paired-bootstrap interval.

    An item is a test ref: its value is the run's accuracy minus the baseline's on that ref, averaged
    over the non-English languages. The verses test every language on the same refs, so resampling
    refs keeps each verse's translations together, as their errors are correlated. Rows without a
    ref are items of their own language."""
    differences: dict[str, list[float]] = {}
    for file in sorted((run / "predictions").glob("test-*.jsonl")):
        if file.stem.removeprefix("test-").startswith("en"):
            continue
        mine, base = _jsonl(file), _jsonl(baseline / "predictions" / file.name)
        if [row["ref"] for row in mine] != [row["ref"] for row in base]:
            raise UserError(f"{file} and {baseline / 'predictions' / file.name} hold different test items")
        for index, (row, other) in enumerate(zip(mine, base)):
            differences.setdefault(row["ref"] or f"{file.stem}:{index}", []).append(
                float(row["prediction"] == row["label"]) - float(other["prediction"] == other["label"]))
    if not differences:
        return {}
    values = [sum(d) / len(d) for d in differences.values()]
    low, high = bootstrap_interval(values)
    return {"zero_shot_gain": round(sum(values) / len(values), 4),
            "zero_shot_gain_ci95": [round(low, 4), round(high, 4)]}


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _retrieval_rows(plan: dict, model: str | Path, out: Path, regime: str, intermediate: str | None) -> list[dict]:
    scores = evaluate_model(str(model), plan["retrieval_task"], plan.get("retrieval_langs", []), out,
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
