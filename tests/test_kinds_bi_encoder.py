"""The bi-encoder choice kind on the tiny backbone and the fixture corpus: a choice's logit is the scaled
cosine of the two verses' embeddings as retrieval computes them, the loss is over each row's own choices,
its head is one number, and an intermediate trained in it is scored on verses-retrieval from its encoder."""

import json

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoTokenizer

from adapterxfer.cli import main
from adapterxfer.data.features import featurized, truncation_rates
from adapterxfer.kinds import KINDS
from adapterxfer.kinds.bi_encoder import INITIAL_SCALE
from adapterxfer.modeling import encoder_model, head_parameters, task_model
from adapterxfer.regimes import get_regime
from adapterxfer.retrieval import embed
from adapterxfer.study.baselines import baseline_predictions
from adapterxfer.tasks import get_task
from extras import adapterhub

TASK = "verses-xref-bi"


def _batch_and_embeddings(tiny_backbone, rows_in_batch=2):
    task = get_task(TASK)
    tokenizer = AutoTokenizer.from_pretrained(tiny_backbone.path)
    features, rows, _ = featurized(task, "dev", "en", tokenizer, 48)
    batch = KINDS[task.kind].collator(tokenizer)([features[i] for i in range(rows_in_batch)])
    encoder = encoder_model(tiny_backbone.path).eval()
    contexts = embed(encoder, tokenizer, [row["context"] for row in rows[:rows_in_batch]], -1, 48, 3, "fp32")
    choices = torch.stack([embed(encoder, tokenizer, row["choices"], -1, 48, 3, "fp32") for row in rows[:rows_in_batch]])
    return batch, contexts, choices


def test_logits_are_scaled_cosines_of_the_retrieval_embeddings(tiny_backbone):
    model = task_model(get_task(TASK), tiny_backbone.path).eval()
    assert {name: p.item() for name, p in head_parameters(model).items()} == pytest.approx(
        {"classifier.scale": INITIAL_SCALE})
    batch, contexts, choices = _batch_and_embeddings(tiny_backbone)
    assert batch["input_ids"].shape[:2] == (2, 3)  # the context and its two choices
    with torch.no_grad():
        logits = model(**batch).logits
    torch.testing.assert_close(logits, INITIAL_SCALE * torch.einsum("rd,rcd->rc", contexts, choices),
                               atol=1e-4, rtol=1e-4)


def test_training_loss_is_over_each_rows_own_choices_only(tiny_backbone):
    """No in-batch negatives: another row's choices (in a multilingual batch, maybe another language) never
    enter a row's loss."""
    model = task_model(get_task(TASK), tiny_backbone.path).eval()
    batch, contexts, choices = _batch_and_embeddings(tiny_backbone)
    with torch.no_grad():
        loss = model(**batch).loss
    own = INITIAL_SCALE * torch.einsum("rd,rcd->rc", contexts, choices)
    torch.testing.assert_close(loss, torch.nn.functional.cross_entropy(own, batch["labels"]), atol=1e-4, rtol=1e-4)


def test_rows_are_balanced_two_way_choices_and_the_overlap_rule_sits_at_chance(tiny_backbone):
    task = get_task(TASK)
    dev = task.rows("dev", "en")
    assert all(len(row["choices"]) == 2 and row["label"] in (0, 1) for row in dev)
    assert dev == task.rows("dev", "en")  # the order of the choices is seeded
    predicted = baseline_predictions(task, dev)
    assert set(predicted) == {"majority", "word overlap"}
    assert len(predicted["word overlap"]) == len(dev)


def test_a_row_is_cut_when_any_verse_is_longer(tiny_backbone):
    task = get_task(TASK)
    tokenizer = AutoTokenizer.from_pretrained(tiny_backbone.path)
    rows = task.rows("train", "en")
    lengths = [[len(tokenizer(text)["input_ids"]) for text in (row["context"], *row["choices"])] for row in rows]
    cap = max(max(row) for row in lengths) - 1  # cuts the longest rows only
    expected = sum(max(row) > cap for row in lengths) / len(rows)
    assert 0 < expected < 1
    assert truncation_rates(task, tokenizer, cap, ["en"], split="train") == {"en": pytest.approx(expected)}


@pytest.mark.parametrize("regime", ["lora", adapterhub("bottleneck")])
def test_intermediate_module_moves_retrieval_from_its_encoder(tmp_path, tiny_backbone, regime):
    out = tmp_path / "xref-bi"
    assert main(["train", f"task={TASK}", f"regime={regime}", f"backbone={tiny_backbone.path}", f"output_dir={out}",
                 "max_steps=4", "eval_every=4", "batch_size=4", "max_length=48", "precision=fp32", "lr=5e-2",
                 "probe_steps=5", "probe_examples=8"]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["kind"] == "bi_encoder" and manifest["phase"] == "intermediate"
    assert set(load_file(out / "head.safetensors")) == {"classifier.scale"}
    scored = {}
    for name, model in (("module", out), ("backbone", tiny_backbone.path)):
        assert main(["evaluate", "--model", str(model), "--task", "verses-retrieval", "--langs", "de", "--queries", "6",
                     "--candidates", "9", "--max-length", "48", "--precision", "fp32",
                     "--output", str(tmp_path / name)]) == 0
        assert json.loads((tmp_path / name / "scores.json").read_text())["de"]["candidates"] == 9
        scored[name] = [json.loads(line)["prediction"]
                        for line in (tmp_path / name / "predictions" / "test-de.jsonl").read_text().splitlines()]
    assert len(scored["module"]) == len(scored["backbone"]) == 6
    tokenizer = AutoTokenizer.from_pretrained(tiny_backbone.path)
    texts = [row["query"] for row in get_task("verses-retrieval").rows("test", "de")[:6]]
    trained, untuned = (embed(encoder.eval(), tokenizer, texts, -1, 48, 3, "fp32") for encoder in (
        get_regime(regime).load_encoder(out, get_task(TASK), tiny_backbone), encoder_model(tiny_backbone.path)))
    assert not torch.allclose(trained, untuned, atol=1e-4)  # retrieval reads the module, not the bare backbone
