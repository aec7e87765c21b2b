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
from ..kinds.common import ROW
from ..tasks.spec import TaskSpec

datasets.disable_progress_bars()


def featurized(task: TaskSpec, split: str, lang: str, tokenizer, max_length: int, seed: int = 0,
               with_rows: bool = False) -> tuple[datasets.Dataset, list[dict], str]:
    """Return (features, rows, fingerprint) for one split and language of a task. ``with_rows``: the features
    keep their ``ROW`` column, the index of the row each came from (``split_rows`` takes it off)."""
    rows = task.rows(split, lang, seed)
    kind = KINDS[task.kind]
    _check_rows(task, split, lang, rows, kind.COLUMNS)
    fingerprint = _fingerprint(task.name, split, lang, seed, max_length, task.options,
                               tokenizer_hash(tokenizer), rows, ROW)
    path = home() / "features" / fingerprint
    if not path.exists():
        table = datasets.Dataset.from_list(rows).add_column(ROW, list(range(len(rows))))
        # new_fingerprint: ours already names the content; datasets would otherwise hash the tokenizer (seconds)
        features = table.map(functools.partial(_featurize_rows, kind.featurize, tokenizer=tokenizer,
                                               max_length=max_length, options=task.options),
                             batched=True, remove_columns=table.column_names, new_fingerprint=fingerprint)
        with atomic_dir(path) as tmp:
            features.save_to_disk(str(tmp))
    features = _load(str(path))
    return (features if with_rows else features.remove_columns(ROW)), rows, fingerprint


def split_rows(features: datasets.Dataset) -> tuple[datasets.Dataset, list[int]]:
    """Features without their ``ROW`` column, and the row each came from (a row may make several: QA
    windows, long sentences)."""
    return features.remove_columns(ROW), features[ROW]


def _featurize_rows(featurize, batch: dict, **settings) -> dict:
    """A kind's features of ``batch``, each with its row's index: a kind that makes one feature per row
    gets it here; one that makes several copies ``batch[ROW]`` of the row into each (adapterxfer.kinds)."""
    features = featurize(batch, **settings)
    if ROW not in features:
        features[ROW] = batch[ROW]
    return features


@functools.lru_cache(maxsize=1024)
def _load(path: str) -> datasets.Dataset:
    """A cache entry, loaded once per process: its folder never changes (the fingerprint names its content,
    and it appears whole), and ``load_from_disk`` takes ~15 ms a call even for a few rows (a study in one
    process scores each test set in every phase)."""
    return datasets.load_from_disk(path)


def truncation_rates(task: TaskSpec, tokenizer, max_length: int, langs: list[str] | None = None,
                     split: str = "test") -> dict[str, float]:
    """{lang: share of the split's rows that ``max_length`` cuts}. A row is cut when one of its
    sequences is longer: a sentence or pair (classification), a context with any of its choices
    (multiple choice), a text (MLM), a query or its target (retrieval). QA and tagging cut nothing:
    they split long inputs into windows or pieces."""
    sequences = _SEQUENCES.get(task.kind)
    if sequences is None:
        raise UserError(f"task {task.name} ({task.kind}) splits long inputs into windows or pieces and cuts none; "
                        f"truncation applies to: {', '.join(_SEQUENCES)}")
    rates = {}
    for lang in langs or list(task.languages):
        rows = task.rows(split, lang)
        firsts, seconds, owners = [], [], []
        for index, row in enumerate(rows):
            for first, second in sequences(row):
                firsts.append(first)
                seconds.append(second)
                owners.append(index)
        lengths = _token_counts(tokenizer, firsts, seconds)
        cut = {owner for owner, length in zip(owners, lengths) if length > max_length}
        rates[lang] = len(cut) / len(rows)
    return rates


def _token_counts(tokenizer, firsts: list[str], seconds: list[str | None]) -> list[int]:
    """Tokens of each (first, second) sequence with the tokenizer's special tokens, uncut."""
    count = lambda texts: [len(ids) for ids in tokenizer([t or "" for t in texts], add_special_tokens=False)["input_ids"]]
    specials = {pair: tokenizer.num_special_tokens_to_add(pair=pair) for pair in (False, True)}
    return [a + b + specials[second is not None] for a, b, second in zip(count(firsts), count(seconds), seconds)]


_SEQUENCES = {
    "classification": lambda row: [(row["text"], row.get("text_pair"))],
    "bi_encoder": lambda row: [(text, None) for text in (row["context"], *row["choices"])],
    "multiple_choice": lambda row: [(row["context"], choice) for choice in row["choices"]],
    "mlm": lambda row: [(row["text"], None)],
    "retrieval": lambda row: [(row["query"], None), (row["target"], None)],
}


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
