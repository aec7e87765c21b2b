"""The pure metric functions. Expected numbers and strings come from google-research/xtreme's
evaluate.py and third_party scorers (commit 838c13b, seqeval 1.2.2), recorded here as literals."""

import pytest

from adapterxfer.metrics import (METRICS, accuracy, accuracy_scores, bucc_scores,
                                 mewslix_scores,
                                 mlqa_scores, normalize_mlqa_answer, normalize_squad_answer, overall_scores,
                                 squad_scores, tagging_scores, task_summary)


def dataset(*qas):
    """SQuAD ``data`` from (question id, [gold answers])."""
    return [{"paragraphs": [{"qas": [{"id": i, "answers": [{"text": t} for t in golds]} for i, golds in qas]}]}]


def test_project_metrics_keep_their_names():
    assert set(METRICS) >= {"accuracy", "accuracy@1"}
    assert METRICS["accuracy"]([1, 0], [1, 1], "fr") == {"accuracy": 0.5}
    assert METRICS["accuracy@1"]([0, 1, 2], [0, 1, 1], "ja") == {"accuracy@1": 2 / 3}
    assert accuracy([1, 2, 3], [1, 2, 4]) == 2 / 3 and accuracy([], []) == 0.0
    with pytest.raises(ValueError):
        accuracy([1], [])


def test_accuracy_scores():
    assert accuracy_scores(["1", "2", "3"], ["1", "2", "4"]) == {"accuracy": 66.66666666666666}
    with pytest.raises(ValueError, match="no examples"):
        accuracy_scores([], [])


def test_tagging_with_bio_tags():
    references = [["B-PER", "I-PER", "O", "B-LOC"], ["I-ORG", "I-ORG", "O"], []]
    predictions = [["B-PER", "I-PER", "O", "O"], ["B-ORG", "I-ORG", "O"], []]
    assert tagging_scores(predictions, references) == {"f1": 80.0, "precision": 100.0, "recall": 66.66666666666666}
    assert tagging_scores([["O", "O"]], [["O", "O"]]) == {"f1": 0.0, "precision": 0.0, "recall": 0.0}


def test_tagging_with_plain_udpos_tags_as_seqeval_reads_them():
    # Official quirk: UPOS tags go to seqeval as they are, so "INTJ INTJ" is one "NTJ" entity.
    references = [["PRON", "AUX", "NOUN", "PUNCT"], ["INTJ", "INTJ", "SCONJ", "DET"]]
    predictions = [["PRON", "VERB", "NOUN", "PUNCT"], ["INTJ", "NOUN", "SCONJ", "DET"]]
    assert tagging_scores(predictions, references) == {"f1": 66.66666666666666, "precision": 62.5,
                                                       "recall": 71.42857142857143}
    with pytest.raises(ValueError):
        tagging_scores([["NOUN"]], [["NOUN", "VERB"]])


def test_bucc_pair_sets():
    assert bucc_scores(["a\tb", "c\tx"], ["a\tb", "c\td", "e\tf"]) == {"f1": 40.0, "precision": 50.0,
                                                                       "recall": 33.33333333333333}
    no_overlap = bucc_scores(["c\td"], ["a\tb"])
    assert no_overlap == {"f1": 0, "precision": 0, "recall": 0} and type(no_overlap["f1"]) is int
    assert bucc_scores([], []) == {"f1": 0, "precision": 0, "recall": 0}
    assert bucc_scores(["a\tb", "a\tb"], ["a\tb"])["precision"] == 100.0  # a set: duplicates count once


@pytest.mark.parametrize("text, normalized", [
    ("The Cat's  hat!", "cats hat"),
    ("an apple, a pear", "apple pear"),
    ("«Paris» — the city", "«paris» — city"),  # only ASCII punctuation is removed
    ("", ""),
])
def test_squad_normalization(text, normalized):
    assert normalize_squad_answer(text) == normalized


