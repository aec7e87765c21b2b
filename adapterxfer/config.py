"""Run configuration: an optional YAML recipe, then ``key=value`` overrides.

Every key is a field of :class:`RunConfig`, with its help text, its section and the values it allows
(:func:`adapterxfer.keys.key`): the general sections (``phase``, ``budget``, ...) apply to every phase;
each registered regime adds its own section (``Regime.section``), which applies to that regime only, and
a transfer may add one (``Transfer.section``, e.g. merge's), which applies to the regimes that offer it and
counts in a phase's identity only where the phase uses that transfer.
An unknown key, a value of the wrong type, outside its choices or its range, or a YAML file that does
not parse is a one-line :class:`UserError`. This module imports no heavy library, so a bad command line
fails in well under a second.
"""

from __future__ import annotations

import dataclasses
import functools
import types
import typing
from dataclasses import dataclass
from pathlib import Path

import yaml

from .errors import UserError, unknown
from .keys import check, default_of, key
from .regimes import DEFAULT as DEFAULT_REGIME, NAMES as REGIME_NAMES, all_regimes, get_regime
from .shares import LEVELS, PARTS
from .transfers import PHASE_TRANSFERS, TRANSFERS

GENERAL_SECTIONS = {
    "phase": "what trains, from where, and where it goes",
    "budget": "steps and batches",
    "optimizer": "AdamW with linear warmup and decay",
    "scores": "English-dev scores that choose the checkpoint kept (the best), and the zero-shot test scores",
    "run": "precision, checkpoints, tracking",
}


@dataclass
class GeneralKeys:
    """The keys of every phase, whatever its regime."""

    task: str = key("", "task name (`adapterxfer tasks`); a+b trains intermediate tasks together", "phase")
    regime: str = key(DEFAULT_REGIME, " | ".join(REGIME_NAMES), "phase", choices=REGIME_NAMES)
    backbone: str | None = key(None, "embedded name, folder or Hub id; default: init_from's, else "
                                     "$ADAPTERXFER_BACKBONE, else me5-small (a recipe's yields to init_from's)",
                               "phase", path=True)
    init_from: list[str] = key([], "intermediate output folder(s) this target phase starts from", "phase", path=True)
    transfer: str = key("sequential", f"how the phase starts from init_from: {' | '.join(PHASE_TRANSFERS)}",
                        "phase", choices=PHASE_TRANSFERS)
    output_dir: str | None = key(None, "default: artifacts/<task>-<regime>-seed<seed>", "phase")
    overwrite: bool = key(False, "replace a finished output with another configuration", "phase")
    language: str | None = key(None, "the text language of an mlm phase (language adapters); default: "
                                     "the task's training language", "phase")
    seed: int = key(42, "seeds data order, head init, dropout and the probe", "budget")
    max_steps: int = key(200, "optimizer steps of fine-tuning (0: the probe alone)", "budget", at_least=0)
    batch_size: int = key(16, "examples per process and micro-batch", "budget", at_least=1)
    grad_accum: int = key(1, "micro-batches per optimizer step", "budget", at_least=1)
    rows_per_split: int | None = key(None, "read at most this many rows of each split and language, a seeded "
                                           "sample (`study run --smoke`); default: all", "budget", at_least=1)
    # Length-grouped batches pad less, but make each batch's labels depend on length wherever length
    # predicts the label (verses-genre: dev 0.26 vs 0.42 after 60 steps).
    group_by_length: bool = key(False, "batches of similar length (pads less; see README)", "budget")
    temperature: float = key(1.0, "multi-task: draw task i with probability ~ n_i ** (1/T)", "budget", above=0)
    probe_steps: int = key(0, "LP-FT: steps that train the fresh head alone on cached encoder outputs (0: off)",
                           "budget", at_least=0)
    probe_examples: int = key(1024, "LP-FT: training examples whose encoder outputs the probe caches", "budget",
                              at_least=1)
    frozen_layers: int = key(0, "the embeddings and the first N transformer layers train in no regime, and their "
                                "output is computed once per distinct text and cached in memory, so training and "
                                "scoring run only the layers above (a CPU budget; they run without dropout)",
                             "budget", at_least=0)
    lr: float = key(3e-5, "learning rate of the encoder or module", "optimizer", above=0)
    head_lr: float | None = key(None, "learning rate of the fresh task head; default: lr", "optimizer", above=0)
    weight_decay: float = key(0.01, "AdamW weight decay (not on biases and LayerNorms)", "optimizer", at_least=0)
    warmup_ratio: float = key(0.1, "share of max_steps spent warming the learning rate up", "optimizer",
                              at_least=0, at_most=1)
    max_length: int | None = key(None, "tokens per sequence; default: the task's (128; QA 384)", "scores",
                                 at_least=8)
    eval_every: int = key(50, "steps between English-dev evaluations; the best is kept", "scores", at_least=1)
    eval_langs: list[str] = key([], "zero-shot test languages; empty: every language of the task", "scores")
    eval_batch_size: int = key(32, "examples per evaluation batch", "scores", at_least=1)
    test_share: str = key("all", "the test items scored: all | explore (a study's exploration) | confirm (its "
                                 "held-out confirmation); see held_out", "scores", choices=PARTS)
    held_out: float = key(0.5, "share of each target's test clusters held out for the confirmation", "scores",
                          above=0, at_most=1)
    held_out_by: str = key("item", "what the held-out share is drawn by (parallel languages together): item | "
                                    "chapter | book (verses refs)", "scores", choices=LEVELS)
    precision: str = key("auto", "auto | bf16 | fp16 | fp32; auto: bf16 where the device computes it, else "
                                 "fp16 on a GPU and fp32 on a CPU", "run", choices=("auto", "bf16", "fp16", "fp32"))
    resume: bool = key(True, "continue from the output's last checkpoint (false: start over)", "run")
    checkpoint_every: int | None = key(None, "steps between checkpoints; default: eval_every", "run", at_least=1)
    keep_checkpoints: bool = key(False, "keep the checkpoints after the phase succeeds", "run")
    report_to: str = key("none", "experiment tracker through accelerate: none | tensorboard | mlflow | wandb | "
                                 "trackio", "run", choices=("none", "tensorboard", "mlflow", "wandb", "trackio"))
    # What a classification or multiple-choice head reads: <s> or the mean over real tokens.
    pooling: str = key("auto", "cls | mean | auto: what the backbone was trained with (me5-small: mean; XLM-R: "
                               "cls)", "phase", choices=("auto", "cls", "mean"))


