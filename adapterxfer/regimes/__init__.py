"""Regimes: what trains and how it is saved. Each module has the same shape:

``TRANSFERS``, ``MODULE_KIND``                       the transfer modes it offers, what it saves;
``build(task, backbone, parents, config) -> model``  the task model ready to train: module, fresh
                                                     head, and ``parents`` (``init_from``) applied
                                                     by ``config.transfer``;
``save(model, tokenizer, folder)``                   the trained parts, safetensors only;
``load(folder, task, backbone) -> model``            the task model back from a saved folder;
``load_encoder(folder, task, backbone) -> encoder``  the bare encoder with the module applied.
"""

from ..errors import UserError
from . import bottleneck, full, lora

REGIMES = {"full": full, "lora": lora, "bottleneck": bottleneck}


def get_regime(name: str):
    if name not in REGIMES:
        raise UserError(f"unknown regime {name!r} (known: {', '.join(REGIMES)})")
    return REGIMES[name]
