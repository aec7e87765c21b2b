"""Ranking a candidate pool (Mewsli-X, LAReQA), evaluation only.

Rows: {"id", "query", "gold": [candidate id]}; the pool is the task's split "candidates", rows {"id", "text"}.
There is no head and no training: queries and candidates are embedded by mean pooling a hidden layer
and ranked by cosine (see ``adapterxfer.retrieval.rank``).
"""

AUTO_MODEL = None
COLUMNS = ("id", "query", "gold")
ONE_ANSWER, LABEL_PER_TEXT, POOLED = False, False, True
text = None  # no single text per row for `select` to embed
