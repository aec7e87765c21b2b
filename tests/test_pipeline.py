"""The three phases through the CLI on the tiny backbone and the fixture corpus.

The fixture corpus (tests/fixtures/make_bible_db.py) stands in for the real bible.db,
which is too large for unit tests; the tiny random XLM-R stands in for XLM-R.
"""

import json
import shutil
from dataclasses import fields

import pytest
import torch
from safetensors.torch import load_file

from adapterxfer.artifacts import Manifest
from adapterxfer.cli import main
from adapterxfer.data import verses
from adapterxfer.data.features import featurized
from adapterxfer.kinds import KINDS
from adapterxfer.modeling import task_model
from adapterxfer.precision import cpu_threads, device_bf16
from adapterxfer.tasks import get_task
from transformers import AutoTokenizer

STEPS = ["max_steps=4", "eval_every=2", "batch_size=4", "max_length=48", "precision=fp32"]


def train(tmp_path, name, *extra, backbone):
    out = tmp_path / name
    code = main(["train", f"backbone={backbone.path}", f"output_dir={out}", *STEPS, *extra])
    assert code == 0
    return out


@pytest.fixture(scope="module")
def phases(tmp_path_factory, tiny_backbone, fixture_home):
    """Phase 2 on each intermediate kind, then phase 3 from verses-xref; trained once for the module."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("ADAPTERXFER_HOME", str(fixture_home))
        root = tmp_path_factory.mktemp("phases")
        xref = train(root, "xref", "task=verses-xref", backbone=tiny_backbone)
        nxt = train(root, "next", "task=verses-next", backbone=tiny_backbone)
        genre = train(root, "genre", "task=verses-genre", f"init_from={xref}", "eval_langs=en,fr,de-s,zh",
                      backbone=tiny_backbone)
    return {"xref": xref, "next": nxt, "genre": genre}


def test_intermediate_output_holds_encoder_head_and_manifest(phases):
    for name in ("xref", "next"):
        manifest = json.loads((phases[name] / "manifest.json").read_text())
        assert manifest["phase"] == "intermediate" and manifest["regime"] == "full"
        assert list(manifest) == ["format_version", *(f.name for f in fields(Manifest)), "files", "sizes"]
        assert (phases[name] / "encoder" / "model.safetensors").is_file()
        assert (phases[name] / "encoder" / "tokenizer.json").is_file()
        assert set(manifest["files"]) >= {"head.safetensors", "encoder/model.safetensors", "train_log.jsonl"}
        assert [entry["step"] for entry in manifest["dev"]["log"]] == [2, 4]
        assert manifest["dev"]["best"] == max(e["dev_score"] for e in manifest["dev"]["log"])
        # the final evaluation (last step) and the model before training, with their per-item predictions
        assert manifest["dev"]["final"] == manifest["dev"]["log"][-1]["dev_score"]
        task = f"verses-{name}"
        for stage in ("step0", "final"):
            assert f"dev_predictions/{stage}-{task}.jsonl" in manifest["files"]
            rows = [json.loads(line) for line in (phases[name] / "dev_predictions" / f"{stage}-{task}.jsonl")
                    .read_text().splitlines()]
            gold = [row["label"] for row in get_task(task).rows("dev")]
            assert [row["label"] for row in rows] == gold
            right = sum(row["prediction"] == row["label"] for row in rows) / len(rows)
            assert right == pytest.approx(manifest["dev"][stage])
        assert not list(phases[name].parent.glob(".*tmp-*")), "no temporary folder left behind"


def test_target_phase_scores_every_requested_language(phases):
    scores = json.loads((phases["genre"] / "scores.json").read_text())
    assert list(scores) == ["en", "fr", "de-s", "zh"]
    for lang, by_metric in scores.items():
        assert 0.0 <= by_metric["accuracy"] <= 1.0
        predictions = (phases["genre"] / "predictions" / f"test-{lang}.jsonl").read_text().splitlines()
        assert len(predictions) == len(verses.genre_rows("test", lang, limit=400))
    manifest = json.loads((phases["genre"] / "manifest.json").read_text())
    assert manifest["phase"] == "target"
    assert manifest["parents"][0]["task"] == "verses-xref"
    # Word embeddings are frozen by default, so they must equal the backbone's exactly.
    assert manifest["trainable_parameters"] < sum(t.numel() for t in load_file(
        phases["genre"] / "encoder" / "model.safetensors").values())


def test_phase_three_starts_from_phase_two_encoder_with_a_fresh_head(phases):
    task = get_task("verses-genre")
    model = task_model(task, phases["xref"] / "encoder")
    encoder = load_file(phases["xref"] / "encoder" / "model.safetensors")
    name = "encoder.layer.0.attention.self.query.weight"
    assert torch.equal(model.roberta.state_dict()[name], encoder[name])
    assert model.classifier.out_proj.out_features == len(task.labels)


def test_moved_parent_and_default_backbone_leave_a_finished_phase_current(phases, tmp_path, capsys):
    """The parent folder moves (a copy elsewhere), and backbone= is left to its default (the parent's)."""
    moved = tmp_path / "moved-xref"
    shutil.copytree(phases["xref"], moved)
    before = (phases["genre"] / "manifest.json").read_bytes()
    capsys.readouterr()
    assert main(["train", f"output_dir={phases['genre']}", *STEPS, "task=verses-genre", f"init_from={moved}",
                 "eval_langs=en,fr,de-s,zh"]) == 0
    assert f"{phases['genre']} is already trained with this configuration" in capsys.readouterr().out
    assert (phases["genre"] / "manifest.json").read_bytes() == before


def test_evaluate_scores_a_trained_output_and_matches_train_scores(phases, tmp_path):
    out = tmp_path / "eval"
    assert main(["evaluate", "--model", str(phases["genre"]), "--task", "verses-genre",
                 "--langs", "fr,zh", "--output", str(out), "--precision", "fp32"]) == 0
    again = json.loads((out / "scores.json").read_text())
    trained = json.loads((phases["genre"] / "scores.json").read_text())
    assert again == {lang: trained[lang] for lang in ("fr", "zh")}


def test_retrieval_from_backbone_and_from_intermediate(phases, tiny_backbone, tmp_path):
    for model in (str(tiny_backbone.path), str(phases["next"])):
        out = tmp_path / model.replace("/", "_")
        assert main(["evaluate", "--model", model, "--task", "verses-retrieval", "--langs", "fr,zh",
                     "--layer", "1", "--output", str(out)]) == 0
        scores = json.loads((out / "scores.json").read_text())
        assert set(scores) == {"fr", "zh"}
        assert all(0.0 <= s["accuracy@1"] <= 1.0 for s in scores.values())


@pytest.mark.slow
def test_same_seed_gives_same_weights(tmp_path, tiny_backbone):
    first = train(tmp_path, "a", "task=verses-xref", backbone=tiny_backbone)
    second = train(tmp_path, "b", "task=verses-xref", backbone=tiny_backbone)
    third = train(tmp_path, "c", "task=verses-xref", "seed=3", backbone=tiny_backbone)
    heads = [load_file(folder / "head.safetensors") for folder in (first, second, third)]
    assert all(torch.equal(heads[0][k], heads[1][k]) for k in heads[0])
    assert not all(torch.equal(heads[0][k], heads[2][k]) for k in heads[0])


@pytest.mark.skipif(not device_bf16(torch.device("cpu")), reason="this CPU does not compute bf16 natively")
def test_phases_of_one_process_may_differ_in_precision(tmp_path, tiny_backbone):
    """accelerate keeps mixed precision process-wide; the loop autocasts per phase instead."""
    outs = [train(tmp_path, name, "task=verses-xref", f"precision={precision}", backbone=tiny_backbone)
            for name, precision in (("fp32", "fp32"), ("bf16", "bf16"))]  # overrides STEPS' precision
    heads = [load_file(folder / "head.safetensors") for folder in outs]
    assert not all(torch.equal(heads[0][k], heads[1][k]) for k in heads[0])  # bf16 really ran


def test_a_small_backbone_runs_on_one_thread_and_gives_the_threads_back(tiny_backbone, tmp_path):
    wide = tmp_path / "wide"
    wide.mkdir()
    (wide / "config.json").write_text(json.dumps({"hidden_size": 384}))  # me5-small's
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        with cpu_threads(tiny_backbone.path):  # hidden size 32
            assert torch.get_num_threads() == 1
        assert torch.get_num_threads() == 2
        with cpu_threads(wide):
            assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_features_are_cached_by_fingerprint(tiny_backbone, monkeypatch):
    task = get_task("verses-xref")
    tokenizer = AutoTokenizer.from_pretrained(tiny_backbone.path)
    first, _, fingerprint = featurized(task, "dev", "en", tokenizer, 40)

    def refuse(*args, **kwargs):
        raise AssertionError("re-tokenized although the fingerprint was cached")

    monkeypatch.setattr(KINDS["classification"], "featurize", refuse)
    second, _, again = featurized(task, "dev", "en", tokenizer, 40)
    assert again == fingerprint and second["input_ids"] == first["input_ids"]
    with pytest.raises(AssertionError, match="re-tokenized"):
        featurized(task, "dev", "en", tokenizer, 41)  # another max_length is another fingerprint
