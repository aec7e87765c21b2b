"""The study report: report.md and its figures, from the results database read through the plan.

Only the phases whose recorded run is current (its identity, lineage included, is the plan's now) are
reported; the others are listed as stale, with why, and the phases whose last run failed as failures.

Sections: the study's scale and its primary contrast's answer (or why there is none); the declared
contrasts (seed-paired t intervals, Holm for all but the primary, minimum detectable effect);
per target every arm's seeds, costs, English dev, zero-shot average and gain over its
regime's baseline; whether each intermediate learned its own task; per-language scores; the XTREME /
XTREME-R aggregates where targets are XTREME tasks; how well each proxy of `adapterxfer select` ranked the
intermediates against the measured gains, where `select --bank PLAN` has run (study/selection.py).
Figures: gain-<regime>.png (intermediate x target heatmap), contrast-<name>.png (per-language bars),
pareto.png (cost against score).
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path

import numpy as np

from ..kinds import KINDS
from ..metrics import overall_scores, task_summary
from ..retrieval import BACKBONE_ENGLISH, TARGET_DEV_CENTERED
from ..scoring import GROUPS, LANGUAGES
from ..tasks import get_task
from . import confirmation, matching, plots
from .phases import BASELINE, Arm, Graph
from .plan import confirmed_contrasts, contrasts, expand_confirmation, is_ablation
from .results import Results
from .selection import selection_section
from .stats import (Difference, by_seen, clustered_differences, coarser_level, holm, hub_share,
                    item_groups, learned, mean_sd, seed_interval, widest)

# Coverage simulation (scripts/stats_coverage.py, RESULTS.md) figures the report cites: keeping the smallest-sd
# of 4 configurations with 6 seeds, and 10 strong hub distractors with 6 seeds (by chapter).
ADAPTIVE = (4, 0.87)
HUBS = 0.59
# effect: the smallest difference of interest (in the headline metric's units, a fraction).
STATISTICS = {"alpha": 0.05, "power": 0.8, "effect": 0.01}


class Recorded:
    """The recorded runs of a study that are current (``states``: runner.phase_states), by phase key and arm."""

    def __init__(self, plan: dict, graph: Graph, results: Results, root: Path, states: dict[str, tuple[str, str]]):
        self.plan, self.graph, self.results, self.root, self.states = plan, graph, results, root, states
        self.runs = {key: run for key, run in results.runs().items() if states.get(key, ("",))[0] == "current"}
        self.options = {**STATISTICS, **plan["statistics"]}

    def seeds(self, arm: Arm) -> dict[int, str]:
        """seed -> phase key of the arm's recorded runs."""
        return {seed: key for seed, key in arm.keys.items() if key in self.runs}

    @cache
    def scores(self, key: str) -> dict:
        return self.results.scores(key)

    @cache
    def predictions(self, key: str) -> dict:
        return self.results.predictions(key)

    def zero_shot_langs(self, target: str, key: str) -> list[str]:
        task = get_task(target)
        return [lang for lang in self.scores(key) if task.resolve_lang(lang) != task.source_lang]

    def average(self, target: str, key: str) -> float:
        """The zero-shot average of the headline metric (the first one scored)."""
        return float(np.mean([next(iter(self.scores(key)[lang].values()))
                              for lang in self.zero_shot_langs(target, key)]))

    def difference(self, run: Arm, versus: Arm, only: str | None = None) -> Difference | None:
        """Seed-paired difference of two arms of one target, with its seed-aware t interval (clustered at
        the plan's level): of the zero-shot average, or of language ``only``."""
        level = self.plan["clusters"].get(run.target, "item")
        return self.differences(run, versus, with_coarser=False, only=only).get(level)

    def differences(self, run: Arm, versus: Arm, with_coarser: bool = True,
                    only: str | None = None) -> dict[str, Difference]:
        """{cluster level: seed-paired difference}: at the plan's level, and ``with_coarser`` at the next
        coarser level where the test items have one (``coarser``); {} where no seed is shared."""
        ours, theirs = self.seeds(run), self.seeds(versus)
        common = sorted(set(ours) & set(theirs))
        if not common:
            return {}
        langs = tuple(lang for lang in self.zero_shot_langs(run.target, ours[common[0]])
                      if lang in self.scores(theirs[common[0]]) and only in (None, lang))
        level = self.plan["clusters"].get(run.target, "item")
        above, groups = self.coarser(run.target, ours[common[0]], langs) if with_coarser else (None, None)
        return clustered_differences({s: self.predictions(ours[s]) for s in common},
                                     {s: self.predictions(theirs[s]) for s in common}, langs,
                                     get_task(run.target).metric, (level, above) if above else (level,),
                                     self.options["alpha"], groups={above: groups} if groups else {})

    @cache
    def coarser(self, target: str, key: str, langs: tuple | list) -> tuple[str | None, dict | None]:
        """The next cluster level above the plan's for ``target`` (scored by phase ``key`` in ``langs``), and
        where the test data names it, {lang: {ref: group}}: verses refs go item -> chapter -> book; an XTREME
        test set with a unit above the item (MLQA's article, XQuAD's paragraph) has that one."""
        level = self.plan["clusters"].get(target, "item")
        refs = {lang: [row["ref"] for row in self.predictions(key).get(lang, [])] for lang in langs}
        above = coarser_level(level, [ref for each in refs.values() for ref in each])
        task = get_task(target)
        if above or level != "item" or not task.test_group:
            return above, None
        groups = item_groups(task, refs)
        return (task.test_group[0], groups) if groups else (None, None)


