"""Run a study: phases in dependency order on an executor, the results database and the report.

The phase folders are the study's ledger (study/outputs.py): a phase whose folder holds it is recorded, never
run again (after a lost database, or a kill between its save and its record); one that holds its training but
not its scores is scored; one that holds something else (another configuration, a retrained parent, damage)
has it moved aside under ``stale/`` first, never deleted. Target phases whose modules run side by side
(LoRA arms of one target, scored alike: ``together_group``) train without scoring; once no other phase of
their group is left to train, they are scored together in one pass (``pipeline.evaluate_together``), with
the same scores; a group whose scoring fails has each phase scored alone. Any exception in a phase fails
that phase alone: its traceback goes to ``logs/<phase key>.log``, what needs it does not run, everything
else goes on and is recorded as it finishes, and the report lists the failures. A full disk (or a results database that cannot be written)
stops new phases from starting: the phases running finish, and the next run goes on from there.
"""

from __future__ import annotations

import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from .. import artifacts, backbones
from ..cache import remove_leftovers
from ..errors import StudyFailed, UserError
from ..locks import Held, hold, holding
from ..regimes import get_regime, require_installed
from ..tasks import get_task
from ..transfers import get_transfer
from . import confirmation
from .executors import WorkerDied, job, make_executor, one_line, together
from .identity import input_hashes, phase_identity
from .outputs import STALE, Found, inspect, move_aside
from .phases import Graph, Phase
from .plan import expand, expand_confirmation, load_plan, read_plan, study_root
from .results import FILE, Results

ATTEMPTS = 2  # a phase whose worker process dies runs again once
STATES = ("current", "finished", "to score", "stale", "failed", "to run", "waiting")


@dataclass
class Failure:
    line: str
    log: str | None = None
    disk_full: bool = False


def run_study(plan_file: str, executor: str = "local", workers: int = 1, smoke: bool = False,
              backbone: str | None = None, plan_changed: str | None = None, then_confirm: bool = False) -> Path:
    """Run every phase that is not current, then write the report; returns the study folder. Raises StudyFailed
    (after the report) when a phase failed. ``smoke``: the plan in miniature into ``<output>-smoke``
    (``plan.smoke_plan``), on ``backbone`` if given. A plan changed after its confirmation runs only with
    ``plan_changed``, the reason (study/confirmation.py). ``then_confirm``: once every phase is done, the plan's
    confirmation, as ``confirm_study``, in this process (its frozen-bottom states and loaded data carry over)."""
    plan = load_plan(plan_file, smoke, backbone)
    root = study_root(plan)
    if then_confirm and not plan["confirmation"]:
        raise UserError(f"{plan_file}: --then-confirm needs a confirmation block in the plan "
                        "(confirmation: {seeds: [...]}, new seeds)")
    confirmation.check_plan(plan, root, plan_changed)
    _run(plan, expand(plan), root, executor, workers)
    return confirm_study(plan_file, executor, workers, None, smoke, backbone) if then_confirm else root


def confirm_study(plan_file: str, executor: str = "local", workers: int = 1, again: str | None = None,
                  smoke: bool = False, backbone: str | None = None) -> Path:
    """Freeze the plan and run its confirmation: the confirmed contrasts' arms with the confirmation's seeds,
    scoring the held-out share of the test items once (study/confirmation.py); then write the report."""
    plan = load_plan(plan_file, smoke, backbone)
    root = study_root(plan)
    with study_lock(root, plan_file):
        confirmation.freeze(plan, root, Results(root / FILE, plan_file, check=True), again)
    return _run(plan, expand_confirmation(plan), root, executor, workers)


