"""Regimes: what trains and how it is saved. Each module has the same shape:

``TRANSFERS``, ``MULTITASK``                         the transfer modes it offers; whether ``task=a+b``
                                                     can share its module;
``module_kind(task, config) -> str``                 what a phase saves (lora, seq_bn, ...);
``build(task, backbone, parents, config) -> model``  the task model ready to train: module, fresh
                                                     head, and ``parents`` (``init_from``) applied
                                                     by ``config.transfer``;
``save(model, tokenizer, folder)``                   the trained parts, safetensors only;
``load(folder, task, backbone) -> model``            the task model back from a saved folder;
``load_encoder(folder, task, backbone) -> encoder``  the bare encoder with the module applied.

Optional: ``attach``/``activate`` (swappable modules, see adapterxfer/bank.py) and
``use_language(model, lang, at_test)`` (switch to a test language's module before scoring it: madx).
"""

from ..errors import UserError
from . import bottleneck, full, lora, madx

REGIMES = {"full": full, "lora": lora, "bottleneck": bottleneck, "madx": madx}


def get_regime(name: str):
    if name not in REGIMES:
        raise UserError(f"unknown regime {name!r} (known: {', '.join(REGIMES)})")
    return REGIMES[name]
