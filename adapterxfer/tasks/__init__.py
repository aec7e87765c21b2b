"""The task registry: one name -> one TaskSpec. Readers register their tasks on import."""

from __future__ import annotations

from ..errors import UserError, unknown
from .spec import TaskSpec

TASKS: dict[str, TaskSpec] = {}


def register(spec: TaskSpec) -> TaskSpec:
    if spec.name in TASKS:
        raise ValueError(f"task {spec.name} registered twice")
    TASKS[spec.name] = spec
    return spec


def get_task(name: str) -> TaskSpec:
    if name not in TASKS:
        raise UserError(unknown("task", name, sorted(TASKS)) + "; see `adapterxfer tasks`")
    return TASKS[name]


from . import verses  # noqa: E402,F401  (registers the embedded benchmark)
from . import xtreme  # noqa: E402,F401  (registers XTREME / XTREME-R targets and the paper's intermediate tasks)
