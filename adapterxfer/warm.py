"""``python -m adapterxfer.warm``: import every module a command may use, once, so Python caches their
bytecode (``make setup`` runs it with bytecode writing on)."""

import importlib

from .regimes import NAMES, get_regime

MODULES = ("adapterxfer.cli", "adapterxfer.pipeline", "adapterxfer.sharing", "adapterxfer.scoring",
           "adapterxfer.bank", "pytest")

for module in MODULES:
    importlib.import_module(module)
for name in NAMES:
    get_regime(name)
