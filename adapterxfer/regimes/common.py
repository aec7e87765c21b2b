"""The regime interface, the parent artifacts a phase starts from, and the head file every regime writes."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, ClassVar

import torch
from safetensors.torch import load_file, save_file

from .. import artifacts
from ..errors import UserError
from ..modeling import head_parameters, unwrap

HEAD_FILE = "head.safetensors"


@dataclass(frozen=True)
class Parent:
    """An intermediate artifact a target phase starts from (``init_from``)."""

    folder: Path
    manifest: dict


class Regime:
    """What trains in a phase and how it is saved. Subclasses set the class variables and implement
    ``build``, ``save``, ``load`` and ``load_encoder``; the rest has defaults."""

    name: ClassVar[str]
    kind: ClassVar[str]  # what a phase saves: encoder, lora, seq_bn, ...
    transfers: ClassVar[tuple[str, ...]]  # names in transfers.TRANSFERS; "multitask": task=a+b shares one module
    swappable: ClassVar[bool] = False  # attach/activate: many modules on one loaded backbone (bank.py)
    library: ClassVar[str]  # what loads an artifact without adapterxfer (a pushed card's library_name)
    card_imports: ClassVar[tuple[str, ...]] = ()  # the card snippet's imports of that library
    head_owner: ClassVar[str] = "model"  # in the card snippet: the object whose state dict holds the head

    @property
    def multitask(self) -> bool:
        return "multitask" in self.transfers

    def check(self, task, config, parents: list[Parent], backbone) -> None:
        """Refuse, before any training, parents this regime cannot start from (``backbone``: the resolved
        one the phase trains on; ``transfers.check`` has checked the transfer)."""
        for parent in parents:
            if parent.manifest["regime"] != self.name:
                raise UserError(f"init_from {parent.folder} is a {parent.manifest['regime']} artifact, "
                                f"not {self.name}: regimes cannot be mixed in one transfer")

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

    def stacks_on(self, folder: Path, manifest: dict) -> list[Path]:
        """Other artifacts this one needs loaded with it, pushed along (madx: its language adapters)."""
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

    def language_switch(self, model, task, at_test: str) -> Callable[[str], None] | None:
        """A hook run before each test language is scored (madx swaps language adapters); None: nothing."""
        return None


def manifest_of(folder: Path, manifest: dict | None) -> dict:
    return manifest if manifest is not None else artifacts.read_manifest(folder, verify=False)


def unfreeze_head(model) -> None:
    for param in head_parameters(model).values():
        param.requires_grad_(True)


def save_head(model, folder: Path) -> None:
    save_file({n: p.detach().contiguous() for n, p in head_parameters(model).items()}, folder / HEAD_FILE)


@torch.no_grad()
def load_head(model, folder: Path, task_name: str) -> None:
    """Copy the saved head into the model; a head of another shape or task is a one-line error.

    The saved head must cover every freshly initialized weight; it may also hold weights the
    encoder folder has too (full regime: a pooler that was new in phase 2 and saved with the encoder).
    """
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
        param.copy_(saved[name])
