"""What every regime shares: the parent artifacts a phase starts from, and the head file."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from ..errors import UserError
from ..modeling import head_parameters, unwrap

HEAD_FILE = "head.safetensors"


@dataclass(frozen=True)
class Parent:
    """An intermediate artifact a target phase starts from (``init_from``)."""

    folder: Path
    manifest: dict


def check_transfer(regime: str, supported: tuple[str, ...], transfer: str, parents: list[Parent]) -> None:
    if not parents:
        return
    if transfer not in supported:
        raise UserError(f"transfer={transfer} is not available in regime {regime} (available: {', '.join(supported)})")
    if transfer in ("sequential", "stack") and len(parents) != 1:
        raise UserError(f"transfer={transfer} starts from one intermediate artifact, got init_from with {len(parents)}")
    for parent in parents:
        if parent.manifest["regime"] != regime:
            raise UserError(f"init_from {parent.folder} is a {parent.manifest['regime']} artifact, "
                            f"not {regime}: regimes cannot be mixed in one transfer")


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