def headlines(report: Path) -> list[str]:
    """The report's primary-contrast paragraphs (confirmed, then exploration), as plain text for the terminal."""
    return [line.replace("**", "") for line in Path(report).read_text().splitlines()
            if line.startswith("**Primary contrast")]


def write_report(plan: dict, graph: Graph, results: Results, root: Path, states: dict[str, tuple[str, str]]) -> Path:
    study = Recorded(plan, graph, results, root, states)
    intermediates = _intermediates(study)
    flagged = {(row["regime"], row["task"]) for row in intermediates if row["learned"] is False}
    arms = [_arm_row(study, arm, flagged) for arm in graph.arms if study.seeds(arm)]
    shown = _distinct(arms)
    compared = _contrasts(study, {(row["arm"].label, row["target"]): row for row in arms})
    _looked(study, compared, "explore" if plan["confirmation"] else "all")
    confirmed = _confirmed(study)
    figures = _figures(study, root, shown, compared)
    sections = [_header(study, compared, confirmed), _contrast_table(study, compared),
                _confirmation_section(study, compared, confirmed), _matching_table(compared),
                *(_arm_table(study, target, [row for row in shown if row["target"] == target])
                  for target in plan["targets"]),
                *(_english_side_table(study, target, [row for row in arms if row["target"] == target])
                  for target in plan["targets"]),
                _intermediate_table(intermediates),
                *(_language_table(study, target, {row["arm"].label: row["label"] for row in shown if row["target"] == target})
                  for target in plan["targets"]),
                _xtreme_table(study), _best_intermediate_table(study, arms), selection_section(study, root),
                _failure_table(study), _stale_table(study),
                "## Figures\n\n" + "\n".join(f"![{p.stem}]({p.name})" for p in figures)]
    path = root / "report.md"
    path.write_text("\n\n".join(section for section in sections if section) + "\n")
    return path


def _failure_table(study: Recorded) -> str:
    """The phases whose last run failed, with their one line and their log, and how many wait on them."""
    failures = study.results.failures()
    if not failures:
        return ""
    waiting = sum(state == "waiting" for state, _ in study.states.values())
    lines = ["## Failures", "", f"{len(failures)} phase(s) failed in their last run"
             + (f"; {waiting} phase(s) wait on them or on other phases not done" if waiting else "")
             + ". Each is run again by the next `study run`, from its last checkpoint.", "",
             "| phase | what happened | log |", "|---|---|---|"]
    lines += [f"| {key} | {_cell(row['line'])} | {row['log'] or 'none (nothing could be written)'} |"
              for key, row in failures.items()]
    return "\n".join(lines)


def _stale_table(study: Recorded) -> str:
    """Recorded or present outputs that are not the plan's phase now: not reported."""
    stale = {key: why for key, (state, why) in study.states.items() if state == "stale"}
    if not stale:
        return ""
    return "\n".join(["## Stale (not reported)", "", "Outputs that another configuration, backbone or parent made; "
                      "the next `study run` moves them aside (under stale/) and runs the phase again.", "",
                      "| phase | why |", "|---|---|", *(f"| {key} | {_cell(why)} |" for key, why in stale.items())])


def _cell(text: str) -> str:
    return text.replace("|", "/").replace("\n", " ")


def _label(arm: Arm) -> str:
    """An arm's name in the report: the untuned backbone (every regime's baseline on an evaluation-only
    target, one phase) is ``backbone``, not one regime's baseline."""
    return "backbone" if arm.name == BASELINE and all(key.startswith("backbone/") for key in arm.keys.values()) \
        else arm.label


def _distinct(rows: list[dict]) -> list[dict]:
    """One row per target and set of phases: every regime's baseline arm on an evaluation-only target is the
    one backbone phase, shown once."""
    kept: dict[tuple, dict] = {}  # where a regime runs fewer seeds, its baseline is the same phase: the most seeds
    for row in rows:
        phases = (row["target"], frozenset(row["arm"].keys.values()))
        if phases not in kept or len(row["arm"].keys) > len(kept[phases]["arm"].keys):
            kept[phases] = row
    return list(kept.values())


def _looked(study: Recorded, compared: list[dict], share: str) -> None:
    """Record in the study's history that contrasts on test items were computed (a look at ``share``)."""
    names = [row["name"] for row in compared if row["difference"]]
    if names:
        confirmation.record_look(study.plan, study.root, share, names)


def _confirmed(study: Recorded) -> dict | None:
    """The latest confirmation: its record, its history, and its contrasts on the held-out share (study/confirmation.py)."""
    history = confirmation.History(study.root)
    records = history.events("confirmation")
    if not records:
        return None
    plan = {**study.plan, "contrasts": confirmed_contrasts(study.plan)}
    held = Recorded(plan, expand_confirmation(study.plan), study.results, study.root, study.states)
    rows = _contrasts(held, {})
    _looked(held, rows, "confirm")
    return {"record": records[-1], "rows": rows, "study": held, "history": history}