@pytest.mark.parametrize("text, lang, normalized", [
    ("电动势（EMF）是电池 abc", "zh", "电 动 势 emf 是 电 池 abc"),
    ("鿦〇の東京", "zh", "鿦〇の 東 京"),  # only U+4E00..U+9FA5 are split into characters
    ("الكتاب والقلم", "ar", "كتاب و قلم"),  # every "ال" goes, also inside a word
    ("Los perros, el gato", "es", "perros gato"),
    ("Der Rhein und das Meer", "de", "rhein und meer"),
    ("cái nhà của tôi", "vi", "nhà tôi"),
    ("«¿Qué?» $5+3", "en", "qué 53"),  # Unicode punctuation and ASCII symbols
    ("राम का घर।", "hi", "राम का घर"),
])
def test_mlqa_normalization(text, lang, normalized):
    assert normalize_mlqa_answer(text, lang) == normalized


def test_mlqa_unknown_language():
    with pytest.raises(ValueError, match="'fr'"):
        normalize_mlqa_answer("le chat", "fr")


def test_squad_scores_best_gold_and_unanswered():
    data = dataset(("1", ["The Eiffel Tower", "Eiffel"]), ("2", ["in 1999"]), ("3", ["x"]))
    assert squad_scores({"1": "eiffel tower!", "2": "1999"}, data) == {"exact_match": 33.333333333333336,
                                                                      "f1": 55.55555555555555}


def test_empty_prediction_against_an_article_only_answer():
    # Both normalize to "": an exact match, but F1 0 (no tokens), as official.
    assert squad_scores({"1": ""}, dataset(("1", ["The"]))) == {"exact_match": 100.0, "f1": 0.0}


def test_unanswerable_and_empty_questions_are_errors():
    # The official scorer crashes on SQuAD 2.0-style questions with no gold answer.
    with pytest.raises(ValueError, match="question 1 has no gold answer"):
        squad_scores({"1": ""}, dataset(("1", [])))
    assert squad_scores({}, dataset(("1", []))) == {"exact_match": 0.0, "f1": 0.0}  # unanswered: never compared
    with pytest.raises(ValueError, match="no questions"):
        mlqa_scores({}, [], "en")


# Random cases (scripts/check_against_official_scorer.py generator, seed 7) with the official
# evaluate_mlqa / evaluate_squad results: (lang, questions, predictions, MLQA scores, SQuAD scores).
RANDOM_QA = [
    ("zh", [("zh-0", ["电池:an#Der>"]), ("zh-1", ["a，Der\"电池《", "a，Paris`a\"a。", "los|"]),
            ("zh-2", ["hello،das¿Paris，电池-", "Der。鿦!"])],
     {"zh-0": "des;an~là!un?", "zh-1": "a，Der\"电池《，", "zh-2": "des/电动势#làla&"},
     {"exact_match": 33.333333333333336, "f1": 41.666666666666664}, {"exact_match": 0.0, "f1": 0.0}),
    ("ar", [("ar-0", ["los(東京–", "の(an，los@ال<〇%"]), ("ar-1", ["das la»ال|", "", "an والقلم，東京+la el「"]),
            ("ar-2", [""]), ("ar-3", ["của؟el,những=das」Der/", ""]), ("ar-4", ["của`", "an—những`والقلم[", "hello~"])],
     {"ar-0": "los(東京–¡", "ar-1": "an?una*鿦؟", "ar-2": "电池，电动势%", "ar-3": "«"},
     {"exact_match": 40.0, "f1": 20.0}, {"exact_match": 0.0, "f1": 0.0}),
    ("es", [("es-0", ["el،của\"die?", "die\"", "un.ال、das)los.die|"]),
            ("es-1", ["a&worldworld،東京。của`", "của¿ال《của:", "an'"]),
            ("es-2", ["a¿The，die#Der>", "The!world'1999^die《"])],
     {"es-0": "Paris+die world\\1999》", "es-1": "", "es-2": "The!world'1999^die《「"},
     {"exact_match": 33.333333333333336, "f1": 33.333333333333336}, {"exact_match": 33.333333333333336, "f1": 0.0}),
]


