"""Where phases run: ``local`` (this process, or N worker processes), ``ray`` (a Ray task per phase,
with its resources) or ``slurm`` (a submitit job per phase). Each executor only submits a phase and
says when it is done; the runner decides what is ready and records results. A worker process runs
``execute``: one ``train_phase`` or one ``evaluate_model`` call into the phase's own folder.
"""

from __future__ import annotations

import multiprocessing
import os
import time
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from pathlib import Path

from ..errors import UserError
from .phases import Phase

EXECUTORS = ("local", "ray", "slurm")
# Passed to every worker: the cache and data locations, the Hub settings.
ENVIRONMENT_PREFIXES = ("ADAPTERXFER_", "HF_")
SLURM_POLL_S = 2.0


def job(phase: Phase, root: Path, backbone: str) -> dict:
    environ = {k: v for k, v in os.environ.items() if k.startswith(ENVIRONMENT_PREFIXES)}
    return {"phase": phase, "root": str(Path(root).resolve()), "backbone": backbone, "environ": environ}


def execute(job: dict) -> float:
    """Run one phase into ``root/<key>``; returns its wall seconds. Runs in the worker process."""
    os.environ.update(job["environ"])
    from ..config import from_dict
    from ..pipeline import evaluate_model, train_phase

    phase, root = job["phase"], Path(job["root"])
    started = time.perf_counter()
    if phase.action == "train":
        train_phase(from_dict({**phase.settings, "init_from": [str(root / key) for key in phase.init_from],
                               "lang_adapters": [str(root / key) for key in phase.lang_adapters],
                               "output_dir": str(root / phase.key), "overwrite": True},
                              source=f"phase {phase.key}"))
    else:
        settings = dict(phase.settings)
        evaluate_model(str(root / phase.model) if phase.model else job["backbone"], settings.pop("task"),
                       settings.pop("langs"), root / phase.key, **settings)
    return time.perf_counter() - started


class Local:
    """Phases in this process (workers=1), or in ``workers`` processes.

    Workers fork from a forkserver that imported the training stack once (a fresh interpreter takes
    seconds to import torch and transformers), and never from this process, whose torch threads may
    be running."""

    def __init__(self, workers: int = 1):
        if workers < 1:
            raise UserError(f"--workers must be at least 1, got {workers}")
        self.pool = None
        self.queued: dict[Future, dict] = {}  # in this process: submitted, run by wait() one at a time
        if workers > 1:
            context = multiprocessing.get_context("forkserver")
            context.set_forkserver_preload(["adapterxfer.pipeline"])
            self.pool = ProcessPoolExecutor(workers, mp_context=context)

    def submit(self, job: dict) -> Future:
        if self.pool:
            return self.pool.submit(execute, job)
        future = Future()
        self.queued[future] = job
        return future

    def wait(self, handles: list) -> list:
        """The handles done; in this process, the first one queued runs now, so that the runner records each
        phase as it finishes (a killed study resumes after it)."""
        if self.pool:
            return list(wait(handles, return_when=FIRST_COMPLETED).done)
        future = next(handle for handle in handles if handle in self.queued)
        try:
            future.set_result(execute(self.queued.pop(future)))
        except Exception as err:  # noqa: BLE001 -- handed to the runner like a worker's failure
            future.set_exception(err)
        return [future]

    def result(self, handle: Future) -> float:
        return handle.result()

    def close(self) -> None:
        if self.pool:
            self.pool.shutdown(cancel_futures=True)


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

    def result(self, handle) -> float:
        try:
            return self.ray.get(handle)
        except self.ray.exceptions.RayTaskError as err:
            if isinstance(err.cause, UserError):  # the worker's one line, without Ray's traceback
                raise UserError(str(err.cause)) from None
            raise

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

    def result(self, handle) -> float:
        try:
            return handle.result()
        except (self.submitit.core.utils.FailedJobError, self.submitit.core.utils.UncompletedJobError) as err:
            last = [line for line in str(err).splitlines() if line.strip()][-1]
            raise UserError(f"job {handle.job_id} failed ({last.strip()}); log: {handle.paths.stderr}") from None

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