def _confirmation_section(study: Recorded, explored: list[dict], confirmed: dict | None) -> str:
    """Exploration and confirmation side by side, with what was looked at before the plan was frozen."""
    if not study.plan["confirmation"]:
        return ""
    looks = confirmation.History(study.root).events("look")
    if confirmed is None:
        explore = [look for look in looks if look["share"] != "confirm"]
        return ("## Confirmation\n\nNot run yet: every figure above is exploration, on the exploration share of the "
                f"test items ({len(explore)} look(s) at contrasts under {len({l['plan_sha256'] for l in explore})} "
                f"plan version(s) so far). `adapterxfer study confirm {study.plan['file']}` freezes the plan and scores "
                "the held-out share once, with the confirmation's seeds.")
    record, history = confirmed["record"], confirmed["history"]
    label = ("the first confirmation of this study" if record["label"] == "first"
             else f"a second confirmation: {record['reason']}")
    changes = [f"{change['at']}: {change['reason']}" for change in history.events("plan change")
               if change["at"] >= record["at"]]
    lines = ["## Exploration and confirmation", "",
             f"The plan was frozen on {record['at']} (plan {record['plan_sha256'][:19]}, adapterxfer "
             f"{record['code_version']}), {label}, after {record['looks_before']} look(s) at test contrasts under "
             f"{record['plans_before']} plan version(s) (history.jsonl). Exploration scores the exploration share of "
             f"each target's test items; the confirmation runs new seeds ({', '.join(map(str, record['seeds']))}) and "
             f"scores the held-out share ({record['held_out']:.0%} of the clusters, drawn by "
             f"{', '.join(sorted(set(record['by'].values())))}), once."
             + (" **The plan changed after this confirmation**: " + "; ".join(changes) + "." if changes else ""), "",
             "| contrast | part | seeds | test items | difference ± sd | 95% CI | MDE | verdict | arms matched |",
             "|---|---|---|---|---:|---|---:|---|---|"]
    by_name = {row["name"]: row for row in explored}
    for row in confirmed["rows"]:
        for part, part_row, part_study in (("exploration", by_name.get(row["name"]), study),
                                           ("confirmation", row, confirmed["study"])):
            d = part_row and part_row["difference"]
            cells = [row["name"], part, ", ".join(map(str, d.seeds)) if d else "",
                     _test_scale(part_study, row["target"]).split(", resampled")[0]]
            cells += ([_pm(d.mean, d.sd), f"[{d.low:+.3f}, {d.high:+.3f}]", _mde(part_row), part_row["verdict"],
                       part_row["matching"].summary] if d else ["", "", "", part_row["verdict"] if part_row else "", ""])
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _done(study: Recorded) -> list[Arm]:
    return [arm for arm in study.graph.arms if study.seeds(arm)]


def _arm_row(study: Recorded, arm: Arm, flagged: set) -> dict:
    keys = study.seeds(arm)
    runs = [study.runs[key] for key in keys.values()]
    baseline = study.graph.arm(f"{arm.regime}/{BASELINE}", arm.target)
    gain = study.difference(arm, baseline) if baseline and arm.name != BASELINE else None
    not_learned = [task for task in arm.intermediates if (arm.regime, task) in flagged]
    zero_shot = all(run["zero_shot"] != 0 for run in runs)  # None: the backbone, or no manifest
    kind = get_task(arm.target).kind
    collapsed = sorted({lang for key in keys.values() for lang, rows in study.predictions(key).items()
                        if one_prediction(rows, kind)})
    return {"arm": arm, "target": arm.target, "not_learned": not_learned,
            "label": _label(arm) + "".join(f" ({t} not learned)" for t in not_learned)
            + ("" if zero_shot else " (not zero-shot)")
            + (f" (degenerate: one prediction for every item in {', '.join(collapsed)})" if collapsed else ""),
            "seeds": sorted(keys), "score": mean_sd([study.average(arm.target, key) for key in keys.values()]),
            "dev": _mean_sd_of([run["dev_score"] for run in runs]), "gain": gain,
            "parameters": _mean_of([run["trainable_parameters"] for run in runs]),
            "mb": _mean_of([run["artifact_mb"] for run in runs]),
            "seconds": _mean_of([run["lineage_train_seconds"] for run in runs]),
            "rss": _mean_of([run["peak_rss_mb"] for run in runs])}


def one_prediction(rows: list[dict], kind: str) -> bool:
    """Whether a language's test predictions are all one class or one answer (a tagger: one tag for every word)."""
    values = ([tag for row in rows for tag in row["prediction"]] if kind == "tagging"
              else [json.dumps(row["prediction"], sort_keys=True) for row in rows])
    return len(rows) > 1 and len(set(values)) == 1


def _intermediates(study: Recorded) -> list[dict]:
    """Each (regime, intermediate task, part of a multi-task one): its final English dev evaluation
    against chance, the trivial baselines and step 0 (see stats.learned)."""
    grouped: dict[tuple, dict[int, str]] = {}
    for key, phase in study.graph.phases.items():
        if phase.role == "intermediate" and key in study.runs:
            grouped.setdefault((phase.regime, phase.task), {})[phase.seed] = key
    rows = []
    for (regime, task), keys in grouped.items():
        for part in task.split("+"):
            dev = {seed: study.results.dev_predictions(key) for seed, key in keys.items()}
            stages = {stage: {seed: by_stage[stage][part] for seed, by_stage in dev.items()
                              if part in by_stage.get(stage, {})} for stage in ("final", "step0")}
            verdict = learned(part, stages["final"], stages["step0"], study.options["alpha"])
            rows.append({"regime": regime, "task": task, "part": part, "seeds": len(keys), "check": verdict,
                         "learned": verdict.learned if verdict else None})
    return rows


