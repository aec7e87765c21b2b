"""Sequence classification, single sentence or pair. Rows: {"text", "label"[, "text_pair"]}."""

from transformers import AutoModelForSequenceClassification, DataCollatorWithPadding

from .common import argmax_labels, logits_rows, predicted_and_gold, row_labels

AUTO_MODEL = AutoModelForSequenceClassification
COLUMNS = ("text", "label")
FIXED_HEAD = False
ONE_ANSWER, LABEL_PER_TEXT, POOLED = True, True, False


def text(row: dict) -> str:
    return " ".join(filter(None, (row["text"], row.get("text_pair"))))


def featurize(batch: dict, tokenizer, max_length: int, options: dict) -> dict:
    features = tokenizer(batch["text"], batch.get("text_pair"), truncation=True, max_length=max_length)
    features["labels"] = batch["label"]
    return features


def collator(tokenizer):
    return DataCollatorWithPadding(tokenizer)


def length(features: dict) -> int:
    return len(features["input_ids"])


outputs, decode, references = logits_rows, argmax_labels, row_labels


def official_values(task, lang: str, items: list[dict]) -> tuple[list, list]:
    """Label names (XNLI's "entailment", PAWS-X's "0"/"1"), predicted and gold."""
    predicted, gold = predicted_and_gold(items)
    return [task.labels[p] for p in predicted], [task.labels[g] for g in gold]
