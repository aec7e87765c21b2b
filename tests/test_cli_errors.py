"""Bad input through the CLI: exit 2, one line naming the key/value/file, no traceback, no output."""

import json
import subprocess
import sys

import pytest

from adapterxfer.cli import main
from extras import ADAPTERHUB


def run_cli(capsys, *args):
    capsys.readouterr()  # drop what earlier calls printed (progress bars)
    code = main(list(args))
    err = capsys.readouterr().err.strip().splitlines()
    return code, err


@pytest.mark.parametrize("args, needle", [
    (["train", "task=qwerty"], "unknown task 'qwerty' (allowed: "),
    (["train", "task=verses-xrefs"], "unknown task 'verses-xrefs'; did you mean 'verses-xref' or "),
    (["train", "task=verses-genre", "max_step=3"], "unknown key 'max_step'; did you mean 'max_steps'? (allowed: "),
    (["train", "--task", "verses-genre", "--max-step", "3"], "unknown key 'max_step'; did you mean 'max_steps'?"),
    (["train", "task=verses-genre", "precision=fp23"], "got 'fp23'; did you mean 'fp32'?"),
    (["train", "task=verses-genre", "regime=qlora"], "key 'regime' must be one of full, lora"),
    (["train", "task=verses-genre", "eval_langs=fr,xx"], "'xx'"),
    (["train", "task=verses-genre", "max_stepz=3"], "unknown key 'max_stepz'"),
    (["train", "task=verses-retrieval"], "has no training data"),
    (["train", "task=verses-genre", "init_from=/nonexistent/phase2"], "/nonexistent/phase2"),
    (["train", "/nonexistent/recipe.yaml"], "config file /nonexistent/recipe.yaml does not exist"),
    (["train", "task=verses-genre", "backbone=./no/such/folder"], "unknown backbone './no/such/folder'"),
    (["evaluate", "--model", "./no/such/model", "--task", "verses-genre", "--output", "x"], "unknown backbone"),
    (["evaluate", "--model", "me5-small", "--task", "verses-retrieval", "--scoring", "dot", "--output", "x"],
     "unknown retrieval scoring 'dot'; allowed: cosine"),
    (["evaluate", "--model", "me5-small", "--task", "verses-genre", "--scoring", "csls", "--output", "x"],
     "--scoring applies to retrieval tasks"),
    (["train", "task=verses-genre", "lang_adapter_at_test=both"], "must be one of target, source"),
    (["train", "task=verses-genre", "precision=fp8"], "key 'precision' must be one of auto, bf16, fp16, fp32"),
    (["train", "task=verses-genre", "report_to=neptune"], "key 'report_to' must be one of none, tensorboard"),
    (["train", "task=verses-genre", "pooling=max"], "key 'pooling' must be one of auto, cls, mean, got 'max'"),
    (["train", "task=verses-genre", "transfer=stack", "regime=lora"], "transfer=stack starts from 1 intermediate artifact(s) "
                                                       "(init_from=), got 0"),
    (["train", "task=verses-genre", "transfer=merge", "regime=lora"], "transfer=merge starts from at least 2"),
    (["train", "task=verses-genre", "transfer=fusion"], "transfer=fusion is not available in regime full "
                                                        "(available: sequential)"),
    (["train", "task=xcopa"], "task xcopa trains after siqa (its recipe's stages), and init_from's lineage has no siqa: "
                              "train task=siqa (from your intermediate, if any) first, then task=xcopa "
                              "init_from=<that output>"),
    (["select", "--target", "mewslix", "--bank", "nowhere"], "select cannot rank intermediates for mewslix, a ranking "
                                                              "target task; it ranks them for targets of kind"),
])
def test_bad_train_and_evaluate_input(capsys, tmp_path, args, needle):
    args = [a.replace("output_dir=", f"output_dir={tmp_path}/") for a in args]
    code, err = run_cli(capsys, *args, *(["output_dir=" + str(tmp_path / "out")] if args[0] == "train" else []))
    assert code == 2
    assert len(err) == 1 and err[0].startswith("adapterxfer: error: ")
    assert needle in err[0]
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("key, value", [("precision", "fp8"), ("transfer", "cascade"), ("report_to", "neptune"),
                                        ("pooling", "max"), ("merge", "average")])
