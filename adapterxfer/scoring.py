"""Score a predictions folder against a labels folder like google-research/xtreme's ``evaluate.py``.

Both folders hold ``<task>/test-<lang>.<suffix>``: one label per line (XNLI, PAWS-X, Tatoeba),
one tag per line with a blank line after each sentence (PAN-X, UD-POS), one "src<TAB>tgt" pair per
line (BUCC), a SQuAD-format file against {question id: answer} (XQuAD, MLQA, TyDiQA), {example id:
[gold entity]} against {example id: [ranked entities]} (Mewsli-X), and JSON lines with "label"
(XCOPA). A task is scored when both folders have its subfolder; it then needs every language.
The result has the official JSON keys and order: all_task and the groups, then one block per task.
"""

from __future__ import annotations

import json
import os
from functools import partial
from pathlib import Path

from .errors import UserError
from .metrics import (accuracy_scores, bucc_scores, mewslix_scores, mlqa_scores, overall_scores, squad_scores,
                      tagging_scores, task_summary)

XTREME_LANGUAGES = {
    "pawsx": "de en es fr ja ko zh".split(),
    "xnli": "ar bg de el en es fr hi ru sw th tr ur vi zh".split(),
    "panx": ("ar he vi id jv ms tl eu ml ta te af nl en de el bn hi mr ur fa fr it pt es bg ru ja ka ko th sw yo my "
             "zh kk tr et fi hu").split(),
    "udpos": ("af ar bg de el en es et eu fa fi fr he hi hu id it ja kk ko mr nl pt ru ta te th tl tr ur vi yo "
              "zh").split(),
    "bucc2018": "de fr ru zh".split(),
    "tatoeba": ("ar he vi id jv tl eu ml ta te af nl de el bn hi mr ur fa fr it pt es bg ru ja ka ko th sw zh kk tr "
                "et fi hu").split(),
    "xquad": "en es de el ru tr ar vi th zh hi".split(),
    "mlqa": "en es de ar hi vi zh".split(),
    "tydiqa": "en ar bn fi id ko ru sw te".split(),
}

# XTREME-R drops PAWS-X and BUCC, adds XCOPA, LAReQA (listed with no languages: the official scorer
# does not score it) and Mewsli-X, and adds languages to PAN-X, UD-POS, Tatoeba and XQuAD.
XTREME_R_LANGUAGES = {
    "xnli": XTREME_LANGUAGES["xnli"],
    "panx": XTREME_LANGUAGES["panx"] + "qu pl uk az lt pa gu ro".split(),
    "udpos": XTREME_LANGUAGES["udpos"] + "lt pl uk wo ro".split(),
    "tatoeba": XTREME_LANGUAGES["tatoeba"] + "az lt pl uk ro".split(),
    "xcopa": "et ht id it qu sw ta th tr vi zh".split(),
    "lareqa": [],
    "mewslix": "ar de en es fa ja pl ro ta tr uk".split(),
    "xquad": XTREME_LANGUAGES["xquad"] + ["ro"],
    "mlqa": XTREME_LANGUAGES["mlqa"],
    "tydiqa": XTREME_LANGUAGES["tydiqa"],
}

LANGUAGES = {"xtreme": XTREME_LANGUAGES, "xtreme-r": XTREME_R_LANGUAGES}

# The official group names; in XTREME-R, XCOPA counts in "classification" and in "multi_choice".
GROUPS = {
    "xtreme": {"classification": ["pawsx", "xnli"], "tagging": ["udpos", "panx"], "qa": ["xquad", "mlqa", "tydiqa"],
               "retrieval": ["bucc2018", "tatoeba"]},
    "xtreme-r": {"classification": ["xnli", "xcopa"], "tagging": ["udpos", "panx"], "qa": ["xquad", "mlqa", "tydiqa"],
                 "retrieval": ["tatoeba", "mewslix"], "multi_choice": ["xcopa"]},
}


def _text_lines(path: Path) -> list[str]:
    """The file's lines, split as Python text files split them, each stripped (as official)."""
    try:
        with open(path, encoding="utf-8") as f:
            return [line.strip() for line in f]
    except UnicodeDecodeError as err:
        raise UserError(f"{path}: not UTF-8 text (byte {err.start})") from None


def _tag_sentences(path: Path) -> list[list[str]]:
    """One tag per line; each blank line closes a sentence (two blank lines make an empty one, as official)."""
    sentences, sentence = [], []
    for line in _text_lines(path):
        if line:
            sentence.append(line)
        else:
            sentences.append(sentence)
            sentence = []
    return sentences + [sentence] if sentence else sentences


