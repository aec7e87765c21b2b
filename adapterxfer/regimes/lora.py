"""LoRA (peft) on a frozen backbone; the task head trains beside it and is saved apart.

The artifact folder is a plain peft adapter folder (``adapter_config.json`` and
``adapter_model.safetensors``), so ``PeftModel.from_pretrained(base, folder)`` loads it
without adapterxfer. The head is kept out of peft's ``modules_to_save`` on purpose:
``add_weighted_adapter`` refuses adapters whose ``modules_to_save`` hold a head.

Transfer from intermediate LoRAs:
- ``sequential``: the target LoRA starts from the intermediate LoRA's weights;
- ``stack``: the intermediate LoRA stays frozen and active, a new LoRA trains on top
  (saved under ``stacked/`` inside the artifact);
- ``merge``: intermediate LoRAs are combined with ``add_weighted_adapter`` by any method of
  ``merges.METHODS`` but ``linear`` (it adds cross terms, peft #3004): ``cat`` is exact, the others
  approximate. DoRA, rsLoRA and ``lora_bias`` LoRAs are refused (peft merges them wrongly without an
  error, peft #3761), as are unequal ranks where the method merges A and B apart. The target LoRA
  starts from the merge;
- ``arithmetic``: nothing trains; each test language L gets the task module (``init_from``, with its head) plus
  λ·(L's language LoRA − the source language's), computed by ``cat`` with weights [1, λ, −λ], which is exact
  for any ranks, and saved as a plain peft folder ``arithmetic-<L>/`` (the source language: the task module).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from .. import arithmetic, merges
from ..errors import UserError
from ..keys import key
from . import register
from .common import Regime, load_head, manifest_of, save_head, unfreeze_head

TARGET = "default"  # peft's name for the adapter saved at the top of the folder
STACKED = "stacked"  # not "intermediate": that is also a module name inside every layer
ARITHMETIC = arithmetic.FOLDER
ALL_LINEAR = ("query", "key", "value", "attention.output.dense", "intermediate.dense", "output.dense")


@dataclass
class LoraKeys:
    """regime lora: peft LoRA on the frozen encoder"""

    lora_r: int = key(8, "LoRA rank", at_least=1)
    lora_alpha: int = key(16, "LoRA scaling numerator (scale = alpha / r)")
    lora_dropout: float = key(0.1, "dropout on the LoRA input", at_least=0, at_most=1)
    lora_targets: list[str] = key(["query", "value"], "encoder linear layers that get a LoRA, or all-linear")


def layer_pattern(config) -> str:
    """Encoder layers a module goes into: every one, or those above the frozen bottom (``frozen_layers``).
    Inside the encoder only, so the task head never gets one; the prefix is optional so the module also
    fits the bare encoder (AutoModel: encoder.layer.N..., peft fullmatches the name)."""
    number = r"\d+" if not config.frozen_layers else rf"(?!(?:{'|'.join(map(str, range(config.frozen_layers)))})\.)\d+"
    return rf"(.*\.)?encoder\.layer\.{number}\."


def lora_config(config):
    from peft import LoraConfig

    targets = ALL_LINEAR if config.lora_targets == ["all-linear"] else config.lora_targets
    pattern = layer_pattern(config) + ".*(" + "|".join(t.replace(".", r"\.") for t in targets) + ")$"
    return LoraConfig(r=config.lora_r, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout,
                      target_modules=pattern)


@register
class Lora(Regime):
    name = "lora"
    kind = "lora"
    section = LoraKeys
    transfers = ("sequential", "stack", "merge", "arithmetic", "multitask")
    merges = tuple(name for name in merges.METHODS if name != "linear")
    swappable = True
    starts_unchanged = True
    library = "peft"
    card_imports = ("from peft import PeftModel",)
    head_owner = "model.get_base_model()"
    plan_keys = {"lang_module_task": "the task its language modules train on for transfers.arithmetic, e.g. "
                                     "verses-text",
                 "phase": "train keys of its language modules"}

    def build(self, task, backbone, parents, config):
        from peft import PeftModel, get_peft_model

        from ..modeling import task_model

        base = task_model(task, backbone.path)
        if not parents:
            model = get_peft_model(base, lora_config(config))
        elif config.transfer == "sequential":
            model = PeftModel.from_pretrained(base, parents[0].folder, is_trainable=True)
        elif config.transfer == "stack":
            model = PeftModel.from_pretrained(base, parents[0].folder, adapter_name=STACKED)
            model.add_adapter(TARGET, lora_config(config))
            _activate_stack(model)
        elif config.transfer == "arithmetic":
            languages = arithmetic.language_modules(config, task, self.name, backbone)
            return with_languages(base, task, parents[0], languages, config.arithmetic_lambda)
        else:
            model = merged(base, parents, self, config)
        unfreeze_head(model)
        return model

    def check_merge(self, method, parents) -> None:
        check_lora_merge(method, parents)

    def mixes(self, config: dict) -> bool:
        return True

    def check_plan(self, block: dict, where: str) -> None:
        from ..tasks import get_task

        if "lang_module_task" in block and get_task(block["lang_module_task"]).kind != "mlm":
            raise UserError(f"{where}: {self.name}.lang_module_task: {block['lang_module_task']} is not a masked-LM "
                            "task (language modules train on plain text, e.g. verses-text)")

    def language_phases(self, block: dict) -> tuple[str, dict] | None:
        return (block["lang_module_task"], block.get("phase", {})) if "lang_module_task" in block else None

    def check_arithmetic(self, task, parent, languages) -> None:
        places = {folder: _lora_layers(folder) for folder in [parent.folder, *languages.values()]}
        other = next((folder for folder, place in places.items() if place != places[parent.folder]), None)
        if other is not None:
            raise UserError(f"lang_modules: {other} puts its LoRA into other layers ({_listed(places[other])}) than "
                            f"the task module {parent.folder} ({_listed(places[parent.folder])}); train the language "
                            "modules with the task module's lora_targets and frozen_layers")

    def save(self, model, tokenizer, folder: Path) -> None:
        model.save_pretrained(folder)  # safetensors; a stacked intermediate goes to folder/stacked/
        for card in folder.glob("**/README.md"):  # peft's placeholder cards; a pushed repo gets a real one
            card.unlink()
        save_head(model, folder)

    def load(self, folder: Path, task, backbone, manifest=None):
        from peft import PeftModel

        from ..modeling import task_model

        model = PeftModel.from_pretrained(task_model(task, backbone.path), folder)
        transfer = manifest_of(folder, manifest).get("transfer")
        if transfer == "stack":
            model.load_adapter(folder / STACKED, adapter_name=STACKED)
            _activate_stack(model)
        if transfer == "arithmetic":
            for language in sorted(folder.glob(ARITHMETIC + "*")):
                model.load_adapter(language, adapter_name=language.name)
            model.set_adapter(TARGET)
        load_head(model, folder, task.name)
        return model

    def load_encoder(self, folder: Path, task, backbone, manifest=None):
        """The backbone with the LoRA merged into its weights (for retrieval)."""
        from ..modeling import unwrap

        return unwrap(self.load(folder, task, backbone, manifest).merge_and_unload()).base_model

    def attach(self, model, folder: Path, name: str):
        from peft import PeftModel

        if isinstance(model, PeftModel):
            model.load_adapter(folder, adapter_name=name)
            return model
        return PeftModel.from_pretrained(model, folder, adapter_name=name)

    def activate(self, model, name: str) -> None:
        model.set_adapter(name)

    def language_switch(self, model, task, config: dict):
        """transfer=arithmetic: each test language's module, the source language's the task module alone."""
        if not any(name.startswith(ARITHMETIC) for name in model.peft_config):
            return None
        return lambda lang: model.set_adapter(arithmetic_adapter(model, task, lang))

    def card_module(self, folder: Path, manifest: dict) -> list[str]:
        prefix = _base_prefix(folder)
        body = [f'    mapping = {{r"^{prefix}\\.": ""}} if bare else None  # the encoder has no "{prefix}." prefix',
                "    model = PeftModel.from_pretrained(model, folder, key_mapping=mapping)"]
        if (folder / STACKED).is_dir():
            body += [f'    model.load_adapter(f"{{folder}}/{STACKED}", adapter_name="{STACKED}", key_mapping=mapping)',
                     f'    model.base_model.set_adapter(["{STACKED}", "{TARGET}"])']
        return ["def with_module(model, bare=False):", *body, "    return model"]


def _base_prefix(folder: Path) -> str:
    """The task model's base-model attribute in the saved peft keys (``roberta`` for XLM-R)."""
    from safetensors import safe_open

    with safe_open(str(folder / "adapter_model.safetensors"), "pt") as weights:
        key = next(iter(weights.keys()))
    return key.removeprefix("base_model.model.").split(".encoder.")[0]


