"""The one evaluation loop: batched, length-sorted, no-grad prediction, and zero-shot scoring.

Batches are formed from length-sorted examples so padding stays small, run without gradients and
(optionally) under bf16 autocast, then put back in input order. ``torch.no_grad`` rather than
``torch.inference_mode``: under bf16 autocast on CPU, inference mode made AdapterFusion's attention
over adapters (a bmm) copy its inputs at every call, 13x slower for the whole model (torch 2.13).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable, Iterator

import torch
from tqdm.auto import tqdm

from .data.features import featurized
from .kinds import KINDS
from .metrics import METRICS
from .precision import autocast
from .tasks.spec import TaskSpec


def sorted_batches(lengths: list[int], batch_size: int) -> list[list[int]]:
    """Index batches of similar length (longest first, so memory peaks early)."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    return [order[start:start + batch_size] for start in range(0, len(order), batch_size)]


@torch.no_grad()  # not inference_mode: see the module docstring
def forward_batches(model, examples: list[dict], collate, batch_size: int, precision: str, lengths=None,
                    extra: dict | None = None, drop: tuple[str, ...] = (), **forward) -> Iterator:
    """The one batched inference loop: ``(example indices, batch, model output)`` for each batch.

    Batches are length-sorted when ``lengths`` are given (else in order), collated, moved to the
    model's device without the ``drop`` keys, run under the phase's autocast with ``extra`` and
    ``forward`` keyword arguments. Prediction, retrieval embeddings and the probe's cache all use it.
    """
    model.eval()
    device = next(model.parameters()).device
    groups = (sorted_batches(lengths, batch_size) if lengths is not None
              else [list(range(start, min(start + batch_size, len(examples))))
                    for start in range(0, len(examples), batch_size)])
    for ids in groups:
        batch = {k: v.to(device) for k, v in collate([dict(examples[i]) for i in ids]).items() if k not in drop}
        batch |= extra or {}
        with autocast(model, precision):
            yield ids, batch, model(**batch, **forward)


def predict(model, features, kind, tokenizer, batch_size: int, precision: str) -> list:
    """The kind's raw output for every example of ``features`` (a datasets.Dataset), in input order."""
    examples = features.to_list()
    outputs = [None] * len(examples)
    for ids, batch, output in forward_batches(model, examples, kind.collator(tokenizer), batch_size, precision,
                                              lengths=[kind.length(e) for e in examples], drop=("labels",)):
        for index, item in zip(ids, kind.outputs(output, batch)):
            outputs[index] = item
    return outputs


def score_split(model, tokenizer, task: TaskSpec, split: str, lang: str, max_length: int,
                batch_size: int, precision: str, seed: int = 0) -> tuple[dict, list[dict]]:
    """Score one split of one language: ({metric: value}, per-example predictions)."""
    features, rows, _ = featurized(task, split, lang, tokenizer, max_length, seed)
    return scored(task, lang, predict(model, features, KINDS[task.kind], tokenizer, batch_size, precision),
                  features, rows)


def scored(task: TaskSpec, lang: str, outputs: list, features, rows) -> tuple[dict, list[dict]]:
    """The kind's raw ``outputs`` of one language's ``features`` decoded and scored: (scores, predictions)."""
    kind = KINDS[task.kind]
    predictions = kind.decode(outputs, features, rows, task.options)
    gold = kind.references(rows)
    scores = METRICS[task.metric](predictions, gold, lang)
    return scores, [{"ref": row.get("ref"), "label": g, "prediction": p} for row, g, p in zip(rows, gold, predictions)]


@torch.no_grad()  # not inference_mode: see the module docstring
def score_runs(bank, tokenizer, task: TaskSpec, runs: list[tuple[str, str]], max_length: int, batch_size: int,
               precision: str) -> dict[tuple[str, str], tuple[dict, list[dict]]]:
    """Test-set scores of each (module, language) run of ``runs`` on a ``bank.ModuleBank``, all in one pass:
    K modules x L languages, or each language routed to its own module. Every run's examples go into
    length-sorted batches of ``batch_size`` together, each example through its run's module and head
    (``ModuleBank.forward_mixed``); a language is featurized once. Returns {run: (scores, predictions)},
    what ``score_split`` gives for that module alone."""
    kind, collate = KINDS[task.kind], KINDS[task.kind].collator(tokenizer)
    bank.check_mixable(dict.fromkeys(name for name, _ in runs))
    data = {lang: featurized(task, "test", lang, tokenizer, max_length, 0)
            for lang in dict.fromkeys(lang for _, lang in runs)}
    examples = {lang: features.to_list() for lang, (features, _, _) in data.items()}
    pairs = [(run, index) for run in runs for index in range(len(examples[run[1]]))]
    outputs = {run: [None] * len(examples[run[1]]) for run in runs}
    device = next(bank.model.parameters()).device
    for ids in sorted_batches([kind.length(examples[run[1]][index]) for run, index in pairs], batch_size):
        chosen = [pairs[i] for i in ids]
        batch = {key: value.to(device) for key, value in collate([dict(examples[lang][index])
                                                                   for (_, lang), index in chosen]).items()
                 if key != "labels"}
        with autocast(bank.model, precision):
            for positions, sub_batch, output in bank.forward_mixed(batch, [name for (name, _), _ in chosen]):
                for position, item in zip(positions, kind.outputs(output, sub_batch)):
                    run, index = chosen[position]
                    outputs[run][index] = item
    return {run: scored(task, run[1], outputs[run], *data[run[1]][:2]) for run in runs}


def zero_shot(model, tokenizer, task: TaskSpec, langs: list[str], max_length: int, batch_size: int, precision: str,
              before_lang: Callable[[str], None] | None = None) -> tuple[dict, dict]:
    """Test-set scores in every language: ({lang: {metric: value}}, {lang: predictions}).

    ``before_lang(lang)`` runs before each language is scored (madx: swap in its language adapter).
    """
    scores, predictions = {}, {}
    for lang in tqdm(langs, desc=f"zero-shot {task.name}", unit="lang"):
        if before_lang:
            before_lang(lang)
        scores[lang], predictions[lang] = score_split(model, tokenizer, task, "test", lang, max_length,
                                                      batch_size, precision)
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
