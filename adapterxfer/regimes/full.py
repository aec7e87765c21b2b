"""Full-model fine-tuning, the STILTs reference: the whole encoder trains with the head.

An output holds ``encoder/`` (a plain transformers folder, tokenizer included) and
``head.safetensors`` (every task-model weight outside the encoder), so the next phase
loads the encoder alone and puts a fresh head on it.
"""

from __future__ import annotations

from pathlib import Path

from safetensors.torch import load_file, save_file

from ..errors import UserError
from ..modeling import task_model

HEAD_FILE = "head.safetensors"


def prepare(model, config):
    if config.freeze_word_embeddings:
        model.get_input_embeddings().requires_grad_(False)
    return model


def save(model, tokenizer, folder: Path) -> None:
    model.base_model.save_pretrained(folder / "encoder", safe_serialization=True)
    tokenizer.save_pretrained(folder / "encoder")
    prefix = model.base_model_prefix + "."
    head = {k: v.detach().contiguous() for k, v in model.state_dict().items() if not k.startswith(prefix)}
    save_file(head, folder / HEAD_FILE)


def load(folder: Path, task):
    model = task_model(task, encoder_folder(folder))
    try:
        missing, unexpected = model.load_state_dict(load_file(folder / HEAD_FILE), strict=False)
    except RuntimeError as err:
        raise UserError(f"{folder / HEAD_FILE}: head does not fit task {task.name}: "
                        f"{str(err).splitlines()[-1].strip()}") from None
    prefix = model.base_model_prefix + "."
    missing = [k for k in missing if not k.startswith(prefix)]
    if missing or unexpected:
        raise UserError(f"{folder / HEAD_FILE}: head does not fit task {task.name} "
                        f"(missing {missing[:3]}, unexpected {unexpected[:3]})")
    return model


def encoder_folder(folder: Path) -> Path:
    return Path(folder) / "encoder"
