"""The study's results database: one SQLite file (WAL), safe for several writers at once.

Tables:

``runs``         one row per finished phase, keyed by its identity (and unique by phase key):
                 regime, arm, target, seed, lineage, costs and the English dev score
``scores``       one row per (run, language, metric): the test scores of a target or an evaluation
``predictions``  one row per test item: its ref, gold label and prediction (JSON), for the statistics
``dev_predictions`` one row per English dev item of a trained phase, at step 0 and at the final
                 evaluation (stage), for whether an intermediate learned
``failures``     one row per phase whose last run failed: its one line and its log (gone once it succeeds)

The database is an index of the study's outputs, not their owner: ``record`` reads everything but the failures
from a phase's folder, so a lost or damaged database is rebuilt from the outputs (``study rebuild``, or any
``study run``), and a table added here is filled the same way.

Every write is one ``BEGIN IMMEDIATE`` transaction that first removes whatever the phase key or
identity held, so recording the same phase twice, from any number of processes, leaves exactly
one copy; a reader sees a run with all its scores or not at all. Writers wait for each other
(busy timeout) instead of failing. A damaged file is one line naming it and how to rebuild it; a full
disk (or one that fails to write) is an OSError, as a phase's own writes would raise.
"""

from __future__ import annotations

import errno
import json
import socket
import sqlite3
import time
from contextlib import closing, contextmanager
from pathlib import Path

from .. import artifacts
from ..artifacts import DEV_PREDICTIONS, SCORES
from ..errors import UserError
from .outputs import digest
from .phases import Phase

FILE = "results.sqlite"
BUSY_TIMEOUT_S = 600
RUN_COLUMNS = ("identity", "key", "action", "role", "task", "regime", "arm", "target", "seed", "transfer",
               "lineage", "output_sha256", "trainable_parameters", "artifact_mb", "train_seconds",
               "lineage_train_seconds", "peak_rss_mb", "dev_metric", "dev_score", "zero_shot", "finished_at", "host")
SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    identity TEXT PRIMARY KEY, key TEXT NOT NULL UNIQUE, action TEXT, role TEXT, task TEXT, regime TEXT, arm TEXT,
    target TEXT, seed INTEGER, transfer TEXT, lineage TEXT, output_sha256 TEXT, trainable_parameters INTEGER,
    artifact_mb REAL, train_seconds REAL, lineage_train_seconds REAL, peak_rss_mb REAL, dev_metric TEXT,
    dev_score REAL, zero_shot INTEGER, finished_at TEXT, host TEXT);
CREATE TABLE IF NOT EXISTS scores (
    run TEXT NOT NULL, task TEXT NOT NULL, lang TEXT NOT NULL, metric TEXT NOT NULL, value REAL,
    PRIMARY KEY (run, lang, metric));
CREATE TABLE IF NOT EXISTS predictions (
    run TEXT NOT NULL, task TEXT NOT NULL, lang TEXT NOT NULL, item INTEGER NOT NULL, ref TEXT, label TEXT,
    prediction TEXT, PRIMARY KEY (run, lang, item));
CREATE TABLE IF NOT EXISTS dev_predictions (
    run TEXT NOT NULL, task TEXT NOT NULL, stage TEXT NOT NULL, item INTEGER NOT NULL, ref TEXT, label TEXT,
    prediction TEXT, PRIMARY KEY (run, task, stage, item));
