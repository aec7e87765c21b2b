"""The regime interface, the parent artifacts a phase starts from, and the head file every regime writes.

A regime's module imports its libraries (torch, transformers, peft, adapters) where it uses them, never at
the top: the key table (config.py) reads every registered regime's ``section`` before anything trains.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, ClassVar

from .. import arithmetic, artifacts, merges
from ..errors import UserError
from ..transfers import get_transfer

HEAD_FILE = "head.safetensors"


@dataclass(frozen=True)
class Parent:
    """An intermediate artifact a target phase starts from (``init_from``)."""

    folder: Path
    manifest: dict


class Regime:
    """What trains in a phase and how it is saved. Subclasses set the class variables and implement
    ``build``, ``save``, ``load`` and ``load_encoder`` (and ``attach`` / ``activate`` where swappable);
    the rest has defaults."""

    name: ClassVar[str]
    # Its own train keys, like peft's <Method>Config: a dataclass of keys.key() fields whose docstring
    # titles the section in `adapterxfer train --help`; None: no keys of its own.
    section: ClassVar[type | None] = None
    kind: ClassVar[str]  # what a phase saves: encoder, lora, seq_bn, ...
    transfers: ClassVar[tuple[str, ...]]  # names in transfers.TRANSFERS; "multitask": task=a+b shares one module
    swappable: ClassVar[bool] = False  # attach/activate: many modules on one loaded backbone (bank.py)
    merges: ClassVar[tuple[str, ...]] = ()  # transfer=merge: its methods (merges.METHODS), the first its default
    # A fresh module leaves the backbone's outputs as they are (LoRA's B and IA3's scales start at 0 and 1):
    # its step-0 dev score is the backbone's wherever the head does not depend on the seed either.
    starts_unchanged: ClassVar[bool] = False
    library: ClassVar[str]  # what loads an artifact without adapterxfer (a pushed card's library_name)
    card_imports: ClassVar[tuple[str, ...]] = ()  # the card snippet's imports of that library
    head_owner: ClassVar[str] = "model"  # in the card snippet: the object whose state dict holds the head
    # A study plan's block named after the regime: its keys -> their help ({}: the plan has no such block).
    plan_keys: ClassVar[dict[str, str]] = {}
    # The path key that names the artifacts its phases stack on (``stacks_on``), which a study fills with the
    # regime's language phases (``language_phases``; madx: lang_adapters); None: its phases stack on nothing.
    stacks_key: ClassVar[str | None] = None
    # Where a push puts those artifacts, one folder per artifact named by its language (madx: lang_adapters).
    bundle: ClassVar[str | None] = None
    # Its train keys that an evaluation may set otherwise than trained, by ``adapterxfer evaluate``'s flag or as
    # a study's ablation (``ablations``): key -> flag.
    at_test: ClassVar[dict[str, str]] = {}

    @property
    def multitask(self) -> bool:
        return "multitask" in self.transfers

    def check(self, task, config, parents: list[Parent], backbone) -> None:
        """Refuse, before any training, parents this regime cannot start from (``backbone``: the resolved
        one the phase trains on; ``transfers.check`` has checked the transfer), and a merge it cannot compute."""
        for parent in parents:
            if parent.manifest["regime"] != self.name:
                raise UserError(f"init_from {parent.folder} is a {parent.manifest['regime']} artifact, "
                                f"not {self.name}: regimes cannot be mixed in one transfer")
        if config.transfer == "merge":
            self.check_merge(merges.check(self, config, len(parents)), parents)
        if config.transfer == "arithmetic":
            arithmetic.check_task_module(config, task, parents[0], backbone)
            self.check_arithmetic(task, parents[0], arithmetic.language_modules(config, task, self.name, backbone))

    def merge_methods(self, config) -> tuple[str, ...]:
        """The merge methods a phase of this regime can use (its first the default); refuses where none."""
        return self.merges

    def mixes(self, config: dict) -> bool:
        """Whether modules of a phase with these train keys (``vars(RunConfig)``, a manifest's ``config``) run in
        one batch beside others, each example through its own (``ModuleBank.forward_mixed``: peft's mixed-adapter
        batches, LoRA only)."""
        return False

    def check_keys(self, config, source: str) -> None:
        """Refuse, as the config is read (``source``: where from), values of this regime's keys that its
        section's types and bounds cannot express (peft: the method's own fields)."""

    def check_merge(self, method, parents: list[Parent]) -> None:
        """Refuse parents whose modules ``method`` (a merges.Method) would merge wrongly or cannot merge."""

    def check_arithmetic(self, task, parent: Parent, languages: dict[str, Path]) -> None:
        """Refuse a task module (``parent``) and language modules (language -> folder, verified by
        ``arithmetic.language_modules``) this regime cannot add up exactly."""

    def input_refs(self, config) -> list[str]:
        """Other artifacts the phase reads, named by the path keys of its section and its transfer's (madx: its
        language adapters; arithmetic: its language modules)."""
        sections = [section for section in (self.section, get_transfer(config.transfer).section) if section]
        return [ref for section in sections for spec in dataclasses.fields(section) if spec.metadata["path"]
                for ref in getattr(config, spec.name)]

    def module_kind(self, task, config) -> str:
        """What this phase saves (madx: a language or a task adapter, by the phase)."""
        return self.kind

    def build(self, task, backbone, parents: list[Parent], config):
        """The task model ready to train: module, fresh head, and ``parents`` applied by ``config.transfer``."""
        raise NotImplementedError

    def save(self, model, tokenizer, folder: Path) -> None:
        """The trained parts, safetensors only, readable by the regime's own library."""
        raise NotImplementedError

    def load(self, folder: Path, task, backbone, manifest: dict | None = None):
        """The task model back from a saved folder; the layout follows ``manifest["transfer"]``."""
        raise NotImplementedError

    def load_encoder(self, folder: Path, task, backbone, manifest: dict | None = None):
        """The bare encoder with the module applied (retrieval from an intermediate model)."""
        raise NotImplementedError

    def attach(self, model, folder: Path, name: str):
        """Add the saved module in ``folder`` to a loaded ``model`` under ``name``, without reloading the
        backbone; returns the model (a swappable regime's; see ``ModuleBank``)."""
        raise NotImplementedError

    def activate(self, model, name: str) -> None:
        """Make the attached module ``name`` the one that runs (a swappable regime's)."""
        raise NotImplementedError

    def check_plan(self, block: dict, where: str) -> None:
        """Refuse, before a study expands, a plan whose block for this regime lacks what its phases need."""

    def language_phases(self, block: dict) -> tuple[str, dict] | None:
        """A study's per-language phases this regime's phases stack on, one per language its targets train
        or test in (madx: language adapters), as (their task, their train keys); None: none."""
        return None

    def ablations(self, block: dict) -> dict[str, dict]:
        """A study's extra evaluations of each target phase: name -> values of its ``at_test`` keys."""
        return {}

    def stacks_on(self, folder: Path, manifest: dict) -> list[Path]:
        """Other artifacts this one needs loaded with it, pushed along under ``bundle`` (madx: its language
        adapters)."""
        return []

    def card_lineage(self, folder: Path, manifest: dict) -> list[str]:
        """The model card's lineage lines about the artifacts this one stacks on, bundled in its repo."""
        return []

    def card_module(self, folder: Path, manifest: dict) -> list[str]:
        """The card snippet's ``with_module(model, bare=False)``: the saved module (in ``folder``, the
        downloaded snapshot) applied to a task model or the bare encoder, in plain library code."""
        raise NotImplementedError

    def card_loading(self, folder: Path, manifest: dict, model_class: str, base: str, labels: str) -> list[str]:
        """The card snippet's lines that build ``model`` (the task model, head included) and ``encoder``."""
        return [*self.card_module(folder, manifest), "",
                f'model = with_module({model_class}.from_pretrained("{base}"{labels}))',
                f'encoder = with_module(AutoModel.from_pretrained("{base}", add_pooling_layer=False), bare=True)',
                f'{self.head_owner}.load_state_dict(load_file(f"{{folder}}/head.safetensors"), strict=False)'
                "  # the head"]

    def language_switch(self, model, task, config: dict) -> Callable[[str], None] | None:
        """A hook run before each test language is scored (madx swaps language adapters); None: nothing.
        ``config``: the train keys the model was trained with, its ``at_test`` keys as evaluation sets them."""
        return None


