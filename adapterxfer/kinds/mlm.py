"""Masked-LM on plain text (the multilingual-MLM intermediate task, MAD-X language adapters). Rows: {"text"}.

Masking is BERT's, by transformers' DataCollatorForLanguageModeling: ``options["mlm_probability"]``
(default 0.15) of the non-special tokens are picked, and of those 80% become <mask>, 10% a random
token, 10% stay. The draws come from the collator's own generator, seeded with MASK_SEED:
training masks change at every batch (dynamic masking) yet repeat from run to run, and since
evaluation builds a fresh collator for each pass, every evaluation of the same features with the
same eval batch size (which fix the batches) masks the same tokens.

The score is the accuracy at the corrupted positions: ``outputs`` keeps the input the model saw and
its argmax, ``decode`` compares the argmax with the original token wherever the input was changed
(the picked tokens left unchanged cannot be told apart there and are not scored). A row's
prediction is its list of hits (1 right, 0 wrong); the metric pools them over all rows.
"""

from transformers import AutoModelForMaskedLM, DataCollatorForLanguageModeling

from .common import dropping, unpadded

AUTO_MODEL = AutoModelForMaskedLM
COLUMNS = ("text",)
FIXED_HEAD = False  # a backbone without an LM head (me5) gets a seeded one
MASK_SEED = 1234
RATE = "mlm_probability"  # the task's masking rate, carried in every feature: the collator sees only features
ONE_ANSWER, LABEL_PER_TEXT, POOLED = False, False, False


def featurize(batch: dict, tokenizer, max_length: int, options: dict) -> dict:
    features = tokenizer(batch["text"], truncation=True, max_length=max_length, return_special_tokens_mask=True)
    features[RATE] = [options.get(RATE, 0.15)] * len(batch["text"])
    return features


def collator(tokenizer):
    masker = DataCollatorForLanguageModeling(tokenizer, seed=MASK_SEED)
    without_rate = dropping((RATE,), masker)

    def collate(examples: list[dict]):
        masker.mlm_probability = examples[0][RATE]
        return without_rate(examples)
    return collate


def length(features: dict) -> int:
    return len(features["input_ids"])


def outputs(model_output, batch) -> list:
    mask = batch["attention_mask"]
    return list(zip(unpadded(batch["input_ids"], mask), unpadded(model_output.logits.argmax(-1), mask)))


def decode(outputs, features, rows, options) -> list[list[int]]:
    return [[int(guess == original) for shown, guess, original in zip(seen, guessed, input_ids) if shown != original]
            for (seen, guessed), input_ids in zip(outputs, features["input_ids"])]


def references(rows) -> list[str]:
    return [row["text"] for row in rows]


def text(row: dict) -> str:
    return row["text"]
