"""One loader for every dataset split: a local copy first, else the Hugging Face Hub.

Local copies (for offline users) are read in the Hub's own layouts, under
``$ADAPTERXFER_DATA_DIR/<dataset id>/`` (what ``hf download <id> --repo-type dataset
--local-dir $ADAPTERXFER_DATA_DIR/<id>`` writes), in this order:

1. the README's ``configs`` (YAML front matter): each config's ``data_files`` per split, as the Hub reads them;
2. ``<config>/<split>[-*].<ext>``: a dataset with configs, e.g. ``facebook/xnli/fr/test-00000-of-00001.parquet``
   or ``google/xtreme/PAN-X.de/test.jsonl`` (a dataset with no config uses ``default``);
3. ``data/<split>-*.<ext>``: a dataset with no configs, e.g. ``Rowan/hellaswag/data/train-00000-of-00001.parquet``;
4. the Hub's Parquet export (``--revision refs/convert/parquet``): ``<config>/<split>/0000.parquet``,
   ``<config>/partial-<split>/``, or the older ``<config>/<name>-<split>.parquet``.

Offline (``HF_HUB_OFFLINE=1`` or no route to the Hub), a dataset downloaded into the Hugging Face cache
(``hf download <id> --repo-type dataset`` on a login node) is found through
``huggingface_hub.snapshot_download(local_files_only=True)`` and read the same way; ``datasets``' own
offline mode never looks there. Rows keep the Hub schema (field names, label encodings). Extensions:
parquet, jsonl/json, csv, tsv, txt (one ``text`` row per line) and conll (``token<TAB>tag`` lines, a blank
line after each sentence, read as ``{"tokens", "tags"}``). Hub datasets are read with
``datasets.load_dataset`` (parquet data, never remote code); a loading-script repo, which ``datasets`` no
longer runs, is tried once more from its Parquet export. ``datasets`` is imported on the first read, so
naming a task (``adapterxfer tasks``, a config check) stays fast.
"""

from __future__ import annotations

import os
import re
import socket
from contextlib import contextmanager, nullcontext
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Sequence
from unittest import mock
from urllib.parse import urlparse

from ..compat import hub_unreachable
from ..errors import UserError

if TYPE_CHECKING:  # imported on first read (see above)
    import datasets

DATA_DIR_ENV = "ADAPTERXFER_DATA_DIR"
PARQUET_EXPORT = "refs/convert/parquet"
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
    if data_files:
        files = [str(f) for f in data_files]
    elif data_dir:
        files = _split_files(Path(data_dir), split)
    else:
        root = local_root(dataset_id)
        files = repo_files(root, config, split) if root else []
    if files:
        return _read_files(files, field, files[0]), files[0]
    where = f"{dataset_id} (config {config!r}, split {split!r})"
    return _read_hub(dataset_id, config, split, hub, streaming=streaming), where


def local_root(dataset_id: str) -> Path | None:
    root = os.environ.get(DATA_DIR_ENV)
    return Path(root).expanduser() / dataset_id if root else None


def repo_files(root: Path, config: str | None, split: str) -> list[str]:
    """The files of one split in a dataset repo laid out as on the Hub (see the module docstring)."""
    if not root.is_dir():
        return []
    name = config or "default"
    declared = _readme_files(root, name, split)
    if declared:
        return declared
    layouts = [(root / name, split), (root / "data", split), (root / name, f"partial-{split}")]
    for folder, name_of_split in layouts if name == "default" else [layouts[0], layouts[2]]:
        found = _split_files(folder, name_of_split)
        if found:
            return found
    return []


def _readme_files(root: Path, config: str, split: str) -> list[str]:
    """The files the README's ``configs`` front matter gives (config, split), as glob patterns of the repo."""
    readme = root / "README.md"
    if not readme.is_file():
        return []
    import yaml
    parts = readme.read_text(encoding="utf-8").split("---")
    try:
        meta = yaml.safe_load(parts[1]) if len(parts) > 2 and not parts[0].strip() else None
    except yaml.YAMLError as err:
        raise UserError(f"{readme}: the YAML front matter does not parse ({str(err).splitlines()[0]})") from None
    for entry in (meta or {}).get("configs") or []:
        if isinstance(entry, dict) and entry.get("config_name", "default") == config:
            data_files = entry.get("data_files") or []
            patterns = [item.get("path") for item in (data_files if isinstance(data_files, list) else [])
                        if isinstance(item, dict) and item.get("split") == split]
            patterns = [p for pattern in patterns for p in ([pattern] if isinstance(pattern, str) else pattern)]
            return sorted(str(f) for pattern in patterns for f in root.glob(pattern) if f.is_file())
    return []


