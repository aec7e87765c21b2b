"""`adapterxfer select`: rank a bank of intermediate modules for a target, and for each of its languages,
with the cheap proxies of adapterxfer/proxies.py computed on a small sample, without training on the target.

The bank is a folder of artifacts (every intermediate output under it, but for those a study moved aside), a
study plan whose intermediate phases have run (its modules are named by phase key, and only those whose output
is current count; the result is also kept as ``<study>/selection/<target>.json`` for `study report`, with
each module's manifest hash, so that the report joins it only to the runs of those very modules), or
comma-separated ``hf://`` refs. The backbone is
loaded once for the modules, which swap on it (``bank.EncoderBank``), and once bare for ``semb``; modules
trained above a frozen bottom
(``frozen_layers``) read its states from the shared cache (adapterxfer/frozen.py).

Zero-shot rule: no proxy reads a target-language label. The target's ranking reads English text (and
English labels); a language's ranking differs from it only where ``unlabelled`` allows a proxy to read
that language's unlabelled dev text (``semb``), and the result records that it did: the selection is then
no longer strictly zero-shot.
"""

from __future__ import annotations

import json
import os
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.stats import rankdata

from . import artifacts, backbones, sharing
from .errors import UserError
from .kinds import KINDS
from .proxies import PROXIES, Inputs, Labelled
from .tasks import get_task

SAMPLE = 128  # English target training examples (and dev examples, and texts per embedding) read per proxy
BATCH_SIZE = 32
TARGET = "target"  # the ranking key of the target as a whole (English text only)

@dataclass(frozen=True)
class Module:
    name: str  # a plan's phase key, or the folder (ref) the module came from
    folder: Path
    manifest: dict
    seed: int | None


def bank_modules(source: str) -> tuple[list[Module], str | None, Path | None, dict[str, list[str]]]:
    """The bank's intermediate modules, the backbone it names, the study root and, per target, the languages
    its phases score (the last three a plan's)."""
    if sharing.is_ref(source.split(",")[0]):
        refs = [ref.strip() for ref in source.split(",") if ref.strip()]
        return [_module(ref, sharing.pull(ref)) for ref in refs], None, None, {}
    path = Path(source)
    if path.is_file() and path.suffix in (".yaml", ".yml"):
        return _plan_modules(source)
    if path.is_dir():
        from .study.outputs import STALE

        folders = sorted(manifest.parent for manifest in path.rglob(artifacts.MANIFEST)
                         if STALE not in manifest.relative_to(path).parts)
        modules = [_module(str(folder.relative_to(path)), folder) for folder in folders]
        modules = [module for module in modules if module.manifest["phase"] == "intermediate"]
        if not modules:
            raise UserError(f"bank {source}: holds no intermediate module (no folder with a {artifacts.MANIFEST} "
                            "of an intermediate phase under it)")
        return modules, None, None, {}
    raise UserError(f"bank {source!r}: not a folder of artifacts, a study plan (.yaml) or hf:// refs")


def _module(name: str, folder: Path, seed: int | None = None) -> Module:
    manifest = artifacts.read_manifest(folder)
    return Module(name, folder, manifest, manifest["config"].get("seed") if seed is None else seed)


def _plan_modules(plan_file: str) -> tuple[list[Module], str, Path, dict[str, list[str]]]:
    from .study.plan import expand, read_plan, study_root

    from .study.results import FILE, Results
    from .study.runner import phase_states

    plan = read_plan(plan_file)
    root, graph = study_root(plan), expand(plan)
    results = Results(root / FILE, plan_file) if (root / FILE).is_file() else None
    states = phase_states(graph, root, backbones.resolve(plan["backbone"]).weight_hash, results)
    phases = [phase for phase in graph.phases.values() if phase.role == "intermediate"]
    langs = {}  # target -> the languages its phases score (a target phase's eval_langs, an evaluation's langs)
    for phase in graph.phases.values():
        if phase.role in ("target", "evaluation"):
            scored = phase.settings.get("eval_langs") if phase.action == "train" else phase.settings.get("langs")
            langs.setdefault(phase.task, list(scored or []))
    done = [phase for phase in phases if states[phase.key][0] == "current"]
    if not done:
        raise UserError(f"bank {plan_file}: none of its {len(phases)} intermediate phases has a current output "
                        f"under {root}; run `adapterxfer study run {plan_file}` first")
    behind = [phase.key for phase in phases if phase not in done]
    if behind:
        print(f"select: {len(behind)} intermediate phases of {plan_file} are not current and left out: "
              f"{', '.join(behind[:3])}{' ...' if len(behind) > 3 else ''}", file=sys.stderr)
    return [_module(phase.key, root / phase.key, phase.seed) for phase in done], plan["backbone"], root, langs


