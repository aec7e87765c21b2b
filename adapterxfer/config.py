"""Run configuration: an optional YAML recipe, then ``key=value`` overrides.

Every key is a field of :class:`RunConfig`; an unknown key, a value of the wrong
type, or a YAML file that does not parse is a one-line :class:`UserError`.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path

import torch
import yaml

from .errors import UserError


@dataclass
class RunConfig:
    """One training phase: an intermediate or a target task, in one regime."""

    task: str = ""
    regime: str = "full"
    backbone: str | None = None  # default: the parent's backbone with init_from, else me5-small
    init_from: list[str] = field(default_factory=list)  # phase-2 output folder(s) phase 3 starts from
    transfer: str = "sequential"  # how a target phase starts from init_from (see CHOICES)
    output_dir: str | None = None  # default: artifacts/<task>-<regime>-seed<seed>
    overwrite: bool = False
    seed: int = 42
    max_steps: int = 200
    batch_size: int = 16
    grad_accum: int = 1
    lr: float = 3e-5
    # The fresh task head may learn faster than the pretrained encoder; None: the same lr.
    head_lr: float | None = None
    weight_decay: float = 0.01
    warmup_ratio: float = 0.1
    # LP-FT: before fine-tuning, the fresh head trains alone for probe_steps steps on the frozen
    # encoder's outputs for probe_examples training examples (0: off, plain fine-tuning).
    probe_steps: int = 0
    probe_examples: int = 1024
    max_length: int | None = None  # default: the task's (128; QA 384, so doc_stride fits)
    # Length-grouped training batches pad less, but make each batch's labels depend on length
    # wherever length predicts the label (verses-genre: dev 0.26 vs 0.42 after 60 steps).
    group_by_length: bool = False
    temperature: float = 1.0  # multi-task (task=a+b): draw task i with probability ~ n_i ** (1/T)
    eval_every: int = 50  # steps between English-dev evaluations (model selection)
    eval_langs: list[str] = field(default_factory=list)  # empty: every language of the task
    eval_batch_size: int = 32  # measured a little faster than 64 or 128 on 2 CPU cores
    # "auto": bf16 autocast on a GPU or on a CPU with bf16 instructions (AVX512-BF16 or AMX; there
    # scripts/bench_precision.py measured a me5-small forward at 0.59-0.60x and a training step at 0.78-0.84x
    # the fp32 time), fp32 on other CPUs, where bf16 is emulated and slow.
    precision: str = "auto"
    # Freezing the 250k-row word-embedding matrix keeps the step ~2x cheaper on CPU and
    # leaves non-English token embeddings where pretraining put them.
    freeze_word_embeddings: bool = True
    # What a classification or multiple-choice head reads: "cls" (<s>), "mean" (the mean over real
    # tokens), or "auto": what the backbone was trained with (me5-small: mean; XLM-R: cls).
    pooling: str = "auto"
    # lora: peft LoRA on the encoder's attention ("all-linear": every encoder linear layer)
    lora_r: int = 8
    lora_alpha: int = 16
    lora_dropout: float = 0.1
    lora_targets: list[str] = field(default_factory=lambda: ["query", "value"])
    merge: str = "cat"  # transfer=merge: peft add_weighted_adapter combination
    # bottleneck and madx task adapters: adapters' seq_bn
    reduction_factor: int = 16
    # madx: a language adapter (seq_bn_inv) is an mlm phase on one language's plain text, e.g.
    # `task=verses-text language=de regime=madx`; task phases then list them in lang_adapters.
    language: str | None = None  # the text language of an mlm phase (default: the task's, English)
    lang_adapters: list[str] = field(default_factory=list)  # madx language-adapter outputs, one per language
    # At zero-shot test time: "target" swaps in each test language's adapter (MAD-X); "source" keeps
    # the training language's (the ablation of Kunz & Holmstroem 2024).
    lang_adapter_at_test: str = "target"
    lang_reduction_factor: int = 2  # MAD-X's language adapters are wider than its task adapters

    def resolved_output_dir(self) -> Path:
        language = f"-{self.language}" if self.language else ""
        return Path(self.output_dir or f"artifacts/{self.task}{language}-{self.regime}-seed{self.seed}")

    @property
    def bf16(self) -> bool:
        return self.precision == "bf16" or (self.precision == "auto" and native_bf16())


def native_bf16() -> bool:
    """A GPU, or a CPU whose instruction set computes bf16 (torch has no public test for it)."""
    tests = [getattr(torch.cpu, name, None) for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
    return torch.cuda.is_available() or any(test() for test in tests if test)


KEYS = tuple(f.name for f in dataclasses.fields(RunConfig))
CHOICES = {
    "precision": ("auto", "bf16", "fp32"),
    "transfer": ("sequential", "stack", "fusion", "merge"),
    "merge": ("cat", "svd"),  # never "linear": it adds cross terms (peft #3004)
    "lang_adapter_at_test": ("target", "source"),
    "pooling": ("auto", "cls", "mean"),
}


def load_config(path: str | None, overrides: list[str]) -> RunConfig:
    """Merge a YAML recipe (optional) with ``key=value`` overrides into a validated RunConfig."""
    values = read_yaml(path) if path else {}
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise UserError(f"argument {item!r} is not of the form key=value (keys: {', '.join(KEYS)})")
        values[key.strip()] = _parse_scalar(raw)
    return from_dict(values, source=path or "command line")


def from_dict(values: dict, source: str = "config") -> RunConfig:
    hints = typing.get_type_hints(RunConfig)
    checked = {}
    for key, value in values.items():
        if key not in hints:
            raise UserError(f"{source}: unknown key {key!r} (allowed: {', '.join(KEYS)})")
        checked[key] = _coerce(key, value, hints[key], source)
    for key, allowed in CHOICES.items():
        if key in checked and checked[key] not in allowed:
            raise UserError(f"{source}: key {key!r} must be one of {', '.join(allowed)}, got {checked[key]!r}")
    config = RunConfig(**checked)
    if not config.task:
        raise UserError(f"{source}: key 'task' is required (see `adapterxfer tasks`)")
    for key in ("max_steps", "probe_steps", "probe_examples", "batch_size", "grad_accum", "eval_every"):
        if getattr(config, key) < (0 if key.endswith("steps") else 1):
            raise UserError(f"{source}: key {key!r} must be at least {0 if key.endswith('steps') else 1}, "
                            f"got {getattr(config, key)}")
    if not config.max_steps and not config.probe_steps:
        raise UserError(f"{source}: max_steps=0 trains nothing; set max_steps >= 1, or probe_steps >= 1 "
                        "to probe the head alone")
    return config


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


def _coerce(key: str, value, hint, source: str):
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
    raise UserError(f"{source}: key {key!r} expects {expected}, got {value!r}")
