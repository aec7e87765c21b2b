"""Multiple choice with a bi-encoder. Rows: {"context", "choices": [str, ...], "label"}: which choice relates.

The context and each choice are encoded on their own (Reimers and Gurevych 2019, "Sentence-BERT"), as a
sentence encoder such as multilingual-e5 was trained to: a cross-encoder's concatenated pair is an input it
never saw. A text's embedding is the mean of the last layer's states over its real tokens, L2-normalised, as
retrieval from the encoder reads it (adapterxfer/retrieval.py), and a choice's logit is ``scale`` times its
cosine with the context (``ScaledCosine``), so training moves exactly the similarity that retrieval scores.

The loss is the cross-entropy over the row's own choices, which are all in the row's language. In-batch
negatives (the other rows' choices, as E5 and SimCSE train) are left out on purpose: in a batch that mixes
languages (a multilingual intermediate) the easiest negatives are the ones in another language, and pushing
them away teaches the encoder to separate languages, the opposite of what cross-lingual retrieval needs (a
LoRA trained so on verses-xref-bi-multi fell from 0.78 to 0.48 zero-shot retrieval, one seed; its English
twin, whose batches are all English, rose to 0.82). A prediction is the best of the row's own choices, so
the metric, chance (1 / choices) and the trivial baselines are those of multiple choice. The context and the
choices of a row go through the encoder as one example of 1 + choices sequences, so the LP-FT probe's cache
of the encoder's output replays a whole forward.
"""

import torch
from transformers import DataCollatorForMultipleChoice, XLMRobertaModel, XLMRobertaPreTrainedModel
from transformers.modeling_outputs import SequenceClassifierOutput

from .common import argmax_labels, logits_rows, row_labels

COLUMNS = ("context", "choices", "label")
FIXED_HEAD = True  # a scale, initialised to INITIAL_SCALE
INITIAL_SCALE = 50.0  # 1 / temperature 0.02: multilingual-e5's cosines span a narrow range (it trained at 0.01)
ONE_ANSWER, LABEL_PER_TEXT, POOLED = True, False, False


class ScaledCosine(torch.nn.Module):
    """A choice's logit: ``scale`` times its cosine with the context."""

    def __init__(self):
        super().__init__()
        self.scale = torch.nn.Parameter(torch.empty(()))

    @torch.no_grad()
    def reset_parameters(self) -> None:
        self.scale.fill_(INITIAL_SCALE)

    def forward(self, contexts: torch.Tensor, choices: torch.Tensor) -> torch.Tensor:
        """(rows, dim) against (rows, choices, dim): (rows, choices) scaled cosines of unit vectors."""
        return self.scale * torch.einsum("rd,rcd->rc", contexts, choices)


class XLMRobertaForBiEncoderChoice(XLMRobertaPreTrainedModel):
    """An XLM-R encoder (no pooler) and a ``ScaledCosine`` head; inputs of shape (rows, 1 + choices, length)."""

    def __init__(self, config):
        super().__init__(config)
        self.roberta = XLMRobertaModel(config, add_pooling_layer=False)
        self.classifier = ScaledCosine()
        self.post_init()

    def _init_weights(self, module) -> None:
        if isinstance(module, ScaledCosine):
            module.reset_parameters()
        else:
            super()._init_weights(module)

    def forward(self, input_ids, attention_mask, labels=None, output_hidden_states=None, **kwargs):
        rows, sequences, length = input_ids.shape
        mask = attention_mask.view(rows * sequences, length)
        output = self.roberta(input_ids=input_ids.view(rows * sequences, length), attention_mask=mask,
                              output_hidden_states=output_hidden_states)
        weights = mask.unsqueeze(-1).to(output.last_hidden_state.dtype)
        pooled = (output.last_hidden_state * weights).sum(1) / weights.sum(1)
        vectors = torch.nn.functional.normalize(pooled.float(), dim=-1).view(rows, sequences, -1)
        contexts, choices = vectors[:, 0], vectors[:, 1:]
        logits = self.classifier(contexts, choices)
        loss = None if labels is None else torch.nn.functional.cross_entropy(logits, labels)
        return SequenceClassifierOutput(loss=loss, logits=logits, hidden_states=output.hidden_states)


AUTO_MODEL = XLMRobertaForBiEncoderChoice


def featurize(batch: dict, tokenizer, max_length: int, options: dict) -> dict:
    """The context and each choice tokenized alone, kept together as one example's sequences."""
    counts = [len(choices) for choices in batch["choices"]]
    texts = [text for context, choices in zip(batch["context"], batch["choices"]) for text in (context, *choices)]
    flat = tokenizer(texts, truncation=True, max_length=max_length)
    starts = [sum(counts[:i]) + i for i in range(len(counts))]
    features = {key: [values[s:s + 1 + n] for s, n in zip(starts, counts)] for key, values in flat.items()}
    features["labels"] = batch["label"]
    return features


def collator(tokenizer):
    return DataCollatorForMultipleChoice(tokenizer)  # pads every sequence of a row to one length


def length(features: dict) -> int:
    return sum(len(ids) for ids in features["input_ids"])


outputs, decode, references = logits_rows, argmax_labels, row_labels


def text(row: dict) -> str:
    return " ".join((row["context"], *row["choices"]))
