"""The one training loop, on accelerate. It knows nothing of task names or regimes:
it gets a model whose trainable parameters are already chosen, its data sources, and a function
that scores the model on the English dev set, whose best score chooses the checkpoint kept.

The loop is resumable: every ``checkpoint_interval`` steps it writes a checkpoint (adapterxfer/
checkpoint.py) into the phase's working folder, and a later run with the same identity continues
from the newest one, to the same weights and scores as a run that was never stopped.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from accelerate import Accelerator, PartialState
from accelerate.utils import broadcast, broadcast_object_list, gather_object
from tqdm.auto import tqdm
from transformers import get_linear_schedule_with_warmup
from transformers.trainer_pt_utils import get_length_grouped_indices

from . import checkpoint
from .checkpoint import TrainState
from .config import RunConfig
from .evaluate import forward_batches
from .modeling import head_parameters, replayed_encoder
from .precision import autocast, grad_scaler

MAX_GRAD_NORM = 1.0
NO_DECAY = ("bias", "LayerNorm.weight", "layer_norm.weight")


@dataclass
class Source:
    """One task's training data. In multi-task training its batches carry the task ``name``."""

    features: object  # a datasets.Dataset of model features
    lengths: list[int]
    collate: Callable
    items: list[str]  # each feature's item (adapterxfer.items): features of one row share it
    name: str | None = None

    def item_order(self, generator: torch.Generator) -> list[int]:
        """Feature indices, item by item in a random order of the distinct items: two sources holding the
        same items (a task and another rendering of it, in any row order) get them in the same order."""
        features_of: dict[str, list[int]] = {}
        for index, item in enumerate(self.items):
            features_of.setdefault(item, []).append(index)
        distinct = sorted(features_of)
        return [index for position in torch.randperm(len(distinct), generator=generator).tolist()
                for index in features_of[distinct[position]]]


@dataclass
class Run:
    """Where a phase's loop keeps its state: the working folder and who the run is."""

    work: Path  # checkpoints go here
    identity: dict  # a checkpoint is resumed only by a run of the same identity
    precision: str  # resolved: bf16 | fp16 | fp32
    tracker_dir: Path | None = None  # where report_to trackers write


class BatchStream:
    """An endless, seeded stream of one source's batches that can resume at any position.

    Epoch e is a permutation of the source's items (``Source.item_order``) drawn from a generator seeded
    with (seed, e), so the number of batches given so far fully determines what comes next: a resumed run
    reads the same batches without replaying the data. Each step's global batch of ``batch_size *
    processes`` examples is split among the processes, so a step sees the same examples whatever the
    number of processes. ``drawn``: how many examples the phase will take from this stream. With
    ``group_by_length``, batches are grouped by length within those only, so which items a phase trains
    on never depends on their lengths (which differ between renderings of one item in two languages).
    """

    def __init__(self, source: Source, config: RunConfig, processes: int, rank: int, drawn: int,
                 position: int = 0):
        self.source, self.config, self.drawn, self.position = source, config, drawn, position
        self.global_size = config.batch_size * processes
        self.mine = range(rank * config.batch_size, (rank + 1) * config.batch_size)
        self.orders: dict[int, list[int]] = {}  # epoch -> permutation; two at most (a batch may span them)

    def next(self) -> dict:
        start = self.position * self.global_size
        self.position += 1
        examples = [self.source.features[self._index(start + offset)] for offset in self.mine]
        batch = self.source.collate(examples)
        return {**batch, "task": self.source.name} if self.source.name else batch

    def _index(self, k: int) -> int:
        epoch, offset = divmod(k, len(self.source.features))
        if epoch not in self.orders:
            self.orders = {e: order for e, order in self.orders.items() if e == epoch - 1}
            self.orders[epoch] = self._order(epoch)
        return self.orders[epoch][offset]

    def consumed(self) -> list[int]:
        """The feature indices every process has taken so far, in order."""
        return [self._index(k) for k in range(self.position * self.global_size)]

    def _order(self, epoch: int) -> list[int]:
        generator = torch.Generator().manual_seed(self.config.seed * 1_000_003 + epoch)
        order = self.source.item_order(generator)
        if not self.config.group_by_length:
            return order
        cut = min(max(self.drawn - epoch * len(order), 0), len(order))
        return self._grouped(order[:cut], generator) + self._grouped(order[cut:], generator)

    def _grouped(self, indices: list[int], generator: torch.Generator) -> list[int]:
        if not indices:
            return []
        lengths = [self.source.lengths[i] for i in indices]
        return [indices[i] for i in get_length_grouped_indices(lengths, self.global_size, generator=generator)]


