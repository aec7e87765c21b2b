"""One loader for every dataset split: a local copy first, else the Hugging Face Hub.

Local copies (for offline users) mirror the Hub's own layout under ``$ADAPTERXFER_DATA_DIR``::

    $ADAPTERXFER_DATA_DIR/<dataset id>/<config>/<split>[-*].<ext>

e.g. ``facebook/xnli/fr/test-00000-of-00001.parquet`` (what ``huggingface-cli download facebook/xnli
--repo-type dataset --include 'fr/*' --local-dir $ADAPTERXFER_DATA_DIR/facebook/xnli`` writes) or
``google/xtreme/PAN-X.de/test.jsonl``; the Hub's Parquet export (``--revision refs/convert/parquet``:
``<config>/<split>/0000.parquet``) is read too, for datasets whose Hub copy is a loading script
(allenai/cosmos_qa, allenai/social_i_qa), which ``datasets`` no longer runs. Rows keep the Hub schema (field names, label encodings); a
dataset with no config uses the folder ``default``. Extensions: parquet, jsonl/json, csv, tsv, txt
(one ``text`` row per line) and conll (``token<TAB>tag`` lines, a blank line after each sentence,
read as ``{"tokens", "tags"}``). Hub datasets are read with ``datasets.load_dataset`` (parquet data,
never remote code); when the Hub is unreachable only the ``datasets`` cache is tried, so an offline
run fails within a second with one line saying what to download and where to put it. ``datasets`` is
imported on the first read, so naming a task (``adapterxfer tasks``, a config check) stays fast.
"""

from __future__ import annotations

import os
import socket
from contextlib import contextmanager, nullcontext
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Sequence
from unittest import mock
from urllib.parse import urlparse

from ..errors import UserError

if TYPE_CHECKING:  # imported on first read (see above)
    import datasets

DATA_DIR_ENV = "ADAPTERXFER_DATA_DIR"
BUILDERS = {"parquet": "parquet", "jsonl": "json", "json": "json", "csv": "csv", "tsv": "csv", "txt": "text",
            "conll": "conll"}


def load_rows(dataset_id: str, config: str | None, split: str, data_dir: str | Path | None = None,
              data_files: list[str] | None = None, *, convert: Callable[[dict], dict | list | None] = dict,
              limit: int | None = None, seed: int = 0, hub: bool = True, field: str | None = None,
              streaming: bool = False, indices: Sequence[int] | None = None) -> list[dict]:
    """The rows of one split, each passed through ``convert`` (a dict, a list of dicts, or None to drop).

    ``data_dir`` / ``data_files`` name a local copy explicitly; otherwise ``$ADAPTERXFER_DATA_DIR`` is
    searched, then the Hub (``hub=False``: the dataset is not on the Hub). ``limit`` keeps a seeded
    random sample; ``indices`` keeps the rows at these positions, in this order (instead of a sample).
    ``field`` is the JSON key holding the records (SQuAD-style files: "data").
    ``streaming`` (Hub only, with a limit) reads the first ``limit`` rows of a seeded shuffle buffer
    instead of downloading the whole split (Wikipedia).
    """
    import datasets
    table, where = _table(dataset_id, config, split, data_dir, data_files, hub, field,
                          streaming=streaming and limit is not None)
    if isinstance(table, datasets.IterableDataset):
        table = table.shuffle(seed=seed, buffer_size=10_000).take(limit)
    elif indices is not None:
        if len(indices) and max(indices) >= len(table):
            raise UserError(f"{where}: has {len(table)} rows, row {max(indices)} was asked for")
        table = table.select(indices)
    elif limit is not None and limit < len(table):
        table = table.shuffle(seed=seed).select(range(limit))
    rows = []
    for index, row in enumerate(table):
        try:
            out = convert(row)
        except (KeyError, TypeError, ValueError, IndexError, AttributeError) as err:
            raise UserError(f"{where} row {index}: does not fit the {dataset_id} schema ({type(err).__name__}: "
                            f"{err})") from None
        rows.extend(out if isinstance(out, list) else [] if out is None else [out])
    return rows


def count_rows(dataset_id: str, config: str | None, split: str, hub: bool = True) -> int:
    """The number of rows of one split (local copy first, else the Hub), without converting them."""
    return len(_table(dataset_id, config, split, None, None, hub, None, streaming=False)[0])


def _table(dataset_id, config, split, data_dir, data_files, hub, field, streaming):
    """(the split as a datasets table, where it was read from: a file or the Hub id)."""
    folder = Path(data_dir) if data_dir else local_folder(dataset_id, config)
    files = [str(f) for f in data_files] if data_files else _split_files(folder, split)
    if files:
        return _read_files(files, field, files[0]), files[0]
    where = f"{dataset_id} (config {config!r}, split {split!r})"
    return _read_hub(dataset_id, config, split, folder, hub, streaming=streaming), where


