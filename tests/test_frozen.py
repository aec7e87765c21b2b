"""The frozen bottom (``frozen_layers``) on the tiny backbone and the fixture corpus: the regimes place no
module below it and nothing there trains; a model read through the cache computes what the whole model
computes; the cache is shared by byte-identical bottoms only; and the model is whole again after the block."""

import json
import subprocess
import sys

import pytest
import torch
from transformers import AutoTokenizer

from adapterxfer import artifacts, precision
from adapterxfer.cli import main
from adapterxfer.config import from_dict
from adapterxfer.data.features import featurized
from adapterxfer.errors import UserError
from adapterxfer.frozen import STORE, cached_bottom, freeze_bottom
from adapterxfer.kinds import KINDS
from adapterxfer.modeling import encoder_model, encoders
from adapterxfer.regimes import get_regime
from adapterxfer.retrieval import embed
from adapterxfer.tasks import get_task
from extras import ADAPTERHUB, adapterhub

TASK = "verses-xref-bi"


def _built(regime, tiny_backbone, frozen=1):
    config = from_dict({"task": TASK, "regime": regime, "frozen_layers": frozen,
                        **({"lora_dropout": 0.0} if regime == "lora" else {})})
    model = get_regime(regime).build(get_task(TASK), tiny_backbone, [], config)
    freeze_bottom(model, frozen)
    return model.eval()


def _batch(tiny_backbone):
    tokenizer = AutoTokenizer.from_pretrained(tiny_backbone.path)
    features, _, _ = featurized(get_task(TASK), "train", "en", tokenizer, 48)
    return KINDS["bi_encoder"].collator(tokenizer)([features[i] for i in range(6)])


@pytest.mark.parametrize("regime", ["full", "lora", adapterhub("bottleneck"), "ia3"])
def test_no_module_and_no_training_below_the_frozen_layers(tiny_backbone, regime):
    model = _built(regime, tiny_backbone)
    base = encoders(model)[0]
    plain = {name for name, _ in encoder_model(tiny_backbone.path).encoder.layer[0].named_parameters()}
    bottom = [base.embeddings, base.encoder.layer[0]]
    assert {name for name, _ in base.encoder.layer[0].named_parameters()} == plain  # no LoRA, adapter or (IA)3
    assert not any(p.requires_grad for module in bottom for p in module.parameters())
    assert any(p.requires_grad for name, p in model.named_parameters() if "layer.1." in name)


