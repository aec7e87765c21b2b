"""A ``train`` key: a dataclass field with its help text, its section and the values it allows.

The general keys (config.py) and each regime's own section (``Regime.section``, as peft's
``<Method>Config``) are declared with :func:`key`; :func:`check` refuses a value outside them with one
line naming the key. This module imports no heavy library.
"""

from __future__ import annotations

import math
from dataclasses import Field, field

from .errors import UserError, did_you_mean


def key(default, help: str, section: str | None = None, *, choices: tuple | None = None,
        at_least: float | None = None, above: float | None = None, at_most: float | None = None,
        path: bool = False):
    """A field of ``default`` (a list or dict gets a fresh copy) with ``help``. ``section``: the general section
    it belongs to (a regime's keys: None, the regime's name). ``choices``: the only values allowed.
    ``at_least`` / ``above`` / ``at_most``: bounds of a number (None is always allowed, there and among the
    choices, where it is the default). ``path``: an input named by path, which enters a phase's identity by its
    contents' hashes."""
    meta = {"help": help, "section": section, "choices": choices, "at_least": at_least, "above": above,
            "at_most": at_most, "path": path}
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata=meta)
    return field(default=default, metadata=meta)


def default_of(spec: Field):
    return spec.default_factory() if callable(spec.default_factory) else spec.default


def check(spec: Field, value, source: str) -> None:
    """Refuse ``value`` of key ``spec`` outside its choices or bounds: a one-line UserError."""
    meta = spec.metadata
    if meta["choices"] is not None and value not in meta["choices"] and not (value is None and default_of(spec) is None):
        raise UserError(f"{source}: key {spec.name!r} must be one of {', '.join(meta['choices'])}, got {value!r}"
                        + did_you_mean(value, meta["choices"]))
    bounds = [(op, meta[name]) for name, op in (("at_least", ">="), ("above", ">"), ("at_most", "<="))
              if meta[name] is not None]
    if value is None or not bounds:
        return
    too_low = ((meta["at_least"] is not None and value < meta["at_least"])
               or (meta["above"] is not None and value <= meta["above"]))
    too_high = meta["at_most"] is not None and value > meta["at_most"]
    if not math.isfinite(value) or too_low or too_high:
        allowed = " and ".join(f"{op} {bound}" for op, bound in bounds)
        raise UserError(f"{source}: key {spec.name!r} must be a finite number {allowed}, got {value}")
