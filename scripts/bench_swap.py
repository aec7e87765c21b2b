"""Swapping the active module on a loaded me5-small, relative to loading the backbone; and K modules x L
languages scored in one pass, relative to one process per module.

    .venv/bin/python scripts/bench_swap.py [--regime lora|bottleneck] [--swaps 40] [--modules 3]
        [--langs fr,de,ja] [--only swap|kxl]

Swap: trains two one-step verses-xref modules (so the bank holds real artifacts), then times, in one run:
- loading the backbone as a user pays for it: ``from_pretrained`` of the task model (``task_model``)
  and of the tokenizer, in this process (imports done; page cache warm: median of 3 after a first load;
  freeing what was loaded is not counted). Most of it is the tokenizer (parsing a 17 MB tokenizer.json),
  so the model's load alone is printed too, with its own ratio;
- a swap: ``ModuleBank.activate``, alternating between the two modules (the library's own switch,
  peft ``set_adapter`` or adapters ``set_active_adapters``, plus putting the module's head in place).
  The library's switch alone, timed apart, is printed beside it.
K x L: trains ``--modules`` one-step verses-genre LoRA modules (seeds 1..K), then times, once each, as a user
runs them (``adapterxfer evaluate``, a process each, imports included; features and page cache warmed by one
untimed evaluation first): every module on the test sets (300 verses each) of the ``--langs`` languages
- in one pass: one process, ``evaluate --model M1 ... --model MK`` (one backbone load, mixed-adapter batches);
- one process per module: ``evaluate --model Mi`` for each module in turn (the sum).
It checks that both wrote the same scores.
RESULT lines: swap_over_model_load, swap_over_backbone_load (target: <= 0.01); kxl_one_pass_s,
kxl_process_per_module_s and kxl_ratio (one process per module over one pass).
"""

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from timing import median_seconds, seconds
from transformers import AutoTokenizer

from adapterxfer.backbones import resolve
from adapterxfer.bank import ModuleBank
from adapterxfer.config import from_dict
from adapterxfer.modeling import task_model
from adapterxfer.pipeline import train_phase
from adapterxfer.tasks import get_task


def one_step(tmp: Path, task: str, regime: str, seed: int, **keys) -> Path:
    return train_phase(from_dict({"task": task, "regime": regime, "seed": seed, "max_steps": 1, "eval_every": 1,
                                  "batch_size": 2, "output_dir": str(tmp / f"{task}-seed{seed}"), **keys}))


def swap(regime: str, swaps: int, tmp: Path) -> None:
    task, backbone = get_task("verses-xref"), resolve("me5-small")
    folders = {f"seed{seed}": one_step(tmp, task.name, regime, seed) for seed in (1, 2)}
    model_load = median_seconds(lambda: task_model(task, backbone.path), 3)
    load = median_seconds(lambda: (task_model(task, backbone.path), AutoTokenizer.from_pretrained(backbone.path)), 3)
    bank = ModuleBank(task, backbone, regime)
    for name, folder in folders.items():
        bank.attach(name, folder)
    names = list(folders) * (swaps // 2)
    switch_s = statistics.median(seconds(lambda name=name: bank.activate(name)) for name in names)
    library = statistics.median(seconds(lambda name=name: bank.regime.activate(bank.model, name)) for name in names)
    print(f"backbone load {load:.3f} s (model {model_load:.3f} s + tokenizer; median of 3); swap "
          f"{switch_s * 1000:.2f} ms; the library's switch alone, timed apart, {library * 1000:.2f} ms (medians of "
          f"{len(names)})")
    print(f"RESULT swap_over_model_load {switch_s / model_load:.5f}")
    print(f"RESULT swap_over_backbone_load {switch_s / load:.5f}")


def evaluate(models: list[Path], langs: list[str], output: Path) -> float:
    """Seconds `adapterxfer evaluate` takes, as a process, scoring ``models`` on verses-genre in ``langs``."""
    command = [sys.executable, "-m", "adapterxfer", "evaluate", *(f"--model={model}" for model in models),
               "--task", "verses-genre", "--langs", ",".join(langs), "--output", str(output)]
    started = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - started


def kxl(count: int, langs: list[str], tmp: Path) -> None:
    models = [one_step(tmp, "verses-genre", "lora", seed, eval_langs=[langs[0]]) for seed in range(1, count + 1)]
    evaluate(models[:1], langs, tmp / "warm-up")
    alone = sum(evaluate([model], langs, tmp / "alone" / model.name) for model in models)
    together = evaluate(models, langs, tmp / "together")
    same = all(json.loads((tmp / "alone" / model.name / "scores.json").read_text())
               == json.loads((tmp / "together" / model.name / "scores.json").read_text()) for model in models)
    print(f"{count} modules x {len(langs)} languages ({','.join(langs)}) of verses-genre on me5-small: one pass "
          f"{together:.1f} s, one process per module {alone:.1f} s; same scores: {same}")
    print(f"RESULT kxl_one_pass_s {together:.1f}")
    print(f"RESULT kxl_process_per_module_s {alone:.1f}")
    print(f"RESULT kxl_ratio {alone / together:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--regime", default="lora", choices=["lora", "bottleneck"])
    parser.add_argument("--swaps", type=int, default=40)
    parser.add_argument("--modules", type=int, default=3)
    parser.add_argument("--langs", default="fr,de,ja")
    parser.add_argument("--only", choices=["swap", "kxl"])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        if args.only != "kxl":
            swap(args.regime, args.swaps, Path(tmp))
        if args.only != "swap":
            kxl(args.modules, args.langs.split(","), Path(tmp))


if __name__ == "__main__":
    main()
