"""Training checkpoints: everything a phase needs to continue exactly where it stopped.

A checkpoint is a folder ``step-NNNNNNNN`` in the output's working folder, written atomically
(``cache.atomic_dir``), so a kill while writing leaves the previous checkpoint intact. It holds:

- ``trainable.safetensors``: the trainable weights only (a PEFT checkpoint stays small);
- ``best.safetensors``: the best weights so far, when they are not the current ones;
- ``optimizer.safetensors`` + ``state.json``: AdamW's moments and its parameter groups;
- ``rng.safetensors`` + ``state.json``: every process's torch (and CUDA), Python and NumPy RNG states;
- ``state.json``: step, the scheduler and loss scaler, each data stream's position, the task
  sampler's state, the log, the losses since the last log entry, and the identity of the run
  (configuration, backbone hash, parents' manifest hashes): a checkpoint of another run is never resumed.

Only safetensors and JSON: nothing is unpickled.
"""

from __future__ import annotations

import json
import random
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from .cache import atomic_dir

PREFIX = "step-"


@dataclass
class TrainState:
    """What the loop carries from step to step, besides the model and the optimizer."""

    step: int = 0
    log: list[dict] = field(default_factory=list)
    selected: int | None = None  # the log index of the weights kept
    best: dict[str, torch.Tensor] | None = None  # None: the best are the current weights
    losses: list[float] = field(default_factory=list)  # since the last log entry
    positions: list[int] = field(default_factory=list)  # batches each data stream has given
    pick: object = None  # random.Random choosing the source of each multi-task micro-batch
    seconds: float = 0.0  # training time before this process started (resumed runs)


def latest(work: Path) -> Path | None:
    steps = sorted(work.glob(f"{PREFIX}*")) if work.is_dir() else []
    return steps[-1] if steps else None


def identity_of(folder: Path) -> dict | None:
    try:
        return json.loads((folder / "state.json").read_text())["identity"]
    except (OSError, ValueError, KeyError):
        return None


def save(work: Path, state: TrainState, model, optimizer, scheduler, scaler, identity: dict,
         rng_states: list[dict]) -> Path:
    """Write ``state`` as the newest checkpoint, then drop the older ones."""
    trainable = {name: param.detach().contiguous() for name, param in model.named_parameters()
                 if param.requires_grad}
    moments, groups = _flat_optimizer(optimizer.state_dict())
    final = work / f"{PREFIX}{state.step:08d}"
    with atomic_dir(final) as tmp:
        save_file(trainable, tmp / "trainable.safetensors")
        if state.best is not None:
            save_file({n: t.contiguous() for n, t in state.best.items()}, tmp / "best.safetensors")
        save_file(moments, tmp / "optimizer.safetensors")
        save_file({f"{rank}.{name}": tensor for rank, states in enumerate(rng_states)
                   for name, tensor in states["tensors"].items()}, tmp / "rng.safetensors")
        (tmp / "state.json").write_text(json.dumps({
            "identity": identity, "step": state.step, "log": state.log, "selected": state.selected,
            "losses": state.losses, "positions": state.positions, "pick": _json_state(state.pick.getstate()),
            "seconds": state.seconds, "optimizer_groups": groups, "scheduler": scheduler.state_dict(),
            "scaler": scaler.state_dict(), "rng": [states["json"] for states in rng_states]}))
    for old in work.glob(f"{PREFIX}*"):
        if old != final:
            shutil.rmtree(old, ignore_errors=True)
    return final


def restore(folder: Path, state: TrainState, model, optimizer, scheduler, scaler, rank: int) -> None:
    """Load a checkpoint into the model, optimizer, scheduler, scaler, RNGs and ``state``."""
    saved = json.loads((folder / "state.json").read_text())
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name, value in load_file(folder / "trainable.safetensors").items():
            params[name].copy_(value)
    optimizer.load_state_dict(_nested_optimizer(load_file(folder / "optimizer.safetensors"),
                                                saved["optimizer_groups"]))
    scheduler.load_state_dict(saved["scheduler"])
    if saved["scaler"]:
        scaler.load_state_dict(saved["scaler"])
    best = folder / "best.safetensors"
    state.best = load_file(best) if best.is_file() else None
    state.step, state.log, state.selected = saved["step"], saved["log"], saved["selected"]
    state.losses, state.positions, state.seconds = saved["losses"], saved["positions"], saved["seconds"]
    state.pick.setstate(_tuple_state(saved["pick"]))
    tensors = {name.split(".", 1)[1]: value for name, value in load_file(folder / "rng.safetensors").items()
               if name.startswith(f"{rank}.")}
    set_rng_states({"tensors": tensors, "json": saved["rng"][rank]})


def rng_states() -> dict:
    """This process's torch, CUDA, Python and NumPy RNG states, as tensors and JSON."""
    kind, keys, position, has_gauss, gauss = np.random.get_state()
    tensors = {"torch": torch.get_rng_state(), "numpy": torch.from_numpy(keys.astype(np.int64))}
    if torch.cuda.is_available():
        tensors |= {f"cuda{i}": state for i, state in enumerate(torch.cuda.get_rng_state_all())}
    return {"tensors": tensors,
            "json": {"python": _json_state(random.getstate()), "numpy": [kind, position, has_gauss, gauss]}}


def set_rng_states(states: dict) -> None:
    tensors = states["tensors"]
    torch.set_rng_state(tensors["torch"])
    cuda = [tensors[f"cuda{i}"] for i in range(torch.cuda.device_count()) if f"cuda{i}" in tensors]
    if cuda:
        torch.cuda.set_rng_state_all(cuda)
    random.setstate(_tuple_state(states["json"]["python"]))
    kind, position, has_gauss, gauss = states["json"]["numpy"]
    np.random.set_state((kind, tensors["numpy"].numpy().astype(np.uint32), position, has_gauss, gauss))


def _flat_optimizer(state_dict: dict) -> tuple[dict[str, torch.Tensor], list[dict]]:
    moments = {f"{index}.{name}": value.contiguous() if torch.is_tensor(value) else torch.tensor(value)
               for index, entry in state_dict["state"].items() for name, value in entry.items()}
    return moments, state_dict["param_groups"]


def _nested_optimizer(moments: dict[str, torch.Tensor], groups: list[dict]) -> dict:
    state: dict[int, dict] = {}
    for key, value in moments.items():
        index, name = key.split(".", 1)
        state.setdefault(int(index), {})[name] = value
    return {"state": state, "param_groups": groups}


def _json_state(value):
    """random.getstate() nests tuples; JSON keeps them as lists."""
    return [_json_state(v) for v in value] if isinstance(value, tuple) else value


def _tuple_state(value):
    return tuple(_tuple_state(v) for v in value) if isinstance(value, list) else value
