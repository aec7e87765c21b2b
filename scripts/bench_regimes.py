"""Train-step time and peak memory of the PEFT regimes relative to full fine-tuning, and the
overhead of adapterxfer's training loop over a bare peft / adapters loop on the same model.

    .venv/bin/python scripts/bench_regimes.py [--backbone xlmr-base-random|me5-small] [--steps 8]
        [--rounds 2] [--batch 16] [--length 64] [--threads 0] [--precision fp32|bf16]

Two full fine-tuning references: ``full`` (adapterxfer's default, the 250k-row word-embedding
matrix frozen) and ``full_unfrozen_emb`` (freeze_word_embeddings=false: every weight trains, as
in the X-STILTs paper). ``xlmr-base-random`` is an xlm-roberta-base-sized model (12 x 768, 250k
vocabulary) with random weights, built locally because the real one cannot be downloaded here.

Each variant runs in its own process: adapterxfer's ``fit`` and the bare loop on the same model and
the same features, fit first (peak RSS is taken after it). ``--rounds`` repeats every variant,
round-robin, so that load from other jobs falls on all of them alike, the bare loop first in every
other round, so that neither loop always runs on a warmer process. A step's time is the
interval between two consecutive forward calls (batch, forward, backward, clipping, optimizer,
scheduler and the loop's own bookkeeping). The warm-up step (first kernels, optimizer state
allocation) and the time outside the steps (setup; for fit the final dev evaluation and restore)
are fixed costs, printed apart and not in s/step. Figures are medians over all measured steps,
with the fastest and slowest step beside them (the noise), and the process CPU seconds per step.
On a shared machine pass ``--threads 1``: with torch's default (a thread per core) every operator
waits at an OpenMP barrier for a thread that another job has descheduled (me5-small lora, 16 x 64,
load average ~5 on 2 cores: 2.1-2.6 s/step with 1 thread, 4.3-11.7 s/step with 2).

The bare loop is what a plain peft / adapters user writes for the same training: ``model.train()``
(dropout on: transformers hands a model over in eval mode, and training without dropout is another
training), a shuffled DataLoader with the same collator, AdamW on the trainable parameters, the
same linear warm-up schedule and gradient clipping at 1.0. It leaves out what adapterxfer adds:
accelerate, task sampling, weight-decay/head-lr parameter groups, the progress bar, the loss log
and best-on-dev bookkeeping; their cost is what ``overhead`` measures.
(The first version of this script ran the bare loop in eval mode, with no clipping or schedule, and
counted fit's setup and the warm-up step as steps: adapterxfer/bare read 1.22 on me5-small. Dropout
is ~1/5 of a me5-small lora forward + backward on CPU; fit's own bookkeeping is ~1-2 ms a step.)
Checkpoint cost: after the loops, each variant writes a training checkpoint (adapterxfer/checkpoint.py:
trainable weights, AdamW moments, RNG states, scheduler; what a resumable phase writes every
``checkpoint_every`` steps) three times; ``RESULT checkpoint_over_step_<variant>`` is the median write
time over the median adapterxfer step time.
Last line: RESULT overhead_adapterxfer_over_bare <ratio>   (max over variants)
"""

import argparse
import itertools
import math
import multiprocessing
import resource
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import torch
from timing import median_seconds

VARIANTS = {"full": ("full", {}), "full_unfrozen_emb": ("full", {"freeze_word_embeddings": False}),
            "lora": ("lora", {}), "bottleneck": ("bottleneck", {}), "ia3": ("ia3", {})}  # name: (regime, overrides)
LOOPS = ("adapterxfer", "bare")


def base_sized_backbone(folder: str) -> str:
    from transformers import AutoTokenizer, XLMRobertaConfig, XLMRobertaModel

    from adapterxfer.backbones import resolve

    me5 = resolve("me5-small").path  # XLM-R's own 250k vocabulary
    config = XLMRobertaConfig(vocab_size=250002, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                              intermediate_size=3072, max_position_embeddings=514, type_vocab_size=1)
    torch.manual_seed(0)
    XLMRobertaModel(config, add_pooling_layer=False).save_pretrained(folder)
    AutoTokenizer.from_pretrained(me5).save_pretrained(folder)
    return folder


