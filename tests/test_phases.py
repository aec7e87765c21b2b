"""A phase survives real runs: kills, concurrent runs, failed scoring, several processes.

The tiny random XLM-R stands in for XLM-R and the fixture corpus for the real bible.db. Runs go
through the real CLI, in subprocesses where a process must die (SIGKILL) or run alongside another.
"""

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from adapterxfer import artifacts, backbones, evaluate
from adapterxfer.cache import atomic_dir, restore_aside
from adapterxfer.cli import main
from adapterxfer.errors import UserError
from adapterxfer.locks import hold
from adapterxfer.precision import choose, cpu_bf16

ROOT = Path(__file__).resolve().parents[1]
STEPS = ["task=verses-genre", "max_steps=24", "eval_every=4", "checkpoint_every=2", "batch_size=4",
         "max_length=32", "precision=fp32", "eval_langs=en,fr,de-s"]


def command(backbone, out, *extra) -> list[str]:
    return [sys.executable, "-m", "adapterxfer", "train", f"backbone={backbone.path}", f"output_dir={out}",
            *STEPS, *extra]


def weights(folder: Path) -> dict[str, torch.Tensor]:
    return {f"{file.relative_to(folder)}:{name}": tensor for file in sorted(folder.rglob("*.safetensors"))
            for name, tensor in load_file(file).items()}


def leftovers(parent: Path) -> list[Path]:
    return [p for p in parent.rglob(".*") if ".tmp-" in p.name or p.name.endswith(".work")]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, tiny_backbone, fixture_home):
    """One run per regime that nobody stopped: the reference every resumed run must equal."""
    root = tmp_path_factory.mktemp("reference")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("ADAPTERXFER_HOME", str(fixture_home))
        for regime in ("full", "lora"):
            assert main(command(tiny_backbone, root / regime, f"regime={regime}")[3:]) == 0
    return root


def kill_at(process: subprocess.Popen, moment, deadline: float = 240) -> None:
    """SIGKILL ``process`` as soon as ``moment()`` holds (or it exits)."""
    until = time.monotonic() + deadline
    while not moment() and process.poll() is None and time.monotonic() < until:
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()


# Each path a re-run takes, reached on purpose: killed after a checkpoint (it resumes), after the save but
# before scores.json is complete (it only scores), or not at all (it finds the phase finished; nothing to kill,
# so that first run is in this process).
@pytest.mark.slow
@pytest.mark.parametrize("regime, moment", [("full", "checkpoint"), ("lora", "checkpoint"), ("full", "saved"),
                                            ("full", "finished")])
