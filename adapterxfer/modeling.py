"""Model construction from a local folder, and which weights form the task head.

The head is whatever the task model has that the encoder checkpoint lacks (transformers
reports these as newly initialized): a classifier, and for multiple choice the pooler when
the backbone has none. Every regime trains and saves exactly these beside its own module.
"""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path

import torch
from transformers import AutoModel
from transformers.modeling_outputs import BaseModelOutputWithPastAndCrossAttentions

from .kinds import KINDS
from .tasks.spec import TaskSpec

HEAD_NAMES = "adapterxfer_head_names"  # attribute holding the head's parameter names


def task_model(task: TaskSpec, encoder_folder: Path):
    """The task's model class over the encoder weights in ``encoder_folder``; the head starts fresh."""
    labels = {}
    if task.labels:
        labels = dict(num_labels=len(task.labels), id2label=dict(enumerate(task.labels)),
                      label2id={name: i for i, name in enumerate(task.labels)})
    model, info = KINDS[task.kind].AUTO_MODEL.from_pretrained(
        encoder_folder, use_safetensors=True, output_loading_info=True, **labels)
    setattr(model, HEAD_NAMES, tuple(sorted(info["missing_keys"])))
    return model


def encoder_model(encoder_folder: Path):
    return AutoModel.from_pretrained(encoder_folder, use_safetensors=True, add_pooling_layer=False)


def unwrap(model):
    """The transformers model inside a peft wrapper (adapters modifies the model in place)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


class MultiTaskModel(torch.nn.Module):
    """Task models sharing one encoder: ``forward(task=name, **batch)`` runs that task's model."""

    def __init__(self, models: dict):
        super().__init__()
        self.models = torch.nn.ModuleDict(models)

    def forward(self, task: str, **batch):
        return self.models[task](**batch)


def share_encoder(source, model) -> None:
    """Make ``model`` use the encoder of ``source`` (with any LoRA layers in it); re-tie an MLM decoder."""
    shared, own = unwrap(source).base_model, model.base_model
    if getattr(shared, "pooler", None) is None and getattr(own, "pooler", None) is not None:
        shared.pooler = own.pooler  # multiple choice reads the pooled <s>; the other heads ignore it
    setattr(model, model.base_model_prefix, shared)
    model.tie_weights()


def head_parameters(model) -> dict:
    """{name: parameter} of the task head(s), named as in the plain transformers model."""
    if isinstance(model, MultiTaskModel):
        return {f"{task}.{name}": param for task, sub in model.models.items()
                for name, param in head_parameters(sub).items()}
    inner = unwrap(model)
    names = set(getattr(inner, HEAD_NAMES, ()))
    return {name: param for name, param in inner.named_parameters() if name in names}


def trainable_parameters(model) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


class _Replay(torch.nn.Module):
    """Stands in for an encoder: returns the hidden states set in ``states`` instead of computing them."""

    def __init__(self):
        super().__init__()
        self.states = None

    def forward(self, *args, **kwargs):
        return BaseModelOutputWithPastAndCrossAttentions(last_hidden_state=self.states)


@contextmanager
def replayed_encoder(model):
    """Within the block, ``replay.states = hidden`` makes every forward of ``model`` read ``hidden``
    as the encoder's output: the head (and the loss) run on cached features, the layers do not."""
    replay = _Replay()
    subs = model.models.values() if isinstance(model, MultiTaskModel) else [model]
    owners = list({id(base): base for base in (unwrap(sub).base_model for sub in subs)}.values())
    saved = [owner.encoder for owner in owners]
    for owner in owners:
        owner.encoder = replay
    try:
        yield replay
    finally:
        for owner, encoder in zip(owners, saved):
            owner.encoder = encoder
