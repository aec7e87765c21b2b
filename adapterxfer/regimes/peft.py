"""Any peft method as a regime: ``regime=peft peft_method=NAME``, NAME a peft ``PeftType`` that works on an
encoder (VeRA, LoKr, LoHa, OFT, BOFT, FourierFT, HRA, ...; ``lora`` with ``peft.use_dora=true`` is DoRA).

The method's own fields are keys ``peft.<field>=value``, checked against its config dataclass (``VeraConfig``
...) before anything trains; ``adapterxfer train --help peft_method=NAME`` lists them. ``peft.target_modules``
names the encoder's linear layers (default: peft's own for the backbone's architecture); like LoRA's, the
module goes inside the encoder layers only (above ``frozen_layers``), so the head never gets one, and the
head is kept apart. An artifact is a plain peft folder plus the head, saved, loaded, swapped in a bank and
shown on a card exactly as a LoRA (this class inherits all that from :class:`Lora`). A target phase starts
from an intermediate of the same method (``sequential``), or from several merged (``merge``) where the method
is LoRA (DoRA and rsLoRA refused, as in regime lora).
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass

from ..errors import UserError, unknown
from ..keys import key
from . import register
from .common import unfreeze_head
from .lora import Lora, check_lora_merge, layer_pattern, merged

# Fields adapterxfer sets itself, and why
OWN_FIELDS = {"peft_type": "peft_method= names it", "task_type": "the task decides it",
              "base_model_name_or_path": "backbone= names it", "revision": "backbone= names it",
              "peft_version": "peft records it", "inference_mode": "a phase trains", "auto_mapping": "peft sets it",
              "modules_to_save": "the head is kept apart, saved beside the module",
              "layers_to_transform": "frozen_layers= chooses the layers",
              "layers_pattern": "frozen_layers= chooses the layers"}
MODULE_HELP = "names of the encoder's layers, e.g. query,value (matched inside its layers only); default: peft's"
MODULE_FIELDS = ("target_modules", "feedforward_modules")  # names of encoder layers, matched inside them only
# Tuners (prompt learning aside) that do not run on an encoder as a phase trains one, and why
NOT_ON_AN_ENCODER = {"adaption_prompt": "Llama-style attention only", "poly": "it routes by task_ids",
                     "xlora": "it needs a generative model's cache", "trainable_tokens": "it trains token rows",
                     "shadow": "it fails on XLM-R's layers in peft 0.21"}
MERGES = {"lora": Lora.merges}  # peft_method -> the merges peft computes for it (add_weighted_adapter)


@dataclass
class PeftKeys:
    """regime peft: any peft method (PeftType) on the frozen encoder"""

    peft_method: str = key("lora", "a peft PeftType that works on an encoder, lower case: vera, lokr, oft, ... "
                                   "(`adapterxfer train --help peft_method=NAME`: its fields)")
    peft: dict[str, object] = key({}, "the method's own fields, given as peft.<field>=value, checked against its "
                                      "config class")


def methods() -> dict[str, type]:
    """peft_method -> its peft config class: every tuner of the installed peft that works on an encoder."""
    from peft.config import PromptLearningConfig
    from peft.mapping import PEFT_TYPE_TO_CONFIG_MAPPING

    found = {_name(kind): cls for kind, cls in PEFT_TYPE_TO_CONFIG_MAPPING.items()}
    return {name: cls for name, cls in sorted(found.items())
            if not issubclass(cls, PromptLearningConfig) and name not in NOT_ON_AN_ENCODER}


def _name(kind) -> str:
    """A PeftType (or its string, as peft's mappings hold some) as a peft_method: ``VERA`` -> ``vera``."""
    return str(getattr(kind, "value", kind)).lower()


def config_class(method: str) -> type:
    known = methods()
    if method not in known:
        raise UserError(unknown("peft_method", method, known))
    return known[method]


def fields_of(method: str) -> dict[str, dataclasses.Field]:
    """The fields of ``method``'s config class a user sets (peft.<field>)."""
    return {spec.name: spec for spec in dataclasses.fields(config_class(method))
            if spec.init and spec.name not in OWN_FIELDS}


def method_help(method: str) -> str:
    """``adapterxfer train --help peft_method=NAME``: the method's fields, defaults and help."""
    cls = config_class(method)
    lines = [f"regime=peft peft_method={method}: peft's {cls.__name__}; its fields, as peft.<field>=value:"]
    for name, spec in fields_of(method).items():
        default = spec.default_factory() if callable(spec.default_factory) else spec.default
        text = MODULE_HELP if name in MODULE_FIELDS else _sentence(str(spec.metadata.get("help", "")))
        lines.append(f"  peft.{name:26} {text} (default: {default!r})")
    return "\n".join(lines)


def _sentence(text: str, width: int = 100) -> str:
    """The first sentence of peft's help for a field, cut at a word within ``width``."""
    first = " ".join(text.split()).split(". ")[0].rstrip(".")
    return first if len(first) <= width else first[:width].rsplit(" ", 1)[0] + " ..."


def check_fields(method: str, given: dict, source: str) -> None:
    """Refuse a field ``method``'s config class does not have, or a value its annotation does not allow."""
    allowed = fields_of(method)
    try:
        hints = typing.get_type_hints(config_class(method))
    except Exception:  # an annotation this Python cannot resolve: peft checks the value when it builds
        hints = {}
    for name, value in given.items():
        if name in OWN_FIELDS:
            raise UserError(f"{source}: peft.{name} is adapterxfer's to set: {OWN_FIELDS[name]}")
        if name not in allowed:
            raise UserError(f"{source}: peft_method={method} has no field {name!r}"
                            + unknown("field", name, allowed).removeprefix(f"unknown field {name!r}"))
        if name in hints and not _accepts(hints[name], value):
            raise UserError(f"{source}: peft.{name} expects {_shown(hints[name])}, got {value!r}")


def _accepts(hint, value) -> bool:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_accepts(arg, value) for arg in args)
    if origin is typing.Literal:
        return value in args
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if origin is not None:
        return isinstance(value, origin) if isinstance(origin, type) else True
    return isinstance(value, hint) if isinstance(hint, type) and hint is not typing.Any else True


