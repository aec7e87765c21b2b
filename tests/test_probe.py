"""LP-FT's head probe on the tiny backbone and the fixture corpus: the replayed encoder reproduces
the model's own forward, and the probe fits the head without touching anything else."""

import json

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoTokenizer

from adapterxfer.cli import main
from adapterxfer.config import from_dict
from adapterxfer.data.features import featurized
from adapterxfer.kinds import KINDS
from adapterxfer.modeling import MultiTaskModel, head_parameters, replayed_encoder, share_encoder, task_model
from adapterxfer.regimes import get_regime
from adapterxfer.tasks import get_task
from adapterxfer.train import Source, probe_head
from extras import adapterhub


def source(task_name, backbone, name=None):
    task = get_task(task_name)
    tokenizer = AutoTokenizer.from_pretrained(backbone.path)
    features, _, _ = featurized(task, "train", "en", tokenizer, 48)
    kind = KINDS[task.kind]
    return Source(features, [kind.length(f) for f in features], kind.collator(tokenizer),
                  list(map(str, range(len(features)))), name)


def first_batch(src, size=6):
    return src.collate([src.features[i] for i in range(size)])


@pytest.mark.parametrize("regime, task_name", [
    ("full", "verses-genre"), ("full", "verses-next"), ("lora", "verses-xref"), adapterhub("bottleneck", "verses-genre"),
    ("full", "verses-xref-bi"), ("lora", "verses-xref-bi"), adapterhub("bottleneck", "verses-xref-bi"),
])
def test_replayed_encoder_reproduces_the_forward(tiny_backbone, regime, task_name):
    task = get_task(task_name)
    model = get_regime(regime).build(task, tiny_backbone, [], from_dict({"task": task_name, "regime": regime})).eval()
    batch = first_batch(source(task_name, tiny_backbone))
    with torch.no_grad():
        output = model(**batch, output_hidden_states=True)
        with replayed_encoder(model) as replay:
            replay.states = output.hidden_states[-1]
            replayed = model(**batch)
        again = model(**batch)
    torch.testing.assert_close(replayed.logits, output.logits)
    torch.testing.assert_close(replayed.loss, output.loss)
    torch.testing.assert_close(again.logits, output.logits)  # the real encoder is back


def test_probe_fits_the_head_and_leaves_the_rest_alone(tiny_backbone):
    config = from_dict({"task": "verses-genre", "probe_steps": 60, "probe_examples": 64, "head_lr": 1e-2,
                        "eval_batch_size": 16, "precision": "fp32"})
    model = get_regime("full").build(get_task("verses-genre"), tiny_backbone, [], config)
    src = source("verses-genre", tiny_backbone)
    head = set(head_parameters(model))
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    probed = [src.collate([src.features[i] for i in range(k, k + 16)]) for k in range(0, 64, 16)]

    def mean_loss():
        model.eval()
        with torch.no_grad():
            return sum(model(**b).loss.item() for b in probed) / len(probed)

    start = mean_loss()
    probe_head(model, [src], config, "fp32")
    assert mean_loss() < start - 0.1
    for name, param in model.named_parameters():
        changed = not torch.equal(param, before[name])
        assert changed == (name in head), name


def test_probe_runs_every_task_of_a_multitask_model(tiny_backbone):
    config = from_dict({"task": "verses-xref+verses-next", "probe_steps": 20, "probe_examples": 16,
                        "head_lr": 1e-2, "precision": "fp32"})
    models = {"verses-xref": task_model(get_task("verses-xref"), tiny_backbone.path),
              "verses-next": task_model(get_task("verses-next"), tiny_backbone.path)}
    share_encoder(models["verses-xref"], models["verses-next"])
    model = MultiTaskModel(models)
    before = {n: p.detach().clone() for n, p in head_parameters(model).items()}
    probe_head(model, [source(name, tiny_backbone, name) for name in models], config, "fp32")
    for task in models:
        assert any(not torch.equal(p, before[n]) for n, p in head_parameters(model).items() if n.startswith(task))
    assert model.models["verses-next"].roberta is model.models["verses-xref"].roberta


@pytest.mark.slow
def test_probe_only_phase_keeps_the_backbone_and_logs_step_zero(tmp_path, tiny_backbone):
    """max_steps=0 with a probe: a linear probe of the frozen encoder (the LP of LP-FT)."""
    out = tmp_path / "lp"
    assert main(["train", "task=verses-genre", f"backbone={tiny_backbone.path}", f"output_dir={out}",
                 "max_steps=0", "probe_steps=20", "probe_examples=32", "max_length=48", "precision=fp32",
                 "eval_langs=en,fr"]) == 0
    log = json.loads((out / "manifest.json").read_text())["dev"]["log"]
    assert [entry["step"] for entry in log] == [0]
    saved = load_file(out / "encoder" / "model.safetensors")
    original = load_file(tiny_backbone.path / "model.safetensors")
    for name, value in saved.items():
        torch.testing.assert_close(value, original[name], rtol=0, atol=0)
    assert set(json.loads((out / "scores.json").read_text())) == {"en", "fr"}


def test_after_a_probe_only_fine_tuned_checkpoints_are_selected(tmp_path, tiny_backbone):
    """LP-FT keeps the best fine-tuned weights: the probe is logged, but not scored or selectable."""
    out = tmp_path / "lpft"
    assert main(["train", "task=verses-xref", "regime=lora", f"backbone={tiny_backbone.path}", f"output_dir={out}",
                 "max_steps=2", "eval_every=1", "batch_size=4", "probe_steps=10", "probe_examples=16",
                 "max_length=48", "precision=fp32"]) == 0
    dev = json.loads((out / "manifest.json").read_text())["dev"]
    assert [entry["step"] for entry in dev["log"]] == [0, 1, 2]
    assert dev["log"][0]["dev_score"] is None and dev["log"][0]["train_loss"] > 0
    (selected,) = [entry for entry in dev["log"] if entry.get("selected")]
    assert selected["step"] > 0
    assert dev["best"] == selected["dev_score"] == max(e["dev_score"] for e in dev["log"][1:])
