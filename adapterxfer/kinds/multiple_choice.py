"""Multiple choice (HellaSwag-like). Rows: {"context", "choices": [str, ...], "label"}."""

from transformers import AutoModelForMultipleChoice, DataCollatorForMultipleChoice

from .common import argmax_labels, as_predicted, logits_rows, row_labels

AUTO_MODEL = AutoModelForMultipleChoice
COLUMNS = ("context", "choices", "label")
FIXED_HEAD = False
ONE_ANSWER, LABEL_PER_TEXT, POOLED = True, False, False


def text(row: dict) -> str:
    return " ".join((row["context"], *row["choices"]))


def featurize(batch: dict, tokenizer, max_length: int, options: dict) -> dict:
    """Encode every (context, choice) pair, then regroup them per example."""
    counts = [len(choices) for choices in batch["choices"]]
    firsts = [context for context, n in zip(batch["context"], counts) for _ in range(n)]
    seconds = [choice for choices in batch["choices"] for choice in choices]
    flat = tokenizer(firsts, seconds, truncation=True, max_length=max_length)
    starts = [sum(counts[:i]) for i in range(len(counts))]
    features = {key: [values[s:s + n] for s, n in zip(starts, counts)] for key, values in flat.items()}
    features["labels"] = batch["label"]
    return features


def collator(tokenizer):
    return DataCollatorForMultipleChoice(tokenizer)


def length(features: dict) -> int:
    return sum(len(ids) for ids in features["input_ids"])


outputs, decode, references = logits_rows, argmax_labels, row_labels
official_values = as_predicted  # choice indices (XCOPA)