def select(targets: list[str], langs: list[str], source: str, unlabelled: bool = False, sample: int = SAMPLE,
           progress: bool = True, logme_reference: bool = False) -> list[dict]:
    """Score every module of the bank with every proxy, for each target and each of its languages (one result
    per target; see ``table``). The backbone loads once (and once bare), and what targets share is computed
    once: the modules' bottom states and the intermediates' mean embeddings."""
    tasks = [get_task(target) for target in targets]
    for task in tasks:
        if KINDS[task.kind].text is None or task.role != "target":
            raise UserError(f"select cannot rank intermediates for {task.name}, a {task.kind} {task.role} task; it "
                            f"ranks them for targets of kind "
                            f"{', '.join(name for name, kind in KINDS.items() if kind.text and name != 'mlm')}")
    modules, backbone_name, root, plan_langs = bank_modules(source)
    backbone = backbones.resolve(backbone_name or modules[0].manifest["backbone"]["name"])
    from .bank import check_backbone

    for module in modules:
        check_backbone(module.folder, module.manifest, backbone)
    target_langs = {task.name: [lang for lang in task.check_langs(langs or plan_langs.get(task.name, []))
                                if task.resolve_lang(lang) != task.source_lang] for task in tasks}
    scorer = _Scorer(backbone, sample, logme_reference)
    results = []
    for task in tasks:
        result = _select_one(scorer, task, target_langs[task.name], modules, source, unlabelled, progress)
        if root is not None:
            write_json(result, root / "selection" / f"{task.name}.json")
        results.append(result)
    return results


def _select_one(scorer, task, langs: list[str], modules: list[Module], source: str, unlabelled: bool,
                progress: bool) -> dict:
    from tqdm import tqdm

    sample = scorer.sample
    texts = {TARGET: _target_texts(task, None, sample), **({lang: _target_texts(task, lang, sample)
                                                           for lang in langs} if unlabelled else {})}
    rankings = {key: {} for key in (TARGET, *langs)}
    for module in tqdm(modules, desc=f"modules for {task.name}", unit="module", disable=not progress):
        for key, scores in scorer.scores(task, module, texts).items():
            rankings[key][module.name] = scores
    for lang in langs if not unlabelled else []:
        rankings[lang] = rankings[TARGET]
    examples, dimensions = scorer.shapes.get(task.name, (None, None))
    return {"target": task.name, "bank": source, "backbone": scorer.backbone_name, "sample": sample,
            "unlabelled_target_text": unlabelled, "strictly_zero_shot": not unlabelled,
            "logme": {"formula": "reference" if scorer.logme_reference else "exact", "examples": examples,
                      "dimensions": dimensions},
            "proxies": {name: {"description": proxy.description, "not_applicable": proxy.not_applicable(task)}
                        for name, proxy in PROXIES.items()},
            "modules": [{"name": m.name, "folder": str(m.folder), "task": m.manifest["task"],
                         "regime": m.manifest["regime"], "seed": m.seed,
                         "manifest_sha256": artifacts.sha256_file(m.folder / artifacts.MANIFEST)} for m in modules],
            "rankings": {key: _ranked(scores) for key, scores in rankings.items()}}


