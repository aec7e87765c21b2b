"""A phase's identity: what it computes, on which backbone, from which parent outputs.

sha256 over the phase's settings (a train phase's full RunConfig, so defaults count too), less the
fields that do not change the result (where it writes, resuming, tracking) and the paths of its
inputs, plus the backbone's weight hash and the sha256 of each input's manifest.json. Paths drop
out, so a study folder can move; a retrained parent has a new manifest, so everything after it
gets a new identity and re-runs.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from ..artifacts import MANIFEST, sha256_file
from ..config import RUN_ONLY
from .phases import Phase

# RunConfig fields that do not change what a phase computes: those that never change training, less
# eval_langs (a study's target phase includes its zero-shot scoring), and the paths of its inputs (the
# backbone enters by its weight hash, the inputs by their manifests' hashes).
IGNORED = (frozenset(RUN_ONLY) - {"eval_langs"}) | {"backbone", "init_from", "lang_adapters"}
SCORES = "scores.json"  # an evaluation's output, as a manifest is a training phase's


def output_file(phase: Phase, root: Path) -> Path:
    """The file whose sha256 stands for the phase's finished output."""
    return root / phase.key / (MANIFEST if phase.action == "train" else SCORES)


def input_hashes(phase: Phase, root: Path) -> list[dict]:
    """The lineage: each input phase (in order) with the sha256 of its manifest now."""
    return [{"key": key, "manifest_sha256": sha256_file(root / key / MANIFEST)} for key in phase.deps]


def phase_identity(phase: Phase, backbone_hash: str, inputs: list[dict]) -> str:
    settings = {k: v for k, v in phase.settings.items() if k not in IGNORED}
    payload = {"action": phase.action, "settings": settings, "backbone": backbone_hash,
               "inputs": [entry["manifest_sha256"] for entry in inputs]}
    return "sha256:" + hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()
