"""Swapping the active module on a loaded me5-small, relative to loading the backbone.

    .venv/bin/python scripts/bench_swap.py [--regime lora|bottleneck] [--swaps 20]

Trains two one-step verses-xref modules (so the bank holds real artifacts), then times
``ModuleBank.activate`` against ``task_model`` (loading the backbone), in one run.
Last line: RESULT swap_over_backbone_load <ratio>   (target: <= 0.01)
"""

import argparse
import statistics
import tempfile
from pathlib import Path

from adapterxfer.backbones import resolve
from adapterxfer.bank import ModuleBank
from adapterxfer.config import from_dict
from adapterxfer.modeling import task_model
from adapterxfer.pipeline import train_phase
from adapterxfer.tasks import get_task
from timing import seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--regime", default="lora", choices=["lora", "bottleneck"])
    parser.add_argument("--swaps", type=int, default=20)
    args = parser.parse_args()
    task, backbone = get_task("verses-xref"), resolve("me5-small")
    with tempfile.TemporaryDirectory() as tmp:
        folders = {f"seed{seed}": train_phase(from_dict({
            "task": task.name, "regime": args.regime, "seed": seed, "max_steps": 1, "eval_every": 1,
            "batch_size": 2, "output_dir": str(Path(tmp) / f"seed{seed}")})) for seed in (1, 2)}
        loads = [seconds(lambda: task_model(task, backbone.path)) for _ in range(3)]
        bank = ModuleBank(task, backbone, args.regime)
        for name, folder in folders.items():
            bank.attach(name, folder)
        names = list(folders) * (args.swaps // 2)
        swaps = [seconds(lambda name=name: bank.activate(name)) for name in names]
    load, swap = statistics.median(loads), statistics.median(swaps)
    print(f"backbone load {load:.3f} s (median of 3); swap {swap * 1000:.2f} ms (median of {len(swaps)})")
    print(f"RESULT swap_over_backbone_load {swap / load:.5f}")


if __name__ == "__main__":
    main()