class _Scorer:
    """The proxies' inputs on one backbone, each computed once where modules or targets share it. Seconds are
    those a module's scores cost when computed: a mean embedding another module (or target) already
    computed costs nothing again."""

    def __init__(self, backbone, sample: int, logme_reference: bool = False):
        from .bank import EncoderBank
        from .modeling import encoder_model

        self.sample, self.backbone_name, self.logme_reference = sample, backbone.name, logme_reference
        self.shapes: dict[str, tuple[int, int]] = {}  # target -> (examples, dimensions) of its training features
        self.tokenizer = backbones.load_tokenizer(backbone.path)
        self.bank, self.backbone = EncoderBank(backbone), encoder_model(backbone.path).eval()
        self.rows: dict[str, dict[str, list[dict]]] = {}  # target -> split -> its labelled sample
        self.means: dict[str, np.ndarray] = {}  # text source -> mean embedding

    def scores(self, task, module: Module, texts: dict[str, list[str]]) -> dict[str, dict[str, tuple]]:
        """{ranking key: {proxy: (score or None, seconds)}} of one module for ``task``."""
        started = time.perf_counter()
        encoder = self.bank.encoder(module.name.replace("/", "_").replace(".", "_"), module.folder, module.manifest)
        frozen = module.manifest["config"].get("frozen_layers", 0)
        labelled = {split: Labelled(self._embed(encoder, [KINDS[task.kind].text(r) for r in rows], task, frozen),
                                    np.array([r["label"] for r in rows]))
                    for split, rows in self._labelled_rows(task).items()}
        feature_seconds = time.perf_counter() - started
        if "train" in labelled:
            self.shapes[task.name] = labelled["train"].features.shape
        intermediate, intermediate_seconds = self._mean(f"task:{module.manifest['task']}", task, lambda: [
            text for part in module.manifest["task"].split("+") for text in _task_texts(get_task(part), self.sample)])
        out = {}
        for key, target_texts in texts.items():
            target, target_seconds = self._mean(f"target:{task.name}:{key}", task, lambda: target_texts)
            inputs = Inputs(labelled.get("train"), labelled.get("dev"), intermediate, target, self.logme_reference)
            out[key] = {name: _timed(proxy, task, inputs, feature_seconds if proxy.reads_module
                                     else intermediate_seconds + target_seconds)
                        for name, proxy in PROXIES.items()}
        return out

    def _labelled_rows(self, task) -> dict[str, list[dict]]:
        if task.name not in self.rows:
            self.rows[task.name] = ({split: task.capped(self.sample).rows(split, task.source_lang if split == "dev"
                                                                          else None)
                                     for split in ("train", "dev")} if KINDS[task.kind].LABEL_PER_TEXT else {})
        return self.rows[task.name]

    def _mean(self, key: str, task, texts) -> tuple[np.ndarray, float]:
        """The mean backbone embedding of a text source, and the seconds computing it took now (0: computed before)."""
        if key in self.means:
            return self.means[key], 0.0
        started = time.perf_counter()
        self.means[key] = self._embed(self.backbone, texts(), task, 0).mean(axis=0)
        return self.means[key], time.perf_counter() - started

    def _embed(self, encoder, texts: list[str], task, frozen: int) -> np.ndarray:
        from .frozen import cached_bottom
        from .retrieval import embed

        with cached_bottom(encoder, frozen):
            return embed(encoder, self.tokenizer, texts, -1, task.max_length, BATCH_SIZE, "fp32").numpy()


def _timed(proxy, task, inputs: Inputs, spent: float) -> tuple:
    """The proxy's score and its seconds: ``spent`` on its inputs, plus its own fit where it reads the module
    (semb's own step, one cosine of two vectors, costs nothing next to its embeddings and is not timed)."""
    if proxy.not_applicable(task):
        return None, 0.0
    started = time.perf_counter()
    score = proxy.score(inputs)
    return score, spent + (time.perf_counter() - started if proxy.reads_module else 0.0)


def _task_texts(task, sample: int, lang: str | None = None, split: str = "train") -> list[str]:
    return [KINDS[task.kind].text(row) for row in task.capped(sample).rows(split, lang)]


def _target_texts(task, lang: str | None, sample: int) -> list[str]:
    """The target's English text (training split; a retrieval target: its English side), or with ``lang``
    its unlabelled dev text in that language."""
    if task.trainable:
        return _task_texts(task, sample, lang and task.resolve_lang(lang), "train" if lang is None else "dev")
    rows = task.capped(sample).rows("dev", task.resolve_lang(lang or task.languages[0]))
    return [row["target"] if lang is None else row["query"] for row in rows]


def _ranked(scores: dict[str, dict[str, tuple]]) -> dict[str, dict[str, dict]]:
    """{module: {proxy: {score, rank, seconds}}}: rank 1 is the highest score (ties share the best rank)."""
    out = {module: {} for module in scores}
    for name in PROXIES:
        values = {module: by_proxy[name] for module, by_proxy in scores.items()}
        scored = [module for module, (score, _) in values.items() if score is not None]
        ranks = rankdata([-values[m][0] for m in scored], method="min") if scored else []
        rank = dict(zip(scored, map(int, ranks)))
        for module, (score, seconds) in values.items():
            out[module][name] = {"score": score, "rank": rank.get(module), "seconds": round(seconds, 3)}
    return out