def _run(plan: dict, graph: Graph, root: Path, executor: str, workers: int) -> Path:
    """Run ``graph``'s phases that are not current, then write the report (of the exploration and of any
    confirmation run so far)."""
    require_installed(phase.settings["regime"] for phase in graph.phases.values() if phase.action == "train")
    from .report import headlines, write_report

    plan_file = plan["file"]
    backbone = backbones.resolve(plan["backbone"])
    check_lengths(graph, backbone)
    with study_lock(root, plan_file):
        results = Results(root / FILE, plan_file, check=True)
        runner = make_executor(executor, plan, root, workers)
        try:
            failures = _schedule(graph, root, backbone.weight_hash, backbone.pinned, results, runner)
        finally:
            runner.close()
        try:
            states = phase_states(reported(plan, root), root, backbone.weight_hash, results)
            report = write_report(plan, expand(plan), results, root, states)
            print(f"wrote {report}")
            print(*headlines(report), sep="\n")
        except Exception as err:  # noqa: BLE001 -- a failed study's line says why it has no report (a full disk)
            if not failures:
                raise
            report = f"no report ({one_line(err)})"
    if failures:
        raise StudyFailed(_summary(graph, failures, root, plan_file, report))
    return root


def _summary(graph: Graph, failures: dict[str, Failure], root: Path, plan_file: str, report) -> str:
    failed = [key for key in graph.phases if key in failures and not failures[key].line.startswith(("needs ", "not "))]
    first = failures[failed[0]]
    stopped = next((failure for failure in failures.values() if failure.disk_full), None)
    if stopped:
        return (f"the disk under {root} is full or cannot be written ({stopped.line}); {len(failures)} of "
                f"{len(graph.phases)} phases did not finish, what finished is kept: free some space, then run "
                f"`adapterxfer study run {plan_file}` again")
    blocked = len(failures) - len(failed)
    return (f"{len(failed)} of {len(graph.phases)} phases failed" + (f" ({blocked} more need them)" if blocked else "")
            + f"; {failed[0]}: {first.line}" + (f" (log: {first.log})" if first.log else "") + f"; see {report}")


# Train keys of a target phase that change how its module is scored, beside its regime and task
SCORED_BY = ("max_length", "eval_batch_size", "precision", "pooling", "frozen_layers", "rows_per_split",
             "test_share", "held_out", "held_out_by")


def together_group(phase: Phase) -> tuple | None:
    """The target phases scored with ``phase`` in one pass (one loaded backbone, mixed-adapter batches): those
    of its regime and task scored alike, where its module runs side by side with others (``Regime.mixes``,
    a plain module); None: it is scored alone, as it trains."""
    if phase.action != "train" or phase.role != "target" or not get_transfer(phase.settings.get("transfer")).swappable:
        return None
    if not get_regime(phase.settings["regime"]).mixes(phase.settings):
        return None
    return (phase.regime, phase.task, *(repr(phase.settings.get(name)) for name in SCORED_BY))


