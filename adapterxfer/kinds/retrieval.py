"""Retrieval (Tatoeba-style), evaluation only. Rows: {"query", "target"}: the query's own target is gold.

There is no head and no training: sentences are encoded by mean pooling a hidden layer
(see ``adapterxfer.retrieval.embed``), and each query retrieves its nearest target.
"""

AUTO_MODEL = None
COLUMNS = ("query", "target")
ONE_ANSWER, LABEL_PER_TEXT, POOLED = False, False, True


def text(row: dict) -> str:
    return row["query"]
