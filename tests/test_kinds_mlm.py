"""The MLM kind on the tiny backbone: seeded masking, scoring at corrupted tokens, the tied decoder, one short run."""

import math

import numpy as np
import pytest
import torch
from transformers import AutoModelForMaskedLM, AutoTokenizer

from adapterxfer import evaluate
from adapterxfer.kinds import mlm
from adapterxfer.metrics import METRICS
from adapterxfer.tasks.spec import TaskSpec

from test_kinds_tagging import fit_and_score

TEXTS = ["The kettle whistled while we argued about the map.", "My neighbour grows tomatoes on her tiny balcony.",
         "我们争论地图的时候，水壶响了。", "كانت دراجة حمراء مستندة إلى جدار المكتبة."]
ROWS = [{"text": text} for text in TEXTS]


def mlm_task(**options) -> TaskSpec:
    return TaskSpec(name="test-mlm", kind="mlm", role="intermediate", description="invented text",
                    languages=("en",), read=lambda split, lang, limit, seed: ROWS, metric="mlm_accuracy",
                    options=options)


@pytest.fixture(scope="module")
def tokenizer(tiny_backbone):
    return AutoTokenizer.from_pretrained(tiny_backbone.path)


def examples(tokenizer, **options) -> list[dict]:
    features = mlm.featurize({"text": TEXTS}, tokenizer, 32, options)
    return [{key: values[i] for key, values in features.items()} for i in range(len(TEXTS))]


def test_fresh_collators_mask_alike_and_one_collator_masks_anew(tokenizer):
    """Evaluation builds a fresh collator per pass: same masks. Training keeps one: new masks each batch."""
    first, second = mlm.collator(tokenizer), mlm.collator(tokenizer)
    batch = first(examples(tokenizer))
    assert set(batch) == {"input_ids", "attention_mask", "labels"}
    assert torch.equal(batch["input_ids"], second(examples(tokenizer))["input_ids"])
    assert torch.equal(batch["labels"], mlm.collator(tokenizer)(examples(tokenizer))["labels"])
    assert not torch.equal(batch["labels"], first(examples(tokenizer))["labels"])


def test_masking_rate_comes_from_the_task_options(tokenizer):
    features = examples(tokenizer, mlm_probability=1.0)
    batch = mlm.collator(tokenizer)(features)
    for labels, feature in zip(batch["labels"], features):
        picked = (labels != -100).tolist()[:len(feature["input_ids"])]
        assert picked == [not special for special in feature["special_tokens_mask"]]  # every word token


def test_decode_scores_corrupted_positions_only():
    features = {"input_ids": [[0, 10, 11, 12, 2], [0, 20, 21, 2]]}
    seen = [np.array([0, 4, 11, 99, 2]), np.array([0, 20, 4, 2])]  # 4 = <mask>, 99 = a random replacement
    guessed = [np.array([5, 10, 7, 8, 5]), np.array([5, 20, 21, 5])]
    hits = mlm.decode(list(zip(seen, guessed)), features, [{}, {}], {})
    assert hits == [[1, 0], [1]]
    assert METRICS["mlm_accuracy"](hits, ["", ""], "en") == {"accuracy": pytest.approx(2 / 3)}


def test_decoder_is_tied_to_word_embeddings_when_the_backbone_has_no_mlm_head(tiny_backbone):
    """The tiny backbone, like me5-small, is a bare encoder: the LM head starts fresh, its decoder is the embeddings."""
    model, info = AutoModelForMaskedLM.from_pretrained(tiny_backbone.path, output_loading_info=True)
    assert any(key.startswith("lm_head.") for key in info["missing_keys"])
    assert model.config.tie_word_embeddings
    assert model.lm_head.decoder.weight is model.get_input_embeddings().weight


def test_short_training_run_scores_masked_token_accuracy_reproducibly(tiny_backbone):
    log, scores, predictions, batch_keys = fit_and_score(mlm_task(mlm_probability=0.3), tiny_backbone)
    assert math.isfinite(log[-1]["train_loss"])
    assert all(keys == {"input_ids", "attention_mask", "labels"} for keys in batch_keys)
    assert list(scores) == ["accuracy"] and 0.0 <= scores["accuracy"] <= 1.0
    assert sum(len(p["prediction"]) for p in predictions) > 0


def test_evaluation_masks_the_same_tokens_every_time(tiny_backbone, tokenizer):
    model = AutoModelForMaskedLM.from_pretrained(tiny_backbone.path)
    task = mlm_task()
    runs = [evaluate.score_split(model, tokenizer, task, "dev", "en", 32, 2, "fp32") for _ in range(2)]
    assert runs[0] == runs[1]