def _schedule(graph: Graph, root: Path, backbone_hash: str, backbone: str, results: Results, runner) -> dict:
    """Submit each phase once its inputs are done; returns {key: Failure} of the phases that failed or could
    not run. Target phases of a ``together_group`` are scored together once no phase of their group is left
    to train (or nothing else runs)."""
    waiting, running, done, failures, attempts = dict(graph.phases), {}, set(), {}, {}
    # running: handle -> (phase, identity, lineage, its group where it trains to be scored with it, else None),
    # or a group's members scored together; unscored: group -> its (phase, identity, lineage) trained, to be scored
    unscored: dict[tuple, list[tuple]] = {}
    total = len(waiting)
    while waiting or running or unscored:
        for key, phase in list(waiting.items()):
            blocked = next((dep for dep in phase.deps if dep in failures), None)
            if blocked:
                failures[key] = Failure(f"needs {blocked}, which failed")
                del waiting[key]
            elif all(dep in done for dep in phase.deps):
                del waiting[key]
                if any(failure.disk_full for failure in failures.values()):
                    failures[key] = Failure("not started: the disk is full or cannot be written")
                    continue
                try:
                    submitted = _start(phase, root, backbone_hash, backbone, results, runner)
                except OSError as err:  # the database or the study's folder cannot be written (a full disk)
                    failures[key] = Failure(one_line(err), disk_full=True)
                    continue
                if isinstance(submitted, str):
                    done.add(key)
                    print(f"[{len(done)}/{total}] {submitted:8} {key}")
                else:
                    running[submitted[0]] = (phase, *submitted[1:], together_group(phase))
        _score_groups(unscored, waiting, running, root, backbone, runner)
        for handle in (runner.wait(list(running)) if running else []):
            entry = running.pop(handle)
            if isinstance(entry, list):  # a group scored together
                outcome = _finish_together(entry, root, handle, results, runner)
                if outcome is None:
                    done.update(phase.key for phase, _, _ in entry)
                elif isinstance(outcome, Failure):
                    failures |= {phase.key: outcome for phase, _, _ in entry}
                else:  # each scored alone (train_phase finds it trained)
                    for phase, identity, lineage in entry:
                        running[runner.submit(job(phase, root, backbone, identity))] = (phase, identity, lineage, None)
                continue
            phase, identity, lineage, group = entry
            failure = _finish(phase, identity, lineage, root, handle, results, runner, record=group is None)
            if isinstance(failure, tuple):  # its worker died: once more
                attempts[phase.key] = attempts.get(phase.key, 1) + 1
                if attempts[phase.key] <= ATTEMPTS:
                    print(f"[again]   {phase.key}: {failure[1]}")
                    running[runner.submit(job(phase, root, backbone, identity, score=group is None))] = entry
                    continue
                failure = Failure(failure[1])
            if failure is None and group is not None:
                unscored.setdefault(group, []).append((phase, identity, lineage))
            elif failure is None:
                done.add(phase.key)
            else:
                failures[phase.key] = failure
                print(f"[failed]  {phase.key}: {failure.line}" + (f" (log: {failure.log})" if failure.log else ""))
    return failures


def _score_groups(unscored: dict, waiting: dict, running: dict, root: Path, backbone: str, runner) -> None:
    """Submit the scoring of each group of ``unscored`` that no waiting or running phase can join any more (all
    of them, once nothing runs): one job scoring its phases together, or the phase alone if it is the only one."""
    pending = [together_group(phase) for phase in waiting.values()] + [
        entry[3] for entry in running.values() if not isinstance(entry, list)]
    for group in list(unscored):
        if running and group in pending:
            continue
        members = unscored.pop(group)
        if len(members) == 1:
            phase, identity, lineage = members[0]
            running[runner.submit(job(phase, root, backbone, identity))] = (phase, identity, lineage, None)
        else:
            running[runner.submit(together([phase for phase, _, _ in members], root, backbone))] = members


def _finish_together(members: list[tuple], root: Path, handle, results: Results, runner):
    """Record the phases a group's scoring job scored; returns None, "alone" where the job failed (each phase is
    then scored alone), or the Failure of them all on a full disk (or where the database cannot be written)."""
    try:
        outcome = runner.result(handle)
    except Exception as err:  # noqa: BLE001 -- a died worker or an executor's failure: each phase alone
        outcome = {"seconds": 0, "error": one_line(err), "disk_full": False}
    if outcome["disk_full"]:  # no phase starts on a full disk: the next run scores them
        return Failure(outcome["error"], outcome["log"], disk_full=True)
    if outcome["error"]:
        print(f"[alone]   scoring {len(members)} phases together failed ({outcome['error']}); each is scored alone")
        return "alone"
    try:
        for phase, identity, lineage in members:
            results.record(phase, identity, root, lineage)
    except OSError as err:  # the outputs stay scored: the next run records them
        return Failure(f"scored, but not recorded: {one_line(err)}", disk_full=True)
    print(f"[scored]  {len(members)} phases together in one pass ({outcome['seconds']:.0f} s): "
          + ", ".join(phase.key for phase, _, _ in members))
    return None


