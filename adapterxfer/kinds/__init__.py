"""Task kinds: how rows of one schema become model inputs, and which model class reads them.

A kind knows nothing of task names or regimes. Each module exposes the same shape:
``AUTO_MODEL`` (a transformers Auto class, None for evaluation-only kinds),
``COLUMNS`` (the row schema), ``featurize(batch, tokenizer, max_length, options)`` for a batched
``datasets.map`` (it may make several features per row), ``collator(tokenizer)`` (model inputs
and labels only: it drops decoding-only columns), ``length(features)`` for length-sorted batches,
and, for evaluation, ``outputs(model_output, batch)`` (one item per feature), ``decode(outputs,
features, rows, options)`` (one prediction per row) and ``references(rows)`` (the gold, same
shape). ``options`` is the task's ``TaskSpec.options`` dict. Kinds that train say whether a fresh
model's head is the same for every seed (``FIXED_HEAD``). What the rest of adapterxfer asks of a kind:
``ONE_ANSWER`` (one gold among fixed labels or choices: chance and the trivial baselines apply),
``LABEL_PER_TEXT`` (one class label per text: the label-reading `select` proxies apply), ``POOLED`` (queries
scored against a shared candidate pool, whose "hub" distractors can tie errors across queries), and
``text(row)`` (the row as one text, which `select` embeds; None where a row has none). Kinds of an official
XTREME task (``scoring.FORMATS``) give ``official_values(task, lang, items)``: the predictions and the gold of
evaluation's items in the official scorer's form, which ``scoring.write_official`` writes.
"""

from . import bi_encoder, classification, mining, mlm, multiple_choice, qa, ranking, retrieval, tagging

KINDS = {
    "classification": classification,
    "bi_encoder": bi_encoder,
    "multiple_choice": multiple_choice,
    "retrieval": retrieval,
    "tagging": tagging,
    "qa": qa,
    "mlm": mlm,
    "mining": mining,
    "ranking": ranking,
}
