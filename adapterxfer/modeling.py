"""Model construction from a local folder, and which weights form the task head.

The head is whatever the task model has that the encoder checkpoint lacks (transformers
reports these as newly initialized): a classifier, and for multiple choice the pooler when
the backbone has none. Every regime trains and saves exactly these beside its own module.
"""

from __future__ import annotations

from pathlib import Path

from transformers import AutoModel

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


def head_parameters(model) -> dict:
    """{name: parameter} of the task head, named as in the plain transformers model."""
    inner = unwrap(model)
    names = set(getattr(inner, HEAD_NAMES, ()))
    return {name: param for name, param in inner.named_parameters() if name in names}


def trainable_parameters(model) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