SECTIONED = [regime for regime in all_regimes() if regime.section is not None]
TRANSFER_SECTIONS = {transfer.name: transfer.section for transfer in TRANSFERS.values() if transfer.section}
OWN_SECTIONS = {regime.name: regime.section for regime in SECTIONED} | TRANSFER_SECTIONS
SECTIONS = GENERAL_SECTIONS | {name: section.__doc__ for name, section in OWN_SECTIONS.items()}


def section_fields(section: str) -> list[dataclasses.Field]:
    """The keys listed under ``section``: a general one's, a regime's own (its section may extend another
    regime's, and shares its fields) or a transfer's."""
    if section in OWN_SECTIONS:
        return list(dataclasses.fields(OWN_SECTIONS[section]))
    return [spec for spec in dataclasses.fields(GeneralKeys) if spec.metadata["section"] == section]


# The general keys first, then each regime's section in registry order, then each transfer's (one key, one
# field: a section that extends another's shares its fields).
@dataclass
class RunConfig(*reversed(list(dict.fromkeys(OWN_SECTIONS.values()))), GeneralKeys):
    """One training phase: an intermediate or a target task, in one regime."""

    def resolved_output_dir(self) -> Path:
        language = f"-{self.language}" if self.language else ""
        return Path(self.output_dir or f"artifacts/{self.task}{language}-{self.regime}-seed{self.seed}")

    @property
    def checkpoint_interval(self) -> int:
        return self.checkpoint_every or self.eval_every


