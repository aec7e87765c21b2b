"""The fault battery: a study never throws away finished work, and one failure stops one phase.

One small study on the tiny backbone and the fixture corpus (an intermediate, a target with its baseline, an
evaluation-only target scored from the backbone and from the intermediate: 5 phases) is run once,
uninterrupted, as the reference. Then, each on a copy or a fresh run of it:

- its results database deleted, then `study run`: every phase is recorded from its output, none runs;
- its database damaged: one line naming the file and how to rebuild it; `study rebuild` does;
- an output damaged: moved aside (never deleted) and run again; `study clean` removes it, saying how much;
- an exception (a GPU's out-of-memory RuntimeError) injected into one phase of a real `study run --workers 2`:
  the phases that do not need it finish and are recorded, the report lists the failure, exit 1, one line;
- a real `study run` killed (SIGKILL) at random moments, several times, then resumed: the reference's results
  and weights, and no output that was saved is ever written again;
- the disk full under the study (a small tmpfs in a mount namespace): one line, nothing damaged, and the study
  resumes once there is room.
"""

import json
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from adapterxfer import artifacts
from adapterxfer.cli import main
from adapterxfer.study.results import FILE
from test_study import SCORES, table

pytestmark = pytest.mark.either_env
REPO = Path(__file__).resolve().parents[1]
PHASES = 5
PLAN = {
    "description": "the fault battery's study: random tiny XLM-R on the fixture corpus",
    "seeds": [1],
    "targets": ["verses-genre", "verses-retrieval"],
    "intermediates": ["verses-xref"],
    "regimes": ["lora"],
    "phase": {"max_steps": 4, "eval_every": 2, "batch_size": 4, "max_length": 32, "precision": "fp32",
              "eval_batch_size": 16, "lr": 1.0e-3},
    "target_phase": {"eval_langs": ["en", "fr", "zh"]},
    "evaluation": {"langs": ["fr", "zh"], "queries": 20, "candidates": 40},
}
# What a study found, by phase key (a phase trained again has a new manifest, so new identities after it)
RESULTS = [SCORES, "SELECT key, lang, item, prediction FROM predictions JOIN runs ON run = identity ORDER BY 1, 2, 3",
           "SELECT key, stage, item, prediction FROM dev_predictions JOIN runs ON run = identity ORDER BY 1, 2, 3"]
RUNS = "SELECT key, identity, lineage, output_sha256, train_seconds FROM runs ORDER BY key"


