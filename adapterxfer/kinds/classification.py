"""Sequence classification, single sentence or pair. Rows: {"text", "label"[, "text_pair"]}."""

from transformers import AutoModelForSequenceClassification, DataCollatorWithPadding

AUTO_MODEL = AutoModelForSequenceClassification
COLUMNS = ("text", "label")


def featurize(batch: dict, tokenizer, max_length: int) -> dict:
    features = tokenizer(batch["text"], batch.get("text_pair"), truncation=True, max_length=max_length)
    features["labels"] = batch["label"]
    return features


def collator(tokenizer):
    return DataCollatorWithPadding(tokenizer)


def length(features: dict) -> int:
    return len(features["input_ids"])