def _start(phase: Phase, root: Path, backbone_hash: str, backbone: str, results: Results, runner):
    """"current", or "recorded" where its output was finished but not recorded (now it is); else (handle,
    identity, lineage) of the phase submitted, after what its folder held instead was moved aside."""
    lineage = input_hashes(phase, root)
    identity = phase_identity(phase, backbone_hash, lineage)
    if results.current(phase, identity, root):
        return "current"
    found = inspect(phase, root, backbone_hash, lineage, identity)
    if found.state == "complete":
        _tidy(root / phase.key, phase)
        results.record(phase, identity, root, lineage)
        return "recorded"
    results.forget(phase.key)
    if found.state == "other":
        moved = move_aside(root, phase.key, found.why)
        print(f"moved     {phase.key} aside to {moved.relative_to(root)} ({found.why})")
    return runner.submit(job(phase, root, backbone, identity, score=together_group(phase) is None)), identity, lineage


def _finish(phase: Phase, identity: str, lineage: list[dict], root: Path, handle, results: Results, runner,
            record: bool = True):
    """Record a phase that ran (``record=False``: trained, to be scored with others, not yet); returns None, its
    Failure, or ("died", why) where its worker process died."""
    try:
        outcome = runner.result(handle)
    except WorkerDied as err:
        return "died", str(err)
    except Exception as err:  # noqa: BLE001 -- an executor's own failure (Ray's dead worker) fails this phase
        outcome = {"seconds": 0, "error": one_line(err), "log": None, "disk_full": False}
    try:
        if outcome["error"]:
            failure = Failure(outcome["error"], outcome["log"], outcome["disk_full"])
            results.fail(phase.key, failure.line, failure.log)
            return failure
        if record:
            results.record(phase, identity, root, lineage)
    except OSError as err:  # the database cannot be written (a full disk): the output stays, the next run records it
        return Failure(outcome["error"] or f"finished, but not recorded: {one_line(err)}", outcome["log"], True)
    print(f"[done]    {phase.action:8} {phase.key} ({outcome['seconds']:.0f} s)")
    return None


def _tidy(out: Path, phase: Phase) -> None:
    """What a run killed after it finished the phase left beside the output: its lock file, its checkpoints
    (unless kept), temporary folders. Left alone where a live process holds the output."""
    try:
        with hold(artifacts.lock_file(out)):
            remove_leftovers(out, keep_work=phase.settings.get("keep_checkpoints", False))
    except Held:
        pass


def check_lengths(graph: Graph, backbone) -> None:
    """Every phase's sequence length fits the backbone's positions (``backbones.check_length``), before any runs."""
    for phase in graph.phases.values():
        for part in phase.task.split("+"):
            try:
                backbones.check_length(phase.settings.get("max_length"), get_task(part), backbone)
            except UserError as err:
                raise UserError(f"phase {phase.key}: {err}") from None


def study_lock(root: Path, plan_file: str):
    """One process at a time runs, rebuilds or cleans a study."""
    root.mkdir(parents=True, exist_ok=True)
    return holding(root / ".study.lock", f"study {root} is being run, rebuilt or cleaned by another process "
                                         f"({plan_file}); wait for it")


def phase_states(graph: Graph, root: Path, backbone_hash: str, results: Results | None) -> dict[str, tuple[str, str]]:
    """{phase key: (state, why)} for every phase, in graph order (``STATES``): current (recorded as it is now),
    finished (its output is whole but unrecorded: the next run records it), to score, stale (recorded or held
    with another identity: ``why``), failed (its last run failed: ``why``), to run, or waiting (an input is not
    current yet). Reads manifests and file sizes; writes nothing."""
    failures, recorded = (results.failures(), results.runs()) if results else ({}, {})
    states: dict[str, tuple[str, str]] = {}
    for key, phase in graph.phases.items():
        if any(states[dep][0] not in ("current", "finished") for dep in phase.deps):
            states[key] = ("waiting", "")
            continue
        lineage = input_hashes(phase, root)
        identity = phase_identity(phase, backbone_hash, lineage)
        if results and results.current(phase, identity, root):
            states[key] = ("current", "")
            continue
        found = inspect(phase, root, backbone_hash, lineage, identity)
        states[key] = {"complete": ("finished", ""), "unscored": ("to score", ""), "other": ("stale", found.why)}.get(
            found.state, ("stale", "its recorded output is gone") if key in recorded
            else ("failed", failures[key]["line"]) if key in failures else ("to run", ""))
    return states


