"""Studies on the tiny backbone and the fixture corpus: run, record, report, skip what is current,
re-run what is stale, several writers, and plan validation (a killed study, a lost database and the other
faults: tests/test_study_faults.py).

The ray and slurm executors run a small study here too; the XTREME kinds are in
tests/test_study_xtreme.py, the statistics alone in tests/test_study_stats.py.
"""

import contextlib
import dataclasses
import io
import json
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from adapterxfer.cli import main
from adapterxfer.study.identity import input_hashes
from adapterxfer.study.plan import expand, read_plan
from adapterxfer.study.results import FILE, Results

REPO = Path(__file__).resolve().parents[1]
PLAN = {
    "description": "tiny stand-in study: random tiny XLM-R on the fixture corpus",
    "seeds": [1, 2],
    "targets": ["verses-genre"],
    "intermediates": ["verses-xref"],
    "regimes": ["full", "lora"],
    "clusters": {"verses-genre": "book"},
    "phase": {"max_steps": 2, "eval_every": 2, "batch_size": 4, "max_length": 32, "precision": "fp32",
              "eval_batch_size": 16},
    "target_phase": {"eval_langs": ["en", "fr", "zh"]},
    "regime_phase": {"lora": {"lr": 1.0e-3}},
    "contrasts": [{"name": "xref-vs-baseline", "run": "lora/verses-xref", "versus": "lora/baseline", "primary": True},
                  {"name": "lora-vs-full", "run": "lora/baseline", "versus": "full/baseline"}],
    "statistics": {"effect": 0.02},
}
PHASES = 12  # 2 seeds x 2 regimes x (verses-xref, baseline target, verses-xref target)


def write_plan(folder: Path, backbone, **changes) -> Path:
    plan = folder / "plan.yaml"
    folder.mkdir(parents=True, exist_ok=True)
    plan.write_text(yaml.safe_dump({**PLAN, "backbone": str(backbone.path), "output": str(folder / "study"),
                                    **changes}))
    return plan


def table(root: Path, query: str) -> list[tuple]:
    with sqlite3.connect(root / FILE) as db:
        return db.execute(query).fetchall()


SCORES = "SELECT key, lang, metric, value FROM scores JOIN runs ON run = identity ORDER BY key, lang, metric"


@pytest.fixture(scope="module")
def study(tmp_path_factory, tiny_backbone, fixture_home):
    """The tiny study run once, uninterrupted, in this process (``out``: what it printed)."""
    with pytest.MonkeyPatch.context() as patch, contextlib.redirect_stdout(io.StringIO()) as out:
        patch.setenv("ADAPTERXFER_HOME", str(fixture_home))
        folder = tmp_path_factory.mktemp("study")
        plan = write_plan(folder, tiny_backbone)
        assert main(["study", "run", str(plan)]) == 0
    return {"plan": plan, "root": folder / "study", "folder": folder, "out": out.getvalue()}


def test_study_records_every_phase_with_its_lineage_costs_and_scores(study):
    root = study["root"]
    runs = {row[0]: row for row in table(root, "SELECT key, role, regime, arm, seed, lineage, trainable_parameters, "
                                                "train_seconds, lineage_train_seconds, dev_score FROM runs")}
    assert len(runs) == PHASES
    graph = expand(read_plan(str(study["plan"])))
    assert set(runs) == set(graph.phases)
    target = runs["seed2/lora/verses-genre/verses-xref"]
    assert target[1:5] == ("target", "lora", "verses-xref", 2)
    assert [entry["key"] for entry in json.loads(target[5])] == ["seed2/lora/verses-xref"]
    intermediate = runs["seed2/lora/verses-xref"]
    assert target[8] == pytest.approx(target[7] + intermediate[7])  # the lineage's train seconds
    assert runs["seed1/lora/verses-genre/baseline"][6] < runs["seed1/full/verses-genre/baseline"][6]
    scores = table(root, SCORES)
    targets = [key for key in runs if "/verses-genre/" in key]
    assert {(key, lang) for key, lang, _, _ in scores} == {(key, lang) for key in targets for lang in ("en", "fr", "zh")}
    for key in targets:  # the database holds what the phase folder holds
        on_disk = json.loads((root / key / "scores.json").read_text())
        assert {(lang, metric): value for k, lang, metric, value in scores if k == key} == {
            (lang, metric): value for lang, by_metric in on_disk.items() for metric, value in by_metric.items()}
        predictions = Results(root / FILE).predictions(key)
        assert predictions["fr"] == [json.loads(line) for line in
                                     (root / key / "predictions" / "test-fr.jsonl").read_text().splitlines()]


