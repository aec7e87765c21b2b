"""Ranking a candidate pool (Mewsli-X, LAReQA), evaluation only.

Rows: {"id", "query", "gold": [candidate id]}; the pool is the task's split "candidates", rows {"id", "text"}.
There is no head and no training: queries and candidates are embedded by mean pooling a hidden layer
and ranked by cosine (see ``adapterxfer.retrieval.rank``).
"""

AUTO_MODEL = None
COLUMNS = ("id", "query", "gold")
ONE_ANSWER, LABEL_PER_TEXT, POOLED = False, False, True
text = None  # no single text per row for `select` to embed


def official_values(task, lang: str, items: list[dict]) -> tuple[dict, dict]:
    """{query id: ranked candidate ids} against {query id: [gold ids]} (Mewsli-X)."""
    return {item["ref"]: item["prediction"] for item in items}, {item["ref"]: item["label"] for item in items}
