"""A phase in four stages, each with its own result, and model evaluation.

``train_phase`` runs them in order:

1. **validate** everything before training: config, tasks, languages, ``init_from``, the backbone,
   the regime's transfer, and that the test data of every evaluation language can be read;
2. **train**, resumable: checkpoints go to the output's working folder (``.NAME.work/``), and the
   same command run again continues from the newest one (``resume=false`` starts over);
3. **save** the artifact atomically and verify it at once;
4. **evaluate** zero-shot into the artifact folder (``scores.json``, ``predictions/``). If this fails,
   the artifact stays, and ``adapterxfer evaluate`` (or the same train command) scores it again.

One process writes: under ``accelerate launch`` the main process holds the output's lock, removes what
a killed run left there, saves and evaluates; the others train alongside and stop after the save.
These are the library entry points the CLI and the study runner call.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import resource
import shutil
import tempfile
import time
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
from accelerate import PartialState
from transformers import set_seed

from . import artifacts, backbones, evaluate, items, retrieval, scoring, shares, sharing
from .bank import ModuleBank, mixing_refusal
from .cache import atomic_dir, remove_leftovers, work_folder
from .config import SCORING, RunConfig, identity_change, phase_identity
from .data.features import featurized, split_rows
from .locks import holding
from .errors import UserError, unknown
from .frozen import cached_bottom, check_count, freeze_bottom
from .kinds import KINDS
from .precision import cpu_threads, resolve as resolve_precision
from .modeling import (MultiTaskModel, encoder_model, resolve_pooling, set_pooling, share_encoder, task_model,
                       trainable_parameters)
from .regimes import all_regimes, at_test_keys, get_regime
from .regimes.common import Parent, save_head
from .tasks import get_task
from .train import Run, Source, fit, scored_on_main
from .transfers import get_transfer



@dataclass
class ValidatedPhase:
    """Stage 1's result: everything known about a phase before any training (a study's unit of work is
    ``study.phases.Phase``)."""

    config: RunConfig
    tasks: list
    regime: object
    train_lang: str
    langs: list[str]
    out: Path
    parents: list[Parent]
    backbone: backbones.Backbone
    lengths: dict[str, int]
    precision: str
    pooling: str  # what a classification head reads: cls or mean
    input_hashes: list[str]  # sha256 of each input's manifest: the parents', then the path keys' (Regime.input_refs)
    finished: bool = False  # the output already holds this very phase, trained

    @property
    def work(self) -> Path:
        return work_folder(self.out)

    @property
    def identity(self) -> dict:
        return phase_identity(vars(self.config), self.backbone.weight_hash, self.input_hashes)

    @property
    def is_target(self) -> bool:
        return self.tasks[0].role == "target"


def train_phase(config: RunConfig, score: bool = True) -> Path:
    """Validate, train (resumably), save and evaluate one phase; returns the output folder.

    ``task=a+b`` trains intermediate tasks together: one shared module (or encoder), one head
    each. Target tasks are then scored zero-shot on the test set of every evaluation language
    (``score=False``: not yet; a study scores several together, ``evaluate_together``).
    A finished output of the same training identity is not trained again (only evaluated, if its
    evaluation is missing); one of another configuration needs ``overwrite=true``.
    """
    phase = validate(config)
    state = processes()
    with output_lock(phase.out, state.is_main_process), cpu_threads(phase.backbone.path):
        if state.is_main_process:
            remove_leftovers(phase.out, keep_work=config.resume)
        state.wait_for_everyone()
        phase.finished = _finished(phase)  # under the lock: no other run can replace the output meanwhile
        if phase.finished and state.is_main_process and not config.keep_checkpoints:
            shutil.rmtree(phase.work, ignore_errors=True)  # a run killed between its save and this removal
        trained = None if phase.finished else train(phase)
        if trained:
            save(phase, trained)
        if score and state.is_main_process and phase.is_target and not _scored(phase):
            # the model just trained is scored as it is in memory; a finished output is loaded from its folder
            evaluate_phase(phase, trained)
        state.wait_for_everyone()
    return phase.out


def validate(config: RunConfig) -> ValidatedPhase:
    """Stage 1: check every input before anything trains; a problem is a one-line UserError."""
    scored = shares.share(config.test_share, config.held_out, config.held_out_by)
    tasks = [task.capped(config.rows_per_split).held(scored) for task in _phase_tasks(config.task)]
    regime = get_regime(config.regime)
    train_lang = _train_language(tasks[0], config)
    langs = tasks[0].check_langs(config.eval_langs)
    parents = [Parent(folder, artifacts.read_manifest(folder)) for folder in map(sharing.resolve, config.init_from)]
    get_transfer(config.transfer).check(regime, len(parents))
    _check_stages(tasks[0], parents)
    if config.backbone in backbones.EMBEDDED:  # a mismatch named before a backbone is built for nothing
        for parent in parents:
            trained_on = parent.manifest["backbone"]["name"]
            if trained_on in backbones.EMBEDDED and trained_on != config.backbone:
                raise UserError(f"init_from {parent.folder} was trained on backbone {trained_on!r}, not "
                                f"{config.backbone!r}: leave backbone= out (or pass backbone={trained_on})")
    backbone = backbones.resolve(config.backbone or (parents[0].manifest["backbone"]["name"] if parents
                                                     else backbones.default_name()))
    for parent in parents:
        _check_backbone(parent.folder, parent.manifest, backbone)
    check_count(config.frozen_layers, backbone.layers)
    lengths = {task.name: backbones.check_length(config.max_length, task, backbone) for task in tasks}
    regime.check(tasks[0], config, parents, backbone)
    if len(tasks) > 1 and not regime.multitask:
        raise UserError(f"multi-task training (task={config.task}) is not available in regime {config.regime} "
                        f"(available in: {', '.join(r.name for r in all_regimes() if r.multitask)})")
    inputs = [p.folder for p in parents] + [sharing.resolve(ref) for ref in regime.input_refs(config)]
    if tasks[0].role == "target":
        for lang in langs:  # unreadable test data fails now, not after hours of training
            tasks[0].rows("test", lang)
    return ValidatedPhase(config, tasks, regime, train_lang, langs, config.resolved_output_dir(), parents,
                          backbone, lengths, resolve_precision(config.precision, processes().device),
                          resolve_pooling(config.pooling, backbone.path),
                          [_manifest_sha256(folder) for folder in inputs])


@dataclass
class Trained:
    """Stage 2's result: the trained models (task -> model sharing one module) and what the manifest
    records of their training."""

    models: dict
    tokenizer: object
    log: list[dict]  # train.fit's: one entry per evaluation
    dev_predictions: dict[str, dict[str, list[dict]]]  # step0 | final -> task -> per-item dev predictions
    dev_step0: float  # the English dev score before training
    data_fingerprint: str
    drawn: dict[str, tuple[list, list, list]]  # task -> its training examples' items, languages and tokens
    trainable_parameters: int
    train_seconds: float
    resumed_from_step: int | None
    processes: int
    peak_rss_mb: float


def train(phase: ValidatedPhase) -> Trained:
    """Stage 2: build the models, featurize, and run the loop (resuming from a checkpoint if any); a transfer
    that trains nothing only composes (``_composed``)."""
    config, tasks = phase.config, phase.tasks
    _reset_peak_rss()
    set_seed(config.seed)
    if not get_transfer(config.transfer).trains:
        return _composed(phase)
    tokenizer = backbones.load_tokenizer(phase.backbone.path)
    models = _task_models(phase.regime, tasks, phase.backbone, phase.parents, config)
    for built in models.values():
        set_pooling(built, phase.pooling)
    sources, fingerprints, languages = [], [], []
    for task in tasks:
        with processes().main_process_first():  # one process writes the feature cache
            features, rows, fingerprint = featurized(task, "train", phase.train_lang, tokenizer,
                                                     phase.lengths[task.name], config.seed, with_rows=True)
        features, row_of = split_rows(features)
        kind = KINDS[task.kind]
        sources.append(Source(features, [kind.length({"input_ids": ids}) for ids in features["input_ids"]],
                              kind.collator(tokenizer), [items.row_ref(rows[r], r) for r in row_of],
                              task.name if len(tasks) > 1 else None))
        languages.append([task.language_of(rows[r].get("lang", phase.train_lang)) for r in row_of])
        fingerprints.append(fingerprint)
    model = (MultiTaskModel(models) if len(tasks) > 1 else models[tasks[0].name]).to(processes().device)
    trainable = trainable_parameters(model)  # before evaluation, which may load more modules (MAD-X)

    latest: dict[str, list[dict]] = {}  # task -> the per-item dev predictions of the latest evaluation

    @scored_on_main
    def dev_score(trained) -> float:
        """The mean over tasks of each task's dev metric on the English dev set (all in [0, 1])."""
        values = []
        for task in tasks:
            sub = trained.models[task.name] if len(tasks) > 1 else trained
            scores, latest[task.name] = evaluate.score_split(sub, tokenizer, task, "dev", phase.train_lang,
                                                             phase.lengths[task.name], config.eval_batch_size,
                                                             phase.precision)
            values.append(scores[task.dev_metric])
        return sum(values) / len(values)

    run = Run(phase.work, phase.identity, phase.precision,
              tracker_dir=None if config.report_to == "none" else phase.out.with_name(phase.out.name + "-logs"))
    with cached_bottom(model, config.frozen_layers):
        # the model before training: what "learned" is measured against
        step0, step0_rows = _step0(phase, lambda: (dev_score(model), dict(latest)))
        started = time.perf_counter()
        log, resumed_from, consumed = fit(model, sources, dev_score, config, run)
    drawn = {task.name: ([source.items[i] for i in taken], [langs[i] for i in taken],
                         [source.lengths[i] for i in taken])
             for task, source, langs, taken in zip(tasks, sources, languages, consumed)}
    # The loop's last evaluation (at its last step) is "final": a rule, not the best of its evaluations.
    return Trained(models, tokenizer, log, {"step0": step0_rows, "final": dict(latest)}, step0,
                   "+".join(fingerprints), drawn, trainable,
                   round(log[-1]["seconds"] if resumed_from else time.perf_counter() - started, 1),
                   resumed_from, processes().num_processes, _peak_rss_mb())


