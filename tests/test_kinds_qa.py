"""The QA kind on the tiny backbone: windows, targets, decoding hand-built logits, the list metrics, a short run."""

import math

import numpy as np
import pytest
from transformers import AutoTokenizer

from adapterxfer.errors import UserError
from adapterxfer.kinds import qa
from adapterxfer.metrics import METRICS
from adapterxfer.tasks.spec import TaskSpec

from test_kinds_tagging import fit_and_score

CONTEXT = ("The kettle whistled while we argued about the map. My neighbour grows tomatoes on her tiny balcony. "
           "A red bicycle leaned against the library wall. We missed the last bus and walked home under the stars.")


def row(row_id: str, question: str, context: str, answer: str | None) -> dict:
    if answer is None:
        return {"id": row_id, "question": question, "context": context, "answers": {"text": [], "answer_start": []}}
    return {"id": row_id, "question": question, "context": context,
            "answers": {"text": [answer], "answer_start": [context.index(answer)]}}


ROWS = [
    row("wall", "What wall?", CONTEXT, "the library wall"),
    row("grow", "What grows?", CONTEXT, "tomatoes"),
    row("zh", "什么响了？", "我们争论地图的时候，水壶响了。", "水壶"),
    row("ar", "ماذا صفر؟", "صفرت الغلاية بينما كنا نتجادل حول الخريطة.", "الغلاية"),
]


@pytest.fixture(scope="module")
def tokenizer(tiny_backbone):
    return AutoTokenizer.from_pretrained(tiny_backbone.path)


def featurize(rows, tokenizer, max_length=64, doc_stride=16):
    return qa.featurize({key: [r[key] for r in rows] for key in rows[0]}, tokenizer, max_length,
                        {"doc_stride": doc_stride})


def pointing_at(features, targets: dict[int, tuple[int, int, float]]) -> list:
    """Logits that are 0 everywhere except: in window w, ``score`` at its (start, end) tokens."""
    outputs = []
    for window, ids in enumerate(features["input_ids"]):
        start_logits, end_logits = np.zeros(len(ids)), np.zeros(len(ids))
        if window in targets:
            start, end, score = targets[window]
            start_logits[start] += score
            end_logits[end] += score
        outputs.append((start_logits, end_logits))
    return outputs


def gold_logits(features) -> list:
    """What a model that knows the gold would output: peaks at every window's training target."""
    return pointing_at(features, {w: (s, e, 5.0) for w, (s, e) in
                                  enumerate(zip(features["start_positions"], features["end_positions"])) if s})


def test_answers_are_exact_context_slices_in_latin_cjk_and_arabic(tokenizer):
    features = featurize(ROWS, tokenizer)
    assert qa.decode(gold_logits(features), features, ROWS, {}) == [a[0] for a in qa.references(ROWS)]


def test_answer_cut_by_a_window_edge_is_recovered_from_the_next_window(tokenizer):
    rows = ROWS[:1]
    first, last = CONTEXT.index("the library wall"), CONTEXT.index("the library wall") + len("the library wall")
    features = featurize(rows, tokenizer, max_length=32, doc_stride=8)
    ends = [max(span[1] for span in spans if span) for spans in features["offset_mapping"]]
    cut = next(w for w, end in enumerate(ends) if first < end < last)
    assert features["start_positions"][cut] == features["end_positions"][cut] == qa.NO_ANSWER
    whole_start, whole_end = features["start_positions"][cut + 1], features["end_positions"][cut + 1]
    assert whole_start != qa.NO_ANSWER
    # The cut window points at the visible part of the answer, less sure than the next window.
    visible_start = max(i for i, span in enumerate(features["offset_mapping"][cut]) if span and span[0] <= first)
    visible_end = max(i for i, span in enumerate(features["offset_mapping"][cut]) if span)
    logits = pointing_at(features, {cut: (visible_start, visible_end, 3.0), cut + 1: (whole_start, whole_end, 4.0)})
    assert qa.decode(logits, features, rows, {}) == ["the library wall"]