def fit(model, sources: list[Source], dev_score: Callable[[torch.nn.Module], float], config: RunConfig,
        run: Run) -> tuple[list[dict], int, list[list[int]]]:
    """Train for ``config.max_steps`` optimizer steps; keep the weights with the best dev score.

    With several sources, each micro-batch comes from source i with probability proportional
    to n_i ** (1 / config.temperature): 1 is proportional sampling, larger flattens it.
    With ``config.probe_steps``, the head is first probed alone (``probe_head``, logged as step 0,
    with a dev score only when ``max_steps`` is 0). ``dev_score`` gives every process the same score
    (``scored_on_main``).
    Returns the log, the step the run resumed from (0: a fresh start) and, per source, the feature indices
    its steps took, in order. The log has one entry per evaluation with step, mean train loss, learning
    rate, dev score and training seconds; the entry whose weights were kept has ``"selected": True``.
    """
    loop = Loop(model, sources, dev_score, config, run)
    while loop.state.step < config.max_steps:
        loop.step()
        if loop.state.step % config.eval_every == 0 or loop.state.step == config.max_steps:
            loop.evaluate()
        if loop.state.step % config.checkpoint_interval == 0 and loop.state.step < config.max_steps:
            loop.checkpoint()
    return loop.finish()


def scored_on_main(score: Callable[[torch.nn.Module], float]) -> Callable[[torch.nn.Module], float]:
    """``score`` computed by the main process alone and sent to the others: under ``accelerate launch``
    the English dev set is scored once, not once per process."""
    def scored(model) -> float:
        return broadcast_object_list([score(model) if PartialState().is_main_process else None])[0]
    return scored


class Loop:
    """``fit``'s stages, recipe-style: set up (the constructor: accelerator, optimizer and schedule, resume,
    probe, data streams, trackers), ``step``, ``evaluate``, ``checkpoint`` and ``finish``."""

    def __init__(self, model, sources: list[Source], dev_score: Callable[[torch.nn.Module], float],
                 config: RunConfig, run: Run):
        self.plain, self.dev_score, self.config, self.run = model, dev_score, config, run
        # Autocast per forward, not Accelerator(mixed_precision=...): that setting is process-wide in
        # accelerate, and phases of one process (a study, the tests) may differ in it.
        self.accelerator = Accelerator(gradient_accumulation_steps=config.grad_accum,
                                       log_with=None if config.report_to == "none" else config.report_to,
                                       project_dir=run.tracker_dir)
        optimizer = torch.optim.AdamW(_param_groups(model, config), lr=config.lr)
        self.scheduler = get_linear_schedule_with_warmup(
            optimizer, math.ceil(config.warmup_ratio * config.max_steps), config.max_steps)
        self.scaler = grad_scaler(run.precision, self.accelerator.device)
        self.model, self.optimizer = self.accelerator.prepare(model, optimizer)
        self.state = TrainState(pick=random.Random(config.seed), positions=[0] * len(sources))
        self.resumed_from = self._resume()
        if not self.resumed_from and config.probe_steps:
            _probe(model, sources, dev_score, config, run.precision, self.accelerator, self.state)
        self.weights = [len(source.features) ** (1 / config.temperature) for source in sources]
        processes = self.accelerator.num_processes
        self.streams = [BatchStream(source, config, processes, self.accelerator.process_index,
                                    batches * config.batch_size * processes, position)
                        for source, batches, position in zip(sources, _batches(config, self.weights),
                                                             self.state.positions)]
        if config.report_to != "none":
            self.accelerator.init_trackers(run.work.name.strip("."),
                                           config={k: str(v) for k, v in vars(config).items()})
        self.started = time.perf_counter() - self.state.seconds
        self.progress = tqdm(total=config.max_steps, initial=self.state.step, desc="train", unit="step",
                             disable=not self.accelerator.is_main_process)
        self.model.train()  # here and after an evaluation, not every step: it walks every module

    def _resume(self) -> int:
        """Continue from the newest checkpoint of this run's identity; returns its step (0: none)."""
        folder = checkpoint.latest(self.run.work)
        if folder is None:
            return 0
        if checkpoint.identity_of(folder) != self.run.identity:
            tqdm.write(f"ignoring {folder}: written by a run of another configuration, backbone or parent")
            return 0
        checkpoint.restore(folder, self.state, self.plain, self.optimizer.optimizer, self.scheduler, self.scaler,
                           self.accelerator.process_index)
        tqdm.write(f"resuming from {folder} (step {self.state.step})")
        return self.state.step

    def step(self) -> None:
        """One optimizer step over ``grad_accum`` micro-batches, each from a source drawn by its weight."""
        state, accelerator, optimizer = self.state, self.accelerator, self.optimizer
        while True:
            batch = self.streams[state.pick.choices(range(len(self.streams)), self.weights)[0]].next()
            with accelerator.accumulate(self.model):
                with autocast(self.plain, self.run.precision):
                    loss = self.model(**batch).loss
                accelerator.backward(self.scaler.scale(loss))
                state.losses.append(loss.item())
                if not accelerator.sync_gradients:
                    continue
                self.scaler.unscale_(optimizer.optimizer)
                accelerator.clip_grad_norm_(self.model.parameters(), MAX_GRAD_NORM)
                self.scaler.step(optimizer.optimizer)
                self.scaler.update()
                self.scheduler.step()
                optimizer.zero_grad()
            break
        state.step += 1
        self.progress.update(1)
        self.progress.set_postfix(loss=f"{state.losses[-1]:.3f}")
        accelerator.log({"train_loss": state.losses[-1], "lr": self.scheduler.get_last_lr()[0]}, step=state.step)

    def evaluate(self) -> None:
        """Score the English dev set; keep the weights if they are the best so far."""
        state = self.state
        score = self.dev_score(self.plain)
        state.log.append({"step": state.step, "train_loss": sum(state.losses) / len(state.losses),
                          "lr": self.scheduler.get_last_lr()[0], "dev_score": score,
                          "seconds": round(time.perf_counter() - self.started, 1)})
        self.accelerator.log({"dev_score": score}, step=state.step)
        state.losses = []
        if state.selected is None or score > state.log[state.selected]["dev_score"]:
            state.selected = len(state.log) - 1  # best at the last step: keep no copy
            state.best = None if state.step == self.config.max_steps else _trainable_state(self.plain)
        self.progress.write(f"step {state.step}: train loss {state.log[-1]['train_loss']:.4f}, dev {score:.4f}")
        self.model.train()

    def checkpoint(self) -> None:
        """Write a checkpoint (main process), with every process's data positions and RNG states."""
        state = self.state
        state.positions, state.seconds = [s.position for s in self.streams], time.perf_counter() - self.started
        rng = gather_object([checkpoint.rng_states()])  # every process's dropout generator
        if self.accelerator.is_main_process:
            checkpoint.save(self.run.work, state, self.plain, self.optimizer.optimizer, self.scheduler, self.scaler,
                            self.run.identity, rng)
        self.accelerator.wait_for_everyone()

    def finish(self) -> tuple[list[dict], int, list[list[int]]]:
        """Close the trackers and put the selected weights back; returns the log, the step resumed from and
        each source's consumed feature indices."""
        self.progress.close()
        for tracker in self.accelerator.trackers:  # not end_training(): it also ends the process group still in use
            tracker.finish()
        _restore(self.plain, self.state.best)
        self.state.log[self.state.selected]["selected"] = True
        return self.state.log, self.resumed_from, [stream.consumed() for stream in self.streams]


