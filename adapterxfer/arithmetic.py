"""``transfer=arithmetic``: task and language arithmetic (Chronopoulou et al. 2023; Klimaszewski et al. 2025).

Each test language L is scored with ``task + λ·(lang_L − lang_source)``: the task module (``init_from``, trained
on the target task in the source language, English) plus the difference between L's language module and the
source language's, each trained by MLM on one language's plain text (``task=verses-text language=L`` or
``wiki-text``). The source language itself gets the task module alone. The phase trains nothing: it composes.

λ is fixed before anything is scored, never tuned: zero-shot transfer allows no target-language data for choosing
anything, and the English dev set cannot choose it, since ``lang_en − lang_en = 0`` leaves the English model
the same for every λ. Its default 1.0 is the plain difference (an assumption, not a value tuned here).

Which modules a regime combines, and how, is the regime's (LoRA: peft's exact ``cat``); which language
modules are given, and that they cover every test language, is checked here. This module imports no heavy
library.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from . import artifacts
from .errors import UserError
from .keys import key

FOLDER = "arithmetic-"  # + a language: that language's module (or MAD-X language adapter), a subfolder of the artifact


@dataclass
class ArithmeticKeys:
    """transfer arithmetic: each test language scored with task (init_from) + λ·(its language module − the
    source language's); nothing trains"""

    lang_modules: list[str] = key([], "language modules, outputs of `train task=verses-text language=L` (or "
                                      "wiki-text) in the task module's regime: the source language's and one per "
                                      "test language", path=True)
    arithmetic_lambda: float = key(1.0, "λ in `task + λ·(lang_L − lang_en)`, fixed a priori, never tuned: English "
                                        "dev cannot choose it (`lang_en − lang_en = 0` for every λ), and target-"
                                        "language data may not; 1.0: the plain difference")


def check_task_module(config, task, parent, backbone) -> None:
    """The task module (``init_from``) must be one plain module of ``task`` itself, read as the phase reads it."""
    from .modeling import resolve_pooling
    from .transfers import get_transfer

    manifest = parent.manifest
    if manifest["task"] != task.name or not get_transfer(manifest.get("transfer")).swappable:
        kind = manifest["task"] if manifest["task"] != task.name else f"transfer={manifest['transfer']}"
        raise UserError(f"init_from {parent.folder} is a {kind} module; transfer=arithmetic adds language modules "
                        f"to one plain module of {task.name} itself")
    pooling = resolve_pooling(config.pooling, backbone.path)
    if manifest.get("pooling", "cls") != pooling:
        raise UserError(f"init_from {parent.folder}'s head reads pooling={manifest.get('pooling', 'cls')}, this "
                        f"phase {pooling}: pass pooling={manifest.get('pooling', 'cls')}")


def language_modules(config, task, regime: str, backbone) -> dict[str, Path]:
    """{language: folder} of ``config.lang_modules``: verified MLM modules of ``regime`` on ``backbone``, one per
    language, covering the source language and every test language of ``task``."""
    def mismatch(manifest: dict) -> str | None:
        if manifest["regime"] == regime and manifest["kind"] == "mlm":
            return None
        return (f"a {regime} language module (it is a {manifest['regime']} {manifest['kind']} module of "
                f"{manifest['task']}); train one with `adapterxfer train task=verses-text regime={regime} "
                f"language=<lang>`")

    found = artifacts.by_language(config.lang_modules, "lang_modules", "language module", mismatch, backbone)
    wanted = dict.fromkeys([task.source_lang, *map(task.resolve_lang, task.check_langs(config.eval_langs))])
    missing = [lang for lang in wanted if lang not in found]
    if missing:
        raise UserError(f"lang_modules: no language module for {', '.join(missing)} (have: "
                        f"{', '.join(found) or 'none'}); transfer=arithmetic needs the source language's and one "
                        "per test language (eval_langs)")
    return {lang: found[lang] for lang in wanted}

