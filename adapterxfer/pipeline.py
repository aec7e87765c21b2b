"""A phase end to end (validate, featurize, train, save, score) and model evaluation.

These are the library entry points the CLI and the demo call.
"""

from __future__ import annotations

import dataclasses
import json
import resource
import time
from pathlib import Path

import torch
from transformers import AutoTokenizer, set_seed

from . import artifacts, backbones, evaluate, retrieval, scoring
from .cache import atomic_dir
from .config import RunConfig
from .data.features import featurized
from .errors import UserError
from .kinds import KINDS
from .modeling import (MultiTaskModel, encoder_model, resolve_pooling, set_pooling, share_encoder, task_model,
                       trainable_parameters)
from .regimes import REGIMES, get_regime
from .regimes.common import Parent, save_head
from .tasks import get_task
from .tasks.spec import distinct_items
from .train import Source, fit

DEFAULT_BACKBONE = "me5-small"


def train_phase(config: RunConfig) -> Path:
    """Train one phase (intermediate, or target when ``init_from`` names phase-2 outputs).

    ``task=a+b`` trains intermediate tasks together: one shared module (or encoder), one head
    each. Target tasks are then scored zero-shot on the test set of every evaluation language.
    The output folder appears only when everything succeeded.
    """
    tasks = _phase_tasks(config.task)
    regime = get_regime(config.regime)
    train_lang = _train_language(tasks[0], config)
    langs = tasks[0].check_langs(config.eval_langs)
    out = config.resolved_output_dir()
    if out.exists() and not config.overwrite:
        raise UserError(f"output_dir {out} already exists; pass overwrite=true or another output_dir")
    parents = [Parent(Path(folder), artifacts.read_manifest(folder)) for folder in config.init_from]
    backbone = backbones.resolve(config.backbone or (parents[0].manifest["backbone"]["name"] if parents
                                                     else DEFAULT_BACKBONE))
    for parent in parents:
        _check_backbone(parent.folder, parent.manifest, backbone)

    _reset_peak_rss()
    set_seed(config.seed)
    tokenizer = AutoTokenizer.from_pretrained(backbone.path)
    lengths = {task.name: config.max_length or task.max_length for task in tasks}
    models = _task_models(regime, tasks, backbone, parents, config)
    for built in models.values():
        set_pooling(built, resolve_pooling(config.pooling, backbone.path))
    sources, fingerprints, train_items = [], [], {}
    for task in tasks:
        features, rows, fingerprint = featurized(task, "train", train_lang, tokenizer, lengths[task.name],
                                                 config.seed)
        train_items[task.name] = distinct_items(rows)
        kind = KINDS[task.kind]
        sources.append(Source(features, [kind.length({"input_ids": ids}) for ids in features["input_ids"]],
                              kind.collator(tokenizer), task.name if len(tasks) > 1 else None))
        fingerprints.append(fingerprint)
    model = (MultiTaskModel(models) if len(tasks) > 1 else models[tasks[0].name]).to(_device())
    trainable = trainable_parameters(model)  # before evaluation, which may load more modules (madx)

    def dev_score(trained) -> float:
        """The mean over tasks of each metric's first value on the English dev set."""
        values = []
        for task in tasks:
            sub = trained.models[task.name] if len(tasks) > 1 else trained
            scores, _ = evaluate.score_split(sub, tokenizer, task, "dev", train_lang, lengths[task.name],
                                             config.eval_batch_size, config.bf16)
            values.append(next(iter(scores.values())))
        return sum(values) / len(values)

    started = time.perf_counter()
    log = fit(model, sources, dev_score, config)
    train_seconds = time.perf_counter() - started

    with atomic_dir(out) as tmp:
        first = models[tasks[0].name]
        regime.save(first, tokenizer, tmp)
        for task in tasks[1:]:
            (tmp / "heads" / task.name).mkdir(parents=True)
            save_head(models[task.name], tmp / "heads" / task.name)
        (tmp / "train_log.jsonl").write_text("".join(json.dumps(entry) + "\n" for entry in log))
        if tasks[0].role == "target":
            scores, predictions = evaluate.zero_shot(first, tokenizer, tasks[0], langs, lengths[tasks[0].name],
                                                     config.eval_batch_size, config.bf16,
                                                     _language_switch(regime, first, tasks[0],
                                                                      config.lang_adapter_at_test))
            evaluate.write_scores(tmp, scores, predictions)
        artifacts.write_manifest(tmp, {
            "regime": config.regime, "module_kind": regime.module_kind(tasks[0], config), "task": config.task,
            "language": train_lang,
            "tasks": [task.name for task in tasks], "kind": tasks[0].kind,
            "phase": "target" if parents or tasks[0].role == "target" else "intermediate",
            "transfer": config.transfer if parents else None,
            "zero_shot": not _contaminated(tasks[0], parents),
            "backbone": {"name": backbone.name, "weight_hash": backbone.weight_hash},
            "parents": [{"path": str(p.folder), "task": p.manifest["task"], "regime": p.manifest["regime"],
                         "manifest_sha256": artifacts.sha256_file(p.folder / artifacts.MANIFEST)}
                        for p in parents],
            "config": vars(config), "data_fingerprint": "+".join(fingerprints),
            "trainable_parameters": trainable, "pooling": resolve_pooling(config.pooling, backbone.path),
            "train_items": train_items,
            "dev": {"metric": "+".join(task.metric for task in tasks),
                    "best": next(e["dev_score"] for e in log if e.get("selected")),
                    "log": log},
            "train_seconds": round(train_seconds, 1), "peak_rss_mb": _peak_rss_mb(),
        })
    return out


