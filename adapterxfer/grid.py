"""`adapterxfer grid PLAN.yaml`: the commands of an intermediate x target grid, in dependency order.

A grid is too big for one process: it is hundreds of GPU runs. This prints one shell command per
line, in stages (phase 2, then phase 3 and scoring), for the cluster engine the lab already has
(GNU parallel, a Slurm array, ...). Every line is an ordinary `adapterxfer` command, so a cell can
also be run by hand.
"""

from __future__ import annotations

import shlex
from pathlib import Path

from .config import load_config, read_yaml
from .errors import UserError
from .tasks import get_task

KEYS = {"backbone", "seeds", "output_root", "intermediates", "mlm_task", "recipes", "targets", "retrieval",
        "not_zero_shot", "model_selection"}
EVALUATION_ONLY = "evaluation_only"


def grid_commands(plan_file: str) -> list[str]:
    plan = _read(plan_file)
    lines = []
    for seed in plan["seeds"]:
        root = Path(plan["output_root"]) / f"seed{seed}"
        common = [f"backbone={plan['backbone']}", f"seed={seed}"]
        lines.append(f"# seed {seed}, stage 1: intermediate tasks (phase 2)")
        for task in plan["intermediates"]:
            lines.append(_train(plan["recipes"]["intermediate"], task, common, root / task))
        lines.append(f"# seed {seed}, stage 2: targets from each intermediate model and from the backbone (phase 3)")
        for start in [None, *plan["intermediates"]]:
            lines += _targets(plan, common, root, start)
    return lines


def _targets(plan: dict, common: list[str], root: Path, start: str | None) -> list[str]:
    name = start or "baseline"
    lines = []
    for kind, targets in plan["targets"].items():
        for target in targets:
            if kind == EVALUATION_ONLY:
                model = root / start if start else plan["backbone"]
                retrieval = plan.get("retrieval", {})
                extra = ["--layer", str(retrieval.get("layer", -1)), "--max-length", str(retrieval.get("max_length", 128))]
                lines.append(_evaluate(model, target, root / f"{name}-{target}" / "eval", extra))
                continue
            out = root / f"{name}-{target}"
            init = [f"init_from={root / start}"] if start else []
            lines.append(_train(plan["recipes"][kind], target, common + init, out))
            lines.append(_evaluate(out, target, out / "eval", []))
    return lines


def _train(recipe: str, task: str, extra: list[str], out: Path) -> str:
    return shlex.join(["adapterxfer", "train", recipe, f"task={task}", *extra, f"output_dir={out}"])


def _evaluate(model, task: str, out: Path, extra: list[str]) -> str:
    return shlex.join(["adapterxfer", "evaluate", "--model", str(model), "--task", task, "--format", "xtreme",
                       "--output", str(out), *extra])


def _read(plan_file: str) -> dict:
    plan = read_yaml(plan_file)
    unknown = set(plan) - KEYS
    if unknown:
        raise UserError(f"{plan_file}: unknown key {sorted(unknown)[0]!r} (allowed: {', '.join(sorted(KEYS))})")
    for key in ("backbone", "seeds", "output_root", "intermediates", "recipes", "targets"):
        if key not in plan:
            raise UserError(f"{plan_file}: key {key!r} is required")
    for task in plan["intermediates"] + [t for targets in plan["targets"].values() for t in targets]:
        get_task(task)
    for kind in [k for k in plan["targets"] if k != EVALUATION_ONLY] + ["intermediate"]:
        recipe = plan["recipes"].get(kind)
        if recipe is None:
            raise UserError(f"{plan_file}: recipes has no entry {kind!r}")
        load_config(recipe, ["task=" + plan["intermediates"][0]])  # the recipe must parse as a train config
    return plan