@pytest.mark.parametrize("regime", ["full", "lora", adapterhub("bottleneck")])
def test_a_model_read_through_the_cache_computes_what_the_whole_model_computes(tiny_backbone, regime):
    STORE.clear()  # each regime computes its bottom itself (adapters hooks its layers)
    model = _built(regime, tiny_backbone)
    with torch.no_grad():
        batch = _batch(tiny_backbone)
        whole = model(**batch)
        names = [name for name, _ in model.named_parameters()]
        with cached_bottom(model, 1):
            cached = model(**batch)
            again = model(**batch)  # every sequence from the store now
        assert [name for name, _ in model.named_parameters()] == names  # whole again after the block
    torch.testing.assert_close(cached.logits, whole.logits, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(cached.loss, whole.loss, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(again.logits, cached.logits)


def test_a_full_store_evicting_states_of_the_batch_being_assembled_loses_nothing(tiny_backbone, monkeypatch):
    model = _built("lora", tiny_backbone)
    batch = _batch(tiny_backbone)
    STORE.clear()
    with torch.no_grad():
        whole = model(**batch).logits
        with cached_bottom(model, 1):
            model(**{key: value[:2] for key, value in batch.items()})  # two rows stored
            monkeypatch.setattr(STORE, "limit", 1)  # storing the others evicts all but the last
            cached = model(**batch).logits
    assert len(STORE.rows) == 1
    torch.testing.assert_close(cached, whole, atol=1e-5, rtol=1e-5)


def test_the_cache_is_shared_by_identical_bottoms_only(tiny_backbone):
    tokenizer = AutoTokenizer.from_pretrained(tiny_backbone.path)
    texts = [row["query"] for row in get_task("verses-retrieval").rows("test", "de")[:5]]
    encoder = encoder_model(tiny_backbone.path).eval()
    with cached_bottom(encoder, 1):
        first = embed(encoder, tokenizer, texts, -1, 48, 2, "fp32")
    stored = len(STORE.rows)
    other = encoder_model(tiny_backbone.path).eval()  # another object, the same bytes
    with cached_bottom(other, 1):
        second = embed(other, tokenizer, texts, -1, 48, 2, "fp32")
    assert len(STORE.rows) == stored  # nothing computed again
    torch.testing.assert_close(first, second)
    torch.testing.assert_close(first, embed(encoder, tokenizer, texts, -1, 48, 2, "fp32"), atol=1e-5, rtol=1e-5)
    with torch.no_grad():
        other.encoder.layer[0].intermediate.dense.weight.mul_(3.0)  # a different bottom
    with cached_bottom(other, 1):
        moved = embed(other, tokenizer, texts, -1, 48, 2, "fp32")
    assert len(STORE.rows) == stored + len(texts)
    assert not torch.allclose(moved, first, atol=1e-3)


def test_frozen_layers_leaves_a_layer_to_train_and_madx_refuses_it(tiny_backbone, tmp_path):
    model = _built("full", tiny_backbone, frozen=0)
    with pytest.raises(UserError, match=r"frozen_layers=2: the encoder has 2 layers; allowed 0\.\.1"):
        freeze_bottom(model, 2)
    with pytest.raises(UserError, match="must be a finite number >= 0"):
        from_dict({"task": TASK, "frozen_layers": -1})
    config = from_dict({"task": TASK, "regime": "madx", "frozen_layers": 1})
    with pytest.raises(UserError, match="regime madx puts language adapters into every layer"):
        get_regime("madx").check(get_task(TASK), config, [], tiny_backbone)


@pytest.mark.parametrize("regime", ["lora", adapterhub("bottleneck"), "full"])
def test_a_phase_freezing_every_layer_is_one_line_before_anything_is_built(regime, tmp_path, tiny_backbone, capsys):
    out = tmp_path / "all-frozen"
    assert main(["train", f"task={TASK}", f"regime={regime}", f"backbone={tiny_backbone.path}", f"output_dir={out}",
                 "max_steps=1", "frozen_layers=2"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["adapterxfer: error: frozen_layers=2: the encoder has 2 layers; allowed 0..1"]
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_a_phase_with_a_frozen_bottom_trains_saves_and_is_scored_from_the_cache(tmp_path, tiny_backbone):
    out = tmp_path / "xref-bi"
    assert main(["train", f"task={TASK}", "regime=lora", f"backbone={tiny_backbone.path}", f"output_dir={out}",
                 "max_steps=3", "eval_every=3", "batch_size=4", "max_length=48", "precision=fp32", "lr=5e-2",
                 "frozen_layers=1"]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["config"]["frozen_layers"] == 1
    assert json.loads((out / "adapter_config.json").read_text())["target_modules"].startswith(
        r"(.*\.)?encoder\.layer\.(?!(?:0)\.)\d+\.")
    assert main(["evaluate", "--model", str(out), "--task", "verses-retrieval", "--langs", "de", "--queries", "6",
                 "--candidates", "9", "--max-length", "48", "--precision", "fp32", "--output", str(tmp_path / "ev")]) == 0
    assert json.loads((tmp_path / "ev" / "scores.json").read_text())["de"]["candidates"] == 9


def _step0_of(out) -> tuple[float, str]:
    manifest = json.loads((out / "manifest.json").read_text())
    return manifest["dev"]["step0"], (out / "dev_predictions" / f"step0-{manifest['task']}.jsonl").read_text()


@pytest.mark.slow
def test_step0_is_scored_once_per_process_where_fresh_models_equal_the_backbone(tmp_path, tiny_backbone, monkeypatch):
    """Seeds of a LoRA and a full phase on a bi-encoder task (a seed-free head) share the backbone's step 0,
    which equals a fresh computation; a bottleneck adapter (where the extra is installed) starts changed and a
    classification head is seeded, so their phases score their own."""
    from adapterxfer import pipeline

    monkeypatch.setattr(pipeline, "STEP0", {})
    args = [f"backbone={tiny_backbone.path}", "max_steps=1", "eval_every=1", "batch_size=4", "max_length=48",
            "precision=fp32"]
    runs = {}
    phases = [("lora1", "lora", 1, TASK), ("lora2", "lora", 2, TASK), ("full3", "full", 3, TASK),
              ("bottleneck", "bottleneck", 1, TASK), ("cls", "lora", 1, "verses-xref")]
    for name, regime, seed, task in phases if ADAPTERHUB else [p for p in phases if p[1] != "bottleneck"]:
        assert main(["train", f"task={task}", f"regime={regime}", f"seed={seed}", f"output_dir={tmp_path / name}",
                     *args]) == 0
        runs[name] = _step0_of(tmp_path / name)
    assert [key[1] for key in pipeline.STEP0] == [(TASK,)]  # not verses-xref's: a classification head is seeded
    assert runs["lora1"] == runs["lora2"] == runs["full3"]
    pipeline.STEP0.clear()
    assert main(["train", f"task={TASK}", "regime=lora", "seed=4", f"output_dir={tmp_path / 'fresh'}", *args]) == 0
    assert _step0_of(tmp_path / "fresh") == runs["lora1"]


def test_a_bottom_changed_in_place_or_by_data_gets_a_new_key(tiny_backbone):
    """The bottom's key is remembered per tensor while the tensor is unchanged (a bank enters its host's bottom
    for every module); any change to a bottom parameter, in place or by ``.data =``, gives a new key."""
    from adapterxfer import frozen

    model = _built("full", tiny_backbone)
    embeddings = encoders(model)[0].embeddings.word_embeddings.weight
    keys = []
    for change in (None, lambda: embeddings.add_(1.0), lambda: setattr(embeddings, "data", embeddings.data + 1.0)):
        if change:
            with torch.no_grad():
                change()
        with cached_bottom(model, 1):
            keys.append(encoders(model)[0].embeddings.key)
        frozen._DIGESTS.clear()
        with cached_bottom(model, 1):
            assert encoders(model)[0].embeddings.key == keys[-1]  # as a fresh hash of the content
    assert len(set(keys)) == 3


# A train command in a fresh interpreter, on a CPU taken for one that computes bf16 natively (a stand-in: this one
# may emulate it, which changes how fast bf16 runs, not its numbers).
BF16_CPU = """
import sys
from adapterxfer import precision
precision.device_bf16 = lambda device: True
from adapterxfer.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_a_bf16_phase_after_an_fp32_one_in_one_process_is_what_it_is_alone(tiny_backbone, tmp_path, monkeypatch):
    """A study's phases in one process (--workers 1): an fp32 phase, then a bf16 one over the same frozen bottom.
    The bf16 phase's weights and scores are those it has in a process of its own: its bottom's states are
    computed under bf16 autocast, never taken from the fp32 phase's."""
    monkeypatch.setattr(precision, "device_bf16", lambda device: True)  # the stand-in, as BF16_CPU
    args = ["train", "task=verses-genre", "regime=lora", f"backbone={tiny_backbone.path}", "frozen_layers=1",
            "max_steps=2", "eval_every=2", "batch_size=4", "max_length=32", "eval_langs=en,fr"]
    STORE.clear()
    assert main([*args, "precision=fp32", f"output_dir={tmp_path / 'fp32'}"]) == 0
    assert main([*args, "precision=bf16", f"output_dir={tmp_path / 'bf16'}"]) == 0
    alone = subprocess.run([sys.executable, "-c", BF16_CPU, *args, "precision=bf16", f"output_dir={tmp_path / 'alone'}"],
                           capture_output=True, text=True)
    assert alone.returncode == 0, alone.stderr[-2000:]
    record = {name: artifacts.read_manifest(tmp_path / name) for name in ("fp32", "bf16", "alone")}
    made = {name: {file: digest for file, digest in manifest["files"].items() if file != "train_log.jsonl"}
            for name, manifest in record.items()}  # its log holds the seconds each step took
    assert made["bf16"] == made["alone"]  # the same weights and dev predictions
    assert (tmp_path / "bf16" / "scores.json").read_text() == (tmp_path / "alone" / "scores.json").read_text()
    assert record["bf16"]["files"]["adapter_model.safetensors"] != record["fp32"]["files"]["adapter_model.safetensors"]
