"""Where phases run: ``local`` (this process, or N worker processes), ``ray`` (a Ray task per phase,
with its resources) or ``slurm`` (a submitit job per phase). Each executor only submits a phase and
says when it is done; the runner decides what is ready and records results. A worker process runs
``execute``: one ``train_phase`` or one ``evaluate_model`` call into the phase's own folder, or one
``evaluate_together`` call scoring several trained phases in one pass, which returns its outcome whatever
the phase raised (its traceback goes to the phase's log file).
"""

from __future__ import annotations

import errno
import multiprocessing
import os
import time
import traceback
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

from ..errors import UserError
from ..regimes import at_test_keys, get_regime
from .outputs import log_file
from .phases import Phase

EXECUTORS = ("local", "ray", "slurm")
# Passed to every worker: the cache and data locations, the Hub settings; never a secret (a job is pickled
# into <study>/slurm/ or shipped to Ray workers): a worker reads its token from its own environment.
ENVIRONMENT_PREFIXES = ("ADAPTERXFER_", "HF_")
SECRET_WORDS = ("TOKEN", "SECRET", "PASSWORD", "KEY")
SLURM_POLL_S = 2.0


class WorkerDied(Exception):
    """The process running a phase died (a signal, the out-of-memory killer) before the phase returned."""


def job(phase: Phase, root: Path, backbone: str, identity: str, score: bool = True) -> dict:
    """What a worker needs to run ``phase``: ``backbone`` is the plan's, pinned (``Backbone.pinned``: a Hub
    backbone at the commit the study resolved it to). ``score=False``: a target phase trains without scoring
    (the runner scores it with others, ``together``)."""
    return {"phase": phase, "root": str(Path(root).resolve()), "backbone": backbone, "environ": _environ(),
            "identity": identity, "score": score}


def together(phases: list[Phase], root: Path, backbone: str) -> dict:
    """What a worker needs to score the trained target ``phases`` in one pass (``pipeline.evaluate_together``)."""
    return {"phases": phases, "root": str(Path(root).resolve()), "backbone": backbone, "environ": _environ()}


def _environ() -> dict:
    return {k: v for k, v in os.environ.items()
            if k.startswith(ENVIRONMENT_PREFIXES) and not any(word in k for word in SECRET_WORDS)}


def execute(job: dict) -> dict:
    """Run one phase into ``root/<key>`` (or score several, ``together``); runs in the worker process. Returns
    {seconds, error: None or the failure in one line, log: where its traceback went, disk_full}: any exception
    fails this job alone."""
    os.environ.update(job["environ"])
    root = Path(job["root"])
    key = job["phase"].key if "phase" in job else f"{job['phases'][0].key}.together"
    started = time.perf_counter()
    try:
        if "phases" in job:
            _score_together(job["phases"], root, job["backbone"])
        else:
            _run(job["phase"], root, job["backbone"], job["identity"], job["score"])
    except Exception as err:  # noqa: BLE001 -- whatever a phase raises fails that phase, not the study
        return {"seconds": time.perf_counter() - started, "error": one_line(err),
                "log": _write_log(log_file(root, key), key), "disk_full": disk_full(err)}
    return {"seconds": time.perf_counter() - started, "error": None, "log": None, "disk_full": False}


def _run(phase: Phase, root: Path, backbone: str, identity: str, score: bool = True) -> None:
    from ..pipeline import evaluate_model, train_phase

    if phase.action == "train":
        train_phase(_config(phase, root, backbone), score=score)
    else:
        settings = dict(phase.settings)
        at_test = {name: settings.pop(name) for name in at_test_keys() if name in settings}  # an ablation's
        evaluate_model(str(root / phase.model) if phase.model else backbone, settings.pop("task"),
                       settings.pop("langs"), root / phase.key, identity=identity, at_test=at_test, **settings)


def _score_together(phases: list[Phase], root: Path, backbone: str) -> None:
    from ..pipeline import evaluate_together

    evaluate_together([_config(phase, root, backbone) for phase in phases])


def _config(phase: Phase, root: Path, backbone: str):
    """A train phase's RunConfig, its inputs and output in ``root``."""
    from ..config import from_dict

    inputs = {"init_from": [str(root / key) for key in phase.init_from]}
    stacks_key = get_regime(phase.settings["regime"]).stacks_key  # phase.regime may name a variant of it
    for name, keys in ((stacks_key, phase.stacks_on), ("lang_modules", phase.lang_modules)):
        if keys:  # given only where the phase reads it: others refuse it
            inputs[name] = [str(root / key) for key in keys]
    return from_dict({**phase.settings, **inputs, "backbone": backbone, "output_dir": str(root / phase.key),
                      "overwrite": True}, source=f"phase {phase.key}")


def disk_full(err: BaseException) -> bool:
    """A full disk, however the library that met it says so (safetensors wraps the OSError in an error of its own)."""
    return (isinstance(err, OSError) and err.errno == errno.ENOSPC) or "No space left on device" in str(err)


def one_line(err: BaseException) -> str:
    """A failure in one line: a UserError's own message, else the exception's type and first line."""
    if isinstance(err, UserError):
        return str(err)
    first = next((line.strip() for line in str(err).splitlines() if line.strip()), "")
    return f"{type(err).__name__}: {first}" if first else type(err).__name__