def _train_language(task, config: RunConfig) -> str:
    """English for labelled data (zero-shot transfer); ``language=`` picks the text of an mlm phase."""
    if config.language is None:
        return task.source_lang
    if task.kind != "mlm":
        raise UserError(f"language={config.language}: only plain-text (mlm) phases train on another language; "
                        f"task {task.name} trains on labelled {task.train_lang} data (zero-shot transfer)")
    return task.resolve_lang(config.language)


def _language_switch(regime, model, task, at_test: str):
    """The regime's hook to call before scoring each test language (madx swaps language adapters)."""
    if not hasattr(regime, "use_language"):
        return None
    return lambda lang: regime.use_language(model, task.resolve_lang(lang), at_test)


def _contaminated(target, parents: list[Parent]) -> bool:
    """True when an intermediate task trained on the target's own data (XNLI translate-train)."""
    return any(target.name in get_task(name).contaminates
               for parent in parents for name in parent.manifest.get("tasks", [parent.manifest["task"]]))


def _phase_tasks(name: str) -> list:
    """``a`` or ``a+b+...``: several tasks train together only as intermediate tasks."""
    tasks = [get_task(part) for part in name.split("+")]
    for task in tasks:
        if not task.trainable:
            raise UserError(f"task {task.name} has no training data; score it with `adapterxfer evaluate`")
        if len(tasks) > 1 and task.role != "intermediate":
            raise UserError(f"task={name}: multi-task training is for intermediate tasks; {task.name} is a target")
    if len({task.name for task in tasks}) != len(tasks):
        raise UserError(f"task={name} names a task twice")
    return tasks


def _task_models(regime, tasks, backbone, parents, config) -> dict:
    """The first task's model from the regime; every other task's head on that same encoder."""
    first = regime.build(tasks[0], backbone, parents, config)
    if len(tasks) > 1 and not regime.MULTITASK:
        raise UserError(f"multi-task training (task={config.task}) is not available in regime {config.regime} "
                        f"(available in: {', '.join(name for name, r in REGIMES.items() if r.MULTITASK)})")
    models = {tasks[0].name: first}
    for task in tasks[1:]:
        models[task.name] = task_model(task, backbone.path)
        share_encoder(first, models[task.name])
    return models