def _config(folder: Path) -> dict:
    return json.loads((folder / "adapter_config.json").read_text())


def _lora_layers(folder: Path) -> frozenset[str]:
    """The encoder layers a saved LoRA module is in (``encoder.layer.3.attention.self.query``), read from its
    weights' names: a merged module's config names them by a union of its parents' patterns."""
    from safetensors import safe_open

    with safe_open(folder / "adapter_model.safetensors", "pt") as weights:
        return frozenset(("encoder.layer." + name.partition("encoder.layer.")[2] if "encoder.layer." in name
                          else name).split(".lora_")[0] for name in weights.keys() if ".lora_A" in name)


def _listed(layers: frozenset[str]) -> str:
    return ", ".join(sorted(layers)[:4]) + (f" and {len(layers) - 4} more" if len(layers) > 4 else "")


def with_languages(base, task, parent, languages: dict, weight: float):
    """The task module (``parent``, as ``TARGET``, with its head) and, for each language but the source one,
    ``ARITHMETIC + lang``: task + weight·(lang − source), by ``cat`` (exact). Nothing trains."""
    from peft import PeftModel

    model = PeftModel.from_pretrained(base, parent.folder, adapter_name=TARGET)
    source = task.source_lang
    for lang, folder in languages.items():
        model.load_adapter(folder, adapter_name=f"language-{lang}")
    for lang in languages:
        if lang != source:
            model.add_weighted_adapter([TARGET, f"language-{lang}", f"language-{source}"], [1.0, weight, -weight],
                                       adapter_name=ARITHMETIC + lang, combination_type="cat")
    for lang in languages:
        model.delete_adapter(f"language-{lang}")
    model.set_adapter(TARGET)
    for param in model.parameters():
        param.requires_grad_(False)
    load_head(model, parent.folder, task.name)
    return model


