"""Regimes: what trains and how it is saved. One module per regime, each defining one registered
:class:`~adapterxfer.regimes.common.Regime` subclass with the same shape (see that class):
its transfer modes, whether it trains multi-task, and build / save / load. A regime's keys are its
section of :class:`~adapterxfer.config.RunConfig` (``Regime.section``; ``adapterxfer train --help``).

Adding a regime: a module here with a ``Regime`` subclass decorated with ``@register`` and its name in
``NAMES`` (ia3.py is the smallest example); its keys, if any, are its ``section``, which config.py adds to
the key table.

This package and the regime modules import no heavy library at the top: a regime imports its library
(peft, adapters) inside the methods that use it.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import sys

from ..errors import UserError, unknown

# adapters warns at every forward pass of a model with no adapter active, which adapterxfer runs on purpose
# (a frozen bottom's states, the step-0 score): not the user's concern.
logging.getLogger("adapters.model_mixin").addFilter(lambda record: "none are activated" not in record.getMessage())

NAMES = ("full", "lora", "bottleneck", "madx", "ia3", "peft")
EXTRAS = {"adapters": "adapters"}  # a library only an extra of adapterxfer installs -> that extra
DEFAULT = NAMES[0]  # a phase's regime, and a study's, where none is given
REGIMES: dict = {}  # name -> Regime instance, filled by @register as the modules are imported


def register(cls):
    REGIMES[cls.name] = cls()
    return cls


def get_regime(name: str):
    if name not in NAMES:
        raise UserError(unknown("regime", name, NAMES))
    if name not in REGIMES:
        importlib.import_module(f"{__name__}.{name}")
    return REGIMES[name]


def all_regimes() -> list:
    return [get_regime(name) for name in NAMES]


def at_test_keys() -> dict[str, tuple[str, str]]:
    """The train keys an evaluation may set otherwise than trained (``Regime.at_test``): key -> (regime, flag)."""
    return {name: (regime.name, flag) for regime in all_regimes() for name, flag in regime.at_test.items()}


def install_hint(library: str) -> str:
    """What is missing where a regime's library comes with an extra that is not installed, and its install."""
    extra = EXTRAS[library]
    return (f"needs the {library!r} library, not installed here: pip install 'adapterxfer[{extra}]' "
            f"(from a clone: pip install '.[{extra}]')")


def require_installed(names) -> None:
    """Every regime in ``names`` can run here: an extra's library missing is one line naming the install."""
    for name in dict.fromkeys(names):
        library = get_regime(name).library
        # once imported, adapters' module has no __spec__, which find_spec refuses
        if library in EXTRAS and library not in sys.modules and importlib.util.find_spec(library) is None:
            raise UserError(f"regime {name} {install_hint(library)}")