def local_folder(dataset_id: str, config: str | None) -> Path | None:
    root = os.environ.get(DATA_DIR_ENV)
    return Path(root).expanduser() / dataset_id / (config or "default") if root else None


def _split_files(folder: Path | None, split: str) -> list[str]:
    if folder is None or not folder.is_dir():
        return []
    candidates = list(folder.iterdir()) + sorted((folder / split).glob("*.parquet"))  # the Parquet export
    found = sorted(p for p in candidates if p.is_file() and p.suffix.lstrip(".") in BUILDERS
                   and (p.parent.name == split or p.stem == split or p.stem.startswith(f"{split}-")))
    suffixes = {p.suffix for p in found}
    if len(suffixes) > 1:
        raise UserError(f"{folder}: split {split!r} has files of several formats ({', '.join(sorted(suffixes))})")
    return [str(p) for p in found]


def _read_files(files: list[str], field: str | None, where: str) -> datasets.Dataset:
    import datasets
    suffix = Path(files[0]).suffix.lstrip(".")
    try:
        if suffix == "conll":
            return datasets.Dataset.from_list([row for f in files for row in _conll(Path(f))])
        options = {"field": field} if field else {"delimiter": "\t"} if suffix == "tsv" else {}
        return datasets.load_dataset(BUILDERS[suffix], data_files=files, split="train", **options)
    except (datasets.exceptions.DatasetGenerationError, ValueError, OSError) as err:
        cause = err.__cause__ or err
        raise UserError(f"{where}: cannot be read as {suffix} ({type(cause).__name__}: "
                        f"{str(cause).splitlines()[0] if str(cause) else ''})") from None


def _conll(path: Path) -> list[dict]:
    sentences, tokens, tags = [], [], []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            if tokens:
                sentences.append({"tokens": tokens, "tags": tags})
            tokens, tags = [], []
            continue
        parts = line.split("\t")
        if len(parts) != 2 or not all(parts):
            raise UserError(f"{path}:{number}: expected 'token<TAB>tag', got {line!r}")
        tokens.append(parts[0])
        tags.append(parts[1])
    return sentences + ([{"tokens": tokens, "tags": tags}] if tokens else [])


@contextmanager
def _offline():
    import datasets
    import huggingface_hub.constants
    with mock.patch.object(datasets.config, "HF_HUB_OFFLINE", True), \
            mock.patch.object(huggingface_hub.constants, "HF_HUB_OFFLINE", True):
        yield


@lru_cache(maxsize=1)
def hub_reachable(timeout: float = 3.0) -> bool:
    """One TCP connection to the Hub endpoint (cached): without it, ``datasets`` retries for ~25 s."""
    import huggingface_hub.constants
    if huggingface_hub.constants.HF_HUB_OFFLINE:
        return False
    url = urlparse(huggingface_hub.constants.ENDPOINT)
    try:
        socket.create_connection((url.hostname, url.port or 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def _read_hub(dataset_id: str, config: str | None, split: str, folder: Path | None, hub: bool,
              streaming: bool) -> datasets.Dataset | datasets.IterableDataset:
    import datasets
    where = folder or f"${DATA_DIR_ENV}/{dataset_id}/{config or 'default'}"
    local = f"put {split}.jsonl (or .parquet, .csv, .tsv, .txt, .conll) files in {where}/"
    if not hub:
        raise UserError(f"dataset {dataset_id!r} (config {config!r}) has no Hub copy and no local copy was found: "
                        f"{local} (see adapterxfer/tasks/xtreme.py for its source and format)")
    online = hub_reachable()
    try:
        with nullcontext() if online else _offline():  # offline: the datasets cache only
            return datasets.load_dataset(dataset_id, config, split=split, streaming=streaming)
    except RuntimeError as err:
        if not str(err).startswith("Dataset scripts are no longer supported"):
            raise
        raise UserError(f"dataset {dataset_id!r} is a loading script on the Hub, which datasets "
                        f"{datasets.__version__} does not run: download its Parquet export with `huggingface-cli "
                        f"download {dataset_id} --repo-type dataset --revision refs/convert/parquet --local-dir "
                        f"${DATA_DIR_ENV}/{dataset_id}` (it writes {config or 'default'}/{split}/*.parquet)") \
            from None
    except (ConnectionError, FileNotFoundError, ValueError, OSError,
            datasets.exceptions.DatasetNotFoundError) as err:
        state = "reachable but refused it" if online else "offline and the datasets cache has no copy"
        raise UserError(f"dataset {dataset_id!r} (config {config!r}, split {split!r}) is not readable: the Hugging "
                        f"Face Hub is {state} ({type(err).__name__}); download it with `huggingface-cli download "
                        f"{dataset_id} --repo-type dataset --local-dir ${DATA_DIR_ENV}/{dataset_id}` or {local}") \
            from None