def write_plan(folder: Path, backbone, output: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    plan = folder / "plan.yaml"
    plan.write_text(yaml.safe_dump({**PLAN, "backbone": str(backbone.path), "output": str(output)}))
    return plan


def phase_files(root: Path, name: str) -> list[Path]:
    """Every file called ``name`` in the study's phase folders (not in those moved aside)."""
    return [path for path in root.rglob(name) if "stale" not in path.relative_to(root).parts]


def outputs(root: Path) -> dict[str, str]:
    """{file: sha256} of every manifest.json and scores.json of the study's phases (what a phase's save writes)."""
    return {str(path.relative_to(root)): artifacts.sha256_file(path)
            for name in (artifacts.MANIFEST, artifacts.SCORES) for path in phase_files(root, name)}


def weights(root: Path) -> dict[str, str]:
    """{phase folder/file: sha256} of every weights file the manifests list."""
    return {f"{path.parent.relative_to(root)}/{name}": digest for path in phase_files(root, artifacts.MANIFEST)
            for name, digest in json.loads(path.read_text())["files"].items() if name.endswith(".safetensors")}


def leftovers(root: Path) -> list[Path]:
    """Locks, temporary folders, checkpoints and moved-aside outputs: none once a study has finished."""
    return [path for path in root.rglob("*") if path.name.endswith((".lock", ".work")) or ".tmp-" in path.name
            or path.name == "stale"]


def recorded(root: Path) -> int:
    """Phases a running study has recorded so far: 0 before its database, or its tables, exist."""
    try:
        return len(table(root, "SELECT key FROM runs")) if (root / FILE).is_file() else 0
    except sqlite3.OperationalError:  # the file is created a moment before its schema
        return 0


def same_as_reference(root: Path, reference: dict) -> None:
    """The reference's scores, predictions and weights, phase by phase."""
    for query in RESULTS:
        assert table(root, query) == table(reference["root"], query), query
    assert weights(root) == weights(reference["root"])


def cli(*args: str) -> list[str]:
    """`adapterxfer ARGS` as a real process."""
    return [sys.executable, "-m", "adapterxfer", *args]


def environment(**extra: str) -> dict:
    return {**os.environ, **extra}


@pytest.fixture(scope="module")
def reference(tmp_path_factory, tiny_backbone, fixture_home):
    """The study run once, uninterrupted, in this process."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("ADAPTERXFER_HOME", str(fixture_home))
        folder = tmp_path_factory.mktemp("reference")
        plan = write_plan(folder, tiny_backbone, folder / "study")
        assert main(["study", "run", str(plan)]) == 0
    return {"plan": plan, "root": folder / "study"}


def copy_of(reference: dict, tmp_path: Path, tiny_backbone) -> tuple[Path, Path]:
    """A copy of the reference study (paths are not part of an identity: it is current where it lies)."""
    shutil.copytree(reference["root"], tmp_path / "study")
    return write_plan(tmp_path, tiny_backbone, tmp_path / "study"), tmp_path / "study"


def test_a_lost_database_is_rebuilt_from_the_outputs_and_nothing_runs(reference, tiny_backbone, tmp_path, capsys):
    plan, root = copy_of(reference, tmp_path, tiny_backbone)
    before = outputs(root)
    for file in root.glob(FILE + "*"):
        file.unlink()
    assert main(["study", "status", str(plan)]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == f"0 current, {PHASES} finished, 0 stale, 0 to run, 0 waiting"
    assert main(["study", "run", str(plan)]) == 0
    out = capsys.readouterr().out
    assert out.count(" recorded ") == PHASES and "[done]" not in out  # recorded from their folders; none ran
    assert outputs(root) == before
    same_as_reference(root, reference)
    assert table(root, RUNS) == table(reference["root"], RUNS)


@pytest.mark.parametrize("damage", ["not a database", "pages overwritten"])
def test_a_damaged_database_is_one_line_naming_it_and_how_to_rebuild_it(reference, tiny_backbone, tmp_path, capsys,
                                                                        damage):
    plan, root = copy_of(reference, tmp_path, tiny_backbone)
    database = root / FILE
    data = database.read_bytes()
    damaged = (b"garbage " * 1000 if damage == "not a database"
               else data[:4096] + bytes(random.Random(0).getrandbits(8) for _ in range(len(data) - 4096)))
    database.write_bytes(damaged)
    assert main(["study", "run", str(plan)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"adapterxfer: error: {database} is damaged (") and err.count("\n") == 1
    assert err.endswith(f"); `adapterxfer study rebuild {plan}` rebuilds it from the phase outputs, keeping the "
                        "damaged file beside it\n")
    assert main(["study", "rebuild", str(plan)]) == 0
    assert capsys.readouterr().out == f"rebuilt {database} from the phase outputs: {PHASES} of {PHASES} phases recorded\n"
    [kept] = root.glob(f"{FILE}.replaced-*[0-9]")  # with the journal files the failed opening made
    assert kept.read_bytes() == damaged
    same_as_reference(root, reference)
    assert table(root, RUNS) == table(reference["root"], RUNS)
    assert main(["study", "run", str(plan)]) == 0
    assert capsys.readouterr().out.count(" current  ") == PHASES
    assert main(["study", "clean", str(plan)]) == 0
    assert capsys.readouterr().out == "removed 0 output(s) moved aside under stale/ and 1 replaced database(s): " \
                                      f"{len(damaged) / 1e6:.1f} MB\n"
    assert not list(root.glob(f"{FILE}.replaced-*"))


def test_a_damaged_output_is_moved_aside_and_run_again_and_clean_removes_it(reference, tiny_backbone, tmp_path,
                                                                             capsys):
    plan, root = copy_of(reference, tmp_path, tiny_backbone)
    head = root / "seed1/lora/verses-xref/head.safetensors"
    head.write_bytes(head.read_bytes()[:-8])
    assert main(["study", "status", str(plan)]) == 0
    status = capsys.readouterr().out.splitlines()
    assert (f"stale    seed1/lora/verses-xref (damaged: {root / 'seed1/lora/verses-xref'}: file head.safetensors is "
            f"{head.stat().st_size} bytes, manifest.json says {head.stat().st_size + 8} (corrupt or tampered))") in status
    assert main(["study", "run", str(plan)]) == 0
    out = capsys.readouterr().out
    assert "moved     seed1/lora/verses-xref aside to stale/seed1/lora/verses-xref.damaged." in out
    moved = [path.relative_to(root / "stale") for path in (root / "stale").rglob("manifest.json")]
    assert sorted(str(path.parent).rsplit(".", 2)[0] for path in moved) == [  # it, and what was trained from it
        "seed1/lora/verses-genre/verses-xref", "seed1/lora/verses-xref"]
    assert len(list((root / "stale").rglob("evaluation.json"))) == 2  # the retrieval scores of it, too
    same_as_reference(root, reference)  # the same weights and scores again: nothing else was lost
    size = sum(file.stat().st_size for file in (root / "stale").rglob("*") if file.is_file())
    assert main(["study", "clean", str(plan)]) == 0
    assert capsys.readouterr().out == f"removed 3 output(s) moved aside under stale/ and 0 replaced database(s): " \
                                      f"{size / 1e6:.1f} MB\n"
    assert leftovers(root) == []


def test_scoring_together_that_fails_scores_each_phase_alone(reference, tiny_backbone, tmp_path, capsys,
                                                            monkeypatch):
    """The LoRA targets (baseline, verses-xref) trained but unscored; their one-pass scoring raises: each is then
    scored alone, to the reference's scores and predictions, and the study ends well."""
    from adapterxfer import evaluate

    def fail(*args, **kwargs):
        raise RuntimeError("CUDA out of memory (injected)")

    plan, root = copy_of(reference, tmp_path, tiny_backbone)
    targets = ["seed1/lora/verses-genre/baseline", "seed1/lora/verses-genre/verses-xref"]
    for key in targets:
        for name in (artifacts.SCORES, artifacts.EVALUATION):
            (root / key / name).unlink()
    monkeypatch.setattr(evaluate, "score_runs", fail)
    assert main(["study", "run", str(plan)]) == 0
    out = capsys.readouterr().out
    assert ("[alone]   scoring 2 phases together failed (RuntimeError: CUDA out of memory (injected)); each is "
            "scored alone") in out and "[scored]" not in out
    assert (root / "logs" / f"{targets[0]}.together.log").read_text().count("CUDA out of memory (injected)") == 2
    same_as_reference(root, reference)
    assert leftovers(root) == []


def test_an_exception_in_one_phase_fails_it_alone_with_the_workers_in_processes(reference, tiny_backbone, tmp_path):
    """A real `study run --workers 2` whose intermediate raises a GPU's out-of-memory RuntimeError, and whose
    backbone evaluation kills its worker process once (tests/faults): the killed phase runs again and finishes,
    the two phases that need the intermediate do not run, the two that do not finish and are recorded, the
    report lists the failure with its log, and the command ends with exit 1 and one line."""
    plan = write_plan(tmp_path, tiny_backbone, tmp_path / "study")
    root = tmp_path / "study"
    done = subprocess.run(cli("study", "run", str(plan), "--workers", "2"), cwd=REPO, capture_output=True, text=True,
                          env=environment(ADAPTERXFER_TEST_FAULT="seed1/lora/verses-xref",
                                          ADAPTERXFER_TEST_KILL="backbone/verses-retrieval",
                                          ADAPTERXFER_TEST_KILLED=str(tmp_path / "killed"),
                                          PYTHONPATH=os.pathsep.join([str(REPO / "tests" / "faults"),
                                                                      os.environ.get("PYTHONPATH", "")])))
    assert done.returncode == 1, done.stderr[-3000:]
    assert (tmp_path / "killed").is_file() and ("[again]   backbone/verses-retrieval: its worker process died "
                                                "(killed by a signal or out of memory)") in done.stdout
    errors = [line for line in done.stderr.splitlines() if line.startswith("adapterxfer: error: ")]
    log = root / "logs/seed1/lora/verses-xref.log"
    assert errors == [f"adapterxfer: error: 1 of {PHASES} phases failed (2 more need them); seed1/lora/verses-xref: "
                      "RuntimeError: CUDA out of memory. Tried to allocate 2.00 GiB (injected by the test) "
                      f"(log: {log}); see {root / 'report.md'}"] and "Traceback" not in done.stderr
    assert "Traceback (most recent call last)" in log.read_text() and "_faulty_run" in log.read_text()
    finished = ["backbone/verses-retrieval", "seed1/lora/verses-genre/baseline"]
    assert [key for key, in table(root, "SELECT key FROM runs ORDER BY key")] == finished
    for query in RESULTS:
        assert table(root, query) == [row for row in table(reference["root"], query) if row[0] in finished], query
    report = (root / "report.md").read_text()
    assert ("| seed1/lora/verses-xref | RuntimeError: CUDA out of memory. Tried to allocate 2.00 GiB (injected by the "
            f"test) | {log} |") in report
    assert "1 phase(s) failed in their last run; 2 phase(s) wait on them" in report
    assert leftovers(root) == []


@pytest.mark.slow
def test_a_study_killed_at_random_moments_resumes_to_the_same_results_training_nothing_twice(
        reference, tiny_backbone, tmp_path):
    """A real `study run`, killed (SIGKILL, no clean-up) three times, then run to the end with two worker
    processes: the reference's results
    and weights, and every manifest or scores file written before a kill is the one at the end (nothing saved was
    trained or scored again). Kill k comes at a random moment (0-2 s) after the run has started a phase with at
    least k - 1 phases recorded, so that the study gets further each time."""
    plan = write_plan(tmp_path, tiny_backbone, tmp_path / "study")
    root = tmp_path / "study"
    moments, saved = random.Random(27), {}
    for kill in range(3):
        process = subprocess.Popen(cli("study", "run", str(plan)), cwd=REPO, env=environment(),
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 300
        while process.poll() is None and time.monotonic() < deadline and not (recorded(root) >= kill and [
                lock for lock in root.rglob(".*.lock") if lock.name != ".study.lock"]):
            time.sleep(0.05)  # until a phase is under way, this far into the study
        time.sleep(moments.uniform(0, 2))
        process.send_signal(signal.SIGKILL)
        process.wait()
        for file, digest in outputs(root).items():
            assert saved.setdefault(file, digest) == digest, f"{file} was written again after it was saved"
    done = subprocess.run(cli("study", "run", str(plan), "--workers", "2"), cwd=REPO, env=environment(),
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    assert saved and all(outputs(root)[file] == digest for file, digest in saved.items())
    same_as_reference(root, reference)
    assert leftovers(root) == []


def _mount_namespace() -> str | None:
    """Why a small tmpfs cannot be mounted here (None: it can), in a user and mount namespace of its own."""
    if shutil.which("unshare") is None:
        return "needs util-linux's unshare to mount a small tmpfs"
    probe = subprocess.run(["unshare", "--user", "--map-root-user", "--mount", "sh", "-c",
                            "d=$(mktemp -d) && mount -t tmpfs -o size=64k tmpfs $d"], capture_output=True, text=True)
    return None if probe.returncode == 0 else f"cannot mount a tmpfs in a mount namespace: {probe.stderr.strip()}"


@pytest.mark.slow
@pytest.mark.skipif(_mount_namespace() is not None, reason=str(_mount_namespace()))
def test_a_full_disk_is_one_line_damages_nothing_and_the_study_resumes_once_there_is_room(
        reference, tiny_backbone, tmp_path):
    """The study's folder on a tmpfs too small for it (in a mount namespace of the test's own): `study run` ends
    with one line saying the disk is full; what is there verifies; on the same tmpfs made larger, `study run`
    finishes to the reference's results without training again what had been saved."""
    disk, kept = tmp_path / "disk", tmp_path / "kept"
    disk.mkdir()
    kept.mkdir()
    plan = write_plan(tmp_path, tiny_backbone, disk / "study")
    run = f"{sys.executable} -m adapterxfer study run {plan}"
    script = (f"mount -t tmpfs -o size=320k tmpfs {disk} && cd {REPO} && "
              f"{{ {run} > {kept}/out1 2> {kept}/err1; echo $? > {kept}/rc1; }} && cp -a {disk}/study {kept}/full && "
              f"mount -o remount,size=16m {disk} && "
              f"{{ {run} > {kept}/out2 2> {kept}/err2; echo $? > {kept}/rc2; }} && cp -a {disk}/study {kept}/room")
    subprocess.run(["unshare", "--user", "--map-root-user", "--mount", "sh", "-c", script], env=environment(),
                   check=True, timeout=600)
    err1 = (kept / "err1").read_text()
    assert (kept / "rc1").read_text().strip() == "1", err1[-3000:]
    errors = [line for line in err1.splitlines() if line.startswith("adapterxfer: error: ")]
    assert len(errors) == 1 and errors[0].startswith(f"adapterxfer: error: the disk under {disk / 'study'} is full or "
                                                     "cannot be written (")
    assert errors[0].endswith(f"what finished is kept: free some space, then run `adapterxfer study run {plan}` again")
    assert "Traceback" not in err1
    full = kept / "full"
    with sqlite3.connect(full / FILE) as db:
        assert db.execute("PRAGMA quick_check").fetchone() == ("ok",)
    trained = [manifest.parent for manifest in full.rglob(artifacts.MANIFEST)]
    for folder in trained:
        artifacts.read_manifest(folder)  # every output there verifies: whole, or not there at all
    assert len(table(full, "SELECT key FROM runs")) < PHASES  # the disk filled before the study finished
    assert [path for path in full.rglob("*") if ".tmp-" in path.name] == []
    assert (kept / "rc2").read_text().strip() == "0", (kept / "err2").read_text()[-3000:]
    room = kept / "room"
    saved = outputs(full)
    assert all(outputs(room)[file] == digest for file, digest in saved.items())  # nothing trained again
    same_as_reference(room, reference)
    assert leftovers(room) == []