def _shown(hint) -> str:
    return hint.__name__ if isinstance(hint, type) else str(hint).replace("typing.", "")


def peft_config(config, backbone):
    """The method's config for a phase: its fields, its module names turned into patterns inside the encoder
    layers (above ``frozen_layers``), the method's default names for the backbone's architecture where none."""
    from peft.mapping import PEFT_TYPE_TO_TUNER_MAPPING

    method, fields = config.peft_method, dict(config.peft)
    tuner = next(cls for kind, cls in PEFT_TYPE_TO_TUNER_MAPPING.items() if _name(kind) == method)
    architecture = backbone.config.get("model_type")
    if "target_modules" not in fields:
        names = getattr(tuner, "target_module_mapping", {}).get(architecture)
        if not names:
            raise UserError(f"peft_method={method} has no default target modules for {architecture}: give "
                            "peft.target_modules=NAMES (e.g. query,value)")
        fields["target_modules"] = names
    for name in MODULE_FIELDS:
        if name in fields and name in fields_of(method):
            names = [fields[name]] if isinstance(fields[name], str) else list(fields[name])
            fields[name] = layer_pattern(config) + ".*(" + "|".join(n.replace(".", r"\.") for n in names) + ")$"
    try:
        return config_class(method)(**fields)
    except (TypeError, ValueError) as err:
        raise UserError(f"peft_method={method}: peft refuses {_listed(config.peft)}: "
                        + " ".join(str(err).split())) from None


def _listed(fields: dict) -> str:
    return ", ".join(f"peft.{name}={value}" for name, value in fields.items()) or "its defaults"


@register
class Peft(Lora):
    name = "peft"
    kind = "peft"  # module_kind: the method's name
    section = PeftKeys
    transfers = ("sequential", "merge")
    starts_unchanged = False  # not every method starts as the identity
    plan_keys = {}  # no transfer=arithmetic, so no language modules

    def check_keys(self, config, source: str) -> None:
        check_fields(config.peft_method, config.peft, source)

    def check(self, task, config, parents, backbone) -> None:
        for parent in parents:
            kind = parent.manifest["module_kind"]
            if parent.manifest["regime"] == self.name and kind != config.peft_method:
                raise UserError(f"init_from {parent.folder} is a {kind} module, not {config.peft_method}: pass "
                                f"peft_method={kind}")
        super().check(task, config, parents, backbone)
        if not parents:
            peft_config(config, backbone)  # what peft refuses, refused now

    def module_kind(self, task, config) -> str:
        return config.peft_method

    def mixes(self, config: dict) -> bool:
        """LoRA without DoRA: peft mixes no other method's modules in one batch (nor DoRA's)."""
        return config.get("peft_method") == "lora" and not (config.get("peft") or {}).get("use_dora")

    def merge_methods(self, config) -> tuple[str, ...]:
        if config.peft_method not in MERGES:
            raise UserError(f"transfer=merge: peft merges {' and '.join(MERGES)} modules, not {config.peft_method}")
        return MERGES[config.peft_method]

    def check_merge(self, method, parents) -> None:
        check_lora_merge(method, parents)

    def build(self, task, backbone, parents, config):
        from peft import PeftModel, get_peft_model

        from ..modeling import task_model

        base = task_model(task, backbone.path)
        if config.transfer == "merge":
            model = merged(base, parents, self, config)
        elif parents:
            model = PeftModel.from_pretrained(base, parents[0].folder, is_trainable=True)
        else:
            try:
                model = get_peft_model(base, peft_config(config, backbone))
            except ValueError as err:  # a field that does not fit this backbone's layers
                raise UserError(f"peft_method={config.peft_method} on {backbone.name}: peft refuses "
                                f"{_listed(config.peft)}: " + " ".join(str(err).split())) from None
        unfreeze_head(model)
        return model

    def load_encoder(self, folder, task, backbone, manifest=None):
        """The encoder with the module active inside its layers (not every method merges into weights)."""
        from ..modeling import unwrap

        return unwrap(self.load(folder, task, backbone, manifest)).base_model