def _contrasts(study: Recorded, arms: dict) -> list[dict]:
    rows = []
    for contrast in contrasts(study.plan):
        run, versus = (study.graph.arm(contrast[side], contrast["target"]) for side in ("run", "versus"))
        levels = study.differences(run, versus)
        rows.append({**contrast, "levels": levels, "difference": widest(levels),
                     "matching": matching.check(study.graph, study.root, study.seeds(run), study.seeds(versus)),
                     "labels": [arms.get((arm.label, arm.target), {}).get("label", _label(arm)) for arm in (run, versus)]})
    tested = [row for row in rows if not row["primary"] and row["difference"]]
    for row, adjusted in zip(tested, holm([row["difference"].p for row in tested])):
        row["p_holm"] = adjusted
    alpha, power = study.options["alpha"], study.options["power"]
    for row in rows:
        # Holm's first step tests at alpha / m: the minimum detectable effect of a corrected contrast uses it.
        row["alpha"] = alpha if row["primary"] else alpha / max(1, len(tested))
        row["mde"] = row["difference"].mde(row["alpha"], power) if row["difference"] else None
        row["verdict"] = _verdict(row, alpha, study.options["effect"])
    return rows


def _verdict(row: dict, alpha: float, effect: float) -> str:
    difference = row["difference"]
    if difference is None:
        return "not run yet"
    one_seed = ("; one seed: the interval holds for this seed's models only (seed variance unmeasured), "
                "the MDE is a lower bound") if difference.one_seed else ""
    if difference.low == difference.high == 0:
        return f"no difference: the two arms scored the same on every test item{one_seed}"
    excludes_zero = difference.low > 0 or difference.high < 0
    if excludes_zero if row["primary"] else row["p_holm"] < alpha:
        return (f"a difference: {row['run']} scores {'higher' if difference.mean > 0 else 'lower'} by "
                f"{difference.mean:+.3f} [{difference.low:+.3f}, {difference.high:+.3f}]{one_seed}")
    if -effect < difference.low and difference.high < effect:
        return f"no difference of {effect:g} or more: the interval lies within ±{effect:g}{one_seed}"
    if row["mde"] > effect:
        return (f"no answer at this size: the difference is not distinguishable from 0, and this study cannot "
                f"detect one smaller than {row['mde']:.3f} (effect of interest {effect:g}){one_seed}")
    return (f"no answer: the difference is not distinguishable from 0, though this study would detect "
            f"{row['mde']:.3f}{one_seed}")


def _header(study: Recorded, compared: list[dict], confirmed: dict | None = None) -> str:
    plan, options = study.plan, study.options
    done = sum(key in study.runs for key in study.graph.phases)
    lines = [f"# Study: {Path(plan['file']).stem}", "", plan["description"] or "", "",
             f"**Scale.** {len(plan['seeds'])} seed(s) ({', '.join(map(str, plan['seeds']))}); "
             f"{len(study.graph.arms)} arms over {len(plan['regimes'])} regime(s) and {len(plan['targets'])} "
             f"target(s); {done} of {len(study.graph.phases)} phases done. Backbone {plan['backbone']}. "
             f"Intervals: t intervals over seeds, with the test items' variance (by cluster, parallel languages "
             f"together) estimated within seeds; {1 - options['alpha']:.0%} level; effect of interest "
             f"{options['effect']:g}."]
    for target in plan["targets"]:
        lines.append(f"- {target}: {_test_scale(study, target)}")
    primary = next((row for row in compared if row["primary"]), None)
    held = next((row for row in confirmed["rows"] if row["primary"]), None) if confirmed else None
    for row, part in ((held, "confirmed on held-out items and new seeds"),
                      (primary, "exploration" if study.plan["confirmation"] else None)):
        if row and row["difference"]:
            d = row["difference"]
            run, versus = row["labels"]
            lines += ["", f"**Primary contrast, {row['name']}**" + (f", {part}" if part else "")
                      + f" ({row['target']}): {run} minus {versus} = {_pm(d.mean, d.sd)} over seeds "
                      f"{', '.join(map(str, d.seeds))}, {1 - options['alpha']:.0%} interval [{d.low:+.3f}, "
                      f"{d.high:+.3f}] ({_clusterings(row)}). Minimum detectable effect at this scale "
                      f"({options['power']:.0%} power, two-sided α={row['alpha']:g}): {_mde(row)}. "
                      f"**Verdict: {row['verdict']}.** Arms: {row['matching'].summary}."]
    return "\n".join(lines)


def _test_scale(study: Recorded, target: str) -> str:
    key = next((k for arm in study.graph.arms if arm.target == target for k in study.seeds(arm).values()), None)
    if key is None:
        return "no run recorded yet"
    langs = study.zero_shot_langs(target, key)
    sizes = sorted({len(study.predictions(key).get(lang, [])) for lang in langs})
    level = study.plan["clusters"].get(target, "item")
    coarser, _ = study.coarser(target, key, tuple(langs))
    return (f"{len(langs)} zero-shot language(s) x {'-'.join(map(str, sizes))} test items, resampled by {level}"
            + ("" if level == "item" else " (items of one cluster err together)")
            + (f" and by {coarser}, the next coarser level; where the two disagree, the wider interval is the "
               "contrast's" if coarser else f"; the test data names no level coarser than {level}"))


