"""Rows -> tokenized features, cached on disk by a fingerprint of everything that shapes them.

The fingerprint covers the task, split, language, seed, the rows' content, the tokenizer
file and max_length, so a second run loads Arrow files instead of re-tokenizing, and a
change to any of them makes a new entry.
"""

from __future__ import annotations

import functools
import hashlib
import json
from pathlib import Path

import datasets

from ..artifacts import sha256_file
from ..cache import atomic_dir, home
from ..errors import UserError
from ..kinds import KINDS
from ..tasks.spec import TaskSpec

datasets.disable_progress_bars()


def featurized(task: TaskSpec, split: str, lang: str, tokenizer, max_length: int,
               seed: int = 0) -> tuple[datasets.Dataset, list[dict], str]:
    """Return (features, rows, fingerprint) for one split and language of a task."""
    rows = task.rows(split, lang, seed)
    kind = KINDS[task.kind]
    _check_rows(task, split, lang, rows, kind.COLUMNS)
    fingerprint = _fingerprint(task.name, split, lang, seed, max_length, task.options,
                               tokenizer_hash(tokenizer), rows)
    path = home() / "features" / fingerprint
    if not path.exists():
        table = datasets.Dataset.from_list(rows)
        features = table.map(functools.partial(kind.featurize, tokenizer=tokenizer, max_length=max_length,
                                               options=task.options),
                             batched=True, remove_columns=table.column_names)
        with atomic_dir(path) as tmp:
            features.save_to_disk(str(tmp))
    return datasets.load_from_disk(str(path)), rows, fingerprint


def tokenizer_hash(tokenizer) -> str:
    return _file_hash(str(Path(tokenizer.name_or_path) / "tokenizer.json"))


@functools.lru_cache(maxsize=None)
def _file_hash(path: str) -> str:
    return sha256_file(Path(path)) if Path(path).is_file() else path


def _fingerprint(*parts) -> str:
    blob = json.dumps(parts, ensure_ascii=False, sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:24]


def _check_rows(task: TaskSpec, split: str, lang: str, rows: list[dict], columns: tuple[str, ...]) -> None:
    """A broken row stops the run with its index and the field at fault."""
    for index, row in enumerate(rows):
        for column in columns:
            if row.get(column) in (None, "", []):
                raise UserError(f"task {task.name} {split}/{lang} row {index}: field {column!r} is missing or empty")
        label = row.get("label")
        n_classes = len(task.labels) or len(row.get("choices", ()))
        if label is not None and not (isinstance(label, int) and 0 <= label < n_classes):
            raise UserError(f"task {task.name} {split}/{lang} row {index}: label {label!r} outside 0..{n_classes - 1}")
