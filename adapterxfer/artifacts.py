"""What an output folder holds, and its manifest: provenance, lineage and the sha256 of every file.

A folder is written into a temporary sibling and renamed into place (see cache.atomic_dir),
so a crash never leaves a half-written artifact. Reading verifies every hash.

Scores are added to a folder later (a target phase's evaluation, or ``adapterxfer evaluate``): scores.json,
predictions/ and evaluation.json, which records what was scored (the model's manifest hash or the backbone's
weight hash, the task, the languages, the identity of the phase that asked for it) and the size of every file
the evaluation wrote. scores.json goes in last, so its presence means the evaluation is complete.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from .errors import UserError

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
SCORES = "scores.json"  # an evaluation's scores: {lang: {metric: value}}
EVALUATION = "evaluation.json"  # what an evaluation scored, and the files it wrote
DEV_PREDICTIONS = "dev_predictions"  # folder: per-item English dev predictions at step 0 and final
REQUIRED = {"regime": str, "module_kind": str, "task": str, "tasks": list, "kind": str, "phase": str,
            "backbone": dict, "parents": list, "config": dict, "files": dict}


@dataclass
class Manifest:
    """What a trained phase's manifest.json records (writing adds ``format_version`` and ``files``)."""

    regime: str
    module_kind: str  # what the phase saved: encoder, lora, seq_bn, seq_bn_inv, ...
    task: str  # as configured: a+b for a multi-task phase
    language: str  # the training language
    tasks: list[str]
    kind: str
    phase: str  # intermediate | target
    transfer: str | None  # None: no parents
    zero_shot: bool  # no parent saw the target task's test languages labelled
    backbone: dict  # name, weight_hash
    parents: list[dict]  # path, task, regime, manifest_sha256, and the Hub origin of a pulled one
    config: dict  # every RunConfig key
    identity: dict  # config.phase_identity
    precision: str
    pooling: str
    dev: dict  # metric, best, step0, final, log
    data_fingerprint: str
    train_items: dict  # task -> what its steps drew: examples, items, tokens, per language (adapterxfer.items)
    trainable_parameters: int
    train_seconds: float
    resumed_from_step: int | None
    processes: int
    peak_rss_mb: float


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 22), b""):
            digest.update(block)
    return "sha256:" + digest.hexdigest()