CREATE TABLE IF NOT EXISTS failures (key TEXT PRIMARY KEY, line TEXT, log TEXT, failed_at TEXT);
"""
DAMAGED = ("SQLITE_CORRUPT", "SQLITE_NOTADB")


class Damaged(UserError):
    """results.sqlite cannot be read as a database."""


class Results:
    """``check``: read every page of the file first (``PRAGMA quick_check``), so damage anywhere is found now."""

    def __init__(self, path: str | Path, plan_file: str = "PLAN", check: bool = False):
        self.path, self.plan_file = Path(path), plan_file
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._connect() as db:
            db.execute("PRAGMA journal_mode=WAL")
            db.executescript(SCHEMA)
            problem = db.execute("PRAGMA quick_check").fetchone()[0] if check else "ok"
        if problem != "ok":
            raise self._damaged(problem)

    def _damaged(self, reason: str) -> Damaged:
        return Damaged(f"{self.path} is damaged ({reason}); `adapterxfer study rebuild {self.plan_file}` rebuilds "
                       "it from the phase outputs, keeping the damaged file beside it")

    @contextmanager
    def _connect(self):
        try:
            with closing(sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_S, isolation_level=None)) as db:
                db.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_S * 1000}")
                db.row_factory = sqlite3.Row
                yield db
        except sqlite3.DatabaseError as err:
            if getattr(err, "sqlite_errorname", None) in DAMAGED:
                raise self._damaged(str(err)) from None
            if getattr(err, "sqlite_errorname", None) == "SQLITE_FULL":
                raise OSError(errno.ENOSPC, f"No space left on device: {err} ({self.path})") from None
            if str(getattr(err, "sqlite_errorname", "")).startswith("SQLITE_IOERR"):  # a full tmpfs says this
                raise OSError(errno.EIO, f"{err} ({self.path})") from None
            raise

    @contextmanager
    def _transaction(self):
        with self._connect() as db:
            db.execute("BEGIN IMMEDIATE")
            try:
                yield db
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")

    def current(self, phase: Phase, identity: str, root: Path) -> bool:
        """True when the phase's recorded run has this identity and its output is still the one recorded, with
        every file its manifest and its evaluation list there, at their sizes (``artifacts.check_files``)."""
        with self._connect() as db:
            row = db.execute("SELECT identity, output_sha256 FROM runs WHERE key = ?", (phase.key,)).fetchone()
        if row is None or row["identity"] != identity:
            return False
        folder = root / phase.key
        try:
            if phase.action == "train":
                artifacts.check_files(folder, artifacts.read_manifest(folder, verify=False))
            scored = phase.action == "evaluate" or phase.role == "target"
            return (not scored or artifacts.read_evaluation(folder) is not None) and digest(phase, root) == row[
                "output_sha256"]
        except (UserError, OSError):
            return False

    def forget(self, key: str) -> None:
        """Remove a phase's run (it is stale, or about to be re-run)."""
        with self._transaction() as db:
            _delete(db, key, None)

    def record(self, phase: Phase, identity: str, root: Path, lineage: list[dict]) -> None:
        """Read a finished phase's folder (manifest, scores.json, predictions/) into the database."""
        folder = root / phase.key
        row = dict.fromkeys(RUN_COLUMNS) | {
            "identity": identity, "key": phase.key, "action": phase.action, "role": phase.role, "task": phase.task,
            "regime": phase.regime, "arm": phase.arm, "target": phase.target, "seed": phase.seed,
            "transfer": phase.settings.get("transfer"), "lineage": json.dumps(lineage),
            "output_sha256": digest(phase, root),
            "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S"), "host": socket.gethostname()}
        model = folder if phase.action == "train" else (root / phase.model if phase.model else None)
        if model is not None:
            row |= _costs(model)
        row["lineage_train_seconds"] = (row["train_seconds"] or 0) * (phase.action == "train")
        scores = json.loads((folder / SCORES).read_text()) if (folder / SCORES).is_file() else {}
        predictions = _predictions(folder)
        dev = _dev_predictions(folder) if phase.action == "train" else {}
        with self._transaction() as db:
            row["lineage_train_seconds"] += sum(
                (db.execute("SELECT lineage_train_seconds FROM runs WHERE key = ?", (entry["key"],)).fetchone()
                 or [0])[0] or 0 for entry in lineage)
            _delete(db, phase.key, identity)
            db.execute("DELETE FROM failures WHERE key = ?", (phase.key,))
            db.execute(f"INSERT INTO runs ({', '.join(RUN_COLUMNS)}) VALUES ({', '.join('?' * len(RUN_COLUMNS))})",
                       [row[c] for c in RUN_COLUMNS])
            db.executemany("INSERT INTO scores VALUES (?, ?, ?, ?, ?)",
                           [(identity, phase.task, lang, metric, value) for lang, by_metric in scores.items()
                            for metric, value in by_metric.items()])
            db.executemany("INSERT INTO predictions VALUES (?, ?, ?, ?, ?, ?, ?)",
                           [(identity, phase.task, lang, index, item.get("ref"), json.dumps(item["label"]),
                             json.dumps(item["prediction"]))
                            for lang, items in predictions.items() for index, item in enumerate(items)])
            db.executemany("INSERT INTO dev_predictions VALUES (?, ?, ?, ?, ?, ?, ?)",
                           [(identity, task, stage, index, item.get("ref"), json.dumps(item["label"]),
                             json.dumps(item["prediction"]))
                            for (stage, task), items in dev.items() for index, item in enumerate(items)])

    def fail(self, key: str, line: str, log: str | None) -> None:
        """Note that phase ``key`` failed (its one line, and its log file); its next success clears it."""
        with self._transaction() as db:
            db.execute("INSERT OR REPLACE INTO failures VALUES (?, ?, ?, ?)",
                       (key, line, log, time.strftime("%Y-%m-%dT%H:%M:%S")))

    def failures(self) -> dict[str, dict]:
        """Phase key -> {line, log, failed_at} of the phases whose last run failed."""
        with self._connect() as db:
            return {row["key"]: dict(row) for row in db.execute("SELECT * FROM failures ORDER BY key")}

    def runs(self) -> dict[str, dict]:
        """Phase key -> its run row."""
        with self._connect() as db:
            return {row["key"]: dict(row) for row in db.execute("SELECT * FROM runs ORDER BY key")}

    def scores(self, key: str) -> dict[str, dict[str, float]]:
        """{lang: {metric: value}} of one phase, languages in the order they were scored."""
        with self._connect() as db:
            rows = db.execute("SELECT lang, metric, value FROM scores JOIN runs ON run = identity "
                              "WHERE key = ? ORDER BY scores.rowid", (key,)).fetchall()
        scores: dict[str, dict[str, float]] = {}
        for row in rows:
            scores.setdefault(row["lang"], {})[row["metric"]] = row["value"]
        return scores

    def predictions(self, key: str) -> dict[str, list[dict]]:
        """{lang: [{ref, label, prediction}]} of one phase, items in test-set order."""
        with self._connect() as db:
            rows = db.execute("SELECT lang, ref, label, prediction FROM predictions JOIN runs ON run = identity "
                              "WHERE key = ? ORDER BY lang, item", (key,)).fetchall()
        items: dict[str, list[dict]] = {}
        for row in rows:
            items.setdefault(row["lang"], []).append({"ref": row["ref"], "label": json.loads(row["label"]),
                                                      "prediction": json.loads(row["prediction"])})
        return items

    def dev_predictions(self, key: str) -> dict[str, dict[str, list[dict]]]:
        """{stage: {task: [{ref, label, prediction}]}} of one trained phase (stage: step0, final)."""
        with self._connect() as db:
            rows = db.execute("SELECT dev_predictions.task AS task, stage, ref, label, prediction FROM dev_predictions "
                              "JOIN runs ON run = identity WHERE key = ? "
                              "ORDER BY dev_predictions.task, stage, item", (key,)).fetchall()
        items: dict[str, dict[str, list[dict]]] = {}
        for row in rows:
            items.setdefault(row["stage"], {}).setdefault(row["task"], []).append(
                {"ref": row["ref"], "label": json.loads(row["label"]), "prediction": json.loads(row["prediction"])})
        return items

    def export(self, folder: Path, fmt: str) -> list[Path]:
        """Each table as <folder>/<table>.csv or .parquet (pandas)."""
        import pandas

        folder.mkdir(parents=True, exist_ok=True)
        written = []
        with closing(sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_S)) as db:
            for table in ("runs", "scores", "predictions", "dev_predictions"):
                frame = pandas.read_sql_query(f"SELECT * FROM {table}", db)
                path = folder / f"{table}.{fmt}"
                frame.to_csv(path, index=False) if fmt == "csv" else frame.to_parquet(path, index=False)
                written.append(path)
        return written


