"""Task kinds: how rows of one schema become model inputs, and which model class reads them.

A kind knows nothing of task names or regimes. Each module exposes the same shape:
``AUTO_MODEL`` (a transformers Auto class, None for evaluation-only kinds),
``COLUMNS`` (the row schema), ``featurize(batch, tokenizer, max_length)`` for a batched
``datasets.map``, ``collator(tokenizer)``, and ``length(features)`` for length grouping.
"""

from . import classification, multiple_choice, retrieval

KINDS = {
    "classification": classification,
    "multiple_choice": multiple_choice,
    "retrieval": retrieval,
}
