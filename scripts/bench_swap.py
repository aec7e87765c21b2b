"""Swapping the active module on a loaded me5-small, relative to loading the backbone.

    .venv/bin/python scripts/bench_swap.py [--regime lora|bottleneck] [--swaps 40]

Trains two one-step verses-xref modules (so the bank holds real artifacts), then times, in one run:
- loading the backbone as a user pays for it: ``from_pretrained`` of the task model (``task_model``)
  and of the tokenizer, in this process (imports done; page cache warm: median of 3 after a first load;
  freeing what was loaded is not counted). Most of it is the tokenizer (parsing a 17 MB tokenizer.json),
  so the model's load alone is printed too, with its own ratio;
- a swap: ``ModuleBank.activate``, alternating between the two modules (the library's own switch,
  peft ``set_adapter`` or adapters ``set_active_adapters``, plus putting the module's head in place).
  The library's switch alone, timed apart, is printed beside it.
Last line: RESULT swap_over_backbone_load <ratio>   (target: <= 0.01)
"""

import argparse
import statistics
import tempfile
from pathlib import Path

from timing import median_seconds, seconds
from transformers import AutoTokenizer

from adapterxfer.backbones import resolve
from adapterxfer.bank import ModuleBank
from adapterxfer.config import from_dict
from adapterxfer.modeling import task_model
from adapterxfer.pipeline import train_phase
from adapterxfer.tasks import get_task


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--regime", default="lora", choices=["lora", "bottleneck"])
    parser.add_argument("--swaps", type=int, default=40)
    args = parser.parse_args()
    task, backbone = get_task("verses-xref"), resolve("me5-small")
    with tempfile.TemporaryDirectory() as tmp:
        folders = {f"seed{seed}": train_phase(from_dict({
            "task": task.name, "regime": args.regime, "seed": seed, "max_steps": 1, "eval_every": 1,
            "batch_size": 2, "output_dir": str(Path(tmp) / f"seed{seed}")})) for seed in (1, 2)}
        model_load = median_seconds(lambda: task_model(task, backbone.path), 3)
        load = median_seconds(lambda: (task_model(task, backbone.path), AutoTokenizer.from_pretrained(backbone.path)),
                              3)
        bank = ModuleBank(task, backbone, args.regime)
        for name, folder in folders.items():
            bank.attach(name, folder)
        names = list(folders) * (args.swaps // 2)
        swap = statistics.median(seconds(lambda name=name: bank.activate(name)) for name in names)
        switch = statistics.median(seconds(lambda name=name: bank.regime.activate(bank.model, name)) for name in names)
    print(f"backbone load {load:.3f} s (model {model_load:.3f} s + tokenizer; median of 3); swap {swap * 1000:.2f} ms; "
          f"the library's switch alone, timed apart, {switch * 1000:.2f} ms (medians of {len(names)})")
    print(f"RESULT swap_over_model_load {swap / model_load:.5f}")
    print(f"RESULT swap_over_backbone_load {swap / load:.5f}")


if __name__ == "__main__":
    main()
