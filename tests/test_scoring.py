"""``adapterxfer score`` on prediction/label folders in the official XTREME layout.

Expected numbers were produced by google-research/xtreme's evaluate.py (commit 838c13b, seqeval 1.2.2)
on these same folders; see scripts/check_against_official_scorer.py for the random comparison.
"""

import json

import pytest

from adapterxfer.cli import main
from adapterxfer.errors import UserError
from adapterxfer.scoring import FORMATS, LANGUAGES, score_folders, write_scores


def squad(*qas):
    """A SQuAD-format file: qas are (id, [gold answers])."""
    return json.dumps({"version": "1.1", "data": [{"title": "t", "paragraphs": [
        {"context": "c", "qas": [{"id": i, "question": "?", "answers": [{"text": t, "answer_start": 0} for t in golds]}
                                 for i, golds in qas]}]}]})


def lines(*items):
    return "".join(f"{item}\n" for item in items)


QA_LABELS = squad(("q1", ["The Eiffel Tower", "Eiffel Tower"]), ("q2", ["电动势（EMF）"]), ("q3", ["الكتاب الأحمر"]),
                  ("q4", ["der Rhein, 1999"]), ("q5", ["unos perros"]))
QA_PREDICTIONS = json.dumps({"q1": "eiffel tower.", "q2": "电动势", "q3": "كتاب أحمر", "q4": "Rhein 1999",
                             "q5": "perros grandes", "q9": "not a question"})

# task -> (label file, prediction file), the same for every language of the task.
FILES = {
    "pawsx": (lines(0, 1, 1, 0), lines(0, 1, 0, 0)),
    "xnli": (lines("entailment", "neutral", "contradiction"), lines("entailment", "neutral", "neutral")),
    "tatoeba": (lines(3, 1, 4), lines(3, 1, 5)),
    "xcopa": (lines(*(json.dumps({"label": x, "idx": i}) for i, x in enumerate([0, 1, 1]))),
              lines(*(json.dumps({"label": x}) for x in [0, 0, 1]))),
    "panx": (lines("B-PER", "I-PER", "O", "B-LOC", "", "O", "B-ORG", "I-ORG", ""),
             lines("B-PER", "I-PER", "O", "B-ORG", "", "O", "B-ORG", "O", "")),
    "udpos": (lines("PRON", "AUX", "NOUN", "PUNCT", "", "DET", "ADJ", "NOUN", ""),
              lines("PRON", "VERB", "NOUN", "PUNCT", "", "DET", "NOUN", "NOUN", "")),
    "bucc2018": (lines("de-1\ten-1", "de-2\ten-2", "de-3\ten-3"), lines("de-1\ten-1", "de-2\ten-3")),
    "xquad": (QA_LABELS, QA_PREDICTIONS),
    "mlqa": (QA_LABELS, QA_PREDICTIONS),
    "tydiqa": (QA_LABELS, QA_PREDICTIONS),
    "mewslix": (json.dumps({"m1": ["Q1"], "m2": ["Q2 "], "m3": ["Q3"], "m4": ["Q4"]}),
                json.dumps({"m1": ["Q1", "Q9"], "m2": ["Q7", "Q8", "Q2"], "m3": ["Q0"] * 20 + ["Q3"], "x": ["Q4"]})),
}


def write_folders(root, benchmark, tasks=None):
    for task in tasks or [t for t in LANGUAGES[benchmark] if t in FORMATS]:
        for folder, text in zip(("labels", "predictions"), FILES[task]):
            (root / folder / task).mkdir(parents=True, exist_ok=True)
            for lang in LANGUAGES[benchmark][task]:
                (root / folder / task / f"test-{lang}.{FORMATS[task][0]}").write_text(text, encoding="utf-8")
    return root / "predictions", root / "labels"


# evaluate.py's output on write_folders(.., "xtreme"): overall scores and each task's averages.
XTREME_OVERALL = {"all_task": 49.80434909006337, "classification": 70.83333333333331, "tagging": 47.43589743589741,
                  "qa": 35.01133786848072, "retrieval": 53.333333333333336}
