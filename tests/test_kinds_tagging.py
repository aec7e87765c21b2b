"""The tagging kind on the tiny backbone: first-sub-word labels, long sentences in pieces, decoding, one short run.

``fit_and_score`` is shared with the QA and MLM kind tests.
"""

import math
import tempfile
from pathlib import Path

import numpy as np
import pytest
from transformers import AutoTokenizer

from adapterxfer import evaluate
from adapterxfer.config import RunConfig
from adapterxfer.data.features import featurized
from adapterxfer.kinds import KINDS, tagging
from adapterxfer.modeling import task_model
from adapterxfer.tasks.spec import TaskSpec
from adapterxfer.train import Run, Source, fit

TAGS = ("O", "B-PER", "I-PER", "B-LOC", "I-LOC")
ROWS = [
    {"tokens": ["Amira", "Haddad", "cycled", "to", "Valparaíso", "."],
     "tags": ["B-PER", "I-PER", "O", "O", "B-LOC", "O"]},
    {"tokens": ["The", "kettle", "whistled", "in", "Kraków", "Główny"],
     "tags": ["O", "O", "O", "O", "B-LOC", "I-LOC"]},
    {"tokens": ["Ngozi", "grows", "tomatoes"], "tags": ["B-PER", "O", "O"]},
    {"tokens": ["我们", "在", "北京", "散步", "。"], "tags": ["O", "O", "B-LOC", "O", "O"]},
]


def tagging_task(name: str = "test-tagging") -> TaskSpec:
    return TaskSpec(name=name, kind="tagging", role="target", description="invented NER rows", languages=("en",),
                    read=lambda split, lang, limit, seed: ROWS, metric="seqeval", labels=TAGS,
                    options={"labels": TAGS})


@pytest.fixture(scope="module")
def tokenizer(tiny_backbone):
    return AutoTokenizer.from_pretrained(tiny_backbone.path)


def featurize(rows, tokenizer, max_length=64):
    return tagging.featurize({"tokens": [r["tokens"] for r in rows], "tags": [r["tags"] for r in rows]},
                             tokenizer, max_length, {"labels": TAGS})


def perfect_logits(features) -> list[np.ndarray]:
    """What a model that knows the gold would output: a peak at each labelled token's tag."""
    outputs = []
    for labels in features["labels"]:
        logits = np.zeros((len(labels), len(TAGS)), dtype=np.float32)
        for position, tag in enumerate(labels):
            if tag != tagging.IGNORED:
                logits[position, tag] = 1.0
        outputs.append(logits)
    return outputs


def test_only_first_subwords_carry_labels(tokenizer):
    features = featurize(ROWS, tokenizer)
    assert len(features["input_ids"]) == len(ROWS)  # short rows: one feature each
    for row, input_ids, labels, word_ids in zip(ROWS, features["input_ids"], features["labels"], features["word_ids"]):
        pieces = tokenizer(row["tokens"], add_special_tokens=False)["input_ids"]
        assert len(input_ids) == sum(map(len, pieces)) + tokenizer.num_special_tokens_to_add()
        assert any(len(p) > 1 for p in pieces), "the rows must have words of several sub-words"
        labelled = [i for i, tag in enumerate(labels) if tag != tagging.IGNORED]
        assert len(labelled) == len(row["tokens"])
        first_subwords = np.cumsum([1] + [len(p) for p in pieces[:-1]])  # after <s>
        assert labelled == first_subwords.tolist()
        assert [TAGS[labels[i]] for i in labelled] == row["tags"]
        assert [word_ids[i] for i in labelled] == list(range(len(row["tokens"])))


def test_long_sentence_is_cut_at_words_and_loses_none(tokenizer):
    """As XTREME's preprocessing: pieces of at most max_length, every word predicted, back in one row."""
    long_row = {"tokens": ROWS[0]["tokens"] * 5, "tags": ROWS[0]["tags"] * 5}
    rows = [ROWS[2], long_row, ROWS[1]]
    features = featurize(rows, tokenizer, max_length=12)
    assert len(features["input_ids"]) > len(rows)
    assert all(len(ids) <= 12 for ids in features["input_ids"])
    assert sum(tag != tagging.IGNORED for labels in features["labels"] for tag in labels) == sum(
        len(row["tokens"]) for row in rows)
    assert tagging.decode(perfect_logits(features), features, rows, {"labels": TAGS}) == tagging.references(rows)


def test_word_longer_than_a_window_becomes_one_unknown_token(tokenizer):
    row = {"tokens": ["Go", "Llanfairpwllgwyngyllgogerychwyrndrobwllllantysiliogogogoch"], "tags": ["O", "B-LOC"]}
    features = featurize([row], tokenizer, max_length=6)
    assert tokenizer.unk_token_id in features["input_ids"][-1]
    assert tagging.decode(perfect_logits(features), features, [row], {"labels": TAGS}) == [row["tags"]]


def test_decode_gives_one_tag_per_word(tokenizer):
    features = featurize(ROWS, tokenizer, max_length=10)
    noise = [np.random.default_rng(i).normal(size=(len(ids), len(TAGS))) for i, ids in enumerate(features["input_ids"])]
    predictions = tagging.decode(noise, features, ROWS, {"labels": TAGS})
    assert [len(tags) for tags in predictions] == [len(row["tokens"]) for row in ROWS]
    assert all(tag in TAGS for tags in predictions for tag in tags)


def fit_and_score(task: TaskSpec, backbone, max_length: int = 32, steps: int = 3):
    """A few optimizer steps on the task's train rows, then its test score; also the key sets the model got."""
    tokenizer = AutoTokenizer.from_pretrained(backbone.path)
    kind = KINDS[task.kind]
    features, _, _ = featurized(task, "train", "en", tokenizer, max_length)
    model = task_model(task, backbone.path)
    collate, batch_keys = kind.collator(tokenizer), []

    def recording_collate(examples):
        batch = collate(examples)
        batch_keys.append(set(batch))
        return batch

    def dev_score(trained) -> float:
        scores, _ = evaluate.score_split(trained, tokenizer, task, "dev", "en", max_length, 8, "fp32")
        return next(iter(scores.values()))

    config = RunConfig(task=task.name, max_steps=steps, eval_every=steps, batch_size=4, lr=1e-3,
                       max_length=max_length, precision="fp32")
    source = Source(features, [kind.length(f) for f in features], recording_collate, list(map(str, range(len(features)))))
    log, _, _ = fit(model, [source], dev_score, config,
                    Run(Path(tempfile.mkdtemp()), {}, "fp32"))  # one evaluation at the last step: no checkpoint
    scores, predictions = evaluate.score_split(model, tokenizer, task, "test", "en", max_length, 8, "fp32")
    return log, scores, predictions, batch_keys


def test_short_training_run_scores_with_seqeval(tiny_backbone):
    log, scores, predictions, batch_keys = fit_and_score(tagging_task(), tiny_backbone)
    assert math.isfinite(log[-1]["train_loss"])
    assert all(keys == {"input_ids", "attention_mask", "labels"} for keys in batch_keys)
    assert list(scores)[0] == "f1" and all(0.0 <= value <= 1.0 for value in scores.values())
    assert [len(p["prediction"]) for p in predictions] == [len(row["tokens"]) for row in ROWS]
