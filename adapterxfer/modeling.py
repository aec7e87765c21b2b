"""Model construction from a local folder: a task model (encoder + fresh head) or a bare encoder."""

from __future__ import annotations

from pathlib import Path

from transformers import AutoModel

from .kinds import KINDS
from .tasks.spec import TaskSpec


def task_model(task: TaskSpec, encoder_folder: Path):
    """The task's model class over the encoder weights in ``encoder_folder``; the head starts fresh."""
    labels = {}
    if task.labels:
        labels = dict(num_labels=len(task.labels), id2label=dict(enumerate(task.labels)),
                      label2id={name: i for i, name in enumerate(task.labels)})
    return KINDS[task.kind].AUTO_MODEL.from_pretrained(encoder_folder, use_safetensors=True, **labels)


def encoder_model(encoder_folder: Path):
    return AutoModel.from_pretrained(encoder_folder, use_safetensors=True, add_pooling_layer=False)


def trainable_parameters(model) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