def _composed(phase: ValidatedPhase) -> Trained:
    """Stage 2 of a transfer that trains nothing (arithmetic): the regime composes the parents' modules, and the
    English dev score of the composition is the log's one entry, at step 0, the weights kept."""
    config, task = phase.config, phase.tasks[0]
    started = time.perf_counter()
    tokenizer = backbones.load_tokenizer(phase.backbone.path)
    model = phase.regime.build(task, phase.backbone, phase.parents, config).to(processes().device)
    set_pooling(model, phase.pooling)
    scores, rows = evaluate.score_split(model, tokenizer, task, "dev", phase.train_lang, phase.lengths[task.name],
                                        config.eval_batch_size, phase.precision)
    score = scores[task.dev_metric]
    seconds = round(time.perf_counter() - started, 1)
    log = [{"step": 0, "train_loss": None, "lr": 0.0, "dev_score": score, "seconds": seconds, "selected": True}]
    return Trained({task.name: model}, tokenizer, log, {"step0": {task.name: rows}, "final": {task.name: rows}},
                   score, "", {task.name: ([], [], [])}, trainable_parameters(model), seconds, None,
                   processes().num_processes, _peak_rss_mb())


STEP0: dict[tuple, tuple[float, dict]] = {}  # a process's step-0 dev scores of fresh models that equal the backbone


