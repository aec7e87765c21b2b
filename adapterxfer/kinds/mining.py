"""Bitext mining (BUCC), evaluation only. Rows: {"source_id", "source", "target_id", "target"}, one per gold pair.

There is no head and no training: both sides are embedded by mean pooling a hidden layer and pairs
are mined with margin scoring (see ``adapterxfer.retrieval.mine``).
"""

from .common import predicted_and_gold

AUTO_MODEL = None
COLUMNS = ("source_id", "source", "target_id", "target")
ONE_ANSWER, LABEL_PER_TEXT, POOLED = False, False, True
text = None  # no single text per row for `select` to embed


def official_values(task, lang: str, items: list[dict]) -> tuple[list, list]:
    """"src<TAB>tgt" lines (BUCC): an item holds the mined and the gold pairs of one gold pair's source sentence."""
    predicted, gold = predicted_and_gold(items)
    return [line for lines in predicted for line in lines], [line for lines in gold for line in lines]