def _write_log(log: Path, key: str) -> str | None:
    """The current exception's traceback into the phase's log; None where even that cannot be written (a full
    disk)."""
    try:
        log.parent.mkdir(parents=True, exist_ok=True)
        log.write_text(f"phase {key} failed at {time.strftime('%Y-%m-%dT%H:%M:%S')}\n{traceback.format_exc()}")
        return str(log)
    except OSError:
        return None


class Local:
    """Phases in this process (workers=1), or in ``workers`` processes.

    Workers fork from a forkserver that imported the training stack once (a fresh interpreter takes
    seconds to import torch and transformers), and never from this process, whose torch threads may
    be running."""

    def __init__(self, workers: int = 1):
        if workers < 1:
            raise UserError(f"--workers must be at least 1, got {workers}")
        self.workers, self.pool = workers, None
        self.queued: dict[Future, dict] = {}  # in this process: submitted, run by wait() one at a time
        self.pools: dict[Future, ProcessPoolExecutor] = {}  # in worker processes: the pool running each

    def submit(self, job: dict) -> Future:
        if self.workers == 1:
            future = Future()
            self.queued[future] = job
            return future
        try:
            future = self._pool().submit(execute, job)
        except BrokenProcessPool:  # a worker died since the last phase finished: a new pool
            self._drop(self.pool)
            future = self._pool().submit(execute, job)
        self.pools[future] = self.pool
        return future

    def _pool(self) -> ProcessPoolExecutor:
        """The pool, made at first and again after a worker died (a pool is broken for good then)."""
        if self.pool is None:
            context = multiprocessing.get_context("forkserver")
            context.set_forkserver_preload(["adapterxfer.pipeline"])
            self.pool = ProcessPoolExecutor(self.workers, mp_context=context)
        return self.pool

    def _drop(self, pool) -> None:
        if pool is not None and pool is self.pool:
            pool.shutdown(wait=False, cancel_futures=True)
            self.pool = None

    def wait(self, handles: list) -> list:
        """The handles done; in this process, the first one queued runs now, so that the runner records each
        phase as it finishes (a killed study resumes after it)."""
        if self.workers > 1:
            return list(wait(handles, return_when=FIRST_COMPLETED).done)
        future = next(handle for handle in handles if handle in self.queued)
        future.set_result(execute(self.queued.pop(future)))
        return [future]

    def result(self, handle: Future) -> dict:
        pool = self.pools.pop(handle, None)
        try:
            return handle.result()
        except BrokenProcessPool:
            # One worker died, and its pool stopped every phase it was running; the runner runs them again in a
            # new pool (unless a phase submitted since the death made one already).
            self._drop(pool)
            raise WorkerDied("its worker process died (killed by a signal or out of memory)") from None

    def close(self) -> None:
        if self.pool:
            self.pool.shutdown(cancel_futures=True)
            self.pool = None


class Ray:
    """A Ray task per phase with the plan's resources (``ray: {num_cpus, num_gpus}``), on the cluster at
    ``ray: {address}`` or, when none is given and none is running, a local one."""

    def __init__(self, options: dict):
        import ray

        if not ray.is_initialized():
            ray.init(address=options.get("address"), include_dashboard=False)
        self.ray = ray
        self.task = ray.remote(execute).options(num_cpus=options.get("num_cpus", 1),
                                                num_gpus=options.get("num_gpus", 0), max_retries=0)

    def submit(self, job: dict):
        return self.task.remote(job)

    def wait(self, handles: list) -> list:
        ready, _ = self.ray.wait(handles, num_returns=1)
        return ready

    def result(self, handle) -> dict:
        return self.ray.get(handle)  # a dead worker raises Ray's own error; the runner fails the phase with it

    def close(self) -> None:
        pass  # the cluster belongs to whoever started it (ray.init in this process ends with it)


class Slurm:
    """A submitit job per phase: SLURM, or with ``slurm: {cluster: local}`` processes on this machine."""

    def __init__(self, options: dict, root: Path):
        import submitit

        parameters = dict(options)
        cluster = parameters.pop("cluster", "slurm")
        self.submitit = submitit
        try:
            self.executor = submitit.AutoExecutor(folder=Path(root) / "slurm" / "%j", cluster=cluster)
            self.executor.update_parameters(**parameters)
        except (ValueError, TypeError, RuntimeError) as err:
            raise UserError(f"slurm: {str(err).splitlines()[0]}") from None

    def submit(self, job: dict):
        return self.executor.submit(execute, job)

    def wait(self, handles: list) -> list:
        while True:
            done = [handle for handle in handles if handle.done()]
            if done:
                return done
            time.sleep(SLURM_POLL_S)

    def result(self, handle) -> dict:
        try:
            return handle.result()
        except (self.submitit.core.utils.FailedJobError, self.submitit.core.utils.UncompletedJobError) as err:
            last = [line for line in str(err).splitlines() if line.strip()][-1]
            raise WorkerDied(f"job {handle.job_id} failed ({last.strip()}); log: {handle.paths.stderr}") from None

    def close(self) -> None:
        pass


def make_executor(name: str, plan: dict, root: Path, workers: int = 1):
    if name not in EXECUTORS:
        raise UserError(f"unknown executor {name!r} (choose one of {', '.join(EXECUTORS)})")
    if workers != 1 and name != "local":
        raise UserError(f"--workers applies to the local executor; {name} runs as many phases at once as its "
                        "cluster's resources allow")
    return {"local": lambda: Local(workers), "ray": lambda: Ray(plan["ray"]),
            "slurm": lambda: Slurm(plan["slurm"], root)}[name]()
