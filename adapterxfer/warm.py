"""``python -m adapterxfer.warm``: import every module a command may use, once, so Python caches their
bytecode (``make setup`` runs it with bytecode writing on)."""

import importlib
import importlib.util

from .regimes import EXTRAS, all_regimes

MODULES = ("adapterxfer.cli", "adapterxfer.pipeline", "adapterxfer.sharing", "adapterxfer.scoring",
           "adapterxfer.bank", "pytest")

for module in MODULES:
    importlib.import_module(module)
# a regime imports its library (peft, adapters) only where it uses it; adapters only with the [adapters] extra
for library in dict.fromkeys(regime.library for regime in all_regimes()):
    if library not in EXTRAS or importlib.util.find_spec(library):
        importlib.import_module(library)