XTREME_AVERAGES = {
    "pawsx": {"avg_accuracy": 75.0, "avg_metric": 75.0},
    "xnli": {"avg_accuracy": 66.66666666666664, "avg_metric": 66.66666666666664},
    "panx": {"avg_f1": 33.33333333333333, "avg_precision": 33.33333333333333, "avg_recall": 33.33333333333333,
             "avg_metric": 33.33333333333333},
    "udpos": {"avg_f1": 61.53846153846149, "avg_precision": 66.66666666666669, "avg_recall": 57.14285714285712,
              "avg_metric": 61.53846153846149},
    "bucc2018": {"avg_f1": 40.0, "avg_precision": 50.0, "avg_recall": 33.33333333333333, "avg_metric": 40.0},
    "tatoeba": {"avg_accuracy": 66.66666666666667, "avg_metric": 66.66666666666667},
    "xquad": {"avg_exact_match": 20.0, "avg_f1": 45.99999999999999, "avg_metric": 33.0},
    "mlqa": {"avg_exact_match": 25.714285714285715, "avg_f1": 52.35374149659864, "avg_metric": 39.034013605442176},
    "tydiqa": {"avg_exact_match": 20.0, "avg_f1": 45.99999999999999, "avg_metric": 33.0},
}
MLQA_PER_LANGUAGE = {
    "exact_match": {"en": 20.0, "es": 20.0, "de": 40.0, "ar": 40.0, "hi": 20.0, "vi": 20.0, "zh": 20.0},
    "f1": {"en": 45.99999999999999, "es": 49.333333333333336, "de": 50.0, "ar": 66.0, "hi": 45.99999999999999,
           "vi": 45.99999999999999, "zh": 63.142857142857146},
}


def test_full_xtreme_matches_the_official_scorer(tmp_path):
    scores = score_folders(*write_folders(tmp_path, "xtreme"), "xtreme")
    assert list(scores) == list(XTREME_OVERALL) + list(LANGUAGES["xtreme"])
    # all_task: the official scorer sums over a set, so its last bit varies between its own runs.
    assert scores.pop("all_task") == pytest.approx(XTREME_OVERALL.pop("all_task"), rel=1e-15)
    assert {k: scores[k] for k in XTREME_OVERALL} == XTREME_OVERALL
    for task, averages in XTREME_AVERAGES.items():
        per_language = [k for k in scores[task] if not k.startswith("avg_")]
        assert list(scores[task]) == per_language + list(averages)
        assert {k: scores[task][k] for k in averages} == averages
        assert all(list(scores[task][m]) == LANGUAGES["xtreme"][task] for m in per_language)
    assert {m: scores["mlqa"][m] for m in MLQA_PER_LANGUAGE} == MLQA_PER_LANGUAGE


def test_xtreme_r_groups_mewslix_and_lareqa(tmp_path):
    predictions, labels = write_folders(tmp_path, "xtreme-r")
    for folder in (predictions, labels):
        (folder / "lareqa").mkdir()
    scores = score_folders(predictions, labels, "xtreme-r")
    # Official: LAReQA is listed with no languages, so it gets {} and all_task never appears.
    assert list(scores)[:5] == ["classification", "tagging", "qa", "retrieval", "multi_choice"]
    assert scores["lareqa"] == {} and "all_task" not in scores
    assert scores["mewslix"] == {"map@20": dict.fromkeys(LANGUAGES["xtreme-r"]["mewslix"], 33.33333333333333),
                                 "avg_map@20": 33.33333333333332, "avg_metric": 33.33333333333332}
    assert scores["retrieval"] == 49.999999999999986 and scores["multi_choice"] == 66.66666666666664
    assert scores["classification"] == 66.66666666666664 and scores["tagging"] == 47.4358974358974
    assert list(scores["panx"]["f1"]) == LANGUAGES["xtreme-r"]["panx"] and len(LANGUAGES["xtreme-r"]["panx"]) == 48


def test_groups_need_all_their_tasks_and_one_sided_tasks_are_skipped(tmp_path):
    predictions, labels = write_folders(tmp_path, "xtreme", ["xnli", "pawsx", "tatoeba"])
    (predictions / "udpos").mkdir()  # only in predictions: not scored, as official
    scores = score_folders(predictions, labels, "xtreme")
    assert list(scores) == ["classification", "pawsx", "xnli", "tatoeba"]
    assert scores["classification"] == 70.83333333333331


