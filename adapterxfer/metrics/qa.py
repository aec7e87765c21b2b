"""Extractive QA exact match and token F1, as the official XTREME scorer computes them.

``squad_scores`` behaves like xtreme's third_party/evaluate_squad.py (the SQuAD v1.1 script), which
the official scorer uses for XQuAD and TyDiQA-GoldP in every language, English articles included.
``mlqa_scores`` behaves like third_party/evaluate_mlqa.py: Unicode punctuation, per-language
articles, and character tokens for Chinese.
"""

from __future__ import annotations

import re
import string
import unicodedata
from collections import Counter
from typing import Callable, Iterator, Mapping, Sequence

_SQUAD_ARTICLES = re.compile(r"\b(a|an|the)\b")

# evaluate_mlqa.py's article patterns (None: no articles). Its Arabic pattern, "\sال^|ال", has a
# first branch that can never match, so every "ال" becomes a space, also inside a word.
_MLQA_ARTICLES = {
    "en": r"\b(a|an|the)\b",
    "es": r"\b(un|una|unos|unas|el|la|los|las)\b",
    "de": r"\b(ein|eine|einen|einem|eines|einer|der|die|das|den|dem|des)\b",
    "vi": r"\b(của|là|cái|chiếc|những)\b",
    "ar": "ال",
    "hi": None,
    "zh": None,
}

# The official "Chinese character" range: U+4E00..U+9FA5, not the whole CJK block.
_CJK_CHAR = re.compile("([\u4e00-\u9fa5])")


def _is_mlqa_punct(ch: str) -> bool:
    """Any Unicode punctuation (category P*) plus ASCII string.punctuation (which has $+<=>^`|~)."""
    return ch in string.punctuation or unicodedata.category(ch).startswith("P")


def normalize_squad_answer(text: str) -> str:
    """Lower-case, drop ASCII punctuation, then the English articles, then collapse whitespace."""
    text = "".join(ch for ch in text.lower() if ch not in string.punctuation)
    return " ".join(_SQUAD_ARTICLES.sub(" ", text).split())


def normalize_mlqa_answer(text: str, lang: str) -> str:
    """MLQA normalization: zh splits into single ideographs and whitespace-separated runs."""
    if lang not in _MLQA_ARTICLES:
        raise ValueError(f"MLQA has no normalization for language {lang!r}; known: {', '.join(_MLQA_ARTICLES)}")
    text = "".join(ch for ch in text.lower() if not _is_mlqa_punct(ch))
    if _MLQA_ARTICLES[lang]:
        text = re.sub(_MLQA_ARTICLES[lang], " ", text)
    pieces = _CJK_CHAR.split(text) if lang == "zh" else [text]
    return " ".join(token for piece in pieces for token in piece.split())


def _token_f1(prediction: str, gold: str) -> float:
    """F1 of the bags of tokens of two normalized answers; 0 (an int, as official) with no overlap."""
    pred_tokens, gold_tokens = prediction.split(), gold.split()
    same = sum((Counter(pred_tokens) & Counter(gold_tokens)).values())
    if same == 0:
        return 0
    precision = 1.0 * same / len(pred_tokens)
    recall = 1.0 * same / len(gold_tokens)
    return (2 * precision * recall) / (precision + recall)


def _questions(dataset: Sequence[Mapping]) -> Iterator[Mapping]:
    for article in dataset:
        for paragraph in article["paragraphs"]:
            yield from paragraph["qas"]


def _qa_scores(predictions: Mapping[str, str], dataset: Sequence[Mapping],
               normalize: Callable[[str], str]) -> dict:
    """Best EM and F1 over the gold answers, averaged over all questions; unanswered ones score 0.

    A question with no gold answer (SQuAD 2.0 "unanswerable") is an error: the official scorer
    crashes on it (max of an empty list). Accumulated with += in question order, as official.
    """
    exact = f1 = total = 0
    for qa in _questions(dataset):
        total += 1
        if qa["id"] not in predictions:
            continue
        golds = [normalize(answer["text"]) for answer in qa["answers"]]
        if not golds:
            raise ValueError(f"question {qa['id']} has no gold answer (unanswerable questions are not scored)")
        prediction = normalize(predictions[qa["id"]])
        exact += max(prediction == gold for gold in golds)
        f1 += max(_token_f1(prediction, gold) for gold in golds)
    if not total:
        raise ValueError("no questions to score")
    return {"exact_match": 100.0 * exact / total, "f1": 100.0 * f1 / total}


def squad_scores(predictions: Mapping[str, str], dataset: Sequence[Mapping]) -> dict:
    """predictions: question id -> answer text; dataset: SQuAD ``data`` (articles/paragraphs/qas)."""
    return _qa_scores(predictions, dataset, normalize_squad_answer)


def mlqa_scores(predictions: Mapping[str, str], dataset: Sequence[Mapping], lang: str) -> dict:
    """As ``squad_scores``, with the MLQA normalization of ``lang`` (en es de ar hi vi zh)."""
    return _qa_scores(predictions, dataset, lambda text: normalize_mlqa_answer(text, lang))


def qa_list_scores(predictions: Sequence[str], references: Sequence[Sequence[str]], lang: str | None = None) -> dict:
    """``squad_scores`` (or ``mlqa_scores`` in ``lang``) over parallel lists, F1 first.

    predictions: one answer text per question; references: each question's gold texts. A question
    with no gold (SQuAD 2.0 unanswerable) scores 100 when the prediction normalizes to "" and 0
    otherwise, as the SQuAD 2.0 script scores it; the others score exactly as the official script.
    """
    normalize = normalize_squad_answer if lang is None else (lambda text: normalize_mlqa_answer(text, lang))
    answerable = [i for i, golds in enumerate(references) if golds]
    abstained = sum(not normalize(predictions[i]) for i, golds in enumerate(references) if not golds)
    if not answerable:
        return dict.fromkeys(("f1", "exact_match"), 100.0 * abstained / len(references))
    dataset = [{"paragraphs": [{"qas": [{"id": str(i), "answers": [{"text": text} for text in references[i]]}
                                        for i in answerable]}]}]
    by_id = {str(i): predictions[i] for i in answerable}
    scores = squad_scores(by_id, dataset) if lang is None else mlqa_scores(by_id, dataset, lang)
    if len(answerable) == len(references):
        return {"f1": scores["f1"], "exact_match": scores["exact_match"]}
    share = len(answerable) / len(references)
    return {key: scores[key] * share + 100.0 * abstained / len(references) for key in ("f1", "exact_match")}