def _split_files(folder: Path | None, split: str) -> list[str]:
    if folder is None or not folder.is_dir():
        return []
    # <split>.ext, <split>-00000-of-00001[-hash].ext, <name>-<split>.ext (older export), <split>/0000.parquet
    named = re.compile(rf"(?:.+-)?{re.escape(split)}(?:-\d{{5}}-of-\d{{5}}(?:-[0-9a-f]{{16}})?)?")
    candidates = list(folder.iterdir()) + sorted((folder / split).glob("*.parquet"))
    found = sorted(p for p in candidates if p.is_file() and p.suffix.lstrip(".") in BUILDERS
                   and (p.parent.name == split and p.parent != folder or named.fullmatch(p.stem)))
    suffixes = {p.suffix for p in found}
    if len(suffixes) > 1:
        raise UserError(f"{folder}: split {split!r} has files of several formats ({', '.join(sorted(suffixes))})")
    return [str(p) for p in found]


def _read_files(files: list[str], field: str | None, where: str) -> datasets.Dataset:
    """The files as one table, read once per process while they are unchanged (a study in one process reads
    each test set in every phase; ``datasets`` takes tens of milliseconds a call even from its cache)."""
    stamps = tuple((f, os.stat(f).st_mtime_ns, os.stat(f).st_size) for f in files)
    return _read_files_once(stamps, field, where)


@lru_cache(maxsize=512)
def _read_files_once(stamps: tuple, field: str | None, where: str) -> datasets.Dataset:
    import datasets
    files = [file for file, _, _ in stamps]
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


def _read_hub(dataset_id: str, config: str | None, split: str, hub: bool,
              streaming: bool) -> datasets.Dataset | datasets.IterableDataset:
    import datasets
    where = f"{local_root(dataset_id) or f'${DATA_DIR_ENV}/{dataset_id}'}/"
    local = (f"put its files in {where} in the Hub's layout ({config or 'data'}/{split}-00000-of-00001.parquet, "
             f"or .jsonl, .csv, .tsv, .txt, .conll)")
    if not hub:
        raise UserError(f"dataset {dataset_id!r} (config {config!r}) has no Hub copy and no local copy was found: "
                        f"{local} (see adapterxfer/tasks/xtreme.py for its source and format)")
    online = hub_reachable()
    if not online:
        cached = _cached_files(dataset_id, config, split)
        if cached:
            return _read_files(cached, None, cached[0])
    script = False
    try:
        with nullcontext() if online else _offline():  # offline: the datasets cache only
            try:
                return datasets.load_dataset(dataset_id, config, split=split, streaming=streaming)
            except RuntimeError as err:
                if not str(err).startswith("Dataset scripts are no longer supported"):
                    raise
                script = True
            # A loading-script repo: its Parquet export holds <config>/<split>/0000.parquet.
            return datasets.load_dataset(dataset_id, split=split, revision=PARQUET_EXPORT,
                                         data_dir=config or "default", streaming=streaming)
    except (ConnectionError, FileNotFoundError, ValueError, OSError, *hub_unreachable(),
            datasets.exceptions.DatasetNotFoundError) as err:
        state = "reachable but refused it" if online else "offline and neither cache has a copy"
        export = f"; it is a loading script and its Parquet export ({PARQUET_EXPORT}) failed too" if script else ""
        raise UserError(f"dataset {dataset_id!r} (config {config!r}, split {split!r}) is not readable: the Hugging "
                        f"Face Hub is {state} ({type(err).__name__}){export}; "
                        f"`hf download {dataset_id} --repo-type dataset --local-dir "
                        f"{where}` (on a machine with access) or {local}") from None


def _cached_files(dataset_id: str, config: str | None, split: str) -> list[str]:
    """The split's files in the Hugging Face cache (``hf download`` on a login node), if there."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HFValidationError, LocalEntryNotFoundError
    try:
        snapshot = snapshot_download(dataset_id, repo_type="dataset", local_files_only=True)
    except (LocalEntryNotFoundError, HFValidationError, OSError):
        return []
    return repo_files(Path(snapshot), config, split)
