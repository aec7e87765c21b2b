"""Test items split into an exploration share and a held-out confirmation share.

The one place that decides which share a test item is in; every scorer asks it, through
``TaskSpec.held``: the test rows of every target, and candidate pools made of test items (the verses'
retrieval distractors), are read whole, kept where they lie in the share, then sampled as usual.

An item goes with its **cluster**: its ref at a level (``cluster_of``): a verses ref's chapter or book, an
XTREME item's id. A ref names an item in every language (the verses; XNLI, PAWS-X and XCOPA positions;
XQuAD and MLQA question ids), so parallel languages stay together. A cluster is held out when
sha256 of ``SALT`` and its id, read as a fraction of 2**256, is below ``held_out``: about that share of
the clusters, the same ones on every machine, in every phase and for every arm. Changing ``held_out``
or ``by`` moves items between shares, which a confirmation refuses (study/confirmation.py).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from .errors import UserError

PARTS = ("all", "explore", "confirm")
LEVELS = ("item", "chapter", "book")
SALT = "adapterxfer-held-out:"


@dataclass(frozen=True)
class Share:
    """The ``part`` of a task's test items a phase scores: ``explore`` (what a study looks at while it is
    explored) or ``confirm`` (the held-out ``held_out`` of the clusters at level ``by``)."""

    part: str
    held_out: float
    by: str

    def keeps(self, key: str) -> bool:
        return held_out(cluster_of(key, self.by), self.held_out) == (self.part == "confirm")


def share(part: str, fraction: float, by: str) -> Share | None:
    """The share a phase's keys name (``test_share``, ``held_out``, ``held_out_by``); None for ``all``."""
    if part not in PARTS:
        raise UserError(f"test_share must be one of {', '.join(PARTS)}, got {part!r}")
    return None if part == "all" else Share(part, fraction, by)


def held_out(cluster: str, fraction: float) -> bool:
    digest = hashlib.sha256((SALT + cluster).encode()).digest()
    return int.from_bytes(digest, "big") < fraction * (1 << 256)


def cluster_of(ref: str, level: str) -> str:
    """The cluster of a test item: its ref (``item``), or a verses ref's ``book:chapter`` or ``book``."""
    if level == "item":
        return ref
    fields = str(ref).split(":")
    if len(fields) != 3:
        raise UserError(f"cluster level {level!r} needs verses refs book:chapter:verse, got ref {ref!r}; "
                        "use clusters: item for this target")
    return ":".join(fields[:1 if level == "book" else 2])


def item_key(row: dict, lang: str, index: int) -> str:
    """A test row's item: its ref, else its id, else its position in its language (an item of its own)."""
    for field in ("ref", "id"):
        if row.get(field) is not None:
            return str(row[field])
    return f"{lang}#{index}"