def manifest_of(folder: Path, manifest: dict | None) -> dict:
    return manifest if manifest is not None else artifacts.read_manifest(folder, verify=False)


def unfreeze_head(model) -> None:
    from ..modeling import head_parameters

    for param in head_parameters(model).values():
        param.requires_grad_(True)


def save_head(model, folder: Path) -> None:
    from safetensors.torch import save_file

    from ..modeling import head_parameters

    save_file({n: p.detach().contiguous() for n, p in head_parameters(model).items()}, folder / HEAD_FILE)


def load_head(model, folder: Path, task_name: str) -> None:
    """Copy the saved head into the model; a head of another shape or task is a one-line error.

    The saved head must cover every freshly initialized weight; it may also hold weights the
    encoder folder has too (full regime: a pooler that was new in phase 2 and saved with the encoder).
    """
    import torch
    from safetensors.torch import load_file

    from ..modeling import head_parameters, unwrap

    saved = load_file(folder / HEAD_FILE)
    params = dict(unwrap(model).named_parameters())
    missing = set(head_parameters(model)) - set(saved)
    unknown = set(saved) - set(params)
    if missing or unknown:
        raise UserError(f"{folder / HEAD_FILE}: head does not fit task {task_name} "
                        f"(missing {sorted(missing)[:3]}, unexpected {sorted(unknown)[:3]})")
    for name in saved:
        param = params[name]
        if saved[name].shape != param.shape:
            raise UserError(f"{folder / HEAD_FILE}: {name} has shape {tuple(saved[name].shape)}, "
                            f"task {task_name} needs {tuple(param.shape)}")
        with torch.no_grad():
            param.copy_(saved[name])
