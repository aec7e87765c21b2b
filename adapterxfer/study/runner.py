"""Run a study: phases in dependency order on an executor, each skipped when its identity is recorded
and its output unchanged, re-run when stale; the results database and the report follow."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

from .. import backbones
from ..errors import UserError
from . import confirmation
from .executors import job, make_executor
from .identity import input_hashes, phase_identity
from .phases import Graph, Phase
from .plan import expand, expand_confirmation, load_plan, read_plan, study_root
from .results import FILE, Results


def run_study(plan_file: str, executor: str = "local", workers: int = 1, smoke: bool = False,
              backbone: str | None = None, plan_changed: str | None = None) -> Path:
    """Run every phase that is not current, then write the report; returns the study folder.
    ``smoke``: the plan in miniature into ``<output>-smoke`` (``plan.smoke_plan``), on ``backbone`` if given.
    A plan changed after its confirmation runs only with ``plan_changed``, the reason (study/confirmation.py)."""
    plan = load_plan(plan_file, smoke, backbone)
    root = study_root(plan)
    confirmation.check_plan(plan, root, plan_changed)
    return _run(plan, expand(plan), root, executor, workers)


def confirm_study(plan_file: str, executor: str = "local", workers: int = 1, again: str | None = None,
                  smoke: bool = False, backbone: str | None = None) -> Path:
    """Freeze the plan and run its confirmation: the confirmed contrasts' arms with the confirmation's seeds,
    scoring the held-out share of the test items once (study/confirmation.py); then write the report."""
    plan = load_plan(plan_file, smoke, backbone)
    root = study_root(plan)
    confirmation.freeze(plan, root, Results(root / FILE), again)
    return _run(plan, expand_confirmation(plan), root, executor, workers)


def _run(plan: dict, graph: Graph, root: Path, executor: str, workers: int) -> Path:
    from .report import write_report

    backbone = backbones.resolve(plan["backbone"])
    results = Results(root / FILE)
    runner = make_executor(executor, plan, root, workers)
    try:
        failures = _schedule(graph, root, backbone.weight_hash, plan["backbone"], results, runner)
    finally:
        runner.close()
    report = write_report(plan, expand(plan), results, root)
    print(f"wrote {report}")
    if failures:
        first = next(key for key in graph.phases if key in failures)  # in graph order: a failure, not a blocked one
        raise UserError(f"{len(failures)} of {len(graph.phases)} phases failed or were blocked; "
                        f"{first}: {failures[first]}")
    return root


def _schedule(graph: Graph, root: Path, backbone_hash: str, backbone: str, results: Results, runner) -> dict:
    """Submit each phase once its inputs are done; returns {key: why} of the phases that failed."""
    waiting, running, done, failures = dict(graph.phases), {}, set(), {}
    total = len(waiting)
    while waiting or running:
        for key, phase in list(waiting.items()):
            blocked = next((dep for dep in phase.deps if dep in failures), None)
            if blocked or not all(dep in done for dep in phase.deps):
                if blocked:
                    failures[key] = f"needs {blocked}, which failed"
                    del waiting[key]
                continue
            del waiting[key]
            lineage = input_hashes(phase, root)
            identity = phase_identity(phase, backbone_hash, lineage)
            if results.current(phase, identity, root):
                done.add(key)
                print(f"[{len(done)}/{total}] current  {key}")
                continue
            _clear(phase, root, results)
            running[runner.submit(job(phase, root, backbone))] = (phase, identity, lineage)
        for handle in (runner.wait(list(running)) if running else []):
            phase, identity, lineage = running.pop(handle)
            try:
                seconds = runner.result(handle)
            except UserError as err:
                failures[phase.key] = str(err)
                print(f"[failed]  {phase.key}: {err}")
                continue
            results.record(phase, identity, root, lineage)
            done.add(phase.key)
            print(f"[{len(done)}/{total}] {phase.action:8} {phase.key} ({seconds:.0f} s)")
    return failures


def _clear(phase: Phase, root: Path, results: Results) -> None:
    """A stale or unrecorded finished output goes before its phase re-runs (a half-done one is never
    in place: outputs appear atomically, so whatever resumes from checkpoints is left alone)."""
    results.forget(phase.key)
    folder = root / phase.key
    if folder.is_dir():
        shutil.rmtree(folder)


def study_status(plan_file: str, smoke: bool = False, backbone: str | None = None) -> list[tuple[str, str]]:
    """(phase key, state) for every phase: current, stale (recorded with another identity), to run,
    or waiting (an input is not current yet). Writes nothing."""
    plan = load_plan(plan_file, smoke, backbone)
    graph, root = expand(plan), study_root(plan)
    if confirmation.History(root).events("confirmation"):
        graph.phases |= expand_confirmation(plan).phases
    results = Results(root / FILE) if (root / FILE).is_file() else None
    recorded = results.runs() if results else {}
    backbone_hash = backbones.resolve(plan["backbone"]).weight_hash
    states: dict[str, str] = {}
    for key, phase in graph.phases.items():
        if any(states[dep] != "current" for dep in phase.deps):
            states[key] = "waiting"
            continue
        identity = phase_identity(phase, backbone_hash, input_hashes(phase, root))
        states[key] = ("current" if results and results.current(phase, identity, root)
                       else "stale" if key in recorded else "to run")
    return list(states.items())


def push_study(plan_file: str, prefix: str, private: bool = False) -> list[tuple[str, str]]:
    """Push every intermediate module of a finished study to the Hub, one repo each, named
    ``<prefix>-<phase key>`` (``/`` and ``+`` as ``-``); returns (phase key, pinned hf:// ref) pairs.
    Every intermediate must be current: a stale or missing one is refused before anything is pushed."""
    from ..sharing import push_artifact

    plan = read_plan(plan_file)
    root = study_root(plan)
    states = dict(study_status(plan_file))
    keys = [key for key, phase in expand(plan).phases.items() if phase.role == "intermediate"]
    behind = [f"{key} ({states[key]})" for key in keys if states[key] != "current"]
    if behind:
        raise UserError(f"{plan_file}: intermediates not current: {', '.join(behind)}; run "
                        f"`adapterxfer study run {plan_file}` first")
    pushed = []
    for key in keys:
        repo_id = f"{prefix}-{re.sub(r'[^A-Za-z0-9._-]+', '-', key)}"
        commit = push_artifact(root / key, repo_id, private=private)
        pushed.append((key, f"hf://{repo_id}@{commit.oid}"))
    return pushed
