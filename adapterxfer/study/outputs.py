"""A study's phase folders judged against its plan: which hold their phase, and what becomes of those that do not.

The outputs are the study's ledger, and results.sqlite an index of them that can be rebuilt from them:

- a trained phase's manifest.json records its identity (``config.phase_identity``: the settings its regime
  reads, the backbone's weights, the manifest hash of each input) and lists its files with their hashes;
- an evaluation's evaluation.json records what it scored (the model's manifest hash, or the backbone's
  weights), in which languages, the size of each file it wrote and, for a study's evaluation phase, the
  identity of the phase that asked for it (see ``artifacts``).

``inspect`` tells, for a phase of the plan, whether its folder holds that phase whole (recorded as it is, never
run again: after a lost database, or a kill between its save and its record), its training without its scores
(scored again, not retrained), something else (moved aside under ``stale/``, with why), or nothing yet. The
tool never deletes an output: ``study clean`` removes what was moved aside, when asked.
"""

from __future__ import annotations

import hashlib
import re
import time
from dataclasses import dataclass
from pathlib import Path

from .. import artifacts, config
from ..errors import UserError
from ..tasks import get_task
from .phases import Phase

STALE = "stale"  # <study>/stale/<phase key>.<why>.<when>: outputs moved aside; `study clean` removes them
LOGS = "logs"  # <study>/logs/<phase key>.log: the traceback of a phase that failed


@dataclass(frozen=True)
class Found:
    """What a phase folder holds: ``complete`` (the phase, whole), ``unscored`` (its training, not its scores),
    ``other`` (something else: ``why``), or ``absent`` (nothing, or an evaluation cut short)."""

    state: str
    why: str = ""


def training_identity(phase: Phase, backbone_hash: str, lineage: list[dict]) -> dict:
    """The identity a train phase's manifest records when it holds this phase."""
    return config.phase_identity(phase.settings, backbone_hash, [entry["manifest_sha256"] for entry in lineage])


def inspect(phase: Phase, root: Path, backbone_hash: str, lineage: list[dict], identity: str) -> Found:
    """What ``root/<phase key>`` holds, against the phase as the plan has it now (``identity``: its study identity,
    ``lineage``: its inputs' manifest hashes now). Reads manifests and file sizes, no weights."""
    folder = root / phase.key
    if not folder.exists():
        return Found("absent")
    if phase.action == "evaluate":
        record = artifacts.read_evaluation(folder)
        if record is None:
            return Found("absent")  # cut short: run again into the same folder, which it replaces whole
        return Found("complete") if record.get("identity") == identity else Found("other", "another evaluation")
    try:
        manifest = artifacts.read_manifest(folder, verify=False)
        artifacts.check_files(folder, manifest)
    except UserError as err:
        return Found("other", f"damaged: {err}")
    change = config.identity_change(manifest.get("identity"), training_identity(phase, backbone_hash, lineage))
    if change:
        return Found("other", change)
    if phase.role == "target" and not _scored(folder, phase):
        return Found("unscored")
    return Found("complete")


def _scored(folder: Path, phase: Phase) -> bool:
    """A target's folder holds a complete evaluation of its own artifact, as the phase scores it."""
    return artifacts.scores_itself(folder, get_task(phase.task).check_langs(phase.settings["eval_langs"]),
                                   {name: phase.settings.get(name) for name in config.SCORING})


def digest(phase: Phase, root: Path) -> str:
    """What stands for a finished output in the database: the sha256 of its manifest.json (a trained phase) and of
    its scores.json (a scored one); a recorded run whose output no longer has it is recorded again."""
    folder = root / phase.key
    files = ([artifacts.MANIFEST] if phase.action == "train" else []) + (
        [artifacts.SCORES] if phase.action == "evaluate" or phase.role == "target" else [])
    hashes = [artifacts.sha256_file(folder / name) for name in files]
    if len(hashes) == 1:
        return hashes[0]
    return "sha256:" + hashlib.sha256(",".join(hashes).encode()).hexdigest()


def move_aside(root: Path, key: str, why: str) -> Path:
    """Move the output of phase ``key`` to ``stale/<key>.<why>.<when>`` (``why`` cut to a short slug)."""
    slug = re.sub(r"[^a-z0-9]+", "-", why.split(":")[0].lower()).strip("-") or "other"
    target = root / STALE / f"{key}.{slug}.{time.strftime('%Y%m%d-%H%M%S')}"
    target.parent.mkdir(parents=True, exist_ok=True)
    while target.exists():  # two in one second
        target = target.with_name(target.name + "-1")
    (root / key).rename(target)
    return target


def log_file(root: Path, key: str) -> Path:
    return root / LOGS / f"{key}.log"
