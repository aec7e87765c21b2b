"""Exploration, then one confirmation: what a study looked at before it claimed anything.

A plan with a ``confirmation`` block splits each target's test items (adapterxfer/shares.py): ``study run``
explores, scoring the exploration share only; ``study confirm`` freezes the plan and runs the confirmed
contrasts' arms again with new seeds, scoring the held-out share once (``plan.expand_confirmation``).

The study's history is ``<study>/history.jsonl``, one JSON line per event, appended and never rewritten (the
results database is an index of the outputs; this is the record of what people saw):

- ``look``: a report computed contrasts on test items: the plan's hash, the share, the contrasts, the time;
- ``confirmation``: the frozen plan's hash, the code version, the seeds, the held-out share and what it is
  drawn by, the confirmed contrasts and their analysis (alpha, power, effect, clusters), how many looks at
  how many plans came before, and its label: ``first``, or ``again`` with the reason given;
- ``plan change``: a run of a plan changed after its confirmation, with the reason given.

Refused with one line (exit 2), before anything trains: a plan changed after its confirmation without a reason
(``--plan-changed REASON``), a second confirmation without one, and a confirmation share that holds test items
the exploration already scored (a plan that explored all items, or another held-out share, before).
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import time
from pathlib import Path

from .. import __version__
from ..errors import UserError
from ..shares import Share, item_key
from .plan import CONFIRM, HELD_OUT, confirmed_contrasts, share_keys

FILE = "history.jsonl"
# Keys of a plan that change nothing a study computes or claims.
UNHASHED = ("file", "description", "output", "ray", "slurm")


def plan_hash(plan: dict) -> str:
    frozen = {key: value for key, value in plan.items() if key not in UNHASHED}
    return "sha256:" + hashlib.sha256(json.dumps(frozen, sort_keys=True, default=str).encode()).hexdigest()


def code_version() -> str:
    """adapterxfer's version, with the git commit of its source tree where it runs from one (+dirty: changed)."""
    source = Path(__file__).resolve().parents[2]
    try:
        commit = subprocess.run(["git", "-C", str(source), "rev-parse", "HEAD"], capture_output=True, text=True,
                                timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(source), "status", "--porcelain", "--", "adapterxfer"],
                               capture_output=True, text=True, timeout=10, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return __version__
    return f"{__version__}+git.{commit[:12]}" + ("+dirty" if dirty else "")


class History:
    def __init__(self, root: Path):
        self.path = Path(root) / FILE

    def events(self, kind: str | None = None) -> list[dict]:
        if not self.path.is_file():
            return []
        events = [json.loads(line) for line in self.path.read_text().splitlines() if line.strip()]
        return [event for event in events if kind is None or event["event"] == kind]

    def append(self, event: str, **fields) -> dict:
        entry = {"event": event, "at": time.strftime("%Y-%m-%dT%H:%M:%S"), **fields}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a") as handle:
            handle.write(json.dumps(entry, sort_keys=True) + "\n")
        return entry


def check_plan(plan: dict, root: Path, plan_changed: str | None) -> None:
    """Before a run: a plan changed after its confirmation goes on only with a reason, which is recorded."""
    confirmations = History(root).events("confirmation")
    if not confirmations or confirmations[-1]["plan_sha256"] == plan_hash(plan):
        return
    if not plan_changed:
        raise UserError(f"{plan['file']}: the plan changed after its confirmation of {confirmations[-1]['at']} "
                        f"(hash {confirmations[-1]['plan_sha256'][:19]}, now {plan_hash(plan)[:19]}); say why with "
                        "--plan-changed REASON (the report will show it), or restore the confirmed plan")
    History(root).append("plan change", plan_sha256=plan_hash(plan), reason=plan_changed)


def freeze(plan: dict, root: Path, results, again: str | None) -> dict:
    """Before a confirmation runs: refuse what would make it no confirmation, then record it (once: a
    confirmation of the same plan that was interrupted continues under its first record)."""
    where, history = plan["file"], History(root)
    if not plan["confirmation"]:
        raise UserError(f"{where}: the plan has no confirmation block; add confirmation: {{seeds: [...]}} (new "
                        "seeds) and run `adapterxfer study run` to explore its other share first")
    earlier = history.events("confirmation")
    if earlier and earlier[-1]["plan_sha256"] == plan_hash(plan) and not again:
        return earlier[-1]
    if earlier and not again:
        raise UserError(f"{where}: this study was confirmed on {earlier[-1]['at']} with another plan; a second "
                        "confirmation scores held-out items already seen: say why with --again REASON")
    _check_unseen(plan, results)
    looks = [look for look in history.events("look") if look["share"] != "confirm"]
    block = plan["confirmation"]
    return history.append(
        "confirmation", plan_sha256=plan_hash(plan), code_version=code_version(), seeds=block["seeds"],
        held_out=block.get("held_out", HELD_OUT),
        by={target: block.get("by", plan["clusters"].get(target, "item")) for target in plan["targets"]},
        contrasts=[{key: c[key] for key in ("name", "target", "run", "versus")} for c in confirmed_contrasts(plan)],
        analysis={"statistics": plan["statistics"], "clusters": plan["clusters"]},
        looks_before=len(looks), plans_before=len({look["plan_sha256"] for look in looks}),
        label="again" if earlier else "first", reason=again)


def _check_unseen(plan: dict, results) -> None:
    """No exploration phase recorded a prediction on an item of the held-out share."""
    seen = []
    for key, run in results.runs().items():
        if key.startswith(CONFIRM) or run["target"] is None:
            continue
        keys = share_keys({**plan, "part": "confirm"}, run["target"])
        share = Share("confirm", keys["held_out"], keys["held_out_by"])
        for lang, rows in results.predictions(key).items():
            seen += [(key, item_key(row, lang, index)) for index, row in enumerate(rows)
                     if share.keeps(item_key(row, lang, index))]
    if seen:
        raise UserError(f"{plan['file']}: the held-out share holds {len(seen)} test item(s) the exploration already "
                        f"scored (e.g. {seen[0][1]} in {seen[0][0]}): a confirmation needs items no look has seen; "
                        "explore a plan with the confirmation block from the start, in a new study folder")


def record_look(plan: dict, root: Path, share: str, names: list[str]) -> None:
    History(root).append("look", plan_sha256=plan_hash(plan), share=share, contrasts=names)
