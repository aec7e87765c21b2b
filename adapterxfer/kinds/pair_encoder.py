"""Pair classification with a bi-encoder. Rows: {"text", "text_pair", "label"}; label 1: the pair is related.

Each text is encoded on its own (Reimers and Gurevych 2019, "Sentence-BERT"), as a sentence encoder
such as multilingual-e5 was trained to: a cross-encoder's concatenated pair is an input it never saw.
A text's embedding is the mean of the last layer's states over its real tokens, L2-normalised; the
head (``CosineHead``) reads only the cosine of the two embeddings, so training moves exactly the
similarity that retrieval from the encoder scores (adapterxfer/retrieval.py). Both texts of every
pair go through the encoder as one batch of 2 x pairs sequences, so the LP-FT probe's cache of the
encoder's output replays a whole forward.
"""

import torch
from transformers import DataCollatorForMultipleChoice, XLMRobertaModel, XLMRobertaPreTrainedModel
from transformers.modeling_outputs import SequenceClassifierOutput

from .common import argmax_labels, logits_rows, row_labels

COLUMNS = ("text", "text_pair", "label")
INITIAL_SCALE = 100.0  # 1 / the temperature multilingual-e5 was trained with (0.01): its cosines span a narrow range
INITIAL_OFFSET = 0.85  # about the cosine of two verses of one book under me5-small; the probe refits it


class CosineHead(torch.nn.Module):
    """Two logits from a cosine c: 0 ("unrelated") and scale * (c - offset) ("related")."""

    def __init__(self):
        super().__init__()
        self.scale = torch.nn.Parameter(torch.empty(()))
        self.offset = torch.nn.Parameter(torch.empty(()))

    @torch.no_grad()
    def reset_parameters(self) -> None:
        self.scale.fill_(INITIAL_SCALE)
        self.offset.fill_(INITIAL_OFFSET)

    def forward(self, cosine: torch.Tensor) -> torch.Tensor:
        return torch.stack([torch.zeros_like(cosine), self.scale * (cosine - self.offset)], dim=-1)


class XLMRobertaForPairEncoding(XLMRobertaPreTrainedModel):
    """An XLM-R encoder (no pooler) and a ``CosineHead``; inputs of shape (pairs, 2, length)."""

    def __init__(self, config):
        super().__init__(config)
        if config.num_labels != 2:
            raise ValueError(f"a pair encoder has 2 labels (unrelated, related), got {config.num_labels}")
        self.roberta = XLMRobertaModel(config, add_pooling_layer=False)
        self.classifier = CosineHead()
        self.post_init()

    def _init_weights(self, module) -> None:
        if isinstance(module, CosineHead):
            module.reset_parameters()
        else:
            super()._init_weights(module)

    def forward(self, input_ids, attention_mask, labels=None, output_hidden_states=None, **kwargs):
        pairs, sides, length = input_ids.shape
        mask = attention_mask.view(pairs * sides, length)
        output = self.roberta(input_ids=input_ids.view(pairs * sides, length), attention_mask=mask,
                              output_hidden_states=output_hidden_states)
        weights = mask.unsqueeze(-1).to(output.last_hidden_state.dtype)
        pooled = (output.last_hidden_state * weights).sum(1) / weights.sum(1)
        first, second = torch.nn.functional.normalize(pooled.float(), dim=-1).view(pairs, sides, -1).unbind(1)
        logits = self.classifier((first * second).sum(-1))
        loss = None if labels is None else torch.nn.functional.cross_entropy(logits, labels)
        return SequenceClassifierOutput(loss=loss, logits=logits, hidden_states=output.hidden_states)


AUTO_MODEL = XLMRobertaForPairEncoding


def featurize(batch: dict, tokenizer, max_length: int, options: dict) -> dict:
    """Each text of a pair tokenized alone, the two kept together as one example's two sequences."""
    firsts = tokenizer(batch["text"], truncation=True, max_length=max_length)
    seconds = tokenizer(batch["text_pair"], truncation=True, max_length=max_length)
    features = {key: [list(pair) for pair in zip(firsts[key], seconds[key])] for key in firsts}
    features["labels"] = batch["label"]
    return features


def collator(tokenizer):
    return DataCollatorForMultipleChoice(tokenizer)  # pads both sequences of every pair to one length


def length(features: dict) -> int:
    return sum(len(ids) for ids in features["input_ids"])


outputs, decode, references = logits_rows, argmax_labels, row_labels