def test_a_killed_run_goes_on_to_the_same_weights_and_scores(uninterrupted, tiny_backbone, tmp_path, capsys,
                                                             regime, moment):
    out = tmp_path / regime
    work = out.with_name(f".{out.name}.work")
    if moment == "finished":
        assert main(command(tiny_backbone, out, f"regime={regime}")[3:]) == 0
    else:
        process = subprocess.Popen(command(tiny_backbone, out, f"regime={regime}"), cwd=ROOT,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        kill_at(process, {"checkpoint": lambda: bool(list(work.glob("step-*"))),
                          "saved": lambda: artifacts.is_artifact(out)}[moment])
        assert artifacts.is_artifact(out) == (moment == "saved")
    if moment == "saved":  # its scoring never completed: scores.json goes in last
        (out / "scores.json").unlink(missing_ok=True)
    before = artifacts.read_manifest(out) if moment != "checkpoint" else None
    capsys.readouterr()

    assert main(command(tiny_backbone, out, f"regime={regime}")[3:]) == 0
    manifest = artifacts.read_manifest(out)
    if moment == "checkpoint":
        assert manifest["resumed_from_step"] in set(range(2, 24, 2))
    else:  # neither trains again
        assert manifest == before and "is already trained with this configuration" in capsys.readouterr().out
    reference = uninterrupted / regime
    assert json.loads((out / "scores.json").read_text()) == json.loads((reference / "scores.json").read_text())
    mine, theirs = weights(out), weights(reference)
    assert mine.keys() == theirs.keys() and all(torch.equal(mine[k], theirs[k]) for k in mine)
    assert manifest["dev"]["log"][-1]["dev_score"] == artifacts.read_manifest(reference)["dev"]["log"][-1]["dev_score"]
    assert leftovers(tmp_path) == [], "no temporary folder and no checkpoint left"


@pytest.mark.slow
def test_checkpoint_of_a_lora_run_holds_trainable_tensors_only(tiny_backbone, tmp_path, capsys):
    out = tmp_path / "kept"
    assert main(command(tiny_backbone, out, "regime=lora", "keep_checkpoints=true")[3:]) == 0
    checkpoint = sorted(out.with_name(".kept.work").glob("step-*"))[-1]
    trainable = load_file(checkpoint / "trainable.safetensors")
    assert checkpoint.name == "step-00000022"
    assert all("lora_" in name or "classifier" in name for name in trainable)
    assert sum(t.numel() for t in trainable.values()) == artifacts.read_manifest(out)["trainable_parameters"]
    state = json.loads((checkpoint / "state.json").read_text())
    assert (state["step"], state["positions"]) == (22, [22])


def test_resume_false_starts_over(tiny_backbone, tmp_path, capsys):
    out = tmp_path / "again"
    assert main(command(tiny_backbone, out, "keep_checkpoints=true", "max_steps=4")[3:]) == 0
    manifest = artifacts.read_manifest(out)
    assert manifest["resumed_from_step"] == 0 and manifest["precision"] == "fp32"
    assert main(command(tiny_backbone, out, "keep_checkpoints=true", "max_steps=4")[3:]) == 0
    assert "already trained with this configuration" in capsys.readouterr().out
    assert main(command(tiny_backbone, out, "max_steps=4", "resume=false", "overwrite=true", "seed=3")[3:]) == 0
    assert artifacts.read_manifest(out)["resumed_from_step"] == 0
    assert leftovers(tmp_path) == []


@pytest.mark.slow
def test_two_concurrent_runs_leave_one_verified_artifact(tiny_backbone, tmp_path):
    out = tmp_path / "shared"
    runs = [subprocess.Popen(command(tiny_backbone, out, "max_steps=4"), cwd=ROOT, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True) for _ in range(2)]
    results = [(run.wait(), run.stderr.read()) for run in runs]
    codes = sorted(code for code, _ in results)
    assert codes in ([0, 0], [0, 2])
    if codes == [0, 2]:
        error = next(err for code, err in results if code == 2).strip().splitlines()
        assert error == [f"adapterxfer: error: output_dir {out} is being written by another run; wait for it or "
                         "choose another output_dir"]
    assert artifacts.read_manifest(out)["files"]
    assert (out / "scores.json").is_file()
    assert leftovers(tmp_path) == []


def test_a_second_run_cannot_take_the_output_while_the_first_evaluates(tiny_backbone, tmp_path, capsys,
                                                                      monkeypatch):
    """The second run starts inside the first one's zero-shot scoring (after its save): it must be refused."""
    out = tmp_path / "busy"
    real = evaluate.zero_shot
    second = []

    def scoring_with_a_second_run(*args, **kwargs):
        if not second:
            second.append(main(command(tiny_backbone, out, "max_steps=4")[3:]))
            second.append(capsys.readouterr().err)
        return real(*args, **kwargs)

    monkeypatch.setattr(evaluate, "zero_shot", scoring_with_a_second_run)
    assert main(command(tiny_backbone, out, "max_steps=4")[3:]) == 0
    assert second[0] == 2 and f"output_dir {out} is being written by another run" in second[1]
    assert list(json.loads((out / "scores.json").read_text())) == ["en", "fr", "de-s"]
    assert leftovers(tmp_path) == []


def test_replacing_an_output_keeps_the_old_one_until_the_new_one_is_in(tmp_path, monkeypatch):
    """A failure between 'old aside' and 'new in', and a kill there (the aside left alone), both keep the old."""
    out = tmp_path / "out"
    with atomic_dir(out) as tmp:
        (tmp / "old.txt").write_text("old")
    real = Path.rename

    def rename_failing_into_place(self, target):
        if Path(target) == out and ".tmp-" in self.name:  # the new folder moving in
            raise OSError("disk pulled")
        return real(self, target)

    monkeypatch.setattr(Path, "rename", rename_failing_into_place)
    with pytest.raises(OSError, match="disk pulled"):
        with atomic_dir(out) as tmp:
            (tmp / "new.txt").write_text("new")
    monkeypatch.undo()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"] and (out / "old.txt").read_text() == "old"
    out.rename(tmp_path / ".out.aside")  # what a SIGKILL right after setting the old output aside leaves
    restore_aside(out)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"] and (out / "old.txt").read_text() == "old"
    with atomic_dir(out) as tmp:
        (tmp / "new.txt").write_text("new")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"] and [p.name for p in out.iterdir()] == ["new.txt"]


def test_failed_scoring_keeps_a_verified_artifact(tiny_backbone, tmp_path, capsys, monkeypatch):
    """Scoring is made to fail on the second language (a fault injected into the real loop)."""
    out = tmp_path / "scored"
    real = evaluate.score_split

    def failing(model, tokenizer, task, split, lang, *args, **kwargs):
        if split == "test" and lang.startswith("fr"):
            raise RuntimeError("test file of fr went missing")
        return real(model, tokenizer, task, split, lang, *args, **kwargs)

    monkeypatch.setattr(evaluate, "score_split", failing)
    assert main(command(tiny_backbone, out, "max_steps=4")[3:]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    errors = [line for line in err if line.startswith("adapterxfer: error:")]
    assert errors == err[-1:] and "evaluation failed (test file of fr went missing)" in errors[0]
    assert f"the trained artifact {out} is kept" in errors[0]
    assert artifacts.read_manifest(out) and not (out / "scores.json").exists()
    monkeypatch.setattr(evaluate, "score_split", real)
    assert main(["evaluate", "--model", str(out), "--task", "verses-genre", "--langs", "en,fr,de-s",
                 "--output", str(out)]) == 0
    scores = json.loads((out / "scores.json").read_text())
    assert list(scores) == ["en", "fr", "de-s"]
    assert artifacts.read_manifest(out)  # evaluation added files; the artifact still verifies
    assert leftovers(tmp_path) == []
    rescoring_replaces_scores_and_predictions_together_under_the_lock(out, capsys, monkeypatch)


def rescoring_replaces_scores_and_predictions_together_under_the_lock(out: Path, capsys, monkeypatch):
    """Another run holds the output: `evaluate` into it is refused. A re-scoring cut short (Ctrl-C) after the old
    scores went leaves no scores.json, so no evaluation is complete there; the train command scores it again."""
    predictions = sorted((out / "predictions" / "test-fr.jsonl").read_text().splitlines())
    rescore = ["evaluate", "--model", str(out), "--task", "verses-genre", "--langs", "en,fr,de-s", "--output", str(out)]
    capsys.readouterr()
    with hold(artifacts.lock_file(out)):
        assert main(rescore) == 2
    assert f"output_dir {out} is being written by another run" in capsys.readouterr().err
    real = Path.replace

    def interrupted_before_the_scores(self, target):
        if Path(target) == out / "scores.json":
            raise KeyboardInterrupt
        return real(self, target)

    monkeypatch.setattr(Path, "replace", interrupted_before_the_scores)
    assert main(rescore) == 130
    monkeypatch.setattr(Path, "replace", real)  # not undo(): that would also drop the fixture home
    assert not (out / "scores.json").exists() and artifacts.read_evaluation(out) is None
    assert sorted((out / "predictions" / "test-fr.jsonl").read_text().splitlines()) == predictions  # the new ones
    assert main(command(tiny_backbone_of(out), out, "max_steps=4")[3:]) == 0
    assert "already trained with this configuration" in capsys.readouterr().out
    assert artifacts.read_evaluation(out)["langs"] == ["en", "fr", "de-s"]
    assert sorted((out / "predictions" / "test-fr.jsonl").read_text().splitlines()) == predictions
    assert leftovers(out.parent) == [] and not list(out.parent.glob(".*.lock"))


def tiny_backbone_of(out: Path):
    return backbones.resolve(artifacts.read_manifest(out)["backbone"]["name"])


@pytest.mark.slow
def test_rerun_of_a_failed_scoring_only_scores(tiny_backbone, tmp_path, capsys, monkeypatch):
    out = tmp_path / "rescored"
    monkeypatch.setattr(evaluate, "zero_shot", lambda *args, **kwargs: (_ for _ in ()).throw(ValueError("boom")))
    assert main(command(tiny_backbone, out, "max_steps=4")[3:]) == 2
    monkeypatch.undo()
    trained = (out / "head.safetensors").read_bytes()
    assert main(command(tiny_backbone, out, "max_steps=4")[3:]) == 0
    assert "already trained with this configuration" in capsys.readouterr().out
    assert (out / "head.safetensors").read_bytes() == trained and (out / "scores.json").is_file()


def test_a_retrained_parent_is_named_by_the_refusal_and_by_artifacts_verify(tiny_backbone, tmp_path, capsys):
    common = [f"backbone={tiny_backbone.path}", "max_steps=1", "eval_every=1", "batch_size=2", "max_length=32",
              "precision=fp32"]
    parent, child = tmp_path / "xref", tmp_path / "genre"
    assert main(["train", "task=verses-xref", f"output_dir={parent}", *common]) == 0
    child_command = ["train", "task=verses-genre", f"init_from={parent}", "eval_langs=fr", f"output_dir={child}", *common]
    assert main(child_command) == 0
    assert main(["train", "task=verses-xref", "seed=7", "overwrite=true", f"output_dir={parent}", *common]) == 0
    capsys.readouterr()
    assert main(child_command) == 2
    assert capsys.readouterr().err.splitlines()[-1] == (
        f"adapterxfer: error: output_dir {child} was trained from {parent}, which has been retrained since (its "
        f"manifest.json is not the one {child}'s lineage records); run again with overwrite=true to train it from the "
        "new one, or choose another output_dir")
    assert main(["artifacts", "verify", str(child)]) == 2
    assert capsys.readouterr().err == (f"adapterxfer: error: {child}: its lineage names {parent}, which has been "
                                       "retrained since (its manifest.json is not the one recorded): this artifact "
                                       "was trained from the old one\n")
    assert main(["artifacts", "show", str(child)]) == 0
    assert (f"parent: {parent} (full verses-xref) -- retrained since: this artifact was trained from its previous "
            "version") in capsys.readouterr().out
    assert main(["artifacts", "verify", str(parent)]) == 0
    assert capsys.readouterr().out.endswith("files match their sha256; lineage checked against 0 input(s))\n")
    assert not list(tmp_path.glob(".*.lock"))  # the refused run took the output's lock, and released it


def test_existing_other_output_and_killed_leftovers(tiny_backbone, tmp_path, capsys):
    out = tmp_path / "mine"
    assert main(command(tiny_backbone, out, "max_steps=4")[3:]) == 0
    (tmp_path / ".mine.tmp-x1y2").mkdir()  # what a SIGKILL while saving leaves
    (tmp_path / ".mine.work" / ".step-00000002.tmp-zz").mkdir(parents=True)
    assert main(command(tiny_backbone, out, "max_steps=4", "seed=5")[3:]) == 2
    assert "holds another run (it differs in seed); pass overwrite=true" in capsys.readouterr().err
    assert main(command(tiny_backbone, out, "max_steps=4", "seed=5", "overwrite=true")[3:]) == 0
    assert artifacts.read_manifest(out)["config"]["seed"] == 5
    assert leftovers(tmp_path) == []


@pytest.mark.slow
def test_two_process_accelerate_run_equals_one_process(tmp_path, fixture_home):
    """accelerate launch --num_processes 2 on CPU processes (gloo): one artifact, the one-process run's scores.

    Dropout is off (in a copy of the tiny backbone) so both runs compute the same updates: each step's
    16 examples are split 8 + 8 over the two processes and their gradients averaged."""
    folder = tmp_path / "tiny-no-dropout"
    lines = (ROOT / "adapterxfer" / "resources" / "tiny_corpus.txt").read_text().splitlines()
    backbones.build_tiny_xlmr(folder, [line for line in lines if line.strip()])
    config = json.loads((folder / "config.json").read_text())
    config |= {"hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0}
    (folder / "config.json").write_text(json.dumps(config))
    common = [f"backbone={folder}", "task=verses-genre", "max_steps=6", "eval_every=3", "max_length=32",
              "precision=fp32", "eval_langs=en,fr", "lr=1e-3"]
    one = tmp_path / "one"
    assert main(["train", *common, "batch_size=16", f"output_dir={one}"]) == 0
    two = tmp_path / "two"
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
              "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
              "-m", "adapterxfer", "train", *common, "batch_size=8", f"output_dir={two}"]
    done = subprocess.run(launch, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert artifacts.read_manifest(two)["processes"] == 2
    assert json.loads((two / "scores.json").read_text()) == json.loads((one / "scores.json").read_text())
    log = [(e["step"], round(e["dev_score"], 6)) for e in artifacts.read_manifest(two)["dev"]["log"]]
    assert log == [(e["step"], round(e["dev_score"], 6)) for e in artifacts.read_manifest(one)["dev"]["log"]]
    assert leftovers(tmp_path) == []


SCORE_ONCE = """
from accelerate import PartialState
from adapterxfer.train import scored_on_main
state = PartialState(cpu=True)
calls = []
score = scored_on_main(lambda model: calls.append(model) or 0.25 + state.process_index)
print(f"rank {state.process_index}: score {score('model')} after {len(calls)} call(s)", flush=True)
"""


@pytest.mark.slow
def test_dev_is_scored_on_the_main_process_alone_and_broadcast(tmp_path):
    script = tmp_path / "score_once.py"
    script.write_text(SCORE_ONCE)
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
              "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", str(script)]
    done = subprocess.run(launch, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    # the launcher relays both processes' output into one pipe: a line may follow another without its newline
    assert sorted(re.findall(r"rank \d: score [\d.]+ after \d call\(s\)", done.stdout)) == [
        "rank 0: score 0.25 after 1 call(s)", "rank 1: score 0.25 after 0 call(s)"]


def test_tensorboard_tracker_logs_loss_lr_and_dev(tiny_backbone, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = tmp_path / "tracked"
    assert main(command(tiny_backbone, out, "max_steps=4", "report_to=tensorboard")[3:]) == 0
    events = [EventAccumulator(str(path.parent)).Reload() for path in out.with_name("tracked-logs").rglob("events*")]
    tags = {tag for accumulator in events for tag in accumulator.Tags()["scalars"]}
    assert tags == {"train_loss", "lr", "dev_score"}
    steps = [s.step for accumulator in events if "train_loss" in accumulator.Tags()["scalars"]
             for s in accumulator.Scalars("train_loss")]
    assert steps == [1, 2, 3, 4]


@pytest.mark.parametrize("requested, device, bf16, expected", [
    ("auto", "cuda", True, "bf16"), ("auto", "cuda", False, "fp16"), ("auto", "cpu", True, "bf16"),
    ("auto", "cpu", False, "fp32"), ("fp32", "cuda", True, "fp32"), ("fp16", "cuda", True, "fp16"),
])
def test_precision_follows_what_the_device_computes(requested, device, bf16, expected):
    assert choose(requested, device, bf16) == expected


@pytest.mark.parametrize("flags, aten, onednn, native", [
    (True, "AVX512", None, True), (True, "AVX512", "AVX512_CORE_AMX", True), (True, "AVX512", "ALL", True),
    (True, "AVX2", None, False),  # ATEN_CPU_CAPABILITY=avx2 on a bf16 CPU: bf16 would run emulated
    (True, "AVX512", "AVX2", False), (True, "AVX512", "AVX512_CORE", False), (False, "AVX512", None, False),
])
def test_cpu_bf16_counts_only_kernels_that_run_it_natively(flags, aten, onednn, native):
    assert cpu_bf16(flags, aten, onednn) is native


@pytest.mark.parametrize("requested, device, bf16, message", [
    ("bf16", "cuda", False, "precision=bf16: this CUDA does not compute bf16 natively"),
    ("bf16", "cpu", False, "precision=bf16: this CPU does not compute bf16 natively"),
    ("fp16", "cpu", True, "precision=fp16 needs a CUDA GPU"),
    ("fp8", "cuda", True, "precision=fp8: must be one of auto, bf16, fp16, fp32"),
])
def test_precision_the_device_lacks_is_refused(requested, device, bf16, message):
    with pytest.raises(UserError, match=message):
        choose(requested, device, bf16)


def test_backbone_hash_is_cached_by_path_size_and_mtime(tiny_backbone, tmp_path, monkeypatch):
    monkeypatch.setenv("ADAPTERXFER_HOME", str(tmp_path))
    weights_file = tiny_backbone.path / "model.safetensors"
    real = backbones.weight_hash(tiny_backbone.path)
    store = tmp_path / "weight-hashes.json"
    (key, digest), = json.loads(store.read_text()).items()
    assert key.startswith(f"{weights_file.resolve()}|{weights_file.stat().st_size}|")
    store.write_text(json.dumps({key: "0" * 64}))  # the cache is read, not the 1st file's bytes
    assert backbones.weight_hash(tiny_backbone.path) != real
    os.utime(weights_file)  # a new mtime: hashed again
    assert backbones.weight_hash(tiny_backbone.path) == real