FIELDS = {f.name: f for f in dataclasses.fields(RunConfig)}
KEYS = tuple(FIELDS)
CHOICES = {name: spec.metadata["choices"] for name, spec in FIELDS.items() if spec.metadata["choices"]}
GENERAL = tuple(spec.name for spec in dataclasses.fields(GeneralKeys))
# a transfer's own key -> that transfer
TRANSFER_KEYS = {spec.name: name for name, section in TRANSFER_SECTIONS.items() for spec in dataclasses.fields(section)}
# regime -> the keys a phase in it reads: the general ones, its own section's (none of another regime's) and
# those of the transfers it offers
REGIME_KEYS = {regime.name: GENERAL + tuple(dict.fromkeys(
    [spec.name for spec in (dataclasses.fields(regime.section) if regime.section else ())]
    + [name for name, transfer in TRANSFER_KEYS.items() if transfer in regime.transfers]))
               for regime in all_regimes()}


def reads(regime: str, name: str, transfer: str | None = None) -> bool:
    """Whether a phase in ``regime`` reads key ``name`` (and, ``transfer`` given, a phase of that transfer: a
    transfer's own key counts in its phases only)."""
    return name in REGIME_KEYS.get(regime, GENERAL) and (transfer is None
                                                         or TRANSFER_KEYS.get(name, transfer) == transfer)


def owners(name: str) -> list[str]:
    """The regimes whose section declares key ``name`` (none: a general key)."""
    return [regime for regime, names in REGIME_KEYS.items() if name in names and name not in GENERAL]


def regime_settings(settings: dict) -> dict:
    """``settings`` (a RunConfig's fields) less the keys its regime and transfer do not read."""
    regime, transfer = settings.get("regime", DEFAULT_REGIME), settings.get("transfer", "sequential")
    return {name: value for name, value in settings.items() if reads(regime, name, transfer)}

# Keys that change where or how a run goes, never what it learns: left out of its identity.
RUN_ONLY = ("output_dir", "overwrite", "resume", "checkpoint_every", "keep_checkpoints", "report_to")
# Keys that change what is scored, not what trains: in the identity of a phase that includes its scoring only.
SCORING = ("eval_langs", "test_share", "held_out", "held_out_by")
# Inputs named by path: they enter an identity by their contents' hashes instead (the backbone's weights,
# each input's manifest), so a moved parent folder or a spelled-out default backbone is the same phase.
INPUT_PATHS = tuple(name for name, spec in FIELDS.items() if spec.metadata["path"])


def phase_identity(settings: dict, backbone_hash: str, input_hashes: list[str], scored: bool = False) -> dict:
    """What makes two phases compute the same thing: their settings (the keys a train phase's regime
    reads, defaults included; or evaluate_model's arguments), the backbone's weights and the sha256 of each
    input's manifest. ``scored``: the phase includes its zero-shot scoring, so the ``SCORING`` keys count. A
    checkpoint or a finished output is reused only by a phase of equal identity (``identity_change``)."""
    ignored = set(RUN_ONLY) | (set() if scored else set(SCORING)) | set(INPUT_PATHS)
    if "regime" in settings:  # a train phase: another regime's keys change nothing it computes
        settings = regime_settings(settings)
    return {"settings": {name: value for name, value in settings.items() if name not in ignored},
            "backbone": backbone_hash, "inputs": list(input_hashes)}


def identity_change(recorded: dict | None, expected: dict) -> str | None:
    """How a recorded identity (a manifest's or a checkpoint's) differs from the one expected now; None when
    they are the same phase. Another regime's keys in ``recorded`` (an output written before identities left
    them out) do not count."""
    if not isinstance(recorded, dict) or not isinstance(recorded.get("settings"), dict):
        return "no identity recorded"
    settings = expected["settings"]
    ours = {name: value for name, value in recorded["settings"].items()
            if "regime" not in settings or reads(settings["regime"], name, settings.get("transfer", "sequential"))}
    if recorded.get("backbone") != expected["backbone"]:
        return "another backbone"
    changed = sorted(name for name in set(ours) | set(expected["settings"])
                     if ours.get(name, "(unset)") != expected["settings"].get(name, "(unset)"))
    if changed:
        return "settings changed: " + ", ".join(
            f"{name} {show_value(ours.get(name))} -> {show_value(expected['settings'].get(name))}"
            for name in changed[:4]) + (" ..." if len(changed) > 4 else "")
    if recorded.get("inputs") != expected["inputs"]:
        inputs = zip(recorded.get("inputs") or [], expected["inputs"])
        return "inputs changed: " + (", ".join(f"input {i + 1}" for i, (old, new) in enumerate(inputs) if old != new)
                                     or "their number")
    return None