def test_a_value_outside_a_keys_choices_in_a_recipe_is_refused(capsys, tmp_path, key, value):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(f"task: verses-genre\n{key}: {value}\n")
    code, err = run_cli(capsys, "train", str(recipe), f"output_dir={tmp_path / 'out'}")
    assert code == 2 and len(err) == 1
    assert f"{recipe}: key {key!r} must be one of " in err[0] and err[0].endswith(f"got {value!r}")
    assert not (tmp_path / "out").exists()


def test_broken_yaml_recipe(capsys, tmp_path):
    recipe = tmp_path / "bad.yaml"
    recipe.write_text("task: verses-genre\n  max_steps: 3\n")
    code, err = run_cli(capsys, "train", str(recipe))
    assert code == 2 and len(err) == 1 and "bad.yaml: invalid YAML at line" in err[0]


def test_classification_task_needs_a_trained_model(capsys, tmp_path, tiny_backbone):
    code, err = run_cli(capsys, "evaluate", "--model", str(tiny_backbone.path), "--task", "verses-genre",
                        "--output", str(tmp_path / "out"))
    assert code == 2 and "needs a model trained on it" in err[0]
    assert not (tmp_path / "out").exists()


def test_a_regimes_test_time_flag_on_a_model_of_no_such_regime_is_one_line(capsys, tmp_path, tiny_backbone):
    code, err = run_cli(capsys, "evaluate", "--model", str(tiny_backbone.path), "--task", "verses-retrieval",
                        "--lang-adapter", "source", "--output", str(tmp_path / "out"))
    assert code == 2 and len(err) == 1 and err[0] == (
        f"adapterxfer: error: lang_adapter_at_test (--lang-adapter) applies to madx models; {tiny_backbone.path} is "
        "not a trained model")
    assert not (tmp_path / "out").exists()


def test_an_evaluation_override_no_regime_offers_is_one_line_from_the_library_too(tmp_path, tiny_backbone):
    from adapterxfer.errors import UserError
    from adapterxfer.pipeline import evaluate_model

    with pytest.raises(UserError) as refused:
        evaluate_model(str(tiny_backbone.path), "verses-retrieval", [], tmp_path / "out",
                       at_test={"lang_adapter_at_tset": "source"})
    assert str(refused.value) == ("unknown evaluation override 'lang_adapter_at_tset'; did you mean "
                                  "'lang_adapter_at_test'? (allowed: lang_adapter_at_test)")
    assert not (tmp_path / "out").exists()


def test_existing_output_dir_is_not_overwritten(capsys, tmp_path, tiny_backbone):
    out = tmp_path / "taken"
    out.mkdir()
    (out / "keep.txt").write_text("precious")
    code, err = run_cli(capsys, "train", "task=verses-xref", f"backbone={tiny_backbone.path}", f"output_dir={out}")
    assert code == 2 and "already exists; pass overwrite=true" in err[0]
    assert (out / "keep.txt").read_text() == "precious"


def test_tampered_artifact_is_refused(capsys, tmp_path, tiny_backbone):
    out = tmp_path / "xref"
    assert main(["train", "task=verses-xref", f"backbone={tiny_backbone.path}", f"output_dir={out}",
                 "max_steps=1", "eval_every=1", "batch_size=2", "precision=fp32"]) == 0
    head = out / "head.safetensors"
    data = bytearray(head.read_bytes())
    data[-1] ^= 0xFF
    head.write_bytes(bytes(data))
    code, err = run_cli(capsys, "evaluate", "--model", str(out), "--task", "verses-retrieval",
                        "--output", str(tmp_path / "eval"))
    assert code == 2 and "head.safetensors does not match its sha256" in err[0]
    code, err = run_cli(capsys, "train", "task=verses-genre", f"init_from={out}", f"output_dir={tmp_path / 'g'}")
    assert code == 2 and "does not match its sha256" in err[0]


