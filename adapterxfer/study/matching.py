"""Whether the two arms of a contrast trained on the same items, as many times, in as many steps.

For every seed the arms share, each trained phase in one arm's lineage (the arm's own phase, then the
phases it starts from, nearest first) is set against the phase at the same depth of the other's. A pair
is checked on its items (``adapterxfer.items.compare``: the same items, each drawn as often), its steps,
its global batch (batch size x processes x accumulation), and shown with its tokens and language shares.
Two different tasks that share no item (two intermediates compared) are matched on steps and batch
only; a pair sharing some items but not all is a mismatch. Seeds that only one arm ran are a mismatch.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from .. import items
from ..artifacts import MANIFEST
from ..transfers import get_transfer
from .phases import Graph


@dataclass(frozen=True)
class Pair:
    """One depth of one seed: a phase of each arm and how they compare."""

    seed: int
    keys: tuple[str, str]
    tasks: tuple[str, str]
    match: items.Match
    steps: tuple[int, int]
    batch: tuple[int, int]
    tokens: tuple[int, int]
    langs: tuple[dict, dict]  # language -> examples

    @property
    def problems(self) -> list[str]:
        found = []
        different_tasks = self.tasks[0] != self.tasks[1] and self.match.shared == 0
        if not self.match.same and not different_tasks:
            found.append(f"seed {self.seed}: {self.match.describe}")
        for name, (ours, theirs) in (("steps", self.steps), ("batch", self.batch)):
            if ours != theirs:
                found.append(f"seed {self.seed}: {name} {ours} against {theirs}")
        return found


@dataclass(frozen=True)
class Check:
    pairs: list[Pair]
    seeds: list[int]  # the seeds both arms ran
    unpaired: dict[str, list[int]]  # side -> seeds only that arm ran
    trains: tuple[bool, bool]  # whether each arm trained anything (the backbone does not)

    @property
    def problems(self) -> list[str]:
        return [problem for pair in self.pairs for problem in pair.problems]

    @property
    def summary(self) -> str:
        """One cell for the contrast table: what matched, or each mismatch; seeds one arm ran alone are named
        (a contrast pairs seeds, so they are left out of it)."""
        left_out = "".join(f" (seeds only in {side}, left out: {', '.join(map(str, seeds))})"
                           for side, seeds in self.unpaired.items() if seeds)
        if self.problems:
            return "MISMATCH: " + "; ".join(self.problems) + left_out
        if not all(self.trains):
            return (f"{'versus' if self.trains[0] else 'run'} trains nothing (the backbone); {len(self.seeds)} seeds"
                    + left_out)
        kinds = {"same items" if pair.match.same else "different tasks, no item shared" for pair in self.pairs}
        return f"matched: {', '.join(sorted(kinds))}, steps and batch, {len(self.seeds)} seeds" + left_out


def check(graph: Graph, root: Path, ours: dict[int, str], theirs: dict[int, str]) -> Check:
    """Compare two arms' recorded runs (seed -> phase key) whose outputs lie under ``root``."""
    seeds = sorted(set(ours) & set(theirs))
    pairs, trains = [], (False, False)
    for seed in seeds:
        lineages = [trained(graph, key) for key in (ours[seed], theirs[seed])]
        trains = (bool(lineages[0]), bool(lineages[1]))
        pairs += [_pair(seed, root, a, b) for a, b in zip(*lineages)]
    return Check(pairs, seeds, {"run": sorted(set(ours) - set(theirs)), "versus": sorted(set(theirs) - set(ours))},
                 trains)


def trained(graph: Graph, key: str) -> list[str]:
    """The trained phases a phase's result comes from: itself if it trains (a composing transfer, arithmetic,
    does not), then its inputs', nearest first."""
    phase = graph.phases[key]
    own = [key] if phase.action == "train" and get_transfer(phase.settings.get("transfer")).trains else []
    return own + [k for dep in phase.init_from + ((phase.model,) if phase.model else ()) for k in trained(graph, dep)]


def _pair(seed: int, root: Path, ours: str, theirs: str) -> Pair:
    a, b = (json.loads((root / key / MANIFEST).read_text()) for key in (ours, theirs))
    return Pair(seed, (ours, theirs), (a["task"], b["task"]),
                items.compare(a["train_items"], b["train_items"], root / ours, root / theirs),
                (a["config"]["max_steps"], b["config"]["max_steps"]), (_batch(a), _batch(b)),
                (_total(a, "tokens"), _total(b, "tokens")), (_langs(a), _langs(b)))


def _batch(manifest: dict) -> int:
    config = manifest["config"]
    return config["batch_size"] * config["grad_accum"] * manifest["processes"]


def _total(manifest: dict, field: str) -> int:
    return sum(drawn[field] for drawn in manifest["train_items"].values())


def _langs(manifest: dict) -> dict[str, int]:
    shares: dict[str, int] = {}
    for drawn in manifest["train_items"].values():
        for lang, counts in drawn["by_lang"].items():
            shares[lang] = shares.get(lang, 0) + counts["examples"]
    return shares


def table(name: str, result: Check) -> list[str]:
    """Markdown rows of one contrast's check: one per seed and depth."""
    rows = []
    for pair in result.pairs:
        rows.append(f"| {name} | {pair.seed} | {pair.tasks[0]} / {pair.tasks[1]} | {pair.match.describe} | "
                    f"{pair.steps[0]} / {pair.steps[1]} | {pair.batch[0]} / {pair.batch[1]} | "
                    f"{pair.tokens[0]:,} / {pair.tokens[1]:,} | {_shares(pair.langs[0])} / {_shares(pair.langs[1])} |")
    return rows


def _shares(langs: dict[str, int]) -> str:
    total = sum(langs.values()) or 1
    return " ".join(f"{lang} {count / total:.0%}" for lang, count in sorted(langs.items(), key=lambda kv: -kv[1]))
