"""Full-model fine-tuning, the STILTs reference: the whole encoder trains with the head.

An output holds ``encoder/`` (a plain transformers folder, tokenizer included) and
``head.safetensors``, so the next phase loads the encoder alone and puts a fresh head on it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..keys import key
from . import register
from .common import Regime, load_head, save_head


@dataclass
class FullKeys:
    """regime full: the whole encoder trains"""

    # Freezing the 250k-row word-embedding matrix keeps the step ~2x cheaper on CPU and leaves non-English
    # token embeddings where pretraining put them.
    freeze_word_embeddings: bool = key(True, "keep the word-embedding matrix frozen")


@register
class Full(Regime):
    name = "full"
    starts_unchanged = True
    kind = "encoder"
    section = FullKeys
    transfers = ("sequential", "multitask")
    library = "transformers"

    def build(self, task, backbone, parents, config):
        from ..modeling import task_model

        model = task_model(task, parents[0].folder / "encoder" if parents else backbone.path)
        if config.freeze_word_embeddings:
            model.get_input_embeddings().requires_grad_(False)
        return model

    def save(self, model, tokenizer, folder: Path) -> None:
        model.base_model.save_pretrained(folder / "encoder", safe_serialization=True)
        tokenizer.save_pretrained(folder / "encoder")
        save_head(model, folder)

    def load(self, folder: Path, task, backbone, manifest=None):
        from ..modeling import task_model

        model = task_model(task, folder / "encoder")
        load_head(model, folder, task.name)
        return model

    def load_encoder(self, folder: Path, task, backbone, manifest=None):
        from ..modeling import encoder_model

        return encoder_model(folder / "encoder")

    def card_loading(self, folder: Path, manifest: dict, model_class: str, base: str, labels: str) -> list[str]:
        return [f'model = {model_class}.from_pretrained(folder, subfolder="encoder"{labels})',
                'encoder = AutoModel.from_pretrained(folder, subfolder="encoder", add_pooling_layer=False)',
                'model.load_state_dict(load_file(f"{folder}/head.safetensors"), strict=False)  # the head']