def evaluate_model(model_path: str, task_name: str, langs: list[str], output: Path, layer: int = -1,
                   max_length: int | None = None, batch_size: int = 32, precision: str = "auto",
                   xtreme_format: bool = False, lang_adapter_at_test: str | None = None,
                   retrieval_scoring: str | None = None) -> dict:
    """Score a backbone or a trained output on a task's test sets; write scores.json and predictions.

    Evaluation-only kinds (retrieval, mining, ranking) read a hidden layer of any encoder. With
    ``xtreme_format``, predictions and gold are also written in the official XTREME layout (xtreme/
    and xtreme-gold/, see ``scoring.write_official``), for ``adapterxfer score``. A madx model uses each
    test language's adapter unless ``lang_adapter_at_test`` (default: as trained) is "source".
    ``retrieval_scoring`` overrides a retrieval task's scoring (see ``retrieval.SCORINGS``).
    """
    task = get_task(task_name)
    if retrieval_scoring:
        if task.kind != "retrieval":
            raise UserError(f"--scoring applies to retrieval tasks; {task.name} is {task.kind}")
        retrieval.scoring(retrieval_scoring)
        task = dataclasses.replace(task, options=task.options | {"scoring": retrieval_scoring})
    langs = task.check_langs(langs)
    max_length = max_length or task.max_length
    bf16 = RunConfig(task=task_name, precision=precision).bf16
    if artifacts.is_artifact(model_path):
        manifest = artifacts.read_manifest(model_path)
        regime, folder = get_regime(manifest["regime"]), Path(model_path)
        backbone = backbones.resolve(manifest["backbone"]["name"])
        _check_backbone(folder, manifest, backbone)
    else:
        manifest, backbone = None, backbones.resolve(model_path)
    tokenizer = AutoTokenizer.from_pretrained(backbone.path)
    if not task.trainable:
        trained_on = get_task(manifest["tasks"][0]) if manifest else None
        model = (regime.load_encoder(folder, trained_on, backbone) if manifest
                 else encoder_model(backbone.path)).to(_device())
        _check_layer(layer, model.config.num_hidden_layers)
        scores, predictions = retrieval.EVALUATORS[task.kind](model, tokenizer, task, langs, layer, max_length,
                                                              batch_size, bf16)
    else:
        if manifest is None:
            raise UserError(f"task {task.name} needs a model trained on it (an output folder of "
                            f"`adapterxfer train task={task.name}`), not the bare backbone {model_path!r}")
        if manifest["task"] != task.name:
            raise UserError(f"{model_path} was trained on task {manifest['task']!r}, not {task.name!r}")
        model = regime.load(folder, task, backbone).to(_device())
        set_pooling(model, manifest.get("pooling", "cls"))
        at_test = lang_adapter_at_test or manifest["config"].get("lang_adapter_at_test", "target")
        scores, predictions = evaluate.zero_shot(model, tokenizer, task, langs, max_length, batch_size, bf16,
                                                 _language_switch(regime, model, task, at_test))
    with atomic_dir(Path(output)) as tmp:
        evaluate.write_scores(tmp, scores, predictions)
        if xtreme_format:
            scoring.write_official(tmp, task, predictions)
    return scores


def _check_backbone(folder: Path, manifest: dict, backbone) -> None:
    if manifest["backbone"]["weight_hash"] != backbone.weight_hash:
        raise UserError(f"{folder} was trained on backbone {manifest['backbone']['name']!r}, not on "
                        f"{backbone.name!r} (weight hashes differ)")


def _check_layer(layer: int, num_layers: int) -> None:
    if not -(num_layers + 1) <= layer <= num_layers:
        raise UserError(f"layer {layer} out of range: the encoder has hidden states 0..{num_layers} (or -1 = last)")


def _device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _reset_peak_rss() -> None:
    """Linux: writing 5 to clear_refs resets the peak RSS, so each phase reports its own peak."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass  # elsewhere the peak covers the whole process


def _peak_rss_mb() -> float:
    try:
        status = Path("/proc/self/status").read_text()
        return round(int(status.split("VmHWM:")[1].split()[0]) / 1024, 1)
    except (OSError, IndexError):
        return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
