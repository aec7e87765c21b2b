"""Extractive QA (SQuAD 1.1/2.0, XQuAD, MLQA, TyDiQA-GoldP). Rows in the SQuAD schema:
{"id", "question", "context", "answers": {"text": [...], "answer_start": [...]}}; empty lists mean
unanswerable (SQuAD 2.0). Row ids must be unique: decode finds a row's windows by its id.

The logic of transformers' examples run_qa.py / utils_qa.py, written compactly: question first,
context cut into windows of max_length that overlap by ``doc_stride`` tokens; a window's training
target is the first gold answer's tokens, or the first token (<s>/[CLS]) when the answer is missing
or not wholly inside it. Decoding keeps, for each row, the best start+end score over its windows
among the ``n_best`` top starts x top ends that lie in the context, in order, and at most
``max_answer_length`` tokens long; with ``version_2_with_negative`` it answers "" when the smallest
first-token score of the row's windows beats that by more than ``null_score_diff_threshold``.
The answer is the context slice between the tokens' character offsets, less surrounding whitespace.
"""

import numpy as np
from transformers import AutoModelForQuestionAnswering, DataCollatorWithPadding

from ..errors import UserError
from .common import ROW, dropping, predicted_and_gold, unpadded

AUTO_MODEL = AutoModelForQuestionAnswering
COLUMNS = ("id", "question", "context", "answers")
FIXED_HEAD = False
DEFAULTS = {"doc_stride": 128, "max_answer_length": 30, "n_best": 20, "version_2_with_negative": False,
            "null_score_diff_threshold": 0.0}
NO_ANSWER = 0  # token index the model points at for "no answer here": <s> / [CLS]
DECODE_ONLY = ("example_id", "offset_mapping")  # the row's id; character spans of context tokens, else None
ONE_ANSWER, LABEL_PER_TEXT, POOLED = False, False, False


def featurize(batch: dict, tokenizer, max_length: int, options: dict) -> dict:
    settings = {**DEFAULTS, **options}
    questions = [question.lstrip() for question in batch["question"]]
    _check_room(questions, tokenizer, max_length, settings["doc_stride"])
    features = tokenizer(questions, batch["context"], truncation="only_second", max_length=max_length,
                         stride=settings["doc_stride"], return_overflowing_tokens=True, return_offsets_mapping=True)
    rows = features.pop("overflow_to_sample_mapping")
    features["offset_mapping"] = [
        [span if sequence == 1 else None for span, sequence in zip(spans, features.sequence_ids(i))]
        for i, spans in enumerate(features["offset_mapping"])]
    targets = [_answer_tokens(spans, batch["answers"][row]) for spans, row in zip(features["offset_mapping"], rows)]
    features["start_positions"] = [start for start, _ in targets]
    features["end_positions"] = [end for _, end in targets]
    features["example_id"] = [batch["id"][row] for row in rows]
    if ROW in batch:
        features[ROW] = [batch[ROW][row] for row in rows]
    return features


def _check_room(questions: list[str], tokenizer, max_length: int, doc_stride: int) -> None:
    """Fail clearly where the fast tokenizer would panic: every window must hold more context than the overlap."""
    longest = max(len(ids) for ids in tokenizer(questions, add_special_tokens=False)["input_ids"])
    room = max_length - tokenizer.num_special_tokens_to_add(pair=True) - longest
    if doc_stride >= room:
        raise UserError(f"QA windows of max_length {max_length} hold {room} context tokens beside the longest "
                        f"question, not more than doc_stride {doc_stride}: raise max_length or lower doc_stride")


def _answer_tokens(spans: list, answers: dict) -> tuple[int, int]:
    """First and last token of the first gold answer in this window, or NO_ANSWER twice."""
    if not answers["answer_start"]:
        return NO_ANSWER, NO_ANSWER
    first = answers["answer_start"][0]
    last = first + len(answers["text"][0])
    context = [i for i, span in enumerate(spans) if span is not None]
    if spans[context[0]][0] > first or spans[context[-1]][1] < last:
        return NO_ANSWER, NO_ANSWER
    return (max(i for i in context if spans[i][0] <= first),
            min(i for i in context if spans[i][1] >= last))


def collator(tokenizer):
    return dropping(DECODE_ONLY, DataCollatorWithPadding(tokenizer))


def length(features: dict) -> int:
    return len(features["input_ids"])


def outputs(model_output, batch) -> list:
    mask = batch["attention_mask"]
    return list(zip(unpadded(model_output.start_logits, mask), unpadded(model_output.end_logits, mask)))


def decode(outputs, features, rows, options) -> list[str]:
    """One answer text per row, "" for no answer."""
    if len({row["id"] for row in rows}) != len(rows):
        raise UserError("QA rows need unique ids: a row's windows are found by its id")
    settings = {**DEFAULTS, **options}
    windows = {}
    for output, example_id, spans in zip(outputs, features["example_id"], features["offset_mapping"]):
        windows.setdefault(example_id, []).append((*output, spans))
    return [_best_answer(row["context"], windows[row["id"]], settings) for row in rows]


def _best_answer(context: str, windows: list, settings: dict) -> str:
    null_score, best_score, best = np.inf, -np.inf, ""
    for start_logits, end_logits, spans in windows:
        null_score = min(null_score, start_logits[NO_ANSWER] + end_logits[NO_ANSWER])
        for start, end in _spans(start_logits, end_logits, spans, settings):
            if start_logits[start] + end_logits[end] > best_score:
                best_score = start_logits[start] + end_logits[end]
                best = context[spans[start][0]:spans[end][1]].strip()  # a "▁word" token's span may hold the space
    if settings["version_2_with_negative"] and null_score - best_score > settings["null_score_diff_threshold"]:
        return ""
    return best


def _spans(start_logits, end_logits, spans: list, settings: dict):
    """Candidate (start, end) token pairs among the n-best starts and ends: in the context, in order, short enough."""
    starts = np.argsort(start_logits)[::-1][:settings["n_best"]]
    ends = np.argsort(end_logits)[::-1][:settings["n_best"]]
    for start in starts:
        for end in ends:
            if (spans[start] is not None and spans[end] is not None
                    and start <= end < start + settings["max_answer_length"]):
                yield start, end


def references(rows) -> list[list[str]]:
    return [row["answers"]["text"] for row in rows]


def text(row: dict) -> str:
    return f"{row['question']} {row['context']}"


def official_values(task, lang: str, items: list[dict]) -> tuple[dict, dict]:
    """{question id: answer} against the test rows as a SQuAD 1.1 file (XQuAD, MLQA, TyDiQA)."""
    rows, (predicted, _) = task.rows("test", lang), predicted_and_gold(items)
    return {row["id"]: p for row, p in zip(rows, predicted)}, {"version": "1.1", "data": [{"paragraphs": [
        {"context": row["context"], "qas": [{"id": row["id"], "question": row["question"], "answers": [
            {"text": text, "answer_start": start} for text, start in zip(row["answers"]["text"],
                                                                         row["answers"]["answer_start"])]}]}
        for row in rows]}]}
