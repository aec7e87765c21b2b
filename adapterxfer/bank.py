"""One frozen backbone, loaded once, and a bank of modules to swap, each with its own head.

Evaluating K intermediate or target modules over L languages then costs one backbone load:
``attach`` each artifact, ``activate`` one at a time. Only plain modules (not stacked or fused
artifacts) go into a bank; all must share the regime, the task and the backbone.

``EncoderBank`` serves the encoders alone (heads ignored) of modules trained on any tasks on one backbone
(`adapterxfer select`): the modules of a swappable regime attach to one loaded backbone; any other module
is its own encoder (full fine-tuning) and loads alone.
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file

from . import artifacts
from .errors import UserError
from .modeling import head_parameters, set_pooling, task_model, unwrap
from .regimes import all_regimes, get_regime
from .regimes.common import HEAD_FILE
from .tasks import get_task
from .transfers import get_transfer


class ModuleBank:
    def __init__(self, task, backbone, regime: str):
        self.task, self.backbone, self.regime = task, backbone, get_regime(regime)
        if not self.regime.swappable:
            swappable = [r.name for r in all_regimes() if r.swappable]
            raise UserError(f"regime {regime} has no swappable modules (use {' or '.join(swappable)})")
        self.model = task_model(task, backbone.path).eval()
        # The head's parameters, found once (a walk over every weight); attaching modules keeps them.
        self.head = head_parameters(self.model)
        self.heads: dict[str, dict[str, torch.Tensor]] = {}
        self.module_kind: str | None = None  # one kind of module per bank (regime peft: one method)

    def attach(self, name: str, folder: str | Path) -> None:
        """Verify an artifact and add its module and head to the bank."""
        folder = Path(folder)
        manifest = artifacts.read_manifest(folder)
        expected = (self.regime.name, self.task.name, self.backbone.weight_hash)
        found = (manifest["regime"], manifest["task"], manifest["backbone"]["weight_hash"])
        if found != expected:
            raise UserError(f"{folder}: a {found[0]} module for {found[1]} on another backbone cannot join a bank of "
                            f"{expected[0]} modules for {expected[1]} on {self.backbone.name}")
        if not get_transfer(manifest.get("transfer")).swappable:
            raise UserError(f"{folder}: stacked or fused artifacts cannot be swapped; evaluate them alone")
        if self.module_kind not in (None, manifest["module_kind"]):
            raise UserError(f"{folder}: a {manifest['module_kind']} module cannot join a bank of {self.module_kind} "
                            "modules")
        head = load_file(folder / HEAD_FILE)
        if {key: value.shape for key, value in head.items()} != {key: p.shape for key, p in self.head.items()}:
            raise UserError(f"{folder / HEAD_FILE}: head does not fit task {self.task.name} "
                            f"(saved {sorted(head)[:3]}, expected {sorted(self.head)[:3]})")
        self.model = self.regime.attach(self.model, folder, name)
        set_pooling(self.model, manifest.get("pooling", "cls"))
        self.heads[name] = head
        self.module_kind = manifest["module_kind"]

    @torch.no_grad()
    def activate(self, name: str):
        """Make ``name`` the active module and put its head in place; returns the model."""
        if name not in self.heads:
            raise UserError(f"no module {name!r} in the bank (have: {', '.join(self.heads)})")
        self.regime.activate(self.model, name)
        for key, param in self.head.items():
            param.copy_(self.heads[name][key])
        return self.model


class EncoderBank:
    """The encoders of modules of any intermediate tasks on one backbone: ``encoder(name, folder, manifest)``."""

    def __init__(self, backbone):
        self.backbone = backbone
        self.hosts: dict[tuple[str, str], torch.nn.Module] = {}  # (regime, module kind) -> their task model

    def encoder(self, name: str, folder: Path, manifest: dict):
        """The bare encoder with the module of ``folder`` active (in eval mode)."""
        check_backbone(folder, manifest, self.backbone)
        regime, task = get_regime(manifest["regime"]), get_task(manifest["tasks"][0])
        if not (regime.swappable and get_transfer(manifest.get("transfer")).swappable):
            return regime.load_encoder(folder, task, self.backbone, manifest).eval()
        kind = (regime.name, manifest["module_kind"])
        host = self.hosts.get(kind) or task_model(task, self.backbone.path).eval()
        self.hosts[kind] = regime.attach(host, folder, name)
        regime.activate(self.hosts[kind], name)
        return unwrap(self.hosts[kind]).base_model


def check_backbone(folder: Path, manifest: dict, backbone) -> None:
    if manifest["backbone"]["weight_hash"] != backbone.weight_hash:
        raise UserError(f"{folder}: a module trained on backbone {manifest['backbone']['name']!r}, not on "
                        f"{backbone.name!r} (weight hashes differ); a bank holds one backbone's modules")
