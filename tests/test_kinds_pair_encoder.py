"""The bi-encoder pair kind on the tiny backbone and the fixture corpus: its logit is the scaled cosine
of the two verses' embeddings as retrieval computes them, its head is two numbers, and an intermediate
trained in it is scored on verses-retrieval from its encoder."""

import json

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoTokenizer

from adapterxfer.cli import main
from adapterxfer.data.features import featurized, truncation_rates
from adapterxfer.kinds import KINDS
from adapterxfer.kinds.pair_encoder import INITIAL_OFFSET, INITIAL_SCALE
from adapterxfer.modeling import encoder_model, head_parameters, task_model
from adapterxfer.regimes import get_regime
from adapterxfer.retrieval import embed
from adapterxfer.tasks import get_task

TASK = "verses-xref-bi"


def test_logit_is_the_scaled_cosine_of_the_retrieval_embeddings(tiny_backbone):
    task = get_task(TASK)
    model = task_model(task, tiny_backbone.path).eval()
    assert {name: p.item() for name, p in head_parameters(model).items()} == pytest.approx(
        {"classifier.scale": INITIAL_SCALE, "classifier.offset": INITIAL_OFFSET})
    tokenizer = AutoTokenizer.from_pretrained(tiny_backbone.path)
    features, rows, _ = featurized(task, "dev", "en", tokenizer, 48)
    batch = KINDS[task.kind].collator(tokenizer)([features[i] for i in range(4)])
    assert batch["input_ids"].shape[:2] == (4, 2)
    with torch.no_grad():
        logits = model(**batch).logits
    encoder = encoder_model(tiny_backbone.path).eval()
    first, second = (embed(encoder, tokenizer, [row[side] for row in rows[:4]], -1, 48, 3, "fp32")
                     for side in ("text", "text_pair"))
    expected = INITIAL_SCALE * ((first * second).sum(-1) - INITIAL_OFFSET)
    torch.testing.assert_close(logits, torch.stack([torch.zeros(4), expected], -1), atol=1e-4, rtol=1e-4)


def test_a_pair_is_cut_when_either_verse_is_longer(tiny_backbone):
    task = get_task(TASK)
    tokenizer = AutoTokenizer.from_pretrained(tiny_backbone.path)
    rows = task.rows("dev", "en")
    lengths = [[len(tokenizer(row[side])["input_ids"]) for side in ("text", "text_pair")] for row in rows]
    cap = max(max(pair) for pair in lengths) - 1  # cuts the longest pairs only
    expected = sum(max(pair) > cap for pair in lengths) / len(rows)
    assert 0 < expected < 1
    assert truncation_rates(task, tokenizer, cap, ["en"], split="dev") == {"en": pytest.approx(expected)}


@pytest.mark.parametrize("regime", ["lora", "bottleneck"])
def test_intermediate_module_moves_retrieval_from_its_encoder(tmp_path, tiny_backbone, regime):
    out = tmp_path / "xref-bi"
    assert main(["train", f"task={TASK}", f"regime={regime}", f"backbone={tiny_backbone.path}", f"output_dir={out}",
                 "max_steps=4", "eval_every=4", "batch_size=4", "max_length=48", "precision=fp32", "lr=5e-2",
                 "probe_steps=5", "probe_examples=8"]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["kind"] == "pair_encoder" and manifest["phase"] == "intermediate"
    assert set(load_file(out / "head.safetensors")) == {"classifier.scale", "classifier.offset"}
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
