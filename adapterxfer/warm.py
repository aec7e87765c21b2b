"""``python -m adapterxfer.warm``: import every module a command may use, once, so Python caches their
bytecode (``make setup`` runs it with bytecode writing on)."""

import importlib
import importlib.util

from .regimes import all_regimes

MODULES = ("adapterxfer.cli", "adapterxfer.pipeline", "adapterxfer.sharing", "adapterxfer.scoring",
           "adapterxfer.bank", "pytest")

for module in MODULES:
    importlib.import_module(module)
for regime in all_regimes():  # a regime imports its library (peft, adapters) only where it uses it
    if importlib.util.find_spec(regime.library):  # adapters: only with the [adapters] extra
        importlib.import_module(regime.library)