def test_unanswerable_row_answers_empty_when_the_null_score_wins(tokenizer):
    rows = [row("none", "What wall?", CONTEXT[:50], None)]
    features = featurize(rows, tokenizer)
    assert features["start_positions"] == features["end_positions"] == [qa.NO_ANSWER]
    context = [i for i, span in enumerate(features["offset_mapping"][0]) if span]
    logits = pointing_at(features, {0: (context[1], context[3], 2.0)})
    logits[0][0][qa.NO_ANSWER] = logits[0][1][qa.NO_ANSWER] = 3.0  # null 6 beats the span's 4
    assert qa.decode(logits, features, rows, {"version_2_with_negative": True}) == [""]
    span_text = qa.decode(logits, features, rows, {})[0]
    assert span_text and span_text in CONTEXT  # SQuAD 1.1 always answers
    lenient = {"version_2_with_negative": True, "null_score_diff_threshold": 5.0}
    assert qa.decode(logits, features, rows, lenient) == [span_text]


def test_span_longer_than_max_answer_length_is_skipped(tokenizer):
    rows = ROWS[:1]
    features = featurize(rows, tokenizer)
    context = [i for i, span in enumerate(features["offset_mapping"][0]) if span]
    start, long_end, short_end = context[0], context[6], context[2]
    logits = pointing_at(features, {0: (start, long_end, 5.0)})
    logits[0][1][short_end] = 4.0
    spans = features["offset_mapping"][0]
    assert qa.decode(logits, features, rows, {"max_answer_length": 7}) == [CONTEXT[spans[start][0]:spans[long_end][1]]]
    assert qa.decode(logits, features, rows, {"max_answer_length": 3}) == [CONTEXT[spans[start][0]:spans[short_end][1]]]


def test_n_best_pairs_pick_the_highest_start_plus_end(tokenizer):
    rows = ROWS[:1]
    features = featurize(rows, tokenizer)
    spans = features["offset_mapping"][0]
    context = [i for i, span in enumerate(spans) if span]
    a, c, d = context[5], context[7], context[8]
    start_logits, end_logits = np.zeros(len(spans)), np.zeros(len(spans))
    start_logits[[d, a]] = [5.0, 4.0]  # the best start (d) only pairs with the weak end at d
    end_logits[[c, d]] = [5.0, 1.0]  # the best end (c) lies before d but after a
    assert qa.decode([(start_logits, end_logits)], features, rows, {}) == [CONTEXT[spans[a][0]:spans[c][1]]]  # 9 > 6
    assert qa.decode([(start_logits, end_logits)], features, rows, {"n_best": 1}) == [""]  # (d, c) is no span


def test_doc_stride_without_room_is_a_user_error(tokenizer):
    with pytest.raises(UserError, match="doc_stride 128"):
        featurize(ROWS, tokenizer, max_length=32, doc_stride=128)


def test_list_metrics_score_f1_first_and_unanswerable_as_in_squad2():
    squad = METRICS["squad"](["the Library wall", "a tomato"], [["the library wall"], ["tomatoes", "tomato"]], "en")
    assert list(squad) == ["f1", "exact_match"] and squad == {"f1": 1.0, "exact_match": 1.0}  # fractions
    mixed = METRICS["squad"](["", "the wall", "wall"], [[], [], ["library wall"]], "en")
    assert mixed["exact_match"] == pytest.approx(1 / 3) and mixed["f1"] == pytest.approx((1 + 2 / 3) / 3)
    assert METRICS["mlqa"](["水壶"], [["水壶响"]], "zh")["f1"] == pytest.approx(0.8)  # per-character tokens


def test_short_training_run_scores_with_squad(tiny_backbone):
    task = TaskSpec(name="test-qa", kind="qa", role="target", description="invented QA rows", languages=("en",),
                    read=lambda split, lang, limit, seed: ROWS, metric="squad", options={"doc_stride": 16})
    log, scores, predictions, batch_keys = fit_and_score(task, tiny_backbone, max_length=48)
    assert math.isfinite(log[-1]["train_loss"])
    assert all(keys == {"input_ids", "attention_mask", "start_positions", "end_positions"} for keys in batch_keys)
    assert list(scores)[0] == "f1" and all(0.0 <= value <= 1.0 for value in scores.values())
    assert all(p["prediction"] in r["context"] for p, r in zip(predictions, ROWS))
