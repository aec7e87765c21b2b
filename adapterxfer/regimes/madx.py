"""MAD-X (Pfeiffer et al. 2020): language adapters and task adapters on a frozen backbone (AdapterHub).

Two kinds of phase share this regime:
- a language adapter (``seq_bn_inv``: bottleneck plus invertible embedding adapter) trains by masked LM
  on one language's plain text: ``task=verses-text language=de`` (or ``wiki-text``). The backbone may
  have no MLM head (me5-small): the head starts fresh with its decoder tied to the frozen word
  embeddings, so only its small dense/norm/bias part is saved, never the 250k-row decoder;
- a task adapter (``seq_bn``) trains stacked on the source-language adapter, ``Stack(en, task)``, with
  ``lang_adapters=`` naming the language-adapter outputs. At zero-shot test time each language's own
  adapter replaces the source one (``lang_adapter_at_test=target``), or the source one stays
  (``source``: the ablation of Kunz & Holmstroem 2024).

A task artifact holds its task adapter and head; its manifest's config lists the language adapters
it was trained with, which are loaded (and their hashes checked) from there. An intermediate task
adapter carries over to the target phase with ``transfer=sequential``.

``transfer=arithmetic`` (Klimaszewski et al. 2025) trains nothing: a target task adapter (``init_from``) is
stacked on ``en + λ·(L − en)`` for each test language L, the language adapters' parameters summed by adapters'
``average_adapter`` (weights [λ, 1 − λ], not normalised), saved as ``arithmetic-<L>/`` (for English: its own
adapter). λ = 1 is MAD-X's own swap.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .. import arithmetic, artifacts
from ..errors import UserError
from ..keys import key
from . import register
from .bottleneck import BottleneckKeys, adaptable, card_load, load_adapter, saved_config
from .common import Regime, load_head, manifest_of, save_head, unfreeze_head

TARGET = "target"
ARITHMETIC = arithmetic.FOLDER  # + a language: the language adapter the task adapter stacks on
LANGUAGE = "language"  # the adapter's name while its own MLM phase trains it
LANGUAGE_KIND, TASK_KIND = "seq_bn_inv", "seq_bn"
SOURCES = "adapterxfer_lang_adapters"  # model attribute: {language: adapter folder}
BUNDLE = "lang_adapters"  # where a pushed task adapter bundles its language adapters, one folder per language


@dataclass
class MadxKeys(BottleneckKeys):  # a task adapter's reduction_factor is bottleneck's
    """regime madx: language adapters and stacked task adapters"""

    lang_adapters: list[str] = key([], "language-adapter outputs, the source language's first", path=True)
    lang_adapter_at_test: str = key("target", "target: each test language's adapter (MAD-X); source: keep the "
                                              "training language's (the ablation)", choices=("target", "source"))
    lang_reduction_factor: int = key(2, "hidden size / bottleneck size of a language adapter", at_least=1)


@register
class Madx(Regime):
    name = "madx"
    kind = TASK_KIND  # a language phase saves LANGUAGE_KIND (module_kind)
    section = MadxKeys
    transfers = ("sequential", "arithmetic")
    library = "adapters"
    card_imports = ("import adapters", "from adapters.composition import Stack")
    plan_keys = {"lang_adapter_task": "the task language adapters train on, e.g. verses-text",
                 "ablation": "true: also score every target with the source language's adapter",
                 "phase": "train keys of language adapters"}
    stacks_key, bundle = "lang_adapters", BUNDLE
    at_test = {"lang_adapter_at_test": "--lang-adapter"}

    def check(self, task, config, parents, backbone) -> None:
        super().check(task, config, parents, backbone)
        if config.frozen_layers:
            raise UserError(f"regime madx puts language adapters into every layer; frozen_layers must be 0, got "
                            f"{config.frozen_layers}")
        for parent in parents:
            if parent.manifest["module_kind"] != TASK_KIND:
                raise UserError(f"init_from {parent.folder} is a language adapter; a task phase starts from a "
                                "madx task adapter")
        if not _is_language_phase(task, config) and config.transfer != "arithmetic":
            _check_coverage(task, config, language_adapters(config.lang_adapters, backbone))

    def check_arithmetic(self, task, parent, languages) -> None:
        """The source language's module must be the adapter the task adapter was trained on; adapters averages
        adapters of one configuration only."""
        trained_on = self.stacks_on(parent.folder, parent.manifest)[0]
        source = languages[task.source_lang]
        if artifacts.sha256_file(source / artifacts.MANIFEST) != artifacts.sha256_file(trained_on / artifacts.MANIFEST):
            raise UserError(f"lang_modules: {source} is not the {task.source_lang} language adapter init_from "
                            f"{parent.folder} was trained on ({trained_on})")
        configs = {folder: saved_config(folder) for folder in languages.values()}
        other = next((folder for folder, config in configs.items() if config != configs[source]), None)
        if other is not None:
            raise UserError(f"lang_modules: {other} is configured otherwise than {source} (adapters averages "
                            "language adapters of one configuration)")

    def check_plan(self, block: dict, where: str) -> None:
        from ..tasks import get_task

        if "lang_adapter_task" not in block:
            raise UserError(f"{where}: regime madx needs madx: {{lang_adapter_task: ...}} (e.g. verses-text)")
        get_task(block["lang_adapter_task"])

    def language_phases(self, block: dict) -> tuple[str, dict]:
        return block["lang_adapter_task"], block.get("phase", {})

    def ablations(self, block: dict) -> dict[str, dict]:
        return {"source adapter": {"lang_adapter_at_test": "source"}} if block.get("ablation") else {}

    def module_kind(self, task, config) -> str:
        return LANGUAGE_KIND if _is_language_phase(task, config) else TASK_KIND

    def build(self, task, backbone, parents, config):
        from adapters import SeqBnConfig, SeqBnInvConfig

        model = adaptable(task, backbone)
        if config.transfer == "arithmetic":
            languages = arithmetic.language_modules(config, task, self.name, backbone)
            return with_languages(model, task, parents[0], languages, config.arithmetic_lambda)
        if _is_language_phase(task, config):
            model.add_adapter(LANGUAGE, config=SeqBnInvConfig(reduction_factor=config.lang_reduction_factor))
            model.train_adapter(LANGUAGE)
        else:
            sources = language_adapters(config.lang_adapters, backbone)
            setattr(model, SOURCES, sources)
            load_adapter(model, sources[task.source_lang], task.source_lang)  # before train_adapter freezes it
            if parents:
                load_adapter(model, parents[0].folder, TARGET)
            else:
                model.add_adapter(TARGET, config=SeqBnConfig(reduction_factor=config.reduction_factor))
            model.train_adapter(TARGET)  # freezes everything else and activates TARGET alone
            use_language(model, task.source_lang, "source")
        unfreeze_head(model)
        return model

    def save(self, model, tokenizer, folder: Path) -> None:
        name = TARGET if TARGET in model.adapters_config.adapters else LANGUAGE
        model.save_adapter(folder, name, with_head=False, use_safetensors=True)
        for language in model.adapters_config.adapters:
            if language.startswith(ARITHMETIC):
                model.save_adapter(folder / language, language, with_head=False, use_safetensors=True)
        save_head(model, folder)

    def load(self, folder: Path, task, backbone, manifest=None):
        from .. import sharing

        manifest = manifest_of(folder, manifest)
        model = adaptable(task, backbone)
        if manifest["module_kind"] == LANGUAGE_KIND:
            load_adapter(model, folder, LANGUAGE)
            model.active_adapters = LANGUAGE
        elif manifest.get("transfer") == "arithmetic":
            load_adapter(model, folder, TARGET)
            for language in sorted(folder.glob(ARITHMETIC + "*")):
                load_adapter(model, language, language.name)
            use_arithmetic(model, task, task.source_lang)
        else:
            setattr(model, SOURCES, language_adapters(bundled(folder, manifest["config"]["lang_adapters"]), backbone))
            load_adapter(model, folder, TARGET)
            use_language(model, manifest["language"], "source")
        load_head(model, folder, task.name)
        return model

    def load_encoder(self, folder: Path, task, backbone, manifest=None):
        return self.load(folder, task, backbone, manifest).base_model

    def stacks_on(self, folder: Path, manifest: dict) -> list[Path]:
        from .. import sharing

        refs = manifest["config"].get("lang_adapters") or []
        return [sharing.resolve(ref) for ref in bundled(folder, refs)] if refs else []

    def card_lineage(self, folder: Path, manifest: dict) -> list[str]:
        if not self.stacks_on(folder, manifest):
            return []
        return [f"- language adapters: `{BUNDLE}/<language>/` in this repo (the source language "
                f"{manifest.get('language')} first), each with its own manifest"]

    def card_module(self, folder: Path, manifest: dict) -> list[str]:
        body = ["    adapters.init(model)"]
        if manifest["module_kind"] == TASK_KIND:
            lang = manifest["language"]
            body += [f"    # the source language's adapter; for zero-shot swap in another's "
                     f"({BUNDLE}/<lang>)",
                     card_load(f'f"{{folder}}/{BUNDLE}/{lang}"', lang), card_load("folder", TARGET),
                     f'    model.active_adapters = Stack("{lang}", "{TARGET}")']
        else:
            body += [card_load("folder", LANGUAGE), f'    model.active_adapters = "{LANGUAGE}"']
        return ["def with_module(model, bare=False):", *body, "    return model"]

    def language_switch(self, model, task, config: dict):
        if any(name.startswith(ARITHMETIC) for name in model.adapters_config.adapters):
            return lambda lang: use_arithmetic(model, task, lang)
        at_test = config.get("lang_adapter_at_test", "target")
        return lambda lang: use_language(model, task.resolve_lang(lang), at_test)


def with_languages(model, task, parent, languages: dict, weight: float):
    """The task adapter (``parent``, with its head) and, per language L, ``ARITHMETIC + L``: the source language's
    adapter + weight·(L's − the source's), by adapters' ``average_adapter``; Stack(source's, task) active."""
    load_adapter(model, parent.folder, TARGET)
    source = task.source_lang
    for lang, folder in languages.items():
        load_adapter(model, folder, f"language-{lang}")
    for lang in languages:  # the source language's: itself (adapters takes each adapter once)
        summed = {f"language-{lang}": weight, f"language-{source}": 1.0 - weight} if lang != source else {
            f"language-{source}": 1.0}
        model.average_adapter(ARITHMETIC + lang, list(summed), weights=list(summed.values()),
                              combine_strategy="linear", normalize_weights=False)
        if ARITHMETIC + lang not in model.base_model.invertible_adapters:
            # adapters 1.3 looks for the invertible adapters on the task model, not its base model where
            # adapters.init puts them, and skips them without an error: summed here as it would have
            model.base_model._average_invertible_adapter(ARITHMETIC + lang, summed, "linear")
    for lang in languages:
        model.delete_adapter(f"language-{lang}")
    use_arithmetic(model, task, source)
    for param in model.parameters():
        param.requires_grad_(False)
    load_head(model, parent.folder, task.name)
    return model


def use_arithmetic(model, task, lang: str) -> None:
    """Activate ``Stack(ARITHMETIC + lang, target)`` in a model of transfer=arithmetic."""
    from adapters.composition import Stack

    name = ARITHMETIC + task.resolve_lang(lang)
    if name not in model.adapters_config.adapters:
        have = sorted(n.removeprefix(ARITHMETIC) for n in model.adapters_config.adapters if n.startswith(ARITHMETIC))
        raise UserError(f"no arithmetic language adapter for {task.resolve_lang(lang)} (have: {', '.join(have)}); "
                        "train the arithmetic phase with its language adapter")
    model.active_adapters = Stack(name, TARGET)



def use_language(model, lang: str, at_test: str) -> None:
    """Activate ``Stack(<lang's adapter>, target)``; with ``at_test="source"`` the source language's."""
    from adapters.composition import Stack

    sources = getattr(model, SOURCES, None)
    if sources is None:  # a language adapter alone: nothing to swap
        return
    name = next(iter(sources)) if at_test == "source" else lang
    if name not in model.adapters_config.adapters:
        load_adapter(model, sources[name], name)
    model.active_adapters = Stack(name, TARGET)


def bundled(folder, refs: list[str]) -> list:
    """The language adapters of a task artifact: inside its pulled repo when it bundles them
    (the source language's first, as trained), else ``refs`` (its config's ``lang_adapters``)."""
    bundle = Path(folder) / BUNDLE
    if not bundle.is_dir():
        return list(refs)
    found = sorted(sub for sub in bundle.iterdir() if sub.is_dir())
    if len(found) != len(refs):
        raise UserError(f"{bundle}: {len(found)} language adapters, but the task adapter was trained with "
                        f"{len(refs)} (lang_adapters in its manifest)")
    source = artifacts.read_manifest(folder, verify=False)["language"]
    return sorted(found, key=lambda sub: sub.name != source)


def language_adapters(folders: list[str], backbone=None) -> dict[str, Path]:
    """{language: folder} of verified madx language adapters (folders or hf:// refs) on ``backbone``, in order."""
    def mismatch(manifest: dict) -> str | None:
        if manifest["regime"] == "madx" and manifest["module_kind"] == LANGUAGE_KIND:
            return None
        return f"a madx language adapter (it is a {manifest['regime']} {manifest.get('module_kind')})"

    return artifacts.by_language(folders, "lang_adapters", "language adapter", mismatch, backbone)


def _is_language_phase(task, config) -> bool:
    return task.kind == "mlm" and not config.lang_adapters


def _check_coverage(task, config, sources: dict[str, Path]) -> None:
    """The source language's adapter must be first; with at_test=target every test language needs one."""
    if not sources:
        raise UserError(f"regime madx: task {task.name} needs lang_adapters= (language-adapter outputs of "
                        f"`adapterxfer train task=verses-text regime=madx language=<lang>`)")
    source = task.source_lang
    if next(iter(sources)) != source:
        raise UserError(f"lang_adapters: the first must be the source language's ({source}), "
                        f"got {next(iter(sources))}")
    if config.lang_adapter_at_test == "target" and task.role == "target":
        missing = [lang for lang in task.check_langs(config.eval_langs) if task.resolve_lang(lang) not in sources]
        if missing:
            raise UserError(f"lang_adapters: no language adapter for {', '.join(missing)}; train them, or "
                            "set lang_adapter_at_test=source")