def help_text() -> str:
    """Every key with its meaning and default, grouped by section (``adapterxfer train --help``)."""
    lines = []
    for section, title in SECTIONS.items():
        lines.append(f"{section}: {title}")
        for spec in section_fields(section):
            lines.append(f"  {spec.name:22} {spec.metadata['help']} (default: {show_value(default_of(spec))})")
    return "\n".join(lines)


def show_value(value) -> str:
    if isinstance(value, list):
        return ",".join(value) or "[]"
    return "none" if value is None else str(value).lower() if isinstance(value, bool) else str(value)


def load_config(path: str | None, overrides: list[str]) -> RunConfig:
    """Merge a YAML recipe (optional) with ``key=value`` overrides into a validated RunConfig."""
    values = read_yaml(path) if path else {}
    given = {}
    for item in overrides:
        name, sep, raw = item.partition("=")
        if not sep or not name:
            raise UserError(f"argument {item!r} is not of the form key=value (keys: {', '.join(KEYS)})")
        given[name.strip()] = _parse_scalar(raw)
    if given.get("init_from") and "backbone" not in given:
        values.pop("backbone", None)  # a phase continues on its intermediate's backbone, whatever a recipe names
    values |= given
    return from_dict(values, source=path or "command line")


@functools.cache
def _hints() -> dict:
    return typing.get_type_hints(RunConfig)  # milliseconds a call: a study plan builds thousands of configs


def from_dict(values: dict, source: str = "config") -> RunConfig:
    hints = _hints()
    values = _nested(values, hints)
    checked = {}
    for name, value in values.items():
        if name not in hints:
            raise UserError(f"{source}: " + unknown("key", name, KEYS))
        checked[name] = _coerce(name, value, hints[name], source)
    for name, value in checked.items():
        check(FIELDS[name], value, source)
    _check_regime_keys(checked, source)
    config = RunConfig(**checked)
    get_regime(config.regime).check_keys(config, source)
    if not config.task:
        raise UserError(f"{source}: key 'task' is required (see `adapterxfer tasks`)")
    if not config.max_steps and not config.probe_steps:
        raise UserError(f"{source}: max_steps=0 trains nothing; set max_steps >= 1, or probe_steps >= 1 "
                        "to probe the head alone")
    return config


def _nested(values: dict, hints: dict) -> dict:
    """``peft.r: 8`` as ``peft: {r: 8}``: a dotted key names a field of a mapping key (given whole too, it is
    updated); any other dotted key stays, and is refused as unknown."""
    nested = {name: dict(value) if isinstance(value, dict) else value for name, value in values.items()}
    for name, value in values.items():
        head, _, field = name.partition(".")
        if field and head in hints and typing.get_origin(hints[head]) is dict and isinstance(
                nested.setdefault(head, {}), dict):
            nested[head][field] = nested.pop(name)
    return nested


def _check_regime_keys(values: dict, source: str) -> None:
    """A key of another regime than the phase's would change nothing it computes: refused."""
    regime = values.get("regime", DEFAULT_REGIME)
    for name in values:
        if not reads(regime, name):
            own = [key for key in REGIME_KEYS[regime] if key not in GENERAL]
            raise UserError(f"{source}: key {name!r} belongs to regime {' and '.join(owners(name))}, not {regime} "
                            f"(regime {regime} reads the general keys"
                            + (f" and {', '.join(own)})" if own else ", none of its own)"))


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
            if typing.get_args(option) == (float,):
                return [_coerce(name, item, float, source) for item in items]
            return [str(item) for item in items]
        if origin is float and not isinstance(value, bool):
            try:  # YAML reads "2e-5" (no dot) as a string
                return float(value)
            except (TypeError, ValueError):
                pass
        if origin is int and isinstance(value, int) and not isinstance(value, bool):
            return value
        if origin is dict and isinstance(value, dict):
            return {str(field): item for field, item in value.items()}
        if origin in (bool, str) and isinstance(value, origin):
            return value
        if origin is str and isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
    expected = " or ".join(getattr(o, "__name__", str(o)) for o in options)
    raise UserError(f"{source}: key {name!r} expects {expected}, got {value!r}")
