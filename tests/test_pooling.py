"""Heads that fit the backbone: mean pooling for backbones trained with it (tiny backbone, fixture corpus)."""

import json

import pytest
import torch
from transformers import AutoTokenizer

from adapterxfer.cli import main
from adapterxfer.data import verses
from adapterxfer.modeling import resolve_pooling, set_pooling, task_model
from adapterxfer.tasks import get_task
from adapterxfer.tasks.verses import MULTI_LANGS
from extras import adapterhub

STEPS = ["max_steps=2", "eval_every=2", "batch_size=4", "max_length=48", "precision=fp32", "lr=1e-2",
         "eval_langs=en,fr"]


def test_auto_pooling_is_what_the_backbone_was_trained_with(tmp_path, tiny_backbone):
    (tmp_path / "adapterxfer_backbone.json").write_text(json.dumps({"model": "intfloat/multilingual-e5-small"}))
    assert resolve_pooling("auto", tmp_path) == "mean"  # the embedded me5-small's metadata file
    assert resolve_pooling("auto", tiny_backbone.path) == "cls"
    snapshot = tmp_path / "hub" / "models--intfloat--multilingual-e5-small" / "snapshots" / "abc123"
    assert resolve_pooling("auto", snapshot) == "mean"
    assert resolve_pooling("auto", tmp_path / "models--FacebookAI--xlm-roberta-large" / "snapshots" / "x") == "cls"
    assert resolve_pooling("cls", tmp_path) == "cls" and resolve_pooling("mean", tiny_backbone.path) == "mean"


def _inputs(tiny_backbone, task):
    tokenizer = AutoTokenizer.from_pretrained(tiny_backbone.path)
    rows = task.rows("dev")[:3]
    if task.kind == "multiple_choice":
        pairs = [(row["context"], choice) for row in rows for choice in row["choices"]]
        flat = tokenizer([a for a, _ in pairs], [b for _, b in pairs], padding=True, return_tensors="pt")
        return {key: value.view(len(rows), len(rows[0]["choices"]), -1) for key, value in flat.items()}
    return tokenizer([row["text"] for row in rows], [row.get("text_pair") for row in rows]
                     if "text_pair" in rows[0] else None, padding=True, return_tensors="pt")


@pytest.mark.parametrize("name", ["verses-genre", "verses-xref", "verses-next"])
def test_mean_pooled_head_reads_the_mean_over_real_tokens(tiny_backbone, name):
    """The same head weights, fed the masked mean of the last layer instead of <s> (cls: as transformers)."""
    task = get_task(name)
    model = task_model(task, tiny_backbone.path).eval()
    batch = _inputs(tiny_backbone, task)
    with torch.no_grad():
        cls_logits = model(**batch).logits
        flat = {key: value.view(-1, value.shape[-1]) for key, value in batch.items()}
        hidden = model.base_model(**flat).last_hidden_state
        mask = flat["attention_mask"].unsqueeze(-1).float()
        mean = ((hidden * mask).sum(1) / mask.sum(1)).unsqueeze(1)
        if task.kind == "multiple_choice":
            expected = model.classifier(model.base_model.pooler(mean)).view(cls_logits.shape)
        else:
            expected = model.classifier(mean)
        set_pooling(model, "mean")
        mean_logits = model(**batch).logits
        set_pooling(model, "cls")
        assert torch.allclose(model(**batch).logits, cls_logits)
    assert torch.allclose(mean_logits, expected, atol=1e-6)
    assert not torch.allclose(mean_logits, cls_logits, rtol=0, atol=1e-5)  # padding is left out, <s> is not read


@pytest.mark.parametrize("regime", ["full", "lora", adapterhub("bottleneck")])
def test_mean_pooling_trains_saves_and_reloads(tmp_path, tiny_backbone, regime):
    """pooling=mean is recorded in the manifest and restored on load: the reloaded model scores the same."""
    out = tmp_path / regime
    assert main(["train", "task=verses-genre", f"regime={regime}", "pooling=mean", f"backbone={tiny_backbone.path}",
                 f"output_dir={out}", *STEPS]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["pooling"] == "mean" and manifest["config"]["pooling"] == "mean"
    drawn = [json.loads(line) for line in (out / "train_items.jsonl").read_text().splitlines()]
    genre_refs = {row["ref"] for row in verses.genre_rows("train")}
    assert len(drawn) == 8 and {row["ref"] for row in drawn} <= genre_refs  # 2 steps of 4 distinct verses
    assert manifest["train_items"]["verses-genre"] | {"sequence": None, "multiset": None} == {
        "examples": 8, "items": 8, "tokens": sum(row["tokens"] for row in drawn), "sequence": None, "multiset": None,
        "by_lang": {"en": {"examples": 8, "items": 8, "tokens": sum(row["tokens"] for row in drawn)}}}
    assert main(["evaluate", "--model", str(out), "--task", "verses-genre", "--langs", "en,fr", "--output",
                 str(tmp_path / "eval"), "--max-length", "48", "--precision", "fp32"]) == 0
    for lang in ("en", "fr"):
        trained = (out / "predictions" / f"test-{lang}.jsonl").read_text()
        assert (tmp_path / "eval" / "predictions" / f"test-{lang}.jsonl").read_text() == trained


def test_default_pooling_on_a_cls_backbone_is_recorded(tmp_path, tiny_backbone):
    out = tmp_path / "xref-multi"
    assert main(["train", "task=verses-xref+verses-mlm", f"backbone={tiny_backbone.path}", f"output_dir={out}",
                 *STEPS[:-1]]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["pooling"] == "cls" and manifest["tasks"] == ["verses-xref", "verses-mlm"]
    drawn = manifest["train_items"]
    assert drawn["verses-xref"]["examples"] + drawn["verses-mlm"]["examples"] == 8  # one step of 4, then 4 more
    assert set(drawn["verses-xref"]["by_lang"]) == {"en"} and set(drawn["verses-mlm"]["by_lang"]) <= set(MULTI_LANGS)