def write_manifest(folder: Path, record: Manifest) -> dict:
    """Write manifest.json with the hash of every other file in ``folder``."""
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.name != MANIFEST)
    manifest = {"format_version": FORMAT_VERSION, **dataclasses.asdict(record),
                "files": {str(p.relative_to(folder)): sha256_file(p) for p in files},
                "sizes": {str(p.relative_to(folder)): p.stat().st_size for p in files}}
    (folder / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def is_artifact(folder: str | Path) -> bool:
    return (Path(folder) / MANIFEST).is_file()


def read_manifest(folder: str | Path, verify: bool = True) -> dict:
    """Read and (by default) verify an artifact; any mismatch is a one-line UserError."""
    folder = Path(folder)
    path = folder / MANIFEST
    if not folder.exists():
        raise UserError(f"{folder} does not exist")
    if not path.is_file():
        raise UserError(f"{folder} is not an adapterxfer artifact (no {MANIFEST})")
    try:
        manifest = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise UserError(f"{path}: not valid JSON ({err.msg} at line {err.lineno})") from None
    if not isinstance(manifest, dict) or manifest.get("format_version") != FORMAT_VERSION:
        found = manifest.get("format_version") if isinstance(manifest, dict) else type(manifest).__name__
        raise UserError(f"{path}: format_version {found!r}, expected {FORMAT_VERSION}")
    for key, kind in REQUIRED.items():
        if not isinstance(manifest.get(key), kind):
            raise UserError(f"{path}: key {key!r} is missing or not a {kind.__name__} (required: {', '.join(REQUIRED)})")
    if verify:
        check_files(folder, manifest, hashes=True)
    return manifest


def check_files(folder: Path, manifest: dict, hashes: bool = False) -> None:
    """Every file the manifest lists is there with its size (where the manifest records sizes), and with
    ``hashes`` its sha256; a mismatch is a one-line UserError."""
    sizes = manifest.get("sizes") or {}
    for name, expected in manifest["files"].items():
        file = Path(folder) / name
        if not file.is_file():
            raise UserError(f"{folder}: file {name} listed in {MANIFEST} is missing")
        if name in sizes and file.stat().st_size != sizes[name]:
            raise UserError(f"{folder}: file {name} is {file.stat().st_size} bytes, {MANIFEST} says {sizes[name]} "
                            "(corrupt or tampered)")
        if hashes and sha256_file(file) != expected:
            raise UserError(f"{folder}: file {name} does not match its sha256 in {MANIFEST} (corrupt or tampered)")


def input_folders(manifest: dict) -> list[str]:
    """Where the inputs of a trained phase were when it trained, in the order of ``identity["inputs"]``: its
    parents, then the other artifacts its path keys named (``Regime.input_refs``: madx's language adapters,
    arithmetic's language modules)."""
    from .config import INPUT_PATHS  # here: the key table imports the regimes, which import this module

    others = [name for name in INPUT_PATHS if name not in ("backbone", "init_from")]
    return [parent["path"] for parent in manifest["parents"]] + [
        ref for name in others for ref in manifest["config"].get(name) or []]


def lineage_changes(folder: Path, manifest: dict) -> tuple[list[str], list[str]]:
    """(changed, unchecked): the inputs whose manifest.json is no longer the one this artifact's lineage
    records (retrained since), and those not found where they were (a moved study, a pulled repo)."""
    recorded = manifest.get("identity", {}).get("inputs") or [p["manifest_sha256"] for p in manifest["parents"]]
    changed, unchecked = [], []
    for path, expected in zip(input_folders(manifest), recorded):
        current = Path(path) / MANIFEST
        if str(path).startswith("hf://") or not current.is_file():
            unchecked.append(str(path))
        elif sha256_file(current) != expected:
            changed.append(str(path))
    return changed, unchecked


def scores_itself(folder: Path, langs: list[str], scoring: dict) -> bool:
    """``folder`` holds a complete evaluation of the artifact in it, in ``langs``, scored as ``scoring`` says (the
    train keys that choose what is scored: languages, test share)."""
    record = read_evaluation(folder)
    return (record is not None and record.get("model") == sha256_file(Path(folder) / MANIFEST)
            and record["langs"] == langs and record.get("scoring") == scoring)


def read_evaluation(folder: Path) -> dict | None:
    """The record of the complete evaluation in ``folder`` (see the module docstring), or None: none, one
    cut short, or one whose files are not the sizes it wrote."""
    folder = Path(folder)
    if not (folder / SCORES).is_file() or not (folder / EVALUATION).is_file():
        return None
    try:
        record = json.loads((folder / EVALUATION).read_text())
        if all((folder / name).is_file() and (folder / name).stat().st_size == size
               for name, size in record["files"].items()):
            return record
    except (ValueError, KeyError, TypeError, AttributeError):
        pass
    return None


def lock_file(out: Path) -> Path:
    """The lock a run holds while it writes ``out`` (one run at a time)."""
    return out.with_name(f".{out.name}.lock")


def size_mb(folder: Path, manifest: dict) -> float:
    """Megabytes of the artifact's files (what sharing it costs)."""
    return round(sum((Path(folder) / name).stat().st_size for name in manifest["files"]) / 1e6, 2)


def describe(folder: str | Path) -> str:
    """A short human summary of a verified artifact: what it is, where it came from, what it scored."""
    manifest = read_manifest(folder)
    dev = manifest.get("dev", {})
    lines = [
        f"{folder}: {manifest['regime']} {manifest.get('module_kind', '')} for {manifest['task']} "
        f"({manifest['phase']} phase{', transfer=' + manifest['transfer'] if manifest.get('transfer') else ''})",
        f"backbone: {manifest['backbone']['name']} {manifest['backbone']['weight_hash']}",
        f"trainable parameters: {manifest.get('trainable_parameters', 0):,}; "
        f"size {size_mb(Path(folder), manifest)} MB in {len(manifest['files'])} files (all sha256 verified)",
        f"English dev {dev.get('metric')}: {dev.get('best')}; train {manifest.get('train_seconds')} s; "
        f"peak RSS {manifest.get('peak_rss_mb')} MB; seed {manifest.get('config', {}).get('seed')}",
    ]
    changed, _ = lineage_changes(Path(folder), manifest)
    lines += [f"parent: {p['path']} ({p['regime']} {p['task']})"
              + (" -- retrained since: this artifact was trained from its previous version" if p["path"] in changed
                 else "") for p in manifest.get("parents", [])]
    scores = Path(folder) / "scores.json"
    if scores.is_file():
        from .tasks import get_task

        lines.append(score_table(json.loads(scores.read_text()), get_task(manifest["task"]).source_lang))
    return "\n".join(lines)


def score_table(scores: dict, source_lang: str) -> str:
    """``{lang: {metric: value}}`` as a small table, a row per language, then the zero-shot mean (over
    the languages other than ``source_lang``, the training language)."""
    metrics = list(dict.fromkeys(metric for values in scores.values() for metric in values))
    widths = {metric: max(8, len(metric)) for metric in metrics}
    width = max([4, *map(len, scores)])
    zero_shot = [lang for lang in scores if lang != source_lang]

    def row(name: str, values: dict, note: str = "") -> str:
        cells = "  ".join(f"{values[m]:{widths[m]}.3f}" if m in values else " " * widths[m] for m in metrics)
        return f"  {name:{width}}  {cells}" + (f"  ({note})" if note else "")

    rows = [f"  {'lang':{width}}  " + "  ".join(f"{metric:>{widths[metric]}}" for metric in metrics)]
    rows += [row(lang, values, "training language" if lang == source_lang else "") for lang, values in scores.items()]
    if zero_shot:
        means = {metric: _mean([scores[lang][metric] for lang in zero_shot if metric in scores[lang]])
                 for metric in metrics}
        rows.append(row("mean", means, f"zero-shot, {len(zero_shot)} language{'s' * (len(zero_shot) > 1)}"))
    return "zero-shot scores:\n" + "\n".join(rows)


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else float("nan")


def by_language(folders, key: str, noun: str, mismatch, backbone=None) -> dict[str, Path]:
    """{language: folder} of the language modules ``folders`` (folders or hf:// refs) given by key ``key``, in
    order: each verified, trained on ``backbone`` (None: any) and the only one of its language.
    ``mismatch(manifest)`` completes "<folder> is not ..." for a manifest that is no such module (None where it
    is one); ``noun`` names one in messages."""
    from . import sharing

    found: dict[str, Path] = {}
    for folder in map(sharing.resolve, folders):
        manifest = read_manifest(folder)
        wrong = mismatch(manifest)
        if wrong:
            raise UserError(f"{key}: {folder} is not {wrong}")
        if backbone is not None and manifest["backbone"]["weight_hash"] != backbone.weight_hash:
            raise UserError(f"{key}: {folder} was trained on backbone {manifest['backbone']['name']!r}, "
                            f"not {backbone.name!r}")
        lang = manifest["language"]
        if lang in found:
            raise UserError(f"{key}: {folder} and {found[lang]} are both {noun}s for {lang!r}")
        found[lang] = folder
    return found
