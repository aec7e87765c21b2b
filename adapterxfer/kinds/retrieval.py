"""Retrieval (Tatoeba-style), evaluation only. Rows: {"query", "target"}: the query's own target is gold.

There is no head and no training: sentences are encoded by mean pooling a hidden layer
(see ``adapterxfer.retrieval.embed``), and each query retrieves its nearest target.
"""

from .common import as_predicted

AUTO_MODEL = None
COLUMNS = ("query", "target")
ONE_ANSWER, LABEL_PER_TEXT, POOLED = False, False, True
official_values = as_predicted  # the retrieved target's index (Tatoeba)


def text(row: dict) -> str:
    return row["query"]