def test_init_from_on_another_backbone_is_refused(capsys, tmp_path, tiny_backbone):
    out = tmp_path / "xref"
    assert main(["train", "task=verses-xref", f"backbone={tiny_backbone.path}", f"output_dir={out}",
                 "max_steps=1", "eval_every=1", "batch_size=2"]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    manifest["backbone"]["weight_hash"] = "sha256:" + "0" * 64
    (out / "manifest.json").write_text(json.dumps(manifest))
    code, err = run_cli(capsys, "train", "task=verses-genre", f"init_from={out}", f"backbone={tiny_backbone.path}",
                        f"output_dir={tmp_path / 'g'}")
    assert code == 2 and "weight hashes differ" in err[0]


@pytest.mark.parametrize("change, needle", [
    (lambda m: m.pop("regime"), "key 'regime' is missing or not a str (required: regime, module_kind"),
    (lambda m: m.update(parents="none"), "key 'parents' is missing or not a list"),
    (lambda m: m.update(format_version=7), "format_version 7, expected 1"),
])
def test_malformed_manifest_is_one_line(capsys, tmp_path, tiny_backbone, change, needle):
    out = tmp_path / "xref"
    assert main(["train", "task=verses-xref", f"backbone={tiny_backbone.path}", f"output_dir={out}",
                 "max_steps=1", "eval_every=1", "batch_size=2", "precision=fp32"]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    change(manifest)
    (out / "manifest.json").write_text(json.dumps(manifest))
    code, err = run_cli(capsys, "artifacts", "verify", str(out))
    assert code == 2 and len(err) == 1 and err[0].startswith(f"adapterxfer: error: {out / 'manifest.json'}: ")
    assert needle in err[0]


def test_console_script_prints_no_traceback(tmp_path):
    done = subprocess.run([sys.executable, "-m", "adapterxfer", "train", "task=nope"],
                          capture_output=True, text=True)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [done.stderr.strip()]
    assert "Traceback" not in done.stderr


def test_a_max_length_above_the_backbones_positions_is_refused_in_one_line(capsys, tmp_path, tiny_backbone):
    """Before any training: a task's default (verses-next: 144) on a backbone of 128 positions, an explicit
    max_length on the tiny backbone's 512, in train, evaluate and a study plan."""
    from pathlib import Path

    import yaml

    import adapterxfer
    from adapterxfer.backbones import build_tiny_xlmr

    corpus = Path(adapterxfer.__file__).parent / "resources" / "tiny_corpus.txt"
    narrow = build_tiny_xlmr(tmp_path / "narrow", [line for line in corpus.read_text().splitlines() if line.strip()],
                             positions=130)
    plan = tmp_path / "plan.yaml"
    plan.write_text(yaml.safe_dump({"backbone": str(tiny_backbone.path), "seeds": [1], "targets": ["verses-genre"],
                                    "output": str(tmp_path / "study"), "target_phase": {"max_length": 600}}))
    for args, message in (
            (["train", "task=verses-next", "regime=lora", f"backbone={narrow}", f"output_dir={tmp_path / 'out'}"],
             f"task verses-next's default max_length 144 exceeds the 128 positions of backbone {narrow}; pass "
             "max_length=128 or less"),
            (["train", "task=verses-genre", "max_length=600", f"backbone={tiny_backbone.path}",
              f"output_dir={tmp_path / 'out'}"],
             f"max_length=600 exceeds the 512 positions of backbone {tiny_backbone.path}; pass max_length=512 or less"),
            (["evaluate", "--model", str(narrow), "--task", "verses-retrieval", "--max-length", "200", "--output",
              str(tmp_path / "out")], f"max_length=200 exceeds the 128 positions of backbone {narrow}"),
            (["study", "run", str(plan)], "phase seed1/full/verses-genre/baseline: max_length=600 exceeds the 512 "
                                          "positions of backbone")):
        code, err = run_cli(capsys, *args)
        assert code == 2 and len(err) == 1 and err[0].startswith(f"adapterxfer: error: {message}"), err
    assert not (tmp_path / "out").exists() and not (tmp_path / "study").exists()
    assert not list(tmp_path.glob(".*.lock"))


EARLY = "import sys; from adapterxfer.cli import main; code = main(sys.argv[1:]); print(code, 'torch' in sys.modules)"


def test_the_common_input_errors_come_before_torch_loads(capsys, tmp_path, tiny_backbone):
    """An init_from that is not there, a plan with a typo, an output another run is writing or that holds a run
    of other settings: one line, and torch never imported (so the answer comes at once)."""
    from filelock import FileLock

    from adapterxfer.artifacts import lock_file

    out = tmp_path / "xref"
    assert main(["train", "task=verses-xref", f"backbone={tiny_backbone.path}", f"output_dir={out}",
                 "max_steps=1", "eval_every=1", "batch_size=2"]) == 0
    plan = tmp_path / "plan.yaml"
    plan.write_text("backbone: tiny-xlmr\nseeds: [1]\ntargets: [verses-genre]\nintermediates: [verses-xrefs]\n")
    busy = tmp_path / "busy"
    cases = [
        (["train", "task=verses-genre", f"init_from={tmp_path / 'nothing'}"], f"{tmp_path / 'nothing'} does not exist"),
        (["study", "run", str(plan)], "unknown task 'verses-xrefs'; did you mean 'verses-xref'"),
        (["train", "task=verses-xref", f"backbone={tiny_backbone.path}", f"output_dir={out}", "max_steps=2",
          "eval_every=1", "batch_size=2"], f"output_dir {out} holds another run (it differs in max_steps)"),
        (["train", "task=verses-xref", f"output_dir={busy}"], f"output_dir {busy} is being written by another run"),
    ]
    busy.mkdir()
    with FileLock(str(lock_file(busy))):
        for args, needle in cases:
            done = subprocess.run([sys.executable, "-c", EARLY, *args], capture_output=True, text=True, cwd=tmp_path)
            assert done.stdout.split() == ["2", "False"], (args, done.stderr)
            assert done.stderr.strip().splitlines() == [f"adapterxfer: error: {done.stderr.strip()[20:]}"]
            assert needle in done.stderr, done.stderr


def test_init_from_on_another_embedded_backbone_is_refused_before_that_backbone_is_built(capsys, tmp_path,
                                                                                          fixture_home):
    out = tmp_path / "xref"
    assert main(["train", "task=verses-xref", "backbone=tiny-xlmr", f"output_dir={out}", "max_steps=1",
                 "eval_every=1", "batch_size=2"]) == 0
    code, err = run_cli(capsys, "train", "task=verses-genre", f"init_from={out}", "backbone=me5-small",
                        f"output_dir={tmp_path / 'g'}")
    assert code == 2 and err == [f"adapterxfer: error: init_from {out} was trained on backbone 'tiny-xlmr', not "
                                 "'me5-small': leave backbone= out (or pass backbone=tiny-xlmr)"]
    assert not (fixture_home / "backbones" / "me5-small").exists()


@pytest.mark.parametrize("library, installed, tested", [("transformers", "5.1.0", "transformers!=5.0.*,!=5.1.*"),
                                                        ("peft", "0.19.1", "peft<0.22,>=0.21")])
def test_a_transformers_or_peft_outside_the_tested_range_is_one_line_at_start(tmp_path, library, installed, tested):
    """A distribution of another version first on the path (as an environment that holds it would have):
    the CLI names it and the range pyproject.toml states, in one line, before any verb runs."""
    found = tmp_path / f"{library}-{installed}.dist-info"
    found.mkdir()
    (found / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {library}\nVersion: {installed}\n")
    done = subprocess.run([sys.executable, "-m", "adapterxfer", "tasks"], capture_output=True, text=True,
                          env={**__import__("os").environ, "PYTHONPATH": str(tmp_path)})
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.strip().splitlines() == [done.stderr.strip()]
    assert done.stderr.startswith(f"adapterxfer: error: {library} {installed} is installed, but adapterxfer is "
                                  f"tested with {library}") and tested in done.stderr, done.stderr


@pytest.mark.skipif(ADAPTERHUB, reason="the [adapters] extra is installed here")
def test_an_adapterhub_regime_or_plan_without_the_extra_is_one_line_with_the_install(capsys, tmp_path, tiny_backbone):
    plan = tmp_path / "plan.yaml"
    plan.write_text(f"backbone: {tiny_backbone.path}\noutput: {tmp_path / 'study'}\nseeds: [1]\n"
                    "targets: [verses-genre]\nintermediates: [verses-xref]\nregimes: [lora, bottleneck]\n")
    install = "needs the 'adapters' library, not installed here: pip install 'adapterxfer[adapters]' (from a clone: "
    out = f"output_dir={tmp_path / 'out'}"
    for args, subject in ((["train", "task=verses-genre", "regime=bottleneck", out], "regime bottleneck"),
                          (["train", "task=verses-xref", "regime=madx", "language=en", out], "regime madx"),
                          (["study", "run", str(plan)], "regime bottleneck")):
        code, err = run_cli(capsys, *args)
        assert code == 2 and err == [f"adapterxfer: error: {subject} {install}pip install '.[adapters]')"], err
    assert not (tmp_path / "out").exists() and not (tmp_path / "study").exists()

