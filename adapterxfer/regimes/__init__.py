"""Regimes: what trains and how it is saved. Each module has the same shape:

``prepare(model, config) -> model``  freeze or wrap for training;
``save(model, tokenizer, folder)``   write the trained parts (safetensors only);
``load(folder, task) -> model``       rebuild the task model from a saved folder;
``encoder_folder(folder) -> Path``   the folder a later phase or retrieval starts from.
"""

from ..errors import UserError
from . import full

REGIMES = {"full": full}


def get_regime(name: str):
    if name not in REGIMES:
        raise UserError(f"unknown regime {name!r} (known: {', '.join(REGIMES)})")
    return REGIMES[name]
