"""The one evaluation loop: batched, length-sorted, no-grad prediction, and zero-shot scoring.

Batches are formed from length-sorted examples so padding stays small, run under
``torch.inference_mode`` and (optionally) bf16 autocast, then put back in input order.
"""

from __future__ import annotations

import json
from contextlib import nullcontext
from pathlib import Path

import torch
from tqdm.auto import tqdm

from .data.features import featurized
from .kinds import KINDS
from .metrics import METRICS
from .tasks.spec import TaskSpec


def autocast(model: torch.nn.Module, bf16: bool):
    device = next(model.parameters()).device.type
    return torch.autocast(device_type=device, dtype=torch.bfloat16) if bf16 else nullcontext()


def sorted_batches(lengths: list[int], batch_size: int) -> list[list[int]]:
    """Index batches of similar length (longest first, so memory peaks early)."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    return [order[start:start + batch_size] for start in range(0, len(order), batch_size)]


@torch.inference_mode()
def predict(model, features, kind, tokenizer, batch_size: int, bf16: bool) -> list:
    """The kind's raw output for every example of ``features`` (a datasets.Dataset), in input order."""
    collate = kind.collator(tokenizer)
    examples = features.to_list()
    outputs = [None] * len(examples)
    model.eval()
    device = next(model.parameters()).device
    for batch_ids in sorted_batches([kind.length(e) for e in examples], batch_size):
        batch = {k: v.to(device) for k, v in collate([dict(examples[i]) for i in batch_ids]).items()
                 if k != "labels"}
        with autocast(model, bf16):
            output = model(**batch)
        for index, item in zip(batch_ids, kind.outputs(output, batch)):
            outputs[index] = item
    return outputs


def score_split(model, tokenizer, task: TaskSpec, split: str, lang: str, max_length: int,
                batch_size: int, bf16: bool, seed: int = 0) -> tuple[dict, list[dict]]:
    """Score one split of one language: ({metric: value}, per-example predictions)."""
    kind = KINDS[task.kind]
    features, rows, _ = featurized(task, split, lang, tokenizer, max_length, seed)
    outputs = predict(model, features, kind, tokenizer, batch_size, bf16)
    predictions = kind.decode(outputs, features, rows, task.options)
    gold = kind.references(rows)
    scores = METRICS[task.metric](predictions, gold, lang)
    return scores, [{"ref": row.get("ref"), "label": g, "prediction": p} for row, g, p in zip(rows, gold, predictions)]


def zero_shot(model, tokenizer, task: TaskSpec, langs: list[str], max_length: int,
              batch_size: int, bf16: bool) -> tuple[dict, dict]:
    """Test-set scores in every language: ({lang: {metric: value}}, {lang: predictions})."""
    scores, predictions = {}, {}
    for lang in tqdm(langs, desc=f"zero-shot {task.name}", unit="lang"):
        scores[lang], predictions[lang] = score_split(model, tokenizer, task, "test", lang, max_length,
                                                      batch_size, bf16)
    return scores, predictions


@torch.inference_mode()
def embed(encoder, tokenizer, texts: list[str], layer: int, max_length: int, batch_size: int,
          bf16: bool) -> torch.Tensor:
    """L2-normalised mean-pooled hidden states of ``layer`` (an index into hidden_states; -1 = last)."""
    encoder.eval()
    device = next(encoder.parameters()).device
    encoded = tokenizer(texts, truncation=True, max_length=max_length)
    lengths = [len(ids) for ids in encoded["input_ids"]]
    out = torch.empty(len(texts), encoder.config.hidden_size)
    for batch_ids in sorted_batches(lengths, batch_size):
        batch = tokenizer.pad({"input_ids": [encoded["input_ids"][i] for i in batch_ids]}, return_tensors="pt")
        batch = {k: v.to(device) for k, v in batch.items()}
        with autocast(encoder, bf16):
            hidden = encoder(**batch, output_hidden_states=True).hidden_states[layer].float()
        mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(1) / mask.sum(1)
        out[batch_ids] = torch.nn.functional.normalize(pooled, dim=-1).cpu()
    return out


def retrieval(encoder, tokenizer, task: TaskSpec, langs: list[str], layer: int, max_length: int,
              batch_size: int, bf16: bool) -> tuple[dict, dict]:
    """Tatoeba-style accuracy@1 per language: each query's nearest target must be its own translation."""
    scores, predictions, target_cache = {}, {}, {}
    for lang in tqdm(langs, desc=f"{task.name} layer {layer}", unit="lang"):
        rows = task.rows("test", lang)
        targets = tuple(row["target"] for row in rows)
        if targets not in target_cache:  # the English side is the same verses for every language
            target_cache[targets] = embed(encoder, tokenizer, list(targets), layer, max_length, batch_size, bf16)
        queries = embed(encoder, tokenizer, [row["query"] for row in rows], layer, max_length, batch_size, bf16)
        nearest = (queries @ target_cache[targets].T).argmax(-1).tolist()
        gold = list(range(len(rows)))
        scores[lang] = METRICS[task.metric](nearest, gold, lang)
        predictions[lang] = [{"ref": row.get("ref"), "label": g, "prediction": p}
                             for row, g, p in zip(rows, gold, nearest)]
    return scores, predictions


def write_scores(folder: Path, scores: dict, predictions: dict) -> None:
    """``scores.json`` as {lang: {metric: value}} and one predictions file per language."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "scores.json").write_text(json.dumps(scores, indent=2) + "\n")
    pred_dir = folder / "predictions"
    pred_dir.mkdir(exist_ok=True)
    for lang, rows in predictions.items():
        with open(pred_dir / f"test-{lang}.jsonl", "w") as handle:
            handle.writelines(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
