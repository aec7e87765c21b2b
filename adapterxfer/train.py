"""The one training loop, on accelerate. It knows nothing of task names or regimes:
it gets a model whose trainable parameters are already chosen, features, a collator,
and a function that scores the model on the English dev set for model selection.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from accelerate import Accelerator
from torch.utils.data import DataLoader, RandomSampler
from tqdm.auto import tqdm
from transformers import get_linear_schedule_with_warmup
from transformers.trainer_pt_utils import LengthGroupedSampler

from .config import RunConfig
from .modeling import head_parameters

MAX_GRAD_NORM = 1.0
NO_DECAY = ("bias", "LayerNorm.weight", "layer_norm.weight")


@dataclass
class Source:
    """One task's training data. In multi-task training its batches carry the task ``name``."""

    features: object  # a datasets.Dataset of model features
    lengths: list[int]
    collate: Callable
    name: str | None = None


def fit(model, sources: list[Source], dev_score: Callable[[torch.nn.Module], float],
        config: RunConfig) -> list[dict]:
    """Train for ``config.max_steps`` optimizer steps; keep the weights with the best dev score.

    With several sources, each micro-batch comes from source i with probability proportional
    to n_i ** (1 / config.temperature): 1 is proportional sampling, larger flattens it.
    Returns the log: one entry per evaluation with step, mean train loss, learning rate,
    dev score and elapsed seconds.
    """
    accelerator = Accelerator(mixed_precision="bf16" if config.bf16 else "no",
                              gradient_accumulation_steps=config.grad_accum)
    generator = torch.Generator().manual_seed(config.seed)
    loaders = [_loader(source, generator, config) for source in sources]
    optimizer = torch.optim.AdamW(_param_groups(model, config), lr=config.lr)
    scheduler = get_linear_schedule_with_warmup(
        optimizer, math.ceil(config.warmup_ratio * config.max_steps), config.max_steps)
    model, optimizer, scheduler, *loaders = accelerator.prepare(model, optimizer, scheduler, *loaders)
    batches = [_forever(loader) for loader in loaders]
    weights = [len(source.features) ** (1 / config.temperature) for source in sources]
    pick = random.Random(config.seed)

    log, best_score, best_weights = [], -math.inf, None
    losses, step, started = [], 0, time.perf_counter()
    progress = tqdm(total=config.max_steps, desc="train", unit="step")
    model.train()  # here and after an evaluation, not every step: it walks every module
    while step < config.max_steps:
        index = pick.choices(range(len(sources)), weights)[0]
        batch = next(batches[index])
        if sources[index].name:
            batch = {**batch, "task": sources[index].name}
        with accelerator.accumulate(model):
            loss = model(**batch).loss
            accelerator.backward(loss)
            if accelerator.sync_gradients:
                accelerator.clip_grad_norm_(model.parameters(), MAX_GRAD_NORM)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad()
        losses.append(loss.item())
        if not accelerator.sync_gradients:
            continue
        step += 1
        progress.update(1)
        progress.set_postfix(loss=f"{losses[-1]:.3f}")
        if step % config.eval_every == 0 or step == config.max_steps:
            score = dev_score(accelerator.unwrap_model(model))
            log.append({"step": step, "train_loss": sum(losses) / len(losses),
                        "lr": scheduler.get_last_lr()[0], "dev_score": score,
                        "seconds": round(time.perf_counter() - started, 1)})
            progress.write(f"step {step}: train loss {log[-1]['train_loss']:.4f}, dev {score:.4f}")
            losses = []
            if score > best_score:  # best at the last step: the weights in place are the best, keep no copy
                best_score, best_weights = score, None if step == config.max_steps else _trainable_state(model)
            if step < config.max_steps:
                model.train()
    progress.close()
    _restore(model, best_weights)
    return log


def _loader(source: Source, generator: torch.Generator, config: RunConfig) -> DataLoader:
    sampler = (LengthGroupedSampler(config.batch_size, lengths=source.lengths, generator=generator)
               if config.group_by_length else RandomSampler(source.features, generator=generator))
    return DataLoader(source.features, batch_size=config.batch_size, sampler=sampler, collate_fn=source.collate)


def _forever(loader):
    while True:
        yield from loader


def _param_groups(model, config: RunConfig) -> list[dict]:
    """Weight decay except on biases and LayerNorms; the fresh task head at head_lr."""
    head = {id(param) for param in head_parameters(model).values()}
    groups = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        lr = config.head_lr if id(param) in head and config.head_lr is not None else config.lr
        decay = 0.0 if name.endswith(NO_DECAY) else config.weight_decay
        groups.setdefault((lr, decay), []).append(param)
    return [{"params": params, "lr": lr, "weight_decay": decay} for (lr, decay), params in groups.items()]


def _trainable_state(model) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


@torch.no_grad()
def _restore(model, weights: dict[str, torch.Tensor] | None) -> None:
    if weights is None:
        return
    params = dict(model.named_parameters())
    for name, value in weights.items():
        params[name].copy_(value)