def reported(plan: dict, root: Path) -> Graph:
    """Every phase of the study: the plan's, and its confirmation's once one was run (study/confirmation.py)."""
    graph = expand(plan)
    if confirmation.History(root).events("confirmation"):
        graph.phases |= expand_confirmation(plan).phases
    return graph


def study_status(plan_file: str, smoke: bool = False, backbone: str | None = None) -> list[tuple[str, str, str]]:
    """(phase key, state, why) for every phase (see ``phase_states``). Writes nothing."""
    plan = load_plan(plan_file, smoke, backbone)
    root = study_root(plan)
    results = Results(root / FILE, plan_file) if (root / FILE).is_file() else None
    states = phase_states(reported(plan, root), root, backbones.resolve(plan["backbone"]).weight_hash, results)
    return [(key, state, why) for key, (state, why) in states.items()]


def rebuild_study(plan_file: str, smoke: bool = False, backbone: str | None = None) -> tuple[Path, int, int]:
    """A new results database from the phase outputs alone; the old file (damaged or not) is kept beside it as
    ``results.sqlite.replaced-<when>``. Runs nothing. Returns (database, phases recorded, phases in the plan)."""
    plan = load_plan(plan_file, smoke, backbone)
    root = study_root(plan)
    graph = reported(plan, root)
    backbone_hash = backbones.resolve(plan["backbone"]).weight_hash
    with study_lock(root, plan_file):
        stamp = time.strftime("%Y%m%d-%H%M%S")
        for suffix in ("", "-wal", "-shm"):  # the journal goes with its database, never onto the new one
            old = root / (FILE + suffix)
            if old.exists():
                old.rename(root / f"{FILE}.replaced-{stamp}{suffix}")
        results = Results(root / FILE, plan_file)
        recorded = set()
        for key, phase in graph.phases.items():
            if not all(dep in recorded for dep in phase.deps):
                continue
            lineage = input_hashes(phase, root)
            identity = phase_identity(phase, backbone_hash, lineage)
            if inspect(phase, root, backbone_hash, lineage, identity) == Found("complete"):
                results.record(phase, identity, root, lineage)
                recorded.add(key)
    return root / FILE, len(recorded), len(graph.phases)


def clean_study(plan_file: str, smoke: bool = False, backbone: str | None = None) -> tuple[int, int, float]:
    """Remove what runs moved aside (``stale/``) and the databases a rebuild replaced (with their journals);
    returns (outputs, databases, megabytes)."""
    plan = load_plan(plan_file, smoke, backbone)
    root = study_root(plan)
    if not root.is_dir():
        return 0, 0, 0.0
    with study_lock(root, plan_file):
        aside = ([folder for folder in (root / STALE).rglob("*") if re.search(r"\.\d{8}-\d{6}(-1)*$", folder.name)]
                 if (root / STALE).is_dir() else [])
        replaced = list(root.glob(f"{FILE}.replaced-*"))
        size = sum(file.stat().st_size for file in [*replaced, *(root / STALE).rglob("*")] if file.is_file())
        shutil.rmtree(root / STALE, ignore_errors=True)
        for file in replaced:
            file.unlink()
    return len(aside), sum(not file.name.endswith(("-wal", "-shm")) for file in replaced), size / 1e6


def push_study(plan_file: str, prefix: str, private: bool = False) -> list[tuple[str, str]]:
    """Push every intermediate module of a finished study to the Hub, one repo each, named
    ``<prefix>-<phase key>`` (``/`` and ``+`` as ``-``); returns (phase key, pinned hf:// ref) pairs.
    Every intermediate must be current: a stale or missing one is refused before anything is pushed."""
    from ..sharing import push_artifact

    plan = read_plan(plan_file)
    root = study_root(plan)
    states = {key: state for key, state, _ in study_status(plan_file)}
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

