"""Full-model fine-tuning, the STILTs reference: the whole encoder trains with the head.

An output holds ``encoder/`` (a plain transformers folder, tokenizer included) and
``head.safetensors``, so the next phase loads the encoder alone and puts a fresh head on it.
"""

from __future__ import annotations

from pathlib import Path

from ..modeling import encoder_model, task_model
from .common import check_transfer, load_head, save_head

TRANSFERS = ("sequential",)
MULTITASK = True


def module_kind(task, config) -> str:
    return "encoder"


def build(task, backbone, parents, config):
    check_transfer("full", TRANSFERS, config.transfer, parents)
    model = task_model(task, parents[0].folder / "encoder" if parents else backbone.path)
    if config.freeze_word_embeddings:
        model.get_input_embeddings().requires_grad_(False)
    return model


def save(model, tokenizer, folder: Path) -> None:
    model.base_model.save_pretrained(folder / "encoder", safe_serialization=True)
    tokenizer.save_pretrained(folder / "encoder")
    save_head(model, folder)


def load(folder: Path, task, backbone):
    model = task_model(task, folder / "encoder")
    load_head(model, folder, task.name)
    return model


def load_encoder(folder: Path, task, backbone):
    return encoder_model(folder / "encoder")
