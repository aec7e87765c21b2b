"""Bitext mining (BUCC), evaluation only. Rows: {"source_id", "source", "target_id", "target"}, one per gold pair.

There is no head and no training: both sides are embedded by mean pooling a hidden layer and pairs
are mined with margin scoring (see ``adapterxfer.retrieval.mine``).
"""

AUTO_MODEL = None
COLUMNS = ("source_id", "source", "target_id", "target")
ONE_ANSWER, LABEL_PER_TEXT, POOLED = False, False, True
text = None  # no single text per row for `select` to embed
