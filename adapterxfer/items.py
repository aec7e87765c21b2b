"""The items a phase trained on, and whether two phases trained on the same ones.

A training example is a feature of a task's row. Its **item** is the row's ``ref``, which names the item
in every rendering of it (verses-xref-bi and verses-xref-bi-multi; MNLI and its translations), its
language the row's ``lang`` (else the phase's training language), its tokens the kind's length.

A phase records, per task, every example its steps drew:

- in the manifest's ``train_items``: examples, distinct items and tokens, the same per language, and two
  digests: ``sequence`` (the refs in the order drawn) and ``multiset`` (each ref with how often it was drawn);
- in the artifact's ``train_items.jsonl``: one line per distinct (task, item, language) with its count and tokens.

Two phases drew the same items in the same amounts exactly when their multiset digests are equal;
``compare`` then needs no file, and otherwise counts the shared items from the two files.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

FILE = "train_items.jsonl"


def row_ref(row: dict, index: int) -> str:
    """A row's item: its ref, else its position (an item of its own, shared by no other task's row)."""
    ref = row.get("ref")
    return str(ref) if ref is not None else f"#{index}"


def summary(refs: list[str], langs: list[str], tokens: list[int]) -> dict:
    """The manifest's record of one task's drawn examples (each a ref, a language and its tokens)."""
    by_lang: dict[str, dict] = {}
    for lang in sorted(set(langs)):
        mine = [i for i, other in enumerate(langs) if other == lang]
        by_lang[lang] = {"examples": len(mine), "items": len({refs[i] for i in mine}),
                         "tokens": sum(tokens[i] for i in mine)}
    return {"examples": len(refs), "items": len(set(refs)), "tokens": sum(tokens), "by_lang": by_lang,
            "sequence": _digest(refs), "multiset": _digest(sorted(Counter(refs).items()))}


def lines(task: str, refs: list[str], langs: list[str], tokens: list[int]) -> list[dict]:
    """``train_items.jsonl``'s lines of one task: each distinct (item, language) in first-drawn order."""
    rows: dict[tuple[str, str], dict] = {}
    for ref, lang, count in zip(refs, langs, tokens):
        row = rows.setdefault((ref, lang), {"task": task, "ref": ref, "lang": lang, "count": 0, "tokens": 0})
        row["count"] += 1
        row["tokens"] += count
    return list(rows.values())


def write(folder: Path, rows: list[dict]) -> None:
    (folder / FILE).write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows))


def read(folder: Path) -> Counter:
    """ref -> how often the phase in ``folder`` drew it (every task of a multi-task phase together)."""
    counts: Counter = Counter()
    for line in (folder / FILE).read_text().splitlines():
        row = json.loads(line)
        counts[row["ref"]] += row["count"]
    return counts


@dataclass(frozen=True)
class Match:
    """How two phases' drawn examples compare: ``shared`` distinct items of ``ours`` and ``theirs``."""

    same: bool  # the same items, each drawn as often
    shared: int
    ours: int
    theirs: int

    @property
    def describe(self) -> str:
        if self.same:
            return f"same {self.ours} items"
        return f"{self.shared} of {self.ours} / {self.theirs} items shared"


def compare(ours: dict, theirs: dict, our_folder: Path, their_folder: Path) -> Match:
    """Compare two phases' ``train_items`` summaries (all tasks together); read the files only where they differ."""
    if [s["multiset"] for s in ours.values()] == [s["multiset"] for s in theirs.values()]:
        count = sum(s["items"] for s in ours.values())
        return Match(True, count, count, count)
    a, b = read(our_folder), read(their_folder)
    return Match(a == b, len(a.keys() & b.keys()), len(a), len(b))


def _digest(values) -> str:
    return "sha256:" + hashlib.sha256(json.dumps(values, ensure_ascii=False).encode()).hexdigest()
