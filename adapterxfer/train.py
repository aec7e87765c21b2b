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
from accelerate.utils import broadcast
from torch.utils.data import DataLoader, RandomSampler
from tqdm.auto import tqdm
from transformers import get_linear_schedule_with_warmup
from transformers.trainer_pt_utils import LengthGroupedSampler

from .config import RunConfig
from .evaluate import autocast
from .modeling import head_parameters, replayed_encoder

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
    With ``config.probe_steps``, the head is first probed alone (``probe_head``, logged as step 0,
    with a dev score only when ``max_steps`` is 0).
    Returns the log: one entry per evaluation with step, mean train loss, learning rate,
    dev score and elapsed seconds; the entry whose weights were kept has ``"selected": True``.
    """
    # bf16 by torch.autocast per forward, not Accelerator(mixed_precision=...): that setting is
    # process-wide in accelerate, and phases of one process (the demo, the tests) may differ in it.
    accelerator = Accelerator(gradient_accumulation_steps=config.grad_accum)
    generator = torch.Generator().manual_seed(config.seed)
    loaders = [_loader(source, generator, config) for source in sources]
    optimizer = torch.optim.AdamW(_param_groups(model, config), lr=config.lr)
    scheduler = get_linear_schedule_with_warmup(
        optimizer, math.ceil(config.warmup_ratio * config.max_steps), config.max_steps)
    model, optimizer, scheduler, *loaders = accelerator.prepare(model, optimizer, scheduler, *loaders)
    batches = [_forever(loader) for loader in loaders]
    weights = [len(source.features) ** (1 / config.temperature) for source in sources]
    pick = random.Random(config.seed)

    log, selected, best_weights = [], None, None  # selected: the log index of the weights kept
    losses, step, started = [], 0, time.perf_counter()
    if config.probe_steps:
        plain = accelerator.unwrap_model(model)
        probe_loss = probe_head(plain, sources, config, accelerator.device)
        for param in head_parameters(plain).values():  # one head in every process
            param.data = broadcast(param.data)
        # Scored only where it is the result, a probe alone (LP); in LP-FT the fine-tuned checkpoints compete.
        score = None if config.max_steps else dev_score(plain)
        log.append({"step": 0, "train_loss": probe_loss, "lr": config.head_lr or config.lr, "dev_score": score,
                    "seconds": round(time.perf_counter() - started, 1)})
        tqdm.write(f"head probe ({config.probe_steps} steps): train loss {probe_loss:.4f}"
                   + ("" if score is None else f", dev {score:.4f}"))
        selected = None if score is None else 0
    progress = tqdm(total=config.max_steps, desc="train", unit="step")
    model.train()  # here and after an evaluation, not every step: it walks every module
    while step < config.max_steps:
        index = pick.choices(range(len(sources)), weights)[0]
        batch = next(batches[index])
        if sources[index].name:
            batch = {**batch, "task": sources[index].name}
        with accelerator.accumulate(model):
            with autocast(model, config.bf16):
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
            if selected is None or score > log[selected]["dev_score"]:  # best at the last step: keep no copy
                selected, best_weights = len(log) - 1, None if step == config.max_steps else _trainable_state(model)
            if step < config.max_steps:
                model.train()
    progress.close()
    _restore(model, best_weights)
    log[selected]["selected"] = True
    return log


def probe_head(model, sources: list[Source], config: RunConfig, device: torch.device) -> float:
    """LP-FT (Kumar et al. 2022, "Fine-tuning can distort pretrained features and underperform
    out-of-distribution"): fit the fresh head alone on frozen encoder outputs before fine-tuning.

    The encoder runs once, without gradients, over ``config.probe_examples`` training examples of each
    source; the head then takes ``config.probe_steps`` AdamW steps on those cached states, one cached
    batch (``eval_batch_size`` examples) a step, at ``head_lr``. A step costs next to nothing, so the
    fine-tuning budget goes to the encoder or module instead of to a random head. ``model`` is the
    plain model, not a distributed wrapper: only the head gets gradients here. Returns the mean loss of
    the last 10 probe steps.
    """
    cache = []
    model.eval()
    with torch.no_grad(), autocast(model, config.bf16):
        for source in sources:
            order = torch.randperm(len(source.features), generator=torch.Generator().manual_seed(config.seed))
            subset = source.features.select(order[:config.probe_examples].tolist())
            for batch in DataLoader(subset, batch_size=config.eval_batch_size, collate_fn=source.collate):
                batch = {key: value.to(device) for key, value in batch.items()}
                batch |= {"task": source.name} if source.name else {}
                hidden = model(**batch, output_hidden_states=True).hidden_states[-1]
                cache.append((batch, hidden))
    head = list(head_parameters(model).values())
    optimizer = torch.optim.AdamW(head, lr=config.head_lr or config.lr, weight_decay=config.weight_decay)
    pick, losses = random.Random(config.seed), []
    model.train()
    # Its own seeded generator for the head's dropout: with the same encoder (every regime's baseline),
    # every regime probes the same head, whatever random draws building its module took.
    with replayed_encoder(model) as replay, torch.random.fork_rng():
        torch.manual_seed(config.seed)
        for _ in tqdm(range(config.probe_steps), desc="head probe", unit="step"):
            batch, replay.states = pick.choice(cache)
            with autocast(model, config.bf16):
                loss = model(**batch).loss
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
            losses.append(loss.item())
    return sum(losses[-10:]) / len(losses[-10:])


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