def _delete(db, key: str, identity: str | None) -> None:
    stale = [row[0] for row in db.execute("SELECT identity FROM runs WHERE key = ? OR identity = ?", (key, identity))]
    for old in stale:
        for table, column in (("scores", "run"), ("predictions", "run"), ("dev_predictions", "run"),
                              ("runs", "identity")):
            db.execute(f"DELETE FROM {table} WHERE {column} = ?", (old,))


def _costs(folder: Path) -> dict:
    """A trained output's costs and English dev score, from its (verified) manifest."""
    manifest = artifacts.read_manifest(folder)
    return {"trainable_parameters": manifest["trainable_parameters"],
            "artifact_mb": artifacts.size_mb(folder, manifest), "train_seconds": manifest["train_seconds"],
            "peak_rss_mb": manifest["peak_rss_mb"], "dev_metric": manifest["dev"]["metric"],
            "dev_score": manifest["dev"]["best"], "zero_shot": manifest["zero_shot"]}


def _dev_predictions(folder: Path) -> dict[tuple[str, str], list[dict]]:
    """{(stage, task): rows} from the artifact's dev_predictions/<stage>-<task>.jsonl (none in older ones)."""
    return {tuple(file.stem.split("-", 1)): [json.loads(line) for line in file.read_text().splitlines()]
            for file in sorted((folder / DEV_PREDICTIONS).glob("*.jsonl"))}


def _predictions(folder: Path) -> dict[str, list[dict]]:
    files = sorted((folder / "predictions").glob("test-*.jsonl"))
    return {file.stem.removeprefix("test-"): [json.loads(line) for line in file.read_text().splitlines()]
            for file in files}