def _json(path: Path):
    """A JSON file; a top-level "data" key is unwrapped (SQuAD format), in any file, as official."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise UserError(f"{path}:{err.lineno}: invalid JSON ({err.msg})") from None
    except UnicodeDecodeError as err:
        raise UserError(f"{path}: not UTF-8 text (byte {err.start})") from None
    return data["data"] if isinstance(data, dict) and "data" in data else data


def _jsonl_labels(path: Path) -> list:
    """The "label" value of each JSON line (XCOPA)."""
    labels = []
    for number, line in enumerate(_text_lines(path), 1):
        try:
            labels.append(json.loads(line)["label"])
        except (json.JSONDecodeError, KeyError, TypeError) as err:
            raise UserError(f'{path}:{number}: expected a JSON object with a "label" ({err!r})') from None
    return labels


# task -> (file suffix, reader, metric(predictions, references))
FORMATS = {
    "pawsx": ("tsv", _text_lines, accuracy_scores),
    "xnli": ("tsv", _text_lines, accuracy_scores),
    "tatoeba": ("tsv", _text_lines, accuracy_scores),
    "xcopa": ("jsonl", _jsonl_labels, accuracy_scores),
    "panx": ("tsv", _tag_sentences, tagging_scores),
    "udpos": ("tsv", _tag_sentences, tagging_scores),
    "bucc2018": ("tsv", _text_lines, bucc_scores),
    "xquad": ("json", _json, squad_scores),
    "tydiqa": ("json", _json, squad_scores),
    "mlqa": ("json", _json, mlqa_scores),
    "mewslix": ("json", _json, mewslix_scores),
}
# Tasks whose prediction file must have one entry per label entry (the official scorer asserts it).
ALIGNED = {"pawsx", "xnli", "tatoeba", "xcopa", "panx", "udpos"}


def _check_count(predictions: list, labels: list, prediction_file: Path, label_file: Path) -> None:
    if len(predictions) != len(labels):
        raise UserError(f"{prediction_file}: {len(predictions)} examples, but {label_file} has {len(labels)}")


def _check_sentences(predictions: list, labels: list, prediction_file: Path, label_file: Path) -> None:
    line = 1
    for predicted, gold in zip(predictions, labels):
        if len(predicted) != len(gold):
            raise UserError(f"{prediction_file}:{line}: sentence of {len(predicted)} tags, {len(gold)} in {label_file}")
        line += len(predicted) + 1


def score_language(task: str, prediction_file: Path, label_file: Path, lang: str) -> dict:
    """The official metric dict of one task in one language, e.g. {"exact_match": .., "f1": ..}."""
    _, read, metric = FORMATS[task]
    for path in (prediction_file, label_file):
        if not path.is_file():
            raise UserError(f"{path}: missing; a scored task needs test-<lang> files for all its languages")
    predictions, labels = read(prediction_file), read(label_file)
    if task in ALIGNED:
        _check_count(predictions, labels, prediction_file, label_file)
    if read is _tag_sentences:
        _check_sentences(predictions, labels, prediction_file, label_file)
    metric = partial(metric, lang=lang) if task == "mlqa" else metric
    try:
        return metric(predictions, labels)
    except (ValueError, KeyError, TypeError, AttributeError, IndexError) as err:
        raise UserError(f"{prediction_file} against {label_file}: {type(err).__name__}: {err}") from None


def _files(folders: tuple[Path, Path], task: str, lang: str) -> list[Path]:
    return [folder / task / f"test-{lang}.{FORMATS[task][0]}" for folder in folders]


def score_folders(predictions_dir: str | Path, labels_dir: str | Path, benchmark: str = "xtreme") -> dict:
    """The official result dict: all_task and group means first, then {task: per-language and avg scores}."""
    if benchmark not in LANGUAGES:
        raise UserError(f"benchmark {benchmark!r} must be one of {', '.join(LANGUAGES)}")
    folders = Path(predictions_dir), Path(labels_dir)
    for folder in folders:
        if not folder.is_dir():
            raise UserError(f"{folder}: not a folder")
    task_languages, groups = LANGUAGES[benchmark], GROUPS[benchmark]
    detailed = {}
    for task, langs in task_languages.items():
        if all((folder / task).is_dir() for folder in folders):
            per_language = {lang: score_language(task, *_files(folders, task, lang), lang) for lang in langs}
            detailed[task] = task_summary(per_language, qa=task in groups["qa"])
    return {**overall_scores(detailed, list(task_languages), groups), **detailed}


def write_scores(scores: dict, path: str | Path) -> None:
    """Write the JSON as the official scorer does (indent 2, ASCII, no final newline), atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        temporary.write_text(json.dumps(scores, indent=2), encoding="utf-8")
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def write_official(folder: str | Path, task, predictions: dict) -> None:
    """Write a task's predictions and gold as ``xtreme/<task>/test-<lang>.<suffix>`` and ``xtreme-gold/...``.

    ``task`` is a TaskSpec named like an official task (xnli, pawsx, panx, ...); ``predictions`` is
    {lang: [{"label", "prediction", "ref"}]} as evaluation returns it. The task's kind gives the official
    values (``official_values``); the suffix says how they are written: one JSON value (json), {"label": n}
    lines (jsonl), or a value per line, a list as lines closed by a blank one (tsv).
    """
    from .kinds import KINDS  # here: `adapterxfer score` reads files only and needs no transformers

    if task.name not in FORMATS:
        raise UserError(f"task {task.name} has no official XTREME format (tasks with one: {', '.join(FORMATS)})")
    suffix = FORMATS[task.name][0]
    for lang, items in predictions.items():
        for sub, values in zip(("xtreme", "xtreme-gold"), KINDS[task.kind].official_values(task, lang, items)):
            path = Path(folder) / sub / task.name / f"test-{lang}.{suffix}"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(_official_text(suffix, values), encoding="utf-8")


def _official_text(suffix: str, values) -> str:
    if suffix == "json":
        return json.dumps(values, ensure_ascii=False)
    if suffix == "jsonl":
        return "".join(json.dumps({"label": value}) + "\n" for value in values)
    return "".join("".join(f"{tag}\n" for tag in value) + "\n" if isinstance(value, list) else f"{value}\n"
                   for value in values)


def format_summary(scores: dict) -> str:
    """A table of the overall scores and each task's avg_metric with the metrics behind it."""
    rows = [f"{'':16}{'score':>8}"]
    for name, value in scores.items():
        if isinstance(value, dict):
            metrics = "/".join(key for key in value if not key.startswith("avg_"))
            value = value.get("avg_metric")
            rows.append(f"{name:16}{'-' if value is None else f'{value:.2f}':>8}  {metrics or 'not scored'}")
        else:
            rows.append(f"{name:16}{value:8.2f}")
    return "\n".join(rows)