def _batches(config: RunConfig, weights: list[float]) -> list[int]:
    """How many micro-batches ``fit`` will draw from each source: the loop's own draws (``TrainState.pick``,
    seeded with the seed), made ahead."""
    pick, counts = random.Random(config.seed), [0] * len(weights)
    for _ in range(config.max_steps * config.grad_accum):
        counts[pick.choices(range(len(weights)), weights)[0]] += 1
    return counts


def _probe(plain, sources, dev_score, config, precision: str, accelerator, state: TrainState) -> None:
    started = time.perf_counter()
    probe_loss = probe_head(plain, sources, config, precision)
    for param in head_parameters(plain).values():  # one head in every process
        param.data = broadcast(param.data)
    # Scored only where it is the result, a probe alone (LP); in LP-FT the fine-tuned checkpoints compete.
    score = None if config.max_steps else dev_score(plain)
    state.log.append({"step": 0, "train_loss": probe_loss, "lr": config.head_lr or config.lr, "dev_score": score,
                      "seconds": round(time.perf_counter() - started, 1)})
    tqdm.write(f"head probe ({config.probe_steps} steps): train loss {probe_loss:.4f}"
               + ("" if score is None else f", dev {score:.4f}"))
    state.selected = None if score is None else 0


def probe_head(model, sources: list[Source], config: RunConfig, precision: str) -> float:
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
    for source in sources:
        order = source.item_order(torch.Generator().manual_seed(config.seed))
        examples = source.features.select(order[:config.probe_examples]).to_list()
        task = {"task": source.name} if source.name else {}
        for _, batch, output in forward_batches(model, examples, source.collate, config.eval_batch_size,
                                                precision, extra=task, output_hidden_states=True):
            cache.append((batch, output.hidden_states[-1]))
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
            with autocast(model, precision):
                loss = model(**batch).loss
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
            losses.append(loss.item())
    return sum(losses[-10:]) / len(losses[-10:])


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