def _contrast_table(study: Recorded, compared: list[dict]) -> str:
    if not compared:
        return ""
    lines = ["## Contrasts", "", "Seed-paired differences of the zero-shot average (run minus versus). p: two-sided "
             "t test; the primary contrast is tested alone, the others with Holm's correction. MDE: the minimum "
             f"detectable effect at {study.options['power']:.0%} power (≥: one seed, seed variance left out).", "",
             "95% CI: the wider of the intervals at the plan's cluster level and the next coarser one; "
             "resampled by: each level's interval and its number of clusters (the wider in bold). The intervals "
             "hold for a plan fixed before its test scores were looked at: a plan kept because its seeds happened "
             f"to agree (a small sd or MDE) claims too much (in simulation, the smallest-sd of {ADAPTIVE[0]} "
             f"configurations covered {ADAPTIVE[1]:.2f} with 6 seeds, RESULTS.md); a confirmation on held-out "
             "test items and new seeds is the interval to trust then.", "",
             "| contrast | target | run | versus | per seed | mean ± sd | 95% CI | resampled by | p | p (Holm) | MDE "
             "| verdict | arms matched |",
             "|---|---|---|---|---|---:|---|---|---:|---:|---:|---|---|"]
    for row in compared:
        d = row["difference"]
        cells = [row["name"] + (" (primary)" if row["primary"] else ""), row["target"], *row["labels"]]
        if d is None:
            cells += [""] * 7 + [row["verdict"], ""]
        else:
            cells += [", ".join(f"{v:+.3f}" for v in d.per_seed), _pm(d.mean, d.sd), f"[{d.low:+.3f}, {d.high:+.3f}]",
                      _clusterings(row), f"{d.p:.3f}", _fmt(row.get("p_holm"), ".3f"), _mde(row), row["verdict"],
                      row["matching"].summary]
        lines.append("| " + " | ".join(cells) + " |")
    notes = _pool_notes(study, compared)
    return "\n".join(lines + (["", *notes] if notes else []))


def _pool_notes(study: Recorded, compared: list[dict]) -> list[str]:
    """One warning for the contrasts scored against a fixed pool of candidates, with how much each one's wrong
    answers concentrate on a few candidates."""
    shares = []
    for row in compared:
        if row["difference"] is None or not KINDS[get_task(row["target"]).kind].POOLED:
            continue
        arms = [study.graph.arm(row[side], row["target"]) for side in ("run", "versus")]
        predictions = [{seed: study.predictions(key) for seed, key in study.seeds(arm).items()} for arm in arms]
        seeds = study.seeds(arms[0])
        share = hub_share(predictions, study.zero_shot_langs(row["target"], seeds[min(seeds)]))
        shares.append(f"{row['name']} ({row['target']})" + (f": {share[1]:.0%} of {share[0]:,}" if share else ""))
    if not shares:
        return []
    return ["- Scored against one fixed pool of candidates per language: queries whose wrong answers go to the same "
            "\"hub\" candidates err together across clusters, which no cluster level resamples (in simulation, 10 "
            f"strong hubs drawing the errors left the 95% interval covering {HUBS:.2f}, RESULTS.md). The share of "
            "the wrong answers that the 10 candidates each language's queries retrieved wrongly most often took: "
            + "; ".join(shares) + "."]


def _matching_table(compared: list[dict]) -> str:
    """Per contrast, seed and depth of the lineage: what each arm's phase trained on (study/matching.py)."""
    rows = [line for row in compared if row["difference"] for line in matching.table(row["name"], row["matching"])]
    if not rows:
        return ""
    return "\n".join(["## Arms matched item for item", "",
                      "Each trained phase of the run arm's lineage against the versus arm's at the same depth "
                      "(the arm's own phase first), per seed: the items drawn (the same items, each as often), "
                      "steps, global batch, tokens and each language's share of the examples (run / versus).", "",
                      "| contrast | seed | tasks | items | steps | batch | tokens | languages |",
                      "|---|---:|---|---|---|---|---|---|", *rows])


def _arm_table(study: Recorded, target: str, rows: list[dict]) -> str:
    if not rows:
        return ""
    lines = [f"## {target} ({get_task(target).metric}): arms", "",
             "Mean ± sd over seeds. Gain: seed-paired difference from the regime's baseline with its 95% interval "
             "(exploratory: not corrected for the number of arms). Train seconds cover the whole lineage.", "",
             "| arm | seeds | English dev | zero-shot avg | gain over baseline [95% CI] | trainable params | "
             "artifact MB | train s | peak RSS MB |", "|---|---:|---:|---:|---|---:|---:|---:|---:|"]
    for row in rows:
        gain = row["gain"]
        cell = f"{_pm(gain.mean, gain.sd)} [{gain.low:+.3f}, {gain.high:+.3f}]" if gain else ""
        lines.append(f"| {row['label']} | {len(row['seeds'])} | {_pm(*row['dev']) if row['dev'] else ''} | "
                     f"{_pm(*row['score'])} | {cell} | {_fmt(row['parameters'], ',.0f')} | {_fmt(row['mb'], '.1f')} | "
                     f"{_fmt(row['seconds'], '.0f')} | {_fmt(row['rss'], '.0f')} |")
    return "\n".join(lines)


