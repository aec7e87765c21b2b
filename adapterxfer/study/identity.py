"""A phase's identity: what it computes, on which backbone, from which parent outputs, where in the study.

sha256 over the phase's settings (a train phase's RunConfig keys that its regime reads, so defaults count
too), less the fields that do not change the result (where it writes, resuming, tracking) and the paths of
its inputs, plus the backbone's weight hash, the sha256 of each input's manifest.json and the phase's key
(two phases of one plan may compute the same thing: siqa as an intermediate and as XCOPA's stage). Paths
drop out, so a study folder can move; a retrained parent has a new manifest, so everything after it gets a
new identity and re-runs.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from .. import config
from ..artifacts import MANIFEST, sha256_file
from .phases import Phase


def input_hashes(phase: Phase, root: Path) -> list[dict]:
    """The lineage: each input phase (in order) with the sha256 of its manifest now."""
    return [{"key": key, "manifest_sha256": sha256_file(root / key / MANIFEST)} for key in phase.deps]


def phase_identity(phase: Phase, backbone_hash: str, inputs: list[dict]) -> str:
    """config.phase_identity of the phase (a study's target phase includes its scoring), with its action and key."""
    payload = {"action": phase.action, "key": phase.key, **config.phase_identity(
        phase.settings, backbone_hash, [entry["manifest_sha256"] for entry in inputs], scored=True)}
    return "sha256:" + hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()
