"""Regimes: what trains and how it is saved. One module per regime, each defining one registered
:class:`~adapterxfer.regimes.common.Regime` subclass with the same shape (see that class):
its transfer modes, whether it trains multi-task, and build / save / load. A regime's keys are its
section of :class:`~adapterxfer.config.RunConfig` (``adapterxfer train --help``).

Adding a regime: a module here with a ``Regime`` subclass decorated with ``@register`` and its name in
``NAMES`` (ia3.py is the smallest example); its keys, if any, in config.py under a section of its name.

This package imports no heavy library: a regime's module (peft, adapters) is imported on first use.
"""

from __future__ import annotations

import importlib

from ..errors import UserError

NAMES = ("full", "lora", "bottleneck", "madx", "ia3")
REGIMES: dict = {}  # name -> Regime instance, filled by @register as the modules are imported


def register(cls):
    REGIMES[cls.name] = cls()
    return cls


def get_regime(name: str):
    if name not in NAMES:
        raise UserError(f"unknown regime {name!r} (known: {', '.join(NAMES)})")
    if name not in REGIMES:
        importlib.import_module(f"{__name__}.{name}")
    return REGIMES[name]


def all_regimes() -> list:
    return [get_regime(name) for name in NAMES]