def _english_side_table(study: Recorded, target: str, rows: list[dict]) -> str:
    """A retrieval or mining target: each arm's gain over the backbone with both sides embedded by its encoder,
    and with the English side embedded by the untuned backbone (retrieval.BACKBONE_ENGLISH): transfer to the
    target languages, or adaptation of the English side."""
    metric = get_task(target).metric
    query_side = metric + BACKBONE_ENGLISH
    baseline = next((row for row in rows if row["arm"].name == BASELINE), None)
    trained = [row for row in rows if row["arm"].name != BASELINE and
               all(query_side in by_metric for key in study.seeds(row["arm"]).values()
                   for by_metric in study.scores(key).values())]
    if baseline is None or not trained:
        return ""
    untuned = study.average(target, next(iter(study.seeds(baseline["arm"]).values())))
    lines = [f"## {target}: target-language side or English side", "",
             "Each trained arm is scored twice: with both sides embedded by its encoder (its score above), and with "
             "its target-language queries against the untuned backbone's English side (query side). The query side's "
             "gain is what the intermediate changed for the target languages; the rest of the gain came from "
             "adapting the English side, which an English intermediate trains on directly. Gains over the backbone "
             f"({untuned:.3f}), mean ± sd over seeds with t intervals over seeds.", "",
             "| arm | seeds | both sides | query side | gain, both sides [95% CI] | gain, query side [95% CI] | "
             "gain from the English side |", "|---|---:|---:|---:|---|---|---:|"]
    alpha = study.options["alpha"]
    for row in trained:
        keys = study.seeds(row["arm"])
        both = {seed: study.average(target, key) for seed, key in keys.items()}
        query = {seed: _average_of(study, target, key, query_side) for seed, key in keys.items()}
        gains = [seed_interval({seed: value - untuned for seed, value in side.items()}, alpha) for side in (both, query)]
        lines.append(f"| {row['label']} | {len(keys)} | {_pm(*mean_sd(list(both.values())))} | "
                     f"{_pm(*mean_sd(list(query.values())))} | "
                     + " | ".join(f"{g.mean:+.3f} [{g.low:+.3f}, {g.high:+.3f}]" for g in gains)
                     + f" | {gains[0].mean - gains[1].mean:+.3f} |")
    return "\n".join(lines)


def _average_of(study: Recorded, target: str, key: str, metric: str) -> float:
    return float(np.mean([study.scores(key)[lang][metric] for lang in study.zero_shot_langs(target, key)]))


def _intermediate_table(rows: list[dict]) -> str:
    if not rows:
        return ""
    lines = ["## Intermediate tasks: did they learn?", "",
             "Each intermediate's own English dev set, scored at its final evaluation (the last step: a fixed rule, "
             "not the best of its evaluations), mean over seeds with its 95% interval over seeds and dev items. "
             "Learned: above chance (1 / answers), above the majority class, above a word-overlap rule fitted on "
             "training items (pair and choice tasks), and above the same model at step 0 before training; each "
             "\"above\" is a seed-paired difference whose 95% interval excludes 0. An intermediate that is not is marked "
             "\"not learned\" wherever it appears.", "",
             "| regime | intermediate | seeds | English dev, final [95% CI] | chance | majority: score, gain [CI] | "
             "word overlap: score, gain [CI] | step 0: score, gain [CI] | learned |",
             "|---|---|---:|---|---:|---|---|---|---|"]
    for row in rows:
        check = row["check"]
        name = row["task"] + ("" if row["part"] == row["task"] else f" ({row['part']})")
        if check is None:
            lines.append(f"| {row['regime']} | {name} | {row['seeds']} | no dev predictions recorded | | | | | n/a |")
            continue
        score = (f"{check.score.mean:.3f} [{check.score.low:.3f}, {check.score.high:.3f}]" if check.score
                 else "")
        versus = [_versus(check.versus.get(baseline)) for baseline in ("majority", "word overlap", "step 0")]
        lines.append(f"| {row['regime']} | {name} | {row['seeds']} | {score} | {_fmt(check.chance, '.3f')} | "
                     + " | ".join(versus) + f" | {'yes' if row['learned'] else '**not learned**'} |")
    return "\n".join(lines)


def _versus(entry) -> str:
    if entry is None:
        return "n/a"
    score, gain = entry
    return f"{score:.3f}, {gain.mean:+.3f} [{gain.low:+.3f}, {gain.high:+.3f}]"


def seen_languages(arm: Arm) -> frozenset[str]:
    """The languages the arm's intermediates trained on, where their task specs list them."""
    return frozenset(lang for name in arm.intermediates for part in name.split("+")
                     for lang in getattr(get_task(part), "seen_languages", ()))


def _language_table(study: Recorded, target: str, labels: dict[str, str]) -> str:
    """Per-language means over seeds; ``labels``: each shown arm's name in the report (with its flags)."""
    arms = [arm for arm in _done(study) if arm.target == target and arm.label in labels]
    if not arms:
        return ""
    means = {arm.label: _language_means(study, arm) for arm in arms}
    langs = list(dict.fromkeys(lang for values in means.values() for lang in values))
    lines = [f"## {target}: per language (mean over seeds)", "",
             "| lang | " + " | ".join(labels[label] for label in means) + " |",
             "|---|" + "---:|" * len(means)]
    lines += [f"| {lang} | " + " | ".join(_fmt(values.get(lang), ".3f") for values in means.values()) + " |"
              for lang in langs]
    task = get_task(target)
    averages = {arm.label: by_seen({lang: v for lang, v in means[arm.label].items()
                                    if task.resolve_lang(lang) != task.source_lang}, seen_languages(arm),
                                   task.language_of)
                for arm in arms}
    for name in ("all", "seen", "unseen"):
        if any(name in values for values in averages.values()):
            lines.append(f"| **zero-shot avg, {name}** | " +
                         " | ".join(_fmt(values.get(name), ".3f") for values in averages.values()) + " |")
    adapted = sorted({metric for arm in arms for key in study.seeds(arm).values()
                      for by_metric in study.scores(key).values() for metric in by_metric
                      if metric.endswith(TARGET_DEV_CENTERED)})
    if adapted:
        lines += ["", f"Not zero-shot in the strict sense: {', '.join(f'`{m}`' for m in adapted)} uses unlabelled "
                      "target-language dev text (unsupervised adaptation); the table shows the headline metric."]
    return "\n".join(lines)