def _step0(phase: ValidatedPhase, score):
    """``score()``, or the result of an earlier phase of this process whose fresh model computed the same
    function: no parent, a regime whose fresh module changes no output, heads that do not depend on the
    seed, and the same dev data, lengths, pooling and precision (a study's seeds and arms of one task)."""
    if (phase.parents or not phase.regime.starts_unchanged or processes().num_processes > 1
            or not all(KINDS[task.kind].FIXED_HEAD for task in phase.tasks)):
        return score()
    config = phase.config
    key = (phase.backbone.weight_hash, tuple(task.name for task in phase.tasks), phase.train_lang,
           tuple(sorted(phase.lengths.items())), phase.pooling, phase.precision, config.eval_batch_size,
           config.rows_per_split, config.frozen_layers)
    if key not in STEP0:
        STEP0[key] = score()
    return STEP0[key]


def write_dev_predictions(folder: Path, predictions: dict[str, dict[str, list[dict]]]) -> None:
    """``dev_predictions/<stage>-<task>.jsonl``: per-item dev predictions at step 0 and at the final evaluation."""
    (folder / artifacts.DEV_PREDICTIONS).mkdir()
    for stage, by_task in predictions.items():
        for task, rows in by_task.items():
            (folder / artifacts.DEV_PREDICTIONS / f"{stage}-{task}.jsonl").write_text(
                "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows))


def save(phase: ValidatedPhase, trained: Trained) -> None:
    """Stage 3: write the artifact atomically (main process only), verify it, drop the checkpoints."""
    if not processes().is_main_process:
        return
    config, tasks = phase.config, phase.tasks
    with atomic_dir(phase.out) as tmp:
        write_dev_predictions(tmp, trained.dev_predictions)
        items.write(tmp, [line for task, drawn in trained.drawn.items() for line in items.lines(task, *drawn)])
        phase.regime.save(trained.models[tasks[0].name], trained.tokenizer, tmp)
        for task in tasks[1:]:
            (tmp / "heads" / task.name).mkdir(parents=True)
            save_head(trained.models[task.name], tmp / "heads" / task.name)
        (tmp / "train_log.jsonl").write_text("".join(json.dumps(entry) + "\n" for entry in trained.log))
        artifacts.write_manifest(tmp, build_manifest(phase, trained))
    artifacts.read_manifest(phase.out)  # verifiable at once
    if not config.keep_checkpoints:
        shutil.rmtree(phase.work, ignore_errors=True)


def build_manifest(phase: ValidatedPhase, trained: Trained) -> artifacts.Manifest:
    config, tasks, log = phase.config, phase.tasks, trained.log
    return artifacts.Manifest(
        regime=config.regime, module_kind=phase.regime.module_kind(tasks[0], config), task=config.task,
        language=phase.train_lang, tasks=[task.name for task in tasks], kind=tasks[0].kind,
        phase="target" if phase.parents or phase.is_target else "intermediate",
        transfer=config.transfer if phase.parents else None,
        zero_shot=not _contaminated(tasks[0], phase.parents),
        backbone={"name": phase.backbone.name, "weight_hash": phase.backbone.weight_hash,
                  **sharing.origin(phase.backbone.path)},
        parents=[{"path": str(p.folder), "task": p.manifest["task"], "regime": p.manifest["regime"],
                  "manifest_sha256": artifacts.sha256_file(p.folder / artifacts.MANIFEST), **sharing.origin(p.folder)}
                 for p in phase.parents],
        config=vars(config), identity=phase.identity, precision=phase.precision, pooling=phase.pooling,
        dev={"metric": "+".join(task.dev_metric for task in tasks),
             "best": next(e["dev_score"] for e in log if e.get("selected")),
             "step0": trained.dev_step0, "final": log[-1]["dev_score"], "log": log},
        data_fingerprint=trained.data_fingerprint,
        train_items={task: items.summary(*drawn) for task, drawn in trained.drawn.items()},
        trainable_parameters=trained.trainable_parameters, train_seconds=trained.train_seconds,
        resumed_from_step=trained.resumed_from_step, processes=trained.processes, peak_rss_mb=trained.peak_rss_mb)


def evaluate_phase(phase: ValidatedPhase, trained: Trained | None = None) -> None:
    """Stage 4: zero-shot scores of a saved target artifact, written into its folder: of the model just
    trained and saved (``trained``) or else of the artifact loaded back.

    A failure here keeps the artifact: the error says so and how to score it again."""
    task = phase.tasks[0]
    try:
        if trained is not None:
            model, tokenizer = trained.models[task.name], trained.tokenizer
        else:
            manifest = artifacts.read_manifest(phase.out)
            model = phase.regime.load(phase.out, task, phase.backbone, manifest).to(processes().device)
            set_pooling(model, phase.pooling)
            tokenizer = backbones.load_tokenizer(phase.backbone.path)
        switch = phase.regime.language_switch(model, task, vars(phase.config))
        with cached_bottom(model, phase.config.frozen_layers):
            scores, predictions = evaluate.zero_shot(model, tokenizer, task, phase.langs, phase.lengths[task.name],
                                                     phase.config.eval_batch_size, phase.precision, switch)
        write_evaluation(phase.out, scores, predictions, record=_scoring_record(phase))
    except (UserError, OSError, RuntimeError, ValueError) as err:
        raise UserError(f"evaluation failed ({err}); the trained artifact {phase.out} is kept: score it with "
                        f"`adapterxfer evaluate --model {phase.out} --task {task.name} "
                        f"--output {phase.out}`") from None


def evaluate_together(configs: list[RunConfig]) -> None:
    """Stage 4 of several trained target phases at once (a study's LoRA arms of one target): the backbone
    loaded once, every module scored on each of its test languages in one pass of mixed-adapter batches
    (``evaluate.score_runs``), each phase's scores written into its folder as ``evaluate_phase`` writes them,
    and equal to them. The phases must be trained and share the regime, the task as scored, the backbone,
    the length, batch size, precision, pooling and frozen bottom; modules that cannot run side by side
    (``Regime.mixes``) are refused in one line: score them alone."""
    phases = [validate(config) for config in configs]
    first, task = phases[0], phases[0].tasks[0]
    odd = next((phase for phase in phases if _scored_alike(phase) != _scored_alike(first)), None)
    if odd is not None:
        raise UserError(f"{odd.out} is not scored like {first.out} (regime, task, backbone or evaluation settings "
                        "differ): score each alone")
    with ExitStack() as held:
        for phase in phases:
            held.enter_context(output_lock(phase.out))
        held.enter_context(cpu_threads(first.backbone.path))
        for phase in phases:
            remove_leftovers(phase.out, keep_work=True)
            if not _finished(phase):
                raise UserError(f"{phase.out} is not trained yet: train it before it is scored")
        unscored = [phase for phase in phases if not _scored(phase)]
        if not unscored:
            return
        scored = _one_pass(task, first.backbone, first.config.regime, {phase.out: phase.langs for phase in unscored},
                           first.lengths[task.name], first.config.eval_batch_size, first.precision,
                           first.config.frozen_layers)
        for phase in unscored:
            write_evaluation(phase.out, *scored[phase.out], record=_scoring_record(phase))


def evaluate_models(model_paths: list[str], task_name: str, langs: list[str], output: Path,
                    max_length: int | None = None, batch_size: int = 32, precision: str = "auto",
                    xtreme_format: bool = False) -> dict[str, dict]:
    """Score several trained outputs of one task, regime and backbone in one pass (``evaluate --model A
    --model B``): the backbone loaded once, LoRA modules side by side in mixed-adapter batches
    (``evaluate.score_runs``); each output's scores into ``output/<its folder name>``, written as
    ``evaluate_model`` writes them for it alone, and equal to them. Modules that cannot run side by side, or
    of another task, regime or backbone, are refused in one line before anything is scored. Returns
    {folder name: scores}."""
    task = get_task(task_name)
    folders = [Path(sharing.resolve(path)) for path in model_paths]
    names = [folder.name for folder in folders]
    twice = next((name for name in names if names.count(name) > 1), None)
    if twice:
        raise UserError(f"--model: two outputs named {twice!r} would be scored into one folder {Path(output) / twice}")
    if not task.trainable:
        raise UserError(f"task {task.name} reads encoders (no head): score each --model alone")
    for folder in folders:
        if not artifacts.is_artifact(folder):
            raise UserError(f"--model {folder}: several --model take trained outputs of `adapterxfer train`, not a "
                            "backbone")
    manifests = [artifacts.read_manifest(folder) for folder in folders]
    for folder, manifest in zip(folders, manifests):  # refused before anything loads
        if manifest["task"] != task.name:
            raise UserError(f"{folder} was trained on task {manifest['task']!r}, not {task.name!r}")
        refusal = mixing_refusal(folder, manifest)
        if refusal:
            raise UserError(refusal)
        if manifest["regime"] != manifests[0]["regime"]:
            raise UserError(f"{folder}: a {manifest['regime']} module cannot be scored in one pass with "
                            f"{manifests[0]['regime']} modules (one regime at a time)")
    backbone = backbones.resolve(manifests[0]["backbone"]["name"])
    langs = task.check_langs(langs)
    max_length = backbones.check_length(max_length, task, backbone)
    frozen = min(manifest["config"].get("frozen_layers", 0) for manifest in manifests)  # below every module
    outs = [Path(output) / name for name in names]
    with ExitStack() as held:
        for out in outs:
            held.enter_context(output_lock(out))
            remove_leftovers(out)
        held.enter_context(cpu_threads(backbone.path))
        scored = _one_pass(task, backbone, manifests[0]["regime"], {folder: langs for folder in folders}, max_length,
                           batch_size, resolve_precision(precision, processes().device), frozen)
        for folder, out in zip(folders, outs):
            write_evaluation(out, *scored[folder], task if xtreme_format else None,
                             {"identity": None, "task": task.name,
                              "model": artifacts.sha256_file(folder / artifacts.MANIFEST)})
    return {name: scored[folder][0] for name, folder in zip(names, folders)}


def _one_pass(task, backbone, regime: str, langs: dict[Path, list[str]], max_length: int, batch_size: int,
              precision: str, frozen_layers: int) -> dict[Path, tuple[dict, dict]]:
    """Each trained output of ``langs`` scored on its languages' test sets in one pass on one loaded backbone:
    {folder: ({lang: scores}, {lang: predictions})}."""
    bank = ModuleBank(task, backbone, regime)
    for number, folder in enumerate(langs):
        bank.attach(str(number), folder)
    bank.check_mixable(bank.heads)
    bank.model.to(processes().device)
    runs = [(str(number), lang) for number, folder in enumerate(langs) for lang in langs[folder]]
    with cached_bottom(bank.model, frozen_layers):
        scored = evaluate.score_runs(bank, backbones.load_tokenizer(backbone.path), task, runs, max_length,
                                     batch_size, precision)
    return {folder: ({lang: scored[(str(number), lang)][0] for lang in langs[folder]},
                     {lang: scored[(str(number), lang)][1] for lang in langs[folder]})
            for number, folder in enumerate(langs)}


def _scored_alike(phase: ValidatedPhase) -> tuple:
    """What makes two phases' modules scorable in one pass, scored as each alone."""
    return (phase.config.regime, phase.tasks[0], phase.backbone.weight_hash, phase.lengths,
            phase.config.eval_batch_size, phase.precision, phase.pooling, phase.config.frozen_layers)


def _scoring_record(phase: ValidatedPhase) -> dict:
    """evaluation.json's record of a target phase's own scores (``artifacts.scores_itself`` reads it)."""
    return {"model": artifacts.sha256_file(phase.out / artifacts.MANIFEST), "task": phase.tasks[0].name,
            "scoring": {name: getattr(phase.config, name) for name in SCORING}}


def write_evaluation(folder: Path, scores: dict, predictions: dict, task=None, record: dict | None = None) -> None:
    """Add scores.json, predictions/ and evaluation.json (``record``: what was scored, with the languages and
    the size of every file written added), and given the ``task`` the official XTREME layout, to ``folder``,
    keeping what else it holds. An earlier evaluation there is replaced whole: its scores.json goes first,
    the new one comes in last, so scores and predictions are never of two evaluations (see artifacts)."""
    folder.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".eval.tmp-", dir=folder))
    try:
        evaluate.write_scores(tmp, scores, predictions)
        if task is not None:
            scoring.write_official(tmp, task, predictions)
        files = {str(path.relative_to(tmp)): path.stat().st_size for path in sorted(tmp.rglob("*")) if path.is_file()}
        (tmp / artifacts.EVALUATION).write_text(json.dumps({**(record or {}), "langs": list(scores), "files": files},
                                                           indent=1))
        (folder / artifacts.SCORES).unlink(missing_ok=True)
        for item in sorted(tmp.iterdir(), key=lambda path: path.name == artifacts.SCORES):
            if (folder / item.name).is_dir():
                shutil.rmtree(folder / item.name)
            item.replace(folder / item.name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def processes() -> PartialState:
    """This process's place among those ``accelerate launch`` started (one, without it). On a machine
    without CUDA they are CPU processes talking over gloo."""
    return PartialState(cpu=not torch.cuda.is_available())


@contextmanager
def output_lock(out: Path, writer: bool = True):
    """One run at a time writes an output folder (``writer``: this process writes); a second fails at once with
    one line. The lock file (.NAME.lock beside it) goes when the run ends, also after an error."""
    if not writer:
        yield
        return
    out.parent.mkdir(parents=True, exist_ok=True)
    with holding(artifacts.lock_file(out),
                 f"output_dir {out} is being written by another run; wait for it or choose another output_dir"):
        yield


def _scored(phase: ValidatedPhase) -> bool:
    """The output holds a complete evaluation of its own artifact, as this phase scores it."""
    return artifacts.scores_itself(phase.out, phase.langs, {name: getattr(phase.config, name) for name in SCORING})


def _finished(phase: ValidatedPhase) -> bool:
    """True when the output holds this very phase, trained; another output there needs overwrite=true, and the
    refusal says what differs (a retrained parent: which one)."""
    if not phase.out.exists() or (not artifacts.is_artifact(phase.out) and phase.config.overwrite):
        return False
    if not artifacts.is_artifact(phase.out):
        raise UserError(f"output_dir {phase.out} already exists; pass overwrite=true or another output_dir")
    manifest = artifacts.read_manifest(phase.out)
    change = identity_change(manifest.get("identity"), phase.identity)
    if change is None:
        print(f"{phase.out} is already trained with this configuration")
        return True
    if phase.config.overwrite:
        return False
    changed, _ = artifacts.lineage_changes(phase.out, manifest)
    if changed:
        raise UserError(f"output_dir {phase.out} was trained from {changed[0]}, which has been retrained since (its "
                        f"{artifacts.MANIFEST} is not the one {phase.out}'s lineage records); run again with "
                        "overwrite=true to train it from the new one, or choose another output_dir")
    raise UserError(f"output_dir {phase.out} holds another run ({change}); pass overwrite=true or another output_dir")


def _train_language(task, config: RunConfig) -> str:
    """English for labelled data (zero-shot transfer); ``language=`` picks the text of an mlm phase."""
    if config.language is None:
        return task.source_lang
    if task.kind != "mlm":
        raise UserError(f"language={config.language}: only plain-text (mlm) phases train on another language; "
                        f"task {task.name} trains on labelled {task.train_lang} data (zero-shot transfer)")
    return task.resolve_lang(config.language)


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
    freeze_bottom(first, config.frozen_layers)
    models = {tasks[0].name: first}
    for task in tasks[1:]:
        models[task.name] = task_model(task, backbone.path)
        share_encoder(first, models[task.name])
    return models


def evaluate_model(model_path: str, task_name: str, langs: list[str], output: Path, layer: int = -1,
                   max_length: int | None = None, batch_size: int = 32, precision: str = "auto",
                   xtreme_format: bool = False, at_test: dict | None = None,
                   retrieval_scoring: str | None = None, queries: int | str | None = None,
                   candidates: int | str | None = None, rows_per_split: int | None = None,
                   frozen_layers: int = 0, test_share: str = "all", held_out: float = 0.5,
                   held_out_by: str = "item", identity: str | None = None, secondary: bool = True) -> dict:
    """Score a backbone or a trained output on a task's test sets; write scores.json and predictions.

    Evaluation-only kinds (retrieval, mining, ranking) read a hidden layer of any encoder. With
    ``xtreme_format``, predictions and gold are also written in the official XTREME layout (xtreme/
    and xtreme-gold/, see ``scoring.write_official``), for ``adapterxfer score``. ``at_test``: values of the
    model's regime's ``Regime.at_test`` keys that override those it was trained with (madx: lang_adapter_at_test).
    ``retrieval_scoring`` overrides a retrieval task's scoring (see ``retrieval.SCORINGS``); ``queries`` and
    ``candidates`` its queries per language and pool size (``TaskSpec.sized``).
    ``rows_per_split`` reads at most that many test rows per language (a smoke run). ``frozen_layers``: a bare
    backbone's bottom layers are read through the cache (``adapterxfer.frozen``) that modules trained above
    them share; an artifact's come from its manifest. ``test_share``, ``held_out`` and ``held_out_by``: which
    share of the test items is scored (adapterxfer/shares.py; the train keys of the same names). ``identity``: the
    study phase that asks for these scores, recorded in evaluation.json. One run at a time writes ``output``; the
    scores replace an earlier evaluation there whole. ``secondary=False`` leaves out a retrieval task's secondary
    scores (``retrieval.TARGET_DEV_CENTERED``).
    """
    task = (get_task(task_name).sized(queries, candidates).capped(rows_per_split)
            .held(shares.share(test_share, held_out, held_out_by)))
    model_path = str(sharing.resolve(model_path))
    if retrieval_scoring:
        if task.kind != "retrieval":
            raise UserError(f"--scoring applies to retrieval tasks; {task.name} is {task.kind}")
        retrieval.scoring(retrieval_scoring)
        task = dataclasses.replace(task, options=task.options | {"scoring": retrieval_scoring})
    if not secondary:
        task = dataclasses.replace(task, options={k: v for k, v in task.options.items() if k != "secondary"})
    langs = task.check_langs(langs)
    device = processes().device
    chosen = resolve_precision(precision, device)
    if artifacts.is_artifact(model_path):
        manifest = artifacts.read_manifest(model_path)
        regime, folder = get_regime(manifest["regime"]), Path(model_path)
        backbone = backbones.resolve(manifest["backbone"]["name"])
        _check_backbone(folder, manifest, backbone)
    else:
        manifest, backbone = None, backbones.resolve(model_path)
    if task.trainable and manifest is None:
        raise UserError(f"task {task.name} needs a model trained on it (an output folder of "
                        f"`adapterxfer train task={task.name}`), not the bare backbone {model_path!r}")
    if task.trainable and manifest["task"] != task.name:
        raise UserError(f"{model_path} was trained on task {manifest['task']!r}, not {task.name!r}")
    _check_at_test(at_test or {}, manifest, model_path)
    max_length = backbones.check_length(max_length, task, backbone)
    scored = artifacts.sha256_file(Path(model_path) / artifacts.MANIFEST) if manifest else backbone.weight_hash
    record = {"identity": identity, "task": task.name, "model": scored}
    tokenizer = backbones.load_tokenizer(backbone.path)
    with output_lock(Path(output)), cpu_threads(backbone.path):
        remove_leftovers(Path(output))
        if not task.trainable:
            trained_on = get_task(manifest["tasks"][0]) if manifest else None
            model = (regime.load_encoder(folder, trained_on, backbone) if manifest
                     else encoder_model(backbone.path)).to(device)
            _check_layer(layer, model.config.num_hidden_layers)
            bottom = _frozen_layers(manifest, frozen_layers, layer, model.config.num_hidden_layers)
            english = (_backbone_english(backbone, tokenizer, layer, max_length, batch_size, chosen, bottom)
                       if manifest else None)
            with cached_bottom(model, bottom):
                scores, predictions = retrieval.EVALUATORS[task.kind](model, tokenizer, task, langs, layer,
                                                                      max_length, batch_size, chosen, english)
        else:
            model = regime.load(folder, task, backbone, manifest).to(device)
            set_pooling(model, manifest.get("pooling", "cls"))
            switch = regime.language_switch(model, task, manifest["config"] | (at_test or {}))
            with cached_bottom(model, manifest["config"].get("frozen_layers", 0)):
                scores, predictions = evaluate.zero_shot(model, tokenizer, task, langs, max_length, batch_size,
                                                         chosen, switch)
        write_evaluation(Path(output), scores, predictions, task if xtreme_format else None, record)
    return scores


def _check_at_test(at_test: dict, manifest: dict | None, model_path: str) -> None:
    """Refuse an override of a key the model's regime does not let evaluation set (``Regime.at_test``)."""
    regime = get_regime(manifest["regime"]) if manifest else None
    offered = at_test_keys()
    for name in at_test:
        if name not in offered:
            raise UserError(unknown("evaluation override", name, offered))
        if regime is None or name not in regime.at_test:
            owner, flag = offered[name]
            raise UserError(f"{name} ({flag}) applies to {owner} models; {model_path} is "
                            f"{'a ' + regime.name + ' model' if regime else 'not a trained model'}")


ENGLISH_VECTORS: dict[tuple, dict[str, torch.Tensor]] = {}  # the untuned backbone's English vectors, per process


def _backbone_english(backbone, tokenizer, layer: int, max_length: int, batch_size: int, precision: str,
                      frozen_layers: int):
    """``retrieval.embed`` of the untuned backbone (``retrieval.BACKBONE_ENGLISH``), loaded where a text is new to
    this process and kept per text: every arm of a study scores against the same English verses."""
    def embed(texts: list[str]) -> torch.Tensor:
        model = _untuned(backbone.path, backbone.weight_hash)
        with cached_bottom(model, frozen_layers):
            return retrieval.embed(model, tokenizer, texts, layer, max_length, batch_size, precision)
    key = (backbone.weight_hash, layer, max_length, precision, frozen_layers)
    return retrieval.texts_once(embed, ENGLISH_VECTORS.setdefault(key, {}))


@functools.lru_cache(maxsize=1)
def _untuned(path: Path, weight_hash: str):
    """The backbone's encoder, loaded once per process for the English side of retrieval pools."""
    return encoder_model(path).to(processes().device).eval()


def _frozen_layers(manifest: dict | None, backbone_frozen: int, layer: int, num_layers: int) -> int:
    """The frozen bottom an evaluation-only task reads from the cache: the artifact's (a bare backbone:
    ``backbone_frozen``), where it scores the last layer (hidden_states then count from the bottom's output)."""
    frozen = manifest["config"].get("frozen_layers", 0) if manifest else backbone_frozen
    return frozen if layer % num_layers == num_layers - 1 else 0


def _manifest_sha256(folder: Path) -> str:
    artifacts.read_manifest(folder, verify=False)  # a folder without one is a one-line error
    return artifacts.sha256_file(folder / artifacts.MANIFEST)


def _check_stages(task, parents: list[Parent]) -> None:
    """A target whose recipe trains stages first (xcopa: siqa) starts from an output of its last stage."""
    lineage = [name for parent in parents
               for name in (*parent.manifest["tasks"], *(part for grand in parent.manifest["parents"]
                                                         for part in grand["task"].split("+")))]
    missing = task.missing_stages(lineage)
    if missing:
        raise UserError(f"task {task.name} trains after {', '.join(task.stages)} (its recipe's stages), and "
                        f"init_from's lineage has no {missing[0]}: train task={missing[0]} (from your intermediate, "
                        f"if any) first, then task={task.name} init_from=<that output>")


def _check_backbone(folder: Path, manifest: dict, backbone) -> None:
    if manifest["backbone"]["weight_hash"] != backbone.weight_hash:
        raise UserError(f"{folder} was trained on backbone {manifest['backbone']['name']!r}, not on "
                        f"{backbone.name!r} (weight hashes differ)")


def _check_layer(layer: int, num_layers: int) -> None:
    if not -(num_layers + 1) <= layer <= num_layers:
        raise UserError(f"layer {layer} out of range: the encoder has hidden states 0..{num_layers} (or -1 = last)")


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
