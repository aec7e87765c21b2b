"""Pieces shared by the kinds whose prediction is the argmax over a logits row."""


def logits_rows(model_output, batch):
    return model_output.logits.float().cpu().numpy()


def argmax_labels(outputs, features, rows, options) -> list[int]:
    return [int(row.argmax()) for row in outputs]


def row_labels(rows) -> list[int]:
    return [row["label"] for row in rows]