def _language_means(study: Recorded, arm: Arm) -> dict[str, float]:
    per_seed = [study.scores(key) for key in study.seeds(arm).values()]
    return {lang: float(np.mean([next(iter(scores[lang].values())) for scores in per_seed if lang in scores]))
            for lang in per_seed[0]}


def _xtreme_table(study: Recorded) -> str:
    """XTREME / XTREME-R task averages and groups of each arm, as the official scorer aggregates them."""
    lines = []
    for benchmark, task_langs in LANGUAGES.items():
        tasks = [t for t in study.plan["targets"] if t in task_langs and task_langs[t]]
        if not tasks:
            continue
        groups = GROUPS[benchmark]
        header = tasks + [g for g in groups if set(groups[g]) <= set(tasks)] + ["all_task"]
        lines += [f"## {benchmark.upper()} aggregates (official averaging; languages scored / the benchmark's)", "",
                  "| arm | " + " | ".join(header) + " |", "|---|" + "---:|" * len(header)]
        for label in dict.fromkeys(arm.label for arm in _done(study) if arm.target in tasks):
            detailed, coverage = {}, {}
            for task in tasks:
                arm = study.graph.arm(label, task)
                summary, scored = _benchmark_summary(study, arm, benchmark) if arm and study.seeds(arm) else ({}, 0)
                if summary:
                    detailed[task] = summary
                    coverage[task] = f" ({scored}/{len(task_langs[task])})"
            overall = overall_scores(detailed, list(task_langs), groups)
            cells = [_fmt(detailed[t]["avg_metric"], ".3f") + coverage[t] if t in detailed else "" for t in tasks]
            cells += [_fmt(overall.get(name), ".3f") for name in header[len(tasks):]]
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines).strip()


def _benchmark_summary(study: Recorded, arm: Arm, benchmark: str) -> tuple[dict, int]:
    """The official per-task block of one arm over the benchmark's languages it scored, and how many."""
    every = _all_metric_means(study, arm)
    scored = {lang: every[lang] for lang in LANGUAGES[benchmark][arm.target] if lang in every}
    return (task_summary(scored, qa=arm.target in GROUPS[benchmark]["qa"]) if scored else {}), len(scored)


# Figures the paper states (Phang et al. 2020, XLM-R large, full fine-tuning; abstract): the XTREME average
# gain of the best intermediate per target over XLM-R large alone, in points.
PAPER = {("full", "xtreme"): 5.4}
PAPER_SOURCE = "Phang et al. 2020 (XLM-R large, full fine-tuning)"


def _best_intermediate_table(study: Recorded, rows: list[dict]) -> str:
    """Per regime: each target's best zero-shot intermediate arm against the baseline, and the XTREME /
    XTREME-R averages (official per-task averaging) of the best arms and of the baseline."""
    sections = []
    for regime in study.plan["regimes"]:
        best = _best_arms(study, [row for row in rows if row["arm"].regime == regime])
        if not best:
            continue
        lines = [f"## Best intermediate per target ({regime})", "",
                 "Each target's arm with the highest zero-shot average among the zero-shot intermediate arms whose "
                 "intermediates learned their own task (of arms: how many competed, learned or not), beside "
                 f"the {regime} baseline. **Winner's curse:** picking the best of many arms on the test scores "
                 "themselves is optimistic; the gain of the best arm is biased upwards, the more so the more arms and "
                 "the noisier each, and needs a fresh run (other seeds) to confirm.", "",
                 "| target | best arm | of arms | best | baseline | gain |", "|---|---|---:|---:|---:|---:|"]
        for target, (winner, baseline, candidates) in best.items():
            base = baseline["score"][0] if baseline else None
            if winner is None:
                lines.append(f"| {target} | none: no intermediate learned its own task | {candidates} |  | "
                             f"{_fmt(base, '.3f')} |  |")
                continue
            lines.append(f"| {target} | {winner['label']} | {candidates} | {winner['score'][0]:.3f} | "
                         f"{_fmt(base, '.3f')} | {_fmt(None if base is None else winner['score'][0] - base, '+.3f')} |")
        benchmarks = []
        for benchmark in LANGUAGES:
            averages = _benchmark_averages(study, best, benchmark)
            if averages:
                tasks, ours, theirs = averages
                paper = PAPER.get((regime, benchmark))
                benchmarks.append(f"| {benchmark.upper()} | {len(tasks)}/{len(LANGUAGES[benchmark])}: {', '.join(tasks)} "
                                  f"| {ours:.3f} | {theirs:.3f} | {100 * (ours - theirs):+.1f} | "
                                  f"{'' if paper is None else f'{paper:+.1f} ({PAPER_SOURCE})'} |")
        if benchmarks:
            lines += ["", "| benchmark | tasks scored | best per target | baseline | gain (points) | paper's gain |",
                      "|---|---|---:|---:|---:|---:|", *benchmarks]
        sections.append("\n".join(lines))
    return "\n\n".join(sections)


