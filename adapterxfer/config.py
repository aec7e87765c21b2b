"""Run configuration: an optional YAML recipe, then ``key=value`` overrides.

Every key is a field of :class:`RunConfig`, with its help text and its section: the general sections
(``phase``, ``budget``, ...) apply to every phase, a regime's section (``lora``, ``bottleneck``, ``madx``,
``full``) only to that regime. An unknown key, a value of the wrong type or range, or a YAML file that
does not parse is a one-line :class:`UserError`. This module imports no heavy library, so a bad
command line fails in well under a second.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from .errors import UserError
from .regimes import NAMES as REGIME_NAMES
from .transfers import PHASE_TRANSFERS

SECTIONS = {
    "phase": "what trains, from where, and where it goes",
    "budget": "steps and batches",
    "optimizer": "AdamW with linear warmup and decay",
    "selection": "English-dev model selection and zero-shot evaluation",
    "run": "precision, checkpoints, tracking",
    "full": "regime full: the whole encoder trains",
    "lora": "regime lora: peft LoRA on the frozen encoder",
    "bottleneck": "regime bottleneck: AdapterHub seq_bn adapters on the frozen encoder",
    "madx": "regime madx: language adapters and stacked task adapters",
}


def key(default, help: str, section: str):
    """A RunConfig field with its help text and section (lists get a fresh copy of ``default``)."""
    meta = {"help": help, "section": section}
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=meta)
    return field(default=default, metadata=meta)


@dataclass
class RunConfig:
    """One training phase: an intermediate or a target task, in one regime."""

    task: str = key("", "task name (`adapterxfer tasks`); a+b trains intermediate tasks together", "phase")
    regime: str = key("full", " | ".join(REGIME_NAMES), "phase")
    backbone: str | None = key(None, "embedded name, folder or Hub id; default: init_from's, else me5-small", "phase")
    init_from: list[str] = key([], "intermediate output folder(s) this target phase starts from", "phase")
    transfer: str = key("sequential", f"how the phase starts from init_from: {' | '.join(PHASE_TRANSFERS)}",
                        "phase")
    output_dir: str | None = key(None, "default: artifacts/<task>-<regime>-seed<seed>", "phase")
    overwrite: bool = key(False, "replace a finished output with another configuration", "phase")
    language: str | None = key(None, "the text language of an mlm phase (madx language adapters); default: "
                                     "the task's training language", "phase")
    seed: int = key(42, "seeds data order, head init, dropout and the probe", "budget")
    max_steps: int = key(200, "optimizer steps of fine-tuning (0: the probe alone)", "budget")
    batch_size: int = key(16, "examples per process and micro-batch", "budget")
    grad_accum: int = key(1, "micro-batches per optimizer step", "budget")
    rows_per_split: int | None = key(None, "read at most this many rows of each split and language, a seeded "
                                           "sample (`study run --smoke`); default: all", "budget")
    # Length-grouped batches pad less, but make each batch's labels depend on length wherever length
    # predicts the label (verses-genre: dev 0.26 vs 0.42 after 60 steps).
    group_by_length: bool = key(False, "batches of similar length (pads less; see README)", "budget")
    temperature: float = key(1.0, "multi-task: draw task i with probability ~ n_i ** (1/T)", "budget")
    probe_steps: int = key(0, "LP-FT: steps that train the fresh head alone on cached encoder outputs (0: off)",
                           "budget")
    probe_examples: int = key(1024, "LP-FT: training examples whose encoder outputs the probe caches", "budget")
    frozen_layers: int = key(0, "the embeddings and the first N transformer layers train in no regime, and their "
                                "output is computed once per distinct text and cached in memory, so training and "
                                "scoring run only the layers above (a CPU budget; they run without dropout)",
                             "budget")
    lr: float = key(3e-5, "learning rate of the encoder or module", "optimizer")
    head_lr: float | None = key(None, "learning rate of the fresh task head; default: lr", "optimizer")
    weight_decay: float = key(0.01, "AdamW weight decay (not on biases and LayerNorms)", "optimizer")
    warmup_ratio: float = key(0.1, "share of max_steps spent warming the learning rate up", "optimizer")
    max_length: int | None = key(None, "tokens per sequence; default: the task's (128; QA 384)", "selection")
    eval_every: int = key(50, "steps between English-dev evaluations; the best is kept", "selection")
    eval_langs: list[str] = key([], "zero-shot test languages; empty: every language of the task", "selection")
    eval_batch_size: int = key(32, "examples per evaluation batch", "selection")
    precision: str = key("auto", "auto | bf16 | fp16 | fp32; auto: bf16 where the device computes it, else "
                                 "fp16 on a GPU and fp32 on a CPU", "run")
    resume: bool = key(True, "continue from the output's last checkpoint (false: start over)", "run")
    checkpoint_every: int | None = key(None, "steps between checkpoints; default: eval_every", "run")
    keep_checkpoints: bool = key(False, "keep the checkpoints after the phase succeeds", "run")
    report_to: str = key("none", "experiment tracker through accelerate: none | tensorboard | mlflow | wandb | "
                                 "trackio", "run")
    # Freezing the 250k-row word-embedding matrix keeps the step ~2x cheaper on CPU and leaves non-English
    # token embeddings where pretraining put them.
    # What a classification or multiple-choice head reads: <s> or the mean over real tokens.
    pooling: str = key("auto", "cls | mean | auto: what the backbone was trained with (me5-small: mean; XLM-R: "
                               "cls)", "phase")
    freeze_word_embeddings: bool = key(True, "keep the word-embedding matrix frozen", "full")
    lora_r: int = key(8, "LoRA rank", "lora")
    lora_alpha: int = key(16, "LoRA scaling numerator (scale = alpha / r)", "lora")
    lora_dropout: float = key(0.1, "dropout on the LoRA input", "lora")
    lora_targets: list[str] = key(["query", "value"], "encoder linear layers that get a LoRA, or all-linear",
                                  "lora")
    merge: str = key("cat", "transfer=merge: cat (exact) | svd; never linear (cross terms, peft #3004)", "lora")
    reduction_factor: int = key(16, "hidden size / bottleneck size of a task adapter", "bottleneck")
    lang_adapters: list[str] = key([], "language-adapter outputs, the source language's first", "madx")
    lang_adapter_at_test: str = key("target", "target: each test language's adapter (MAD-X); source: keep the "
                                              "training language's (the ablation)", "madx")
    lang_reduction_factor: int = key(2, "hidden size / bottleneck size of a language adapter", "madx")

    def resolved_output_dir(self) -> Path:
        language = f"-{self.language}" if self.language else ""
        return Path(self.output_dir or f"artifacts/{self.task}{language}-{self.regime}-seed{self.seed}")

    @property
    def checkpoint_interval(self) -> int:
        return self.checkpoint_every or self.eval_every


FIELDS = {f.name: f for f in dataclasses.fields(RunConfig)}
KEYS = tuple(FIELDS)
CHOICES = {
    "regime": REGIME_NAMES,
    "precision": ("auto", "bf16", "fp16", "fp32"),
    "transfer": PHASE_TRANSFERS,
    "merge": ("cat", "svd"),  # never "linear": it adds cross terms (peft #3004)
    "lang_adapter_at_test": ("target", "source"),
    "report_to": ("none", "tensorboard", "mlflow", "wandb", "trackio"),
    "pooling": ("auto", "cls", "mean"),
}
# (key, smallest allowed value, whether the smallest is allowed itself)
BOUNDS = (("max_steps", 0, True), ("probe_steps", 0, True), ("probe_examples", 1, True), ("batch_size", 1, True),
          ("grad_accum", 1, True), ("rows_per_split", 1, True), ("eval_every", 1, True), ("eval_batch_size", 1, True),
          ("checkpoint_every", 1, True), ("frozen_layers", 0, True),
          ("lr", 0, False), ("head_lr", 0, False), ("weight_decay", 0, True), ("warmup_ratio", 0, True),
          ("temperature", 0, False), ("max_length", 8, True), ("lora_r", 1, True), ("lora_dropout", 0, True),
          ("reduction_factor", 1, True), ("lang_reduction_factor", 1, True))
AT_MOST = {"warmup_ratio": 1, "lora_dropout": 1}


# Keys that change where or how a run goes, never what it learns: left out of its identity.
RUN_ONLY = ("output_dir", "overwrite", "resume", "checkpoint_every", "keep_checkpoints", "report_to", "eval_langs")
# Inputs named by path: they enter an identity by their contents' hashes instead (the backbone's weights,
# each input's manifest), so a moved parent folder or a spelled-out default backbone is the same phase.
INPUT_PATHS = ("backbone", "init_from", "lang_adapters")


def phase_identity(settings: dict, backbone_hash: str, input_hashes: list[str], scored: bool = False) -> dict:
    """What makes two phases compute the same thing: their settings (a RunConfig's fields, defaults
    included; or evaluate_model's arguments), the backbone's weights and the sha256 of each input's
    manifest. ``scored``: the phase includes its zero-shot scoring, so ``eval_langs`` counts. A checkpoint
    or a finished output is reused only by a phase of equal identity."""
    ignored = (set(RUN_ONLY) - ({"eval_langs"} if scored else set())) | set(INPUT_PATHS)
    return {"settings": {name: value for name, value in settings.items() if name not in ignored},
            "backbone": backbone_hash, "inputs": list(input_hashes)}


def help_text() -> str:
    """Every key with its meaning and default, grouped by section (``adapterxfer train --help``)."""
    lines = []
    for section, title in SECTIONS.items():
        lines.append(f"{section}: {title}")
        for name, spec in FIELDS.items():
            if spec.metadata["section"] == section:
                default = spec.default_factory() if callable(spec.default_factory) else spec.default
                lines.append(f"  {name:22} {spec.metadata['help']} (default: {_show(default)})")
    return "\n".join(lines)


def _show(value) -> str:
    if isinstance(value, list):
        return ",".join(value) or "[]"
    return "none" if value is None else str(value).lower() if isinstance(value, bool) else str(value)


def load_config(path: str | None, overrides: list[str]) -> RunConfig:
    """Merge a YAML recipe (optional) with ``key=value`` overrides into a validated RunConfig."""
    values = read_yaml(path) if path else {}
    for item in overrides:
        name, sep, raw = item.partition("=")
        if not sep or not name:
            raise UserError(f"argument {item!r} is not of the form key=value (keys: {', '.join(KEYS)})")
        values[name.strip()] = _parse_scalar(raw)
    return from_dict(values, source=path or "command line")


@functools.cache
def _hints() -> dict:
    return typing.get_type_hints(RunConfig)  # milliseconds a call: a study plan builds thousands of configs


def from_dict(values: dict, source: str = "config") -> RunConfig:
    hints = _hints()
    checked = {}
    for name, value in values.items():
        if name not in hints:
            raise UserError(f"{source}: unknown key {name!r} (allowed: {', '.join(KEYS)})")
        checked[name] = _coerce(name, value, hints[name], source)
    for name, allowed in CHOICES.items():
        if name in checked and checked[name] not in allowed:
            raise UserError(f"{source}: key {name!r} must be one of {', '.join(allowed)}, got {checked[name]!r}")
    config = RunConfig(**checked)
    if not config.task:
        raise UserError(f"{source}: key 'task' is required (see `adapterxfer tasks`)")
    _check_bounds(config, source)
    if not config.max_steps and not config.probe_steps:
        raise UserError(f"{source}: max_steps=0 trains nothing; set max_steps >= 1, or probe_steps >= 1 "
                        "to probe the head alone")
    return config


def _check_bounds(config: RunConfig, source: str) -> None:
    for name, low, inclusive in BOUNDS:
        value = getattr(config, name)
        if value is None:
            continue
        high = AT_MOST.get(name, math.inf)
        if not math.isfinite(value) or value < low or (value == low and not inclusive) or value > high:
            allowed = f"{'>=' if inclusive else '>'} {low}" + (f" and <= {high}" if name in AT_MOST else "")
            raise UserError(f"{source}: key {name!r} must be a finite number {allowed}, got {value}")


def read_yaml(path: str) -> dict:
    file = Path(path)
    if not file.is_file():
        raise UserError(f"config file {path} does not exist")
    try:
        data = yaml.safe_load(file.read_text())
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise UserError(f"config file {path}: invalid YAML{where}: {getattr(err, 'problem', err)}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UserError(f"config file {path}: expected a mapping of key: value, got {type(data).__name__}")
    return data


def _parse_scalar(raw: str):
    """``lr=1e-5`` -> 1e-05, ``eval_langs=fr,de`` -> ['fr', 'de'], ``init_from=none`` -> None."""
    if raw.lower() in ("none", "null", ""):
        return None
    if "," in raw and not raw.startswith("["):
        return [part.strip() for part in raw.split(",") if part.strip()]
    try:
        return yaml.safe_load(raw)
    except yaml.YAMLError:
        return raw


def _coerce(name: str, value, hint, source: str):
    options = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
    if value is None and type(None) in options:
        return None
    if value is None and typing.get_origin(hint) is list:
        return []
    for option in options:
        origin = typing.get_origin(option) or option
        if origin is list:
            items = value if isinstance(value, list) else [value]
            return [str(item) for item in items]
        if origin is float and not isinstance(value, bool):
            try:  # YAML reads "2e-5" (no dot) as a string
                return float(value)
            except (TypeError, ValueError):
                pass
        if origin is int and isinstance(value, int) and not isinstance(value, bool):
            return value
        if origin in (bool, str) and isinstance(value, origin):
            return value
        if origin is str and isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
    expected = " or ".join(getattr(o, "__name__", str(o)) for o in options)
    raise UserError(f"{source}: key {name!r} expects {expected}, got {value!r}")