def test_report_states_scale_contrasts_and_draws_the_figures(study):
    root = study["root"]
    report = (root / "report.md").read_text()
    assert "**Scale.** 2 seed(s) (1, 2)" in report and "12 of 12 phases done" in report
    assert "resampled by book" in report
    # 4 fixture dev pairs: even a perfect verses-xref would be within reach of chance, so it is flagged everywhere
    degenerate = "(degenerate: one prediction for every item in en, fr, zh)"  # two steps on a random tiny model
    assert ("**Primary contrast, xref-vs-baseline** (verses-genre): lora/verses-xref (verses-xref not learned) "
            f"{degenerate} minus lora/baseline {degenerate}") in report
    assert "| lora | verses-xref | 2 |" in report and report.count("**not learned**") == 2
    assert f"| full/verses-xref (verses-xref not learned) {degenerate} | 2 |" in report
    assert "Minimum detectable effect at this scale" in report and "**Verdict: " in report
    assert f"| lora-vs-full | verses-genre | lora/baseline {degenerate} | full/baseline {degenerate} |" in report
    assert "## Intermediate tasks: did they learn?" in report
    assert ("| English dev, final [95% CI] | chance | majority: score, gain [CI] | word overlap: score, gain [CI] | "
            "step 0: score, gain [CI] | learned |") in report
    for name in ("gain-full.png", "gain-lora.png", "pareto.png", "contrast-xref-vs-baseline.png",
                 "contrast-lora-vs-full.png"):
        assert (root / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"]({name})" in report


def test_report_resamples_each_contrast_at_its_level_and_the_next_coarser(study, tiny_backbone, tmp_path):
    """Clustered by chapter, every contrast is also resampled by book; the wider interval is its CI."""
    shutil.copytree(study["root"], tmp_path / "study")
    plan = write_plan(tmp_path, tiny_backbone, clusters={"verses-genre": "chapter"})
    assert main(["study", "report", str(plan)]) == 0
    report = (tmp_path / "study" / "report.md").read_text()
    assert "resampled by chapter (items of one cluster err together) and by book, the next coarser level" in report
    for name in ("xref-vs-baseline (primary)", "lora-vs-full"):
        cells = next(line for line in report.splitlines() if line.startswith(f"| {name} |")).split(" | ")
        levels = dict(part.strip("*").split(": ") for part in cells[7].split("; "))
        assert [level.split(" (")[0] for level in levels] == ["chapter", "book"]
        width = {level: float(ci[1:-1].split(", ")[1]) - float(ci[1:-1].split(", ")[0]) for level, ci in levels.items()}
        wider = max(width, key=width.get)
        assert cells[6] == levels[wider] and f"**{wider}: {levels[wider]}**" in cells[7]


def test_lora_targets_are_scored_together_in_one_pass_as_each_alone(study, tiny_backbone, tmp_path, monkeypatch,
                                                                   fixture_home):
    """The four LoRA target phases (2 seeds x baseline, verses-xref) train, then are scored in one pass of
    mixed-adapter batches; the full regime's are scored alone. Each one's scores and predictions are those of
    its module scored alone (each folder's scores removed from a copy, then its phase run again: it scores)."""
    from adapterxfer.pipeline import train_phase
    from adapterxfer.study.executors import _config

    monkeypatch.setenv("ADAPTERXFER_HOME", str(fixture_home))
    targets = [key for key, phase in expand(read_plan(str(study["plan"]))).phases.items()
               if phase.role == "target" and phase.regime == "lora"]
    scored = [line for line in study["out"].splitlines() if line.startswith("[scored]")]
    assert len(targets) == 4 and len(scored) == 1
    assert scored[0].startswith("[scored]  4 phases together in one pass (")
    assert sorted(scored[0].split(": ", 1)[1].split(", ")) == sorted(targets)
    copy = Path(shutil.copytree(study["root"], tmp_path / "copy"))
    graph = expand(read_plan(str(study["plan"])))
    for key in targets:
        for name in ("scores.json", "evaluation.json", "predictions"):
            shutil.rmtree(copy / key / name) if (copy / key / name).is_dir() else (copy / key / name).unlink()
        train_phase(_config(graph.phases[key], copy, str(tiny_backbone.path)))
        for name in ("scores.json", *(f"predictions/test-{lang}.jsonl" for lang in ("en", "fr", "zh"))):
            assert (copy / key / name).read_text() == (study["root"] / key / name).read_text(), (key, name)


def test_second_run_skips_every_current_phase(study, capsys):
    before = table(study["root"], "SELECT key, identity, finished_at FROM runs ORDER BY key")
    assert main(["study", "run", str(study["plan"])]) == 0
    out = capsys.readouterr().out
    assert out.count(" current  ") == PHASES and "train " not in out
    assert table(study["root"], "SELECT key, identity, finished_at FROM runs ORDER BY key") == before
    assert main(["study", "status", str(study["plan"])]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == f"{PHASES} current, 0 stale, 0 to run, 0 waiting"


def test_retrained_intermediate_reruns_its_targets_only(study, tiny_backbone, tmp_path, capsys):
    """A moved copy of the study is current; then verses-xref trains longer: it and its targets re-run."""
    shutil.copytree(study["root"], tmp_path / "study")
    plan = write_plan(tmp_path, tiny_backbone)
    assert main(["study", "status", str(plan)]) == 0
    assert capsys.readouterr().out.splitlines()[-1].startswith(f"{PHASES} current")
    before = dict(table(tmp_path / "study", "SELECT key, identity FROM runs"))
    plan = write_plan(tmp_path, tiny_backbone, task_phase={"verses-xref": {"max_steps": 3}})
    assert main(["study", "status", str(plan)]) == 0
    lines = capsys.readouterr().out.splitlines()[:-1]
    states = {line[9:].split(" (")[0]: line[:8].strip() for line in lines}
    assert {key for key, state in states.items() if state == "stale"} == {
        f"seed{s}/{r}/verses-xref" for s in (1, 2) for r in ("full", "lora")}
    assert "stale    seed1/lora/verses-xref (settings changed: max_steps 2 -> 3)" in lines
    assert {key for key, state in states.items() if state == "waiting"} == {
        f"seed{s}/{r}/verses-genre/verses-xref" for s in (1, 2) for r in ("full", "lora")}
    assert main(["study", "run", str(plan)]) == 0
    after = dict(table(tmp_path / "study", "SELECT key, identity FROM runs"))
    changed = {key for key in after if after[key] != before[key]}
    assert changed == {key for key, state in states.items() if state != "current"}
    assert len(changed) == 8 and len(after) == PHASES


WRITER = """
import json, sys
from pathlib import Path
from adapterxfer.study.phases import Phase
from adapterxfer.study.results import Results
entries, database, root, start = json.loads(Path(sys.argv[1]).read_text()), *sys.argv[2:]
store = Results(database)
for phase, identity, lineage in entries[int(start):] + entries[:int(start)]:
    store.record(Phase(**phase), identity, Path(root), lineage)
"""


def test_four_concurrent_writers_lose_no_row_and_duplicate_none(study, tiny_backbone, tmp_path):
    """Four processes record every phase of the finished study into one new database at once,
    each starting elsewhere: each run, score and prediction is there exactly once."""
    plan, root = read_plan(str(study["plan"])), study["root"]
    recorded = dict(table(root, "SELECT key, identity FROM runs"))
    entries = [(dataclasses.asdict(phase), recorded[key], input_hashes(phase, root))
               for key, phase in expand(plan).phases.items()]
    (tmp_path / "entries.json").write_text(json.dumps(entries))
    database = tmp_path / FILE
    writers = [subprocess.Popen([sys.executable, "-c", WRITER, str(tmp_path / "entries.json"), str(database), str(root),
                                 str(3 * i)], cwd=REPO) for i in range(4)]
    assert [writer.wait(120) for writer in writers] == [0] * 4
    with sqlite3.connect(database) as db:
        assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        assert db.execute("SELECT count(*), count(DISTINCT key) FROM runs").fetchone() == (PHASES, PHASES)
        columns = "identity, key, lineage, output_sha256, trainable_parameters, dev_score, lineage_train_seconds"
        assert db.execute(f"SELECT {columns} FROM runs ORDER BY key").fetchall() == \
            table(root, f"SELECT {columns} FROM runs ORDER BY key")
        for name in ("scores", "predictions"):
            assert db.execute(f"SELECT * FROM {name} ORDER BY 1, 2, 3, 4").fetchall() == \
                table(root, f"SELECT * FROM {name} ORDER BY 1, 2, 3, 4")


SMALL = {"seeds": [1], "regimes": ["lora"], "transfers": {"sequential": ["lora"]},
         "contrasts": [{"name": "xref-vs-baseline", "run": "lora/verses-xref", "versus": "lora/baseline",
                        "primary": True}]}


def _same_as_study(root: Path, study: dict) -> None:
    """The small study's phases are the big one's seed-1 lora phases: the same scores; the same identity
    where a phase has no inputs (a target's includes its intermediate's manifest, with its timings)."""
    ours = dict(table(root, "SELECT key, identity FROM runs"))
    theirs = dict(table(study["root"], "SELECT key, identity FROM runs"))
    assert sorted(ours) == ["seed1/lora/verses-genre/baseline", "seed1/lora/verses-genre/verses-xref",
                            "seed1/lora/verses-xref"]
    assert [ours[k] == theirs[k] for k in sorted(ours)] == [True, False, True]
    assert table(root, SCORES) == [row for row in table(study["root"], SCORES) if row[0].startswith("seed1/lora/")]


@pytest.fixture(scope="module")
def ray_cluster():
    import ray

    try:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    except Exception as err:  # Ray waits 30 s (fixed) for its raylet: on a loaded machine, once more
        if "timed out during startup" not in str(err):
            raise
        ray.shutdown()
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.mark.slow
def test_ray_executor_runs_each_phase_as_a_task(study, ray_cluster, tiny_backbone, tmp_path):
    """On a local Ray cluster; each task asks for both CPUs, so one worker runs them in dependency order."""
    plan = write_plan(tmp_path, tiny_backbone, **SMALL, ray={"num_cpus": 2})
    assert main(["study", "run", str(plan), "--executor", "ray"]) == 0
    _same_as_study(tmp_path / "study", study)


@pytest.mark.slow
@pytest.mark.either_env
def test_slurm_executor_runs_each_phase_as_a_submitit_job(study, tiny_backbone, tmp_path, monkeypatch):
    """Through submitit's local executor (a process per job, as SLURM would start one per node). The jobs it
    pickles into the study's folder hold the Hub settings, never the token (a worker reads its own)."""
    monkeypatch.setenv("HF_TOKEN", "hf_secret_of_this_test")
    monkeypatch.setenv("HF_HUB_ETAG_TIMEOUT", "7")
    plan = write_plan(tmp_path, tiny_backbone, **SMALL, slurm={"cluster": "local", "timeout_min": 10})
    assert main(["study", "run", str(plan), "--executor", "slurm"]) == 0
    _same_as_study(tmp_path / "study", study)
    # a job per phase, and one scoring the two LoRA targets together
    assert len(list((tmp_path / "study" / "slurm").glob("*/*_result.pkl"))) == 4
    jobs = [file.read_bytes() for file in (tmp_path / "study" / "slurm").rglob("*_submitted.pkl")]
    assert len(jobs) == 4 and all(b"HF_HUB_ETAG_TIMEOUT" in job and b"hf_secret_of_this_test" not in job for job in jobs)


def test_failed_phase_blocks_what_needs_it_and_exits_1(tiny_backbone, tmp_path, monkeypatch, capsys):
    """No local copy of MNLI and no Hub: its phase fails with one line, the XNLI phase after it is
    blocked, the baseline fails too; the others would go on, and the report is still written, listing them."""
    monkeypatch.setenv("ADAPTERXFER_DATA_DIR", str(tmp_path / "no-data"))
    plan = write_plan(tmp_path, tiny_backbone, targets=["xnli"], intermediates=["mnli"], regimes=["full"], seeds=[1],
                      clusters={}, contrasts=[], target_phase={"eval_langs": ["fr"]})
    assert main(["study", "run", str(plan)]) == 1
    err = capsys.readouterr().err.splitlines()[-1]
    assert err.startswith("adapterxfer: error: 2 of 3 phases failed (1 more need them); seed1/full/mnli: dataset "
                          "'nyu-mll/glue' (config 'mnli', split 'train') is not readable")
    root = tmp_path / "study"
    assert f"(log: {root / 'logs/seed1/full/mnli.log'}); see {root / 'report.md'}" in err
    assert "UserError: dataset 'nyu-mll/glue'" in (root / "logs/seed1/full/mnli.log").read_text()
    report = (root / "report.md").read_text()
    assert "## Failures" in report and "| seed1/full/mnli | dataset 'nyu-mll/glue'" in report
    assert not table(root, "SELECT key FROM runs")


def test_report_exports_tables(study, capsys):
    assert main(["study", "report", str(study["plan"]), "--csv"]) == 0
    export = study["root"] / "export"
    runs = (export / "runs.csv").read_text().splitlines()
    assert runs[0].startswith("identity,key,action,role,task,regime,arm,target,seed") and len(runs) == PHASES + 1
    assert len((export / "scores.csv").read_text().splitlines()) == len(table(study["root"], SCORES)) + 1
