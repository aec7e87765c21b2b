"""(IA)^3 (Liu et al. 2022, peft ``IA3Config``) on a frozen backbone: learned vectors that rescale the
attention keys and values and the input of each feed-forward output layer; the head trains beside it.

It has no keys of its own: the scaled modules are the paper's, inside the encoder only, so the head
never gets one. An artifact is a plain peft folder plus the head, saved, loaded, swapped in a bank and
shown on a card exactly as a LoRA (this class inherits all that from :class:`Lora`); a target phase
starts from an intermediate's vectors (``sequential``).
"""

from __future__ import annotations

from . import register
from .common import unfreeze_head
from .lora import Lora, layer_pattern

FEEDFORWARD = r"output\.dense$"  # the FFN's output layer, not attention.output.dense
SCALED = r"(attention\.self\.(key|value)|output\.dense)$"


@register
class Ia3(Lora):
    name = "ia3"
    kind = "ia3"
    section = None  # no keys of its own (not LoRA's)
    transfers = ("sequential", "multitask")
    merges = ()

    def build(self, task, backbone, parents, config):
        from peft import IA3Config, PeftModel, get_peft_model

        from ..modeling import task_model

        base = task_model(task, backbone.path)
        if parents:
            model = PeftModel.from_pretrained(base, parents[0].folder, is_trainable=True)
        else:
            model = get_peft_model(base, IA3Config(target_modules=layer_pattern(config) + SCALED,
                                                   feedforward_modules=layer_pattern(config) + FEEDFORWARD))
        unfreeze_head(model)
        return model
