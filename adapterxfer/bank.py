"""One frozen backbone, loaded once, and a bank of modules to swap, each with its own head.

Evaluating K intermediate or target modules over L languages then costs one backbone load:
``attach`` each artifact, ``activate`` one at a time. Only plain modules (not stacked or fused
artifacts) go into a bank; all must share the regime, the task, the backbone and the pooling.
LoRA modules also run side by side: ``forward_mixed`` sends each example of one batch through its own
module (peft's mixed-adapter batches) and its own module's head (``evaluate.score_runs``: K modules x L
languages, or each language routed to its own module, in one pass).

``EncoderBank`` serves the encoders alone (heads ignored) of modules trained on any tasks on one backbone
(`adapterxfer select`): the modules of a swappable regime attach to one loaded backbone; any other module
is its own encoder (full fine-tuning) and loads alone.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import torch
from safetensors.torch import load_file

from . import artifacts
from .errors import UserError
from .modeling import head_parameters, replayed_encoder, set_pooling, task_model, unwrap
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
        self.pooling: str | None = None  # what every module's head reads (modeling.set_pooling)
        self.unmixable: dict[str, str] = {}  # module -> why it cannot run beside others in one batch

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
        pooling = manifest.get("pooling", "cls")
        if self.pooling not in (None, pooling):
            raise UserError(f"{folder}: a module whose head reads {pooling} pooling cannot join a bank of modules "
                            f"reading {self.pooling} pooling")
        head = load_file(folder / HEAD_FILE)
        if {key: value.shape for key, value in head.items()} != {key: p.shape for key, p in self.head.items()}:
            raise UserError(f"{folder / HEAD_FILE}: head does not fit task {self.task.name} "
                            f"(saved {sorted(head)[:3]}, expected {sorted(self.head)[:3]})")
        self.model = self.regime.attach(self.model, folder, name)
        set_pooling(self.model, pooling)
        self.heads[name] = head
        self.module_kind, self.pooling = manifest["module_kind"], pooling
        refusal = mixing_refusal(folder, manifest)
        if refusal:
            self.unmixable[name] = refusal

    @torch.no_grad()
    def activate(self, name: str):
        """Make ``name`` the active module and put its head in place; returns the model."""
        self._check_names([name])
        self.regime.activate(self.model, name)
        self._put_head(name)
        return self.model

    def check_mixable(self, names) -> None:
        """Refuse, in one line, modules of ``names`` that cannot run beside others in one batch."""
        self._check_names(names)
        refused = next((self.unmixable[name] for name in names if name in self.unmixable), None)
        if refused:
            raise UserError(refused)

    @torch.no_grad()
    def forward_mixed(self, batch: dict, names: list[str]) -> Iterator[tuple[list[int], dict, object]]:
        """Run a collated ``batch`` with its example i through module ``names[i]`` and that module's head:
        the encoder once over the whole batch (peft's ``adapter_names``, one per sequence the encoder reads:
        a multiple-choice example's choices each), then each module's head on its own examples' states.
        Yields (example positions, their sub-batch, the model's output for them), one module at a time."""
        self.check_mixable(dict.fromkeys(names))
        sequences = batch["input_ids"][0, ..., 0].numel()  # sequences per example (choices), rows of the encoder
        encoder, states = unwrap(self.model).base_model.encoder, []
        hook = encoder.register_forward_hook(lambda module, args, output: states.append(output[0]))
        try:
            self.model(**batch, adapter_names=[name for name in names for _ in range(sequences)])
        finally:
            hook.remove()
        with replayed_encoder(self.model) as replay:
            for name in dict.fromkeys(names):
                ids = [i for i, other in enumerate(names) if other == name]
                replay.states = states[0][[i * sequences + j for i in ids for j in range(sequences)]]
                self._put_head(name)
                sub_batch = {key: value[ids] for key, value in batch.items()}
                yield ids, sub_batch, self.model(**sub_batch)

    def _check_names(self, names) -> None:
        missing = next((name for name in names if name not in self.heads), None)
        if missing is not None:
            raise UserError(f"no module {missing!r} in the bank (have: {', '.join(self.heads)})")

    def _put_head(self, name: str) -> None:
        with torch.no_grad():
            for key, param in self.head.items():
                param.copy_(self.heads[name][key])


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


def mixing_refusal(folder: Path, manifest: dict) -> str | None:
    """Why the module in ``folder`` cannot run beside others in one batch (``ModuleBank.forward_mixed``), in one
    line; None: it can."""
    if not get_transfer(manifest.get("transfer")).swappable:
        return f"{folder}: stacked or fused artifacts cannot run beside others in one batch; evaluate them alone"
    if not get_regime(manifest["regime"]).mixes(manifest["config"]):
        return (f"{folder}: a {manifest['module_kind']} module of regime {manifest['regime']} cannot run beside "
                "others in one batch (peft mixes LoRA modules only, not DoRA); evaluate it alone")
    return None


def check_backbone(folder: Path, manifest: dict, backbone) -> None:
    if manifest["backbone"]["weight_hash"] != backbone.weight_hash:
        raise UserError(f"{folder}: a module trained on backbone {manifest['backbone']['name']!r}, not on "
                        f"{backbone.name!r} (weight hashes differ); a bank holds one backbone's modules")