def test_empty_predictions(tmp_path):
    predictions, labels = write_folders(tmp_path, "xtreme", ["bucc2018", "mlqa"])
    for lang in LANGUAGES["xtreme"]["bucc2018"]:
        (predictions / "bucc2018" / f"test-{lang}.tsv").write_text("")
    for lang in LANGUAGES["xtreme"]["mlqa"]:
        (predictions / "mlqa" / f"test-{lang}.json").write_text("{}")
    scores = score_folders(predictions, labels, "xtreme")
    assert scores["bucc2018"]["avg_metric"] == 0 and scores["bucc2018"]["f1"]["de"] == 0
    assert scores["mlqa"]["avg_exact_match"] == scores["mlqa"]["avg_f1"] == 0.0


def test_cli_writes_the_official_json_atomically(tmp_path, capsys):
    predictions, labels = write_folders(tmp_path, "xtreme", ["xnli", "pawsx"])
    out = tmp_path / "out" / "scores.json"
    assert main(["score", "--predictions", str(predictions), "--labels", str(labels), "--output", str(out)]) == 0
    text = out.read_text()
    assert text == json.dumps(score_folders(predictions, labels, "xtreme"), indent=2)  # as json.dump(.., indent=2)
    assert list(out.parent.iterdir()) == [out]
    printed = capsys.readouterr().out
    assert "classification" in printed and "70.83" in printed and f"wrote {out}" in printed


def test_write_scores_replaces_an_existing_file(tmp_path):
    out = tmp_path / "scores.json"
    out.write_text("old")
    write_scores({"qa": 1.5}, out)
    assert json.loads(out.read_text()) == {"qa": 1.5} and list(tmp_path.iterdir()) == [out]


def _break(tmp_path, task, lang, side, text):
    predictions, labels = write_folders(tmp_path, "xtreme-r" if task == "xcopa" else "xtreme", [task])
    path = (predictions if side == "predictions" else labels) / task / f"test-{lang}.{FORMATS[task][0]}"
    if text is None:
        path.unlink()
    else:
        path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return predictions, labels, path


@pytest.mark.parametrize("task, side, text, needle", [
    ("xnli", "predictions", None, "test-ar.tsv: missing"),
    ("xnli", "predictions", lines("entailment"), "test-ar.tsv: 1 examples, but"),
    ("panx", "predictions", lines("B-PER", "I-PER", "O", "B-LOC", "", "O", "B-ORG", ""),
     "test-ar.tsv:6: sentence of 2"),
    ("panx", "labels", lines("O", "", "O", "", "O"), "test-ar.tsv: 2 examples, but"),
    ("mlqa", "predictions", '{"q1": "a",\n "q2": }', "test-ar.json:2: invalid JSON"),
    ("mlqa", "labels", squad(("q1", [])), "question q1 has no gold answer"),
    ("mlqa", "labels", json.dumps({"data": [{"title": "no paragraphs"}]}), "KeyError: 'paragraphs'"),
    ("xcopa", "predictions", lines('{"label": 0}', "{oops"), "test-et.jsonl:2: expected a JSON object"),
    ("xnli", "labels", "", "test-ar.tsv: 3 examples, but"),
    ("tatoeba", "labels", b"\xff\n", "not UTF-8 text (byte 0)"),
])
def test_bad_files_are_one_line_user_errors(tmp_path, task, side, text, needle):
    lang = "et" if task == "xcopa" else "ar"
    predictions, labels, path = _break(tmp_path, task, lang, side, text)
    with pytest.raises(UserError) as err:
        score_folders(predictions, labels, "xtreme-r" if task == "xcopa" else "xtreme")
    message = str(err.value)
    assert needle in message and "\n" not in message
    assert str(path) in message


def test_both_files_empty_is_an_error_not_a_division_by_zero(tmp_path):
    predictions, labels, _ = _break(tmp_path, "pawsx", "de", "labels", "")
    (predictions / "pawsx" / "test-de.tsv").write_text("")
    with pytest.raises(UserError, match="no examples to score"):
        score_folders(predictions, labels, "xtreme")


def test_cli_bad_input_exits_2(tmp_path, capsys):
    code = main(["score", "--predictions", str(tmp_path / "nope"), "--labels", str(tmp_path), "--output", "x.json"])
    assert code == 2 and "nope: not a folder" in capsys.readouterr().err