def measure(variant: str, backbone_name: str, steps: int, batch: int, length: int, threads: int,
            bare_first: bool, precision: str) -> dict:
    """Per loop: (wall, cpu) seconds of each of ``steps`` steps after the warm-up step, the warm-up step,
    and the time spent outside the steps (setup, final evaluation, restore); peak RSS after fit."""
    import datasets
    from transformers import AutoTokenizer

    from adapterxfer.backbones import resolve
    from adapterxfer.config import from_dict
    from adapterxfer.kinds import KINDS
    from adapterxfer.regimes import get_regime
    from adapterxfer.tasks import get_task
    from adapterxfer.train import Run, Source, fit

    if threads:
        torch.set_num_threads(threads)
    regime, overrides = VARIANTS[variant]
    task, backbone = get_task("verses-genre"), resolve(backbone_name)
    config = from_dict({"task": task.name, "regime": regime, "max_steps": steps + 2, "eval_every": steps + 2,
                        "batch_size": batch, "precision": precision, "lr": 1e-5, **overrides})
    model = get_regime(regime).build(task, backbone, [], config)
    generator = torch.Generator().manual_seed(0)
    rows = {"input_ids": torch.randint(5, 1000, ((steps + 2) * batch, length), generator=generator).tolist(),
            "labels": torch.randint(0, len(task.labels), ((steps + 2) * batch,), generator=generator).tolist()}
    features = datasets.Dataset.from_dict(rows)
    collate = KINDS[task.kind].collator(AutoTokenizer.from_pretrained(backbone.path))
    stamps = []
    model.register_forward_pre_hook(lambda *_: stamps.append((time.perf_counter(), time.process_time())))

    def timed(loop) -> dict:
        stamps.clear()
        started = time.perf_counter()
        loop()
        total = time.perf_counter() - started
        steps = [(b[0] - a[0], b[1] - a[1]) for a, b in itertools.pairwise(stamps)]
        return {"warmup_s": steps[0][0], "steps": steps[1:],
                "outside_s": total - (stamps[-1][0] - stamps[0][0]) - statistics.median(w for w, _ in steps[1:])}

    work = tempfile.mkdtemp()
    loops = {"adapterxfer": lambda: fit(model, [Source(features, [length] * len(features), collate, list(map(str, range(len(features)))))],
                                        lambda trained: 0.0, config, Run(Path(work), {}, precision)),
             "bare": lambda: bare_loop(model, features, collate, config, precision)}
    runs = {"bare_first": bare_first, "trainable": sum(p.numel() for p in model.parameters() if p.requires_grad)}
    for loop in LOOPS[::-1] if bare_first else LOOPS:
        runs[loop] = timed(loops[loop])
        runs.setdefault("peak_rss_mb", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    runs["checkpoint_s"] = checkpoint_seconds(model, config, Path(work))
    shutil.rmtree(work)
    return runs


def checkpoint_seconds(model, config, work: Path) -> float:
    """Median seconds of writing a resumable checkpoint of ``model`` after one optimizer step."""
    import random

    from transformers import get_linear_schedule_with_warmup

    from adapterxfer import checkpoint

    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=config.lr)
    for param in optimizer.param_groups[0]["params"]:
        param.grad = torch.zeros_like(param)
    optimizer.step()  # the moments exist, as in any checkpoint after step 1
    scheduler = get_linear_schedule_with_warmup(optimizer, 1, config.max_steps)
    state = checkpoint.TrainState(step=1, pick=random.Random(0), positions=[1])
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    write = lambda: checkpoint.save(work, state, model, optimizer, scheduler, scaler, {}, [checkpoint.rng_states()])
    return median_seconds(write, 3)


def bare_loop(model, features, collate, config, precision) -> None:
    from torch.utils.data import DataLoader
    from transformers import get_linear_schedule_with_warmup

    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=config.lr, weight_decay=config.weight_decay)
    scheduler = get_linear_schedule_with_warmup(
        optimizer, math.ceil(config.warmup_ratio * config.max_steps), config.max_steps)
    model.train()
    for batch in DataLoader(features, batch_size=config.batch_size, shuffle=True, collate_fn=collate):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
            loss = model(**batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trainable, 1.0)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad()


def in_process(*args) -> dict:
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        return pool.apply(measure, args)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="xlmr-base-random")
    parser.add_argument("--steps", type=int, default=8, help="measured steps per loop and round")
    parser.add_argument("--rounds", type=int, default=2,
                        help="rounds over every variant; the bare loop runs first in every other one (1: never)")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--length", type=int, default=64)
    parser.add_argument("--threads", type=int, default=0, help="torch threads per process (0: torch's default)")
    parser.add_argument("--precision", choices=["fp32", "bf16"], default="fp32",
                        help="bf16: autocast in both loops, as precision=auto does on a CPU with bf16 instructions")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        backbone = base_sized_backbone(tmp) if args.backbone == "xlmr-base-random" else args.backbone
        runs = [(variant, in_process(variant, backbone, args.steps, args.batch, args.length, args.threads, index % 2,
                                     args.precision))
                for index in range(args.rounds) for variant in VARIANTS]
    step_s, rss = {}, {}
    print(f"{args.backbone}, batch {args.batch} x length {args.length}, {args.rounds} x {args.steps} steps per loop, "
          f"{args.threads or torch.get_num_threads()} thread(s), {args.precision}")
    for variant in VARIANTS:
        mine = [run for name, run in runs if name == variant]
        rss[variant] = statistics.median(run["peak_rss_mb"] for run in mine if not run["bare_first"])
        for loop in LOOPS:
            walls, cpus = zip(*[step for run in mine for step in run[loop]["steps"]])
            step_s[variant, loop] = statistics.median(walls)
            print(f"{variant:17} {loop:11} {step_s[variant, loop]:.3f} s/step [{min(walls):.3f}-{max(walls):.3f}]  "
                  f"cpu {statistics.median(cpus):.3f} s/step  warm-up step "
                  f"{statistics.median(run[loop]['warmup_s'] for run in mine):.2f} s  outside steps "
                  f"{statistics.median(run[loop]['outside_s'] for run in mine):.2f} s" + (
                      f"  peak RSS {rss[variant]:.0f} MB  trainable {mine[0]['trainable']:,}"
                      if loop == "adapterxfer" else ""))
    for reference in ("full", "full_unfrozen_emb"):
        suffix = reference.removeprefix("full")
        for regime in (name for name, (regime, _) in VARIANTS.items() if regime != "full"):
            print(f"RESULT {regime}_over_full{suffix}_step "
                  f"{step_s[regime, 'adapterxfer'] / step_s[reference, 'adapterxfer']:.3f}")
            print(f"RESULT {regime}_over_full{suffix}_peak_rss {rss[regime] / rss[reference]:.3f}")
    for variant in VARIANTS:
        written = statistics.median(run["checkpoint_s"] for name, run in runs if name == variant)
        print(f"RESULT checkpoint_over_step_{variant} {written / step_s[variant, 'adapterxfer']:.3f}")
    overhead = max(step_s[variant, "adapterxfer"] / step_s[variant, "bare"] for variant in VARIANTS)
    print(f"RESULT overhead_adapterxfer_over_bare {overhead:.3f}")


if __name__ == "__main__":
    main()
