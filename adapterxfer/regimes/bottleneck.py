"""Sequential bottleneck adapters (AdapterHub ``adapters``, ``seq_bn``) on a frozen backbone.

The artifact folder is what ``model.save_adapter(..., with_head=False, use_safetensors=True)``
writes, so ``model.load_adapter(folder, use_safetensors=True)`` reads it without adapterxfer;
the head is saved beside it (adapters' own head saving would tie the module to one label set).

Transfer from intermediate adapters:
- ``sequential``: the target adapter starts from the intermediate adapter's weights;
- ``stack``: ``Stack(intermediate, target)``, the intermediate frozen (saved under ``stacked/``);
- ``fusion``: AdapterFusion over N frozen intermediate adapters: only the fusion layer and the
  head train (saved as ``fusion/`` plus each adapter under ``adapters/<name>/``);
- ``merge``: the intermediate adapters' parameters summed with their weights (``merge=linear``, adapters'
  ``average_adapter``, which gets the weights as ``merges.weights`` computes them, so negative ones
  work), into one adapter of their common configuration that trains on.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from .. import merges
from ..errors import UserError
from ..keys import key
from . import register
from .common import Regime, load_head, manifest_of, save_head, unfreeze_head

TARGET = "target"
STACKED = "stacked"  # not "intermediate": that is also a module name inside every layer


@dataclass
class BottleneckKeys:
    """regime bottleneck: AdapterHub seq_bn adapters on the frozen encoder"""

    reduction_factor: int = key(16, "hidden size / bottleneck size of a task adapter", at_least=1)


@register
class Bottleneck(Regime):
    name = "bottleneck"
    kind = "seq_bn"
    section = BottleneckKeys
    transfers = ("sequential", "stack", "fusion", "merge", "multitask")
    merges = ("linear",)
    swappable = True
    library = "adapters"
    card_imports = ("import adapters", "from adapters.composition import Fuse, Stack")

    def build(self, task, backbone, parents, config):
        from adapters import SeqBnConfig
        from adapters.composition import Fuse, Stack

        model = adaptable(task, backbone)
        if config.transfer == "fusion" and parents:
            names = [load_adapter(model, parent.folder, f"parent{i}") for i, parent in enumerate(parents)]
            model.add_adapter_fusion(Fuse(*names))
            model.train_adapter_fusion(Fuse(*names))
        elif config.transfer == "sequential" and parents:
            load_adapter(model, parents[0].folder, TARGET)
            model.train_adapter(TARGET)
        elif config.transfer == "merge":
            names = [load_adapter(model, parent.folder, f"parent{i}") for i, parent in enumerate(parents)]
            model.average_adapter(TARGET, names, weights=merges.weights(config, len(names)),
                                  combine_strategy="linear", normalize_weights=False)
            for name in names:
                model.delete_adapter(name)
            model.train_adapter(TARGET)
        else:
            if parents:  # stack: loaded first, so that train_adapter(TARGET) freezes it
                load_adapter(model, parents[0].folder, STACKED)
            model.add_adapter(TARGET, config=SeqBnConfig(reduction_factor=config.reduction_factor,
                                                         leave_out=list(range(config.frozen_layers))))
            model.train_adapter(TARGET)
            if parents:
                model.active_adapters = Stack(STACKED, TARGET)
        unfreeze_head(model)  # train_adapter froze every weight outside the adapters
        return model

    def check_merge(self, method, parents) -> None:
        """adapters averages adapters of one configuration only (dropout aside)."""
        configs = [{name: value for name, value in saved_config(parent.folder).items()
                    if name not in ("dropout", "init_weights")} for parent in parents]
        differ = sorted(name for name in set().union(*configs) if len({json.dumps(c.get(name)) for c in configs}) > 1)
        if differ:
            raise UserError(f"merge={method.name} averages adapters of one configuration; the init_from adapters "
                            f"differ in {', '.join(differ)}")

    def save(self, model, tokenizer, folder: Path) -> None:
        from adapters.composition import Fuse

        setup = model.active_adapters
        if isinstance(setup, Fuse):
            (folder / "adapters").mkdir()
            for name in setup:
                model.save_adapter(folder / "adapters" / name, name, with_head=False, use_safetensors=True)
            model.save_adapter_fusion(folder / "fusion", setup, with_head=False, use_safetensors=True)
        else:
            model.save_adapter(folder, TARGET, with_head=False, use_safetensors=True)
            if STACKED in model.adapters_config.adapters:
                model.save_adapter(folder / STACKED, STACKED, with_head=False, use_safetensors=True)
        save_head(model, folder)

    def load(self, folder: Path, task, backbone, manifest=None):
        from adapters.composition import Fuse, Stack

        manifest = manifest_of(folder, manifest)
        transfer = manifest.get("transfer")
        model = adaptable(task, backbone)
        if transfer == "fusion":
            names = [load_adapter(model, folder / "adapters" / name, name) for name in fused(manifest)]
            model.load_adapter_fusion(folder / "fusion", use_safetensors=True)
            model.active_adapters = Fuse(*names)
        else:
            load_adapter(model, folder, TARGET)
            model.active_adapters = TARGET
            if transfer == "stack":
                load_adapter(model, folder / STACKED, STACKED)
                model.active_adapters = Stack(STACKED, TARGET)
        load_head(model, folder, task.name)
        return model

    def load_encoder(self, folder: Path, task, backbone, manifest=None):
        """The encoder with the adapters active (they live inside its layers)."""
        return self.load(folder, task, backbone, manifest).base_model

    def attach(self, model, folder: Path, name: str):
        import adapters

        if not hasattr(model, "adapters_config"):
            adapters.init(model)
        load_adapter(model, folder, name)
        return model

    def activate(self, model, name: str) -> None:
        model.set_active_adapters(name)

    def card_module(self, folder: Path, manifest: dict) -> list[str]:
        body = ["    adapters.init(model)"]
        if (folder / "fusion").is_dir():
            names = fused(manifest)
            body += [f"    for name in {tuple(names)!r}:",
                     "    " + card_load('f"{folder}/adapters/{name}"', "name", quoted=False),
                     '    model.load_adapter_fusion(f"{folder}/fusion", use_safetensors=True)',
                     f"    model.active_adapters = Fuse({', '.join(map(repr, names))})"]
        else:
            body += [card_load("folder", TARGET), f'    model.active_adapters = "{TARGET}"']
            if (folder / STACKED).is_dir():
                body += [card_load(f'f"{{folder}}/{STACKED}"', STACKED),
                         f'    model.active_adapters = Stack("{STACKED}", "{TARGET}")']
        return ["def with_module(model, bare=False):", *body, "    return model"]


def fused(manifest: dict) -> list[str]:
    """The adapters a fusion artifact fuses: those its manifest lists under adapters/ (never another folder there)."""
    return sorted({name.split("/")[1] for name in manifest["files"] if name.startswith("adapters/")})


def card_load(source: str, name: str, quoted: bool = True) -> str:
    """A card snippet line that loads the adapter at ``source`` (Python code) as ``name``."""
    load_as = f'"{name}"' if quoted else name
    return f"    model.load_adapter({source}, load_as={load_as}, with_head=False, use_safetensors=True)"


def saved_config(folder: Path) -> dict:
    """The adapter's configuration as ``save_adapter`` wrote it (reduction factor, layers left out, ...)."""
    return json.loads((folder / "adapter_config.json").read_text())["config"]


def adaptable(task, backbone):
    import adapters

    from ..modeling import task_model

    model = task_model(task, backbone.path)
    adapters.init(model)
    return model


def load_adapter(model, folder: Path, name: str) -> str:
    return model.load_adapter(str(folder), load_as=name, with_head=False, use_safetensors=True)