@pytest.mark.parametrize("lang, questions, predictions, mlqa, squad", RANDOM_QA, ids=[c[0] for c in RANDOM_QA])
def test_random_qa_cases_equal_the_official_scorers(lang, questions, predictions, mlqa, squad):
    assert mlqa_scores(predictions, dataset(*questions), lang) == mlqa
    assert squad_scores(predictions, dataset(*questions)) == squad


def test_mewslix_mrr_at_20():
    references = {"a": ["Q1"], "b": [" Q2 "], "c": ["Q3"], "d": ["Q4"]}
    predictions = {"a": ["Q9"] * 11 + ["Q1"], "b": ["Q2"], "c": ["Q0"] * 20 + ["Q3"], "x": ["Q4"]}
    # a: rank 12, b: rank 1 (gold stripped), c: rank 21 (cut), d: missing
    assert mewslix_scores(predictions, references) == {"map@20": 27.083333333333332}
    assert mewslix_scores({}, {}) == {"map@20": 0.0}


def test_task_summary_keys_and_headline():
    qa = task_summary({"en": {"exact_match": 50.0, "f1": 70.0}, "de": {"exact_match": 30.0, "f1": 40.0}}, qa=True)
    assert qa == {"exact_match": {"en": 50.0, "de": 30.0}, "f1": {"en": 70.0, "de": 40.0},
                  "avg_exact_match": 40.0, "avg_f1": 55.0, "avg_metric": 47.5}
    tagging = task_summary({"en": {"f1": 80.0, "precision": 90.0, "recall": 70.0}}, qa=False)
    assert list(tagging) == ["f1", "precision", "recall", "avg_f1", "avg_precision", "avg_recall", "avg_metric"]
    assert tagging["avg_metric"] == 80.0
    assert task_summary({"en": {"map@20": 10.0}}, qa=False)["avg_metric"] == 10.0
    assert task_summary({}, qa=False) == {}


def test_overall_scores_need_complete_groups():
    detailed = {"a": {"avg_metric": 10.0}, "b": {"avg_metric": 20.0}, "c": {"avg_metric": 60.0}}
    groups = {"one": ["a", "b"], "two": ["c", "d"]}
    assert overall_scores(detailed, ["a", "b", "c"], groups) == {"all_task": 30.0, "one": 15.0}
    assert overall_scores(detailed, ["a", "b", "c", "d"], groups) == {"one": 15.0}
    # a listed task that cannot be scored (XTREME-R's LAReQA) rules all_task out
    assert overall_scores({**detailed, "d": {}}, ["a", "b", "c", "d"], {"one": ["a", "b"]}) == {"one": 15.0}


def test_every_xtreme_metric_scores_its_prediction_rows():
    """Each XTREME / XTREME-R task's metric is registered and scores the rows its evaluation writes:
    BUCC one row of mined lines against gold lines, Mewsli-X / LAReQA one row of ranked ids per query."""
    from adapterxfer.metrics import score_rows
    from adapterxfer.tasks.xtreme import TASKS

    assert {spec["metric"] for spec in TASKS.values() if "metric" in spec} <= set(METRICS)
    bucc = [{"ref": None, "label": ["1\t2", "3\t4", "5\t6"], "prediction": ["1\t2", "3\t9"]}]
    assert score_rows("bucc_f1", bucc, "de") == {"f1": 0.4, "precision": 0.5, "recall": 0.33333333333333326}
    ranked = [{"ref": "a", "label": ["Q1"], "prediction": ["Q9", "Q1"]},
              {"ref": "b", "label": ["Q2"], "prediction": ["Q2"]}]
    assert score_rows("mrr@20", ranked, "en") == {"map@20": 0.75}
    lareqa = [{"ref": "a", "label": ["x", "y"], "prediction": ["x", "z", "y"]}]
    assert score_rows("map@20", lareqa, "ar") == {"map@20": (1 + 2 / 3) / 2}


def test_tatoeba_accuracy_at_1_is_a_headline():
    assert task_summary({"de": {"accuracy@1": 60.0}, "fr": {"accuracy@1": 80.0}}, qa=False)["avg_metric"] == 70.0