def _best_arms(study: Recorded, rows: list[dict]) -> dict[str, tuple[dict, dict | None, int]]:
    """target -> (the best zero-shot intermediate arm's row, the baseline's row, how many arms competed).
    An arm whose intermediate did not learn its own task is never the best (its "gain" is noise): where
    none learned, the best is None."""
    best = {}
    for target in study.plan["targets"]:
        here = [row for row in rows if row["target"] == target]
        candidates = [row for row in here if row["arm"].intermediates and _zero_shot(study, row["arm"])
                      and not is_ablation(row["arm"].name)]
        learned_ones = [row for row in candidates if not row["not_learned"]]
        if candidates:
            baseline = next((row for row in here if row["arm"].name == BASELINE), None)
            winner = max(learned_ones, key=lambda row: row["score"][0]) if learned_ones else None
            best[target] = (winner, baseline, len(candidates))
    return best


def _zero_shot(study: Recorded, arm: Arm) -> bool:
    """No seed's lineage trained on the target's own languages (a missing manifest, None, counts as zero-shot)."""
    return all(study.runs[key]["zero_shot"] != 0 for key in study.seeds(arm).values())


def _benchmark_averages(study: Recorded, best: dict, benchmark: str) -> tuple[list[str], float, float] | None:
    """(the benchmark's tasks both sides scored, the mean avg_metric of the best arms, that of the baselines)."""
    ours, theirs = {}, {}
    for target, (winner, baseline, _) in best.items():
        if target in LANGUAGES[benchmark] and baseline and winner:
            mine, base = (_benchmark_summary(study, row["arm"], benchmark)[0] for row in (winner, baseline))
            if "avg_metric" in mine and "avg_metric" in base:
                ours[target], theirs[target] = mine["avg_metric"], base["avg_metric"]
    if not ours:
        return None
    return list(ours), float(np.mean(list(ours.values()))), float(np.mean(list(theirs.values())))


def _all_metric_means(study: Recorded, arm: Arm) -> dict[str, dict[str, float]]:
    per_seed = [study.scores(key) for key in study.seeds(arm).values()]
    return {lang: {metric: float(np.mean([s[lang][metric] for s in per_seed if lang in s]))
                   for metric in per_seed[0][lang]} for lang in per_seed[0]}


def _figures(study: Recorded, root: Path, arms: list[dict], compared: list[dict]) -> list[Path]:
    figures = []
    targets = study.plan["targets"]
    for regime in study.plan["regimes"]:
        rows = [row for row in arms if row["arm"].regime == regime and row["gain"]]
        if rows:
            names = list(dict.fromkeys(row["label"].split("/", 1)[1] for row in rows))
            gains = {(row["label"].split("/", 1)[1], row["target"]): row["gain"].mean for row in rows}
            figures.append(plots.gain_heatmap(root / f"gain-{regime}.png", regime, names, targets, gains,
                                              len(study.plan["seeds"]), study.options["effect"]))
    for row in compared:
        if row["difference"]:
            figures.append(_contrast_bars(study, root, row))
    panels = {target: [{"label": row["label"], "parameters": row["parameters"], "seconds": row["seconds"],
                        "score": row["score"][0]} for row in arms if row["target"] == target] for target in targets}
    panels = {target: points for target, points in panels.items() if points}
    if panels:
        figures.append(plots.pareto(root / "pareto.png", panels))
    return figures


def _contrast_bars(study: Recorded, root: Path, row: dict) -> Path:
    """The contrast per language, each with its own seed-paired interval, and the zero-shot average's."""
    run, versus = (study.graph.arm(row[side], row["target"]) for side in ("run", "versus"))
    overall = row["difference"]
    langs = study.zero_shot_langs(row["target"], study.seeds(run)[overall.seeds[0]])
    per_lang = [study.difference(run, versus, only=lang) for lang in langs]
    run_label, versus_label = row["labels"]
    return plots.language_bars(root / f"contrast-{row['name']}.png",
                               f"{row['name']}: {run_label} minus {versus_label}, {row['target']}, "
                               f"{len(overall.seeds)} seed{'s' * (len(overall.seeds) > 1)}", langs,
                               [d.mean for d in per_lang], [(d.low, d.high) for d in per_lang],
                               (overall.mean, overall.low, overall.high),
                               f"difference in {get_task(row['target']).metric} (95% interval)")


def _clusterings(row: dict) -> str:
    """Each cluster level's interval of a contrast and its clusters; with two, the headline's in bold."""
    cells = []
    for level, difference in row["levels"].items():
        cell = f"{level} ({difference.clusters}): [{difference.low:+.3f}, {difference.high:+.3f}]"
        cells.append(f"**{cell}**" if len(row["levels"]) > 1 and difference is row["difference"] else cell)
    return "; ".join(cells)


def _mde(row: dict) -> str:
    return ("≥ " if row["difference"].one_seed else "") + f"{row['mde']:.3f}"


def _mean_sd_of(values: list) -> tuple[float, float | None] | None:
    values = [v for v in values if v is not None]
    return mean_sd(values) if values else None


def _mean_of(values: list) -> float | None:
    values = [v for v in values if v is not None]
    return float(np.mean(values)) if values else None


def _pm(mean: float, sd: float | None) -> str:
    return f"{mean:.3f}" + (f" ± {sd:.3f}" if sd is not None else "")


def _fmt(value, spec: str) -> str:
    return "" if value is None else format(value, spec)
