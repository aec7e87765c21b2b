"""Model construction from a local folder, which weights form the task head, and what the head reads.

The head is whatever the task model has that the encoder checkpoint lacks (transformers
reports these as newly initialized): a classifier, and for multiple choice the pooler when
the backbone has none. Every regime trains and saves exactly these beside its own module.

Pooling: an XLM-R classification or multiple-choice head reads the state of <s>. A backbone trained
with mean pooling (multilingual-e5: its sentence embedding is the mean over real tokens) never
trained <s> to summarise a sentence, so there a head that reads <s> must first teach it, and an
intermediate phase that does so would look like transfer. ``set_pooling(model, "mean")`` makes the
head read the mean of the last layer's states over real tokens instead, with the same weights
(so the head file is unchanged). ``resolve_pooling("auto", folder)`` gives what the backbone was
trained with: mean for the models in TRAINED_WITH_MEAN, cls otherwise.
"""

from __future__ import annotations

import json
from contextlib import contextmanager
from pathlib import Path

import torch
from transformers import AutoModel
from transformers.modeling_outputs import BaseModelOutputWithPastAndCrossAttentions

from .backbones import check_model_config
from .kinds import KINDS
from .tasks.spec import TaskSpec

# Every model is loaded with this attention implementation, named: a config.json never picks one
# (check_model_config refuses one naming a Hub repo before any load). sdpa is transformers' default for XLM-R.
ATTENTION = "sdpa"
HEAD_NAMES = "adapterxfer_head_names"  # attribute holding the head's parameter names
# Backbones trained with mean pooling, by model id (adapterxfer_backbone.json "model", or the Hub id).
TRAINED_WITH_MEAN = ("intfloat/multilingual-e5-small", "intfloat/multilingual-e5-base",
                     "intfloat/multilingual-e5-large")
_HOOKS = "adapterxfer_pooling_hooks"  # attribute holding the installed mean-pooling hooks


def task_model(task: TaskSpec, encoder_folder: Path):
    """The task's model class over the encoder weights in ``encoder_folder``; the head starts fresh."""
    # A task without labels (QA: start and end logits) takes transformers' default of 2, not the label count an
    # intermediate's encoder config kept (MNLI's 3 would give a QA head three outputs).
    labels = {"num_labels": 2}
    if task.labels:
        labels = dict(num_labels=len(task.labels), id2label=dict(enumerate(task.labels)),
                      label2id={name: i for i, name in enumerate(task.labels)})
    check_model_config(Path(encoder_folder) / "config.json")
    model, info = KINDS[task.kind].AUTO_MODEL.from_pretrained(
        encoder_folder, use_safetensors=True, output_loading_info=True, attn_implementation=ATTENTION, **labels)
    setattr(model, HEAD_NAMES, tuple(sorted(info["missing_keys"])))
    return model


def encoder_model(encoder_folder: Path):
    check_model_config(Path(encoder_folder) / "config.json")
    return AutoModel.from_pretrained(encoder_folder, use_safetensors=True, add_pooling_layer=False,
                                     attn_implementation=ATTENTION)


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


def encoders(model) -> list:
    """The distinct transformers encoders (XLMRobertaModel and the like) inside ``model``, a task model, a
    multi-task model or a bare encoder (whose ``base_model`` is itself)."""
    subs = model.models.values() if isinstance(model, MultiTaskModel) else [model]
    return list({id(base): base for base in (unwrap(sub).base_model for sub in subs)}.values())


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
    owners = encoders(model)
    saved = [owner.encoder for owner in owners]
    for owner in owners:
        owner.encoder = replay
    try:
        yield replay
    finally:
        for owner, encoder in zip(owners, saved):
            owner.encoder = encoder


def resolve_pooling(pooling: str, backbone_folder: Path) -> str:
    """"cls" or "mean": ``pooling`` itself, or for "auto" what the backbone was trained with."""
    if pooling != "auto":
        return pooling
    meta = Path(backbone_folder) / "adapterxfer_backbone.json"
    model_id = json.loads(meta.read_text(encoding="utf-8")).get("model") if meta.is_file() else None
    hub = [part[len("models--"):].replace("--", "/") for part in Path(backbone_folder).parts
           if part.startswith("models--")]  # a Hub snapshot: .../models--owner--name/snapshots/<commit>
    return "mean" if (model_id or (hub[0] if hub else None)) in TRAINED_WITH_MEAN else "cls"


def set_pooling(model, pooling: str) -> None:
    """Make a classification or multiple-choice head read <s> ("cls") or the mean of the last layer's
    states over real tokens ("mean"); other kinds (tagging, QA, MLM) read every token and are left as is."""
    for sub in model.models.values() if isinstance(model, MultiTaskModel) else [model]:
        inner = unwrap(sub)
        for hook in getattr(inner, _HOOKS, ()):
            hook.remove()
        setattr(inner, _HOOKS, ())
        reader = _first_token_reader(inner)
        if pooling == "mean" and reader is not None:
            setattr(inner, _HOOKS, _mean_pooling_hooks(inner, reader))


def _first_token_reader(model):
    """The module that reads position 0 of the last layer: an XLM-R classification head (it takes
    ``features[:, 0]``), else the pooler (multiple choice; BERT-style heads); None for heads that read
    every token. Not the pooler of an XLM-R classifier: it may be there, shared with a multiple-choice
    task in multi-task training, but its output goes unused."""
    if not type(model).__name__.endswith(("ForSequenceClassification", "ForMultipleChoice")):
        return None
    head = getattr(model, "classifier", None)
    if head is not None and not isinstance(head, torch.nn.Linear):
        return head
    return getattr(model.base_model, "pooler", None)


def _mean_pooling_hooks(model, reader) -> tuple:
    """Keep each call's attention mask, and hand ``reader`` the masked mean as a one-token sequence."""
    calls = {}

    def keep_mask(module, args, kwargs):
        calls["mask"] = kwargs.get("attention_mask")

    def mean_first(module, args, kwargs):
        hidden = args[0] if args else kwargs.pop("hidden_states", kwargs.pop("features", None))
        mask = calls.get("mask")
        mask = (torch.ones(hidden.shape[:2], device=hidden.device) if mask is None
                else mask.reshape(-1, mask.shape[-1])).unsqueeze(-1).to(hidden.dtype)
        mean = (hidden * mask).sum(1, keepdim=True) / mask.sum(1, keepdim=True).clamp(min=1)
        return (mean, *args[1:]), kwargs

    # The mask as the encoder gets it (multiple choice: flattened to one row per choice); the encoder may
    # be shared by several task models (multi-task), each keeping the mask of every forward through it.
    return (model.base_model.register_forward_pre_hook(keep_mask, with_kwargs=True),
            reader.register_forward_pre_hook(mean_first, with_kwargs=True))
