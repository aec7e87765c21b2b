"""Pieces the kinds share: argmax over a logits row, per-example trimming, decode-only columns, official values."""

# A cached feature's column: the index of the row it came from. A kind that makes several features of a
# row copies the row's value into each, where the batch has the column; for the others,
# adapterxfer.data.features adds it.
ROW = "row"


def logits_rows(model_output, batch):
    return model_output.logits.float().cpu().numpy()


def argmax_labels(outputs, features, rows, options) -> list[int]:
    return [int(row.argmax()) for row in outputs]


def row_labels(rows) -> list[int]:
    return [row["label"] for row in rows]


def predicted_and_gold(items: list[dict]) -> tuple[list, list]:
    """The predictions and the gold of evaluation's items ({"label", "prediction", "ref"}), in order."""
    return [item["prediction"] for item in items], [item["label"] for item in items]


def as_predicted(task, lang: str, items: list[dict]) -> tuple[list, list]:
    """XTREME's official prediction and gold values where they are what decode and references give:
    indices (multiple choice, retrieval), tag lists (tagging)."""
    return predicted_and_gold(items)


def unpadded(values, attention_mask) -> list:
    """One numpy array per example of a padded (batch, length, ...) tensor, padding positions dropped."""
    values = values.float() if values.is_floating_point() else values
    return [row[mask.bool()].cpu().numpy() for row, mask in zip(values, attention_mask)]


def dropping(columns: tuple[str, ...], collate):
    """``collate`` on examples without ``columns``: features keep what decode needs, the model never sees it."""
    def collate_inputs(examples: list[dict]):
        return collate([{k: v for k, v in example.items() if k not in columns} for example in examples])
    return collate_inputs