def write_json(result: dict | list, path: Path) -> None:
    """Write ``path`` whole or not at all."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps(result, indent=1))
    os.replace(partial, path)


def table(result: dict) -> str:
    """The intermediates x proxies table of each ranking: score, rank and seconds. The modules of one
    intermediate that differ only in their seed (a plan's ``seed<s>/...``) are one row: the mean over seeds,
    with the seeds' sd, ranked by that mean. A proxy that does not apply is named with its reason."""
    names = [name for name, info in result["proxies"].items() if not info["not_applicable"]]
    lines = [f"select {result['target']} from {result['bank']} (backbone {result['backbone']}, "
             f"{result['sample']} examples per sample)"]
    lines += [f"  {name}: n/a: {info['not_applicable']}" for name, info in result["proxies"].items()
              if info["not_applicable"]]
    note = logme_note(result)
    if note:
        lines.append(f"  {note}")
    groups = _seed_groups([module["name"] for module in result["modules"]])
    target = result["rankings"][TARGET]
    for key, ranking in result["rankings"].items():
        if key != TARGET and ranking == target:
            lines.append(f"{key}: the same ranking as {TARGET} (no proxy reads {key} text without "
                         "--unlabelled-target-text; no target-language label is ever read)")
            continue
        rows = {label: _group_row(ranking, members, names) for label, members in groups.items()}
        cells = {label: {} for label in rows}
        for name in names:
            means = {label: row[name][0] for label, row in rows.items() if row[name][0] is not None}
            ranks = dict(zip(means, map(int, rankdata([-mean for mean in means.values()], method="min"))))
            for label, row in rows.items():
                mean, sd, seconds = row[name]
                cells[label][name] = "n/a" if mean is None else (
                    f"{mean:.4f}" + (f" ±{sd:.4f}" if sd is not None else "") + f" ({ranks[label]}, {seconds:.2f})")
        lines += ["", f"{key}" + ("" if key == TARGET else " (reads unlabelled target-language text: not strictly "
                                                           "zero-shot)"),
                  "intermediate".ljust(40) + "seeds".rjust(6) + "".join(f"{name + ' (rank, s)':>32}" for name in names)]
        lines += [label[:39].ljust(40) + f"{len(groups[label]):6}" + "".join(f"{cells[label][n]:>32}" for n in names)
                  for label in rows]
    return "\n".join(lines)


def _seed_groups(names: list[str]) -> dict[str, list[str]]:
    """Module names by intermediate: ``seed<s>/lora/verses-xref`` of every seed under ``lora/verses-xref``."""
    groups: dict[str, list[str]] = {}
    for name in names:
        groups.setdefault(re.sub(r"^seed\d+/", "", name), []).append(name)
    return groups


def _group_row(ranking: dict, members: list[str], names: list[str]) -> dict[str, tuple]:
    """proxy -> (mean score over the members, their sd (None for one), mean seconds a member's score cost)."""
    row = {}
    for name in names:
        scores = [ranking[m][name]["score"] for m in members if ranking[m][name]["score"] is not None]
        seconds = float(np.mean([ranking[m][name]["seconds"] for m in members]))
        row[name] = ((float(np.mean(scores)), float(np.std(scores, ddof=1)) if len(scores) > 1 else None, seconds)
                     if scores else (None, None, seconds))
    return row


def logme_note(result: dict) -> str | None:
    """What a sample with fewer examples than feature dimensions does to LogME, and which formula ran."""
    info = result.get("logme", {})
    n, dims = info.get("examples"), info.get("dimensions")
    if result["proxies"]["logme"]["not_applicable"] or n is None or n >= dims:
        return None
    if info["formula"] == "reference":
        return (f"logme: the reference formula (thuml/LogME, as ESM-LogME uses it), for comparison with published "
                f"rankings: with {n} examples on {dims} feature dimensions it leaves out the prior on the {dims - n} "
                "directions the sample does not span, so it is not the exact evidence")
    return (f"logme: {n} examples on {dims} feature dimensions: the sample spans at most {n} of the {dims} directions, "
            f"and the exact evidence (used here) counts the prior on the other {dims - n} (-(D-k)/2 log alpha); the "
            "reference implementation (thuml/LogME, as ESM-LogME uses it) leaves that term out, so its values differ "
            "and may rank the modules otherwise: --logme-reference computes its formula, for comparison "
            "with published rankings")