def arithmetic_adapter(model, task, lang: str) -> str:
    """The adapter that scores ``lang`` in a model of transfer=arithmetic."""
    lang = task.resolve_lang(lang)
    if lang == task.source_lang:
        return TARGET
    if ARITHMETIC + lang not in model.peft_config:
        have = sorted(name.removeprefix(ARITHMETIC) for name in model.peft_config if name.startswith(ARITHMETIC))
        raise UserError(f"no arithmetic module for language {lang} (have: {', '.join([task.source_lang, *have])}); "
                        "train the arithmetic phase with its language module")
    return ARITHMETIC + lang


def _activate_stack(model) -> None:
    """Both LoRAs active; only the target one trains."""
    model.base_model.set_adapter([STACKED, TARGET])
    for name, param in model.named_parameters():
        if f".{STACKED}." in name:
            param.requires_grad_(False)


def check_lora_merge(method, parents) -> None:
    """Refuse LoRAs that peft's ``add_weighted_adapter`` merges wrongly without an error (peft #3761), and
    unequal ranks where ``method`` merges A and B apart."""
    ranks = {}
    for parent in parents:
        config = _config(parent.folder)
        if config.get("peft_type") != "LORA":
            raise UserError(f"init_from {parent.folder} is a {config.get('peft_type')} module; transfer=merge "
                            "merges LoRA modules only")
        wrong = [name for name in ("use_dora", "use_rslora", "lora_bias") if config.get(name)]
        if wrong:
            raise UserError(f"init_from {parent.folder} is a LoRA with {wrong[0]}=true, which peft merges wrongly "
                            "(peft #3761): transfer=merge takes plain LoRAs only")
        ranks[parent.folder] = {config["r"], *(config.get("rank_pattern") or {}).values()}
    if method.equal_ranks and len(set().union(*ranks.values())) > 1:
        shown = ", ".join(f"{folder.name}: {'/'.join(map(str, sorted(r)))}" for folder, r in ranks.items())
        raise UserError(f"merge={method.name} needs LoRAs of one rank, got {shown} (cat and the _svd methods "
                        "take any ranks)")


def merged(base, parents, regime, config):
    """The parents' modules merged into the one the target trains (``TARGET``); nothing else trains in it
    but the head."""
    from peft import PeftModel

    names = [f"parent{i}" for i in range(len(parents))]
    model = PeftModel.from_pretrained(base, parents[0].folder, adapter_name=names[0])
    for name, parent in zip(names[1:], parents[1:]):
        model.load_adapter(parent.folder, adapter_name=name)
    model.add_weighted_adapter(names, merges.weights(config, len(names)), adapter_name=TARGET,
                               combination_type=merges.method(regime, config).name, density=config.merge_density)
    model.set_adapter(TARGET)
    for name in names:
        model.delete_adapter(name)
    for name, param in model.named_parameters():
        param.requires_grad_(TARGET in name.split("."))
    return model
