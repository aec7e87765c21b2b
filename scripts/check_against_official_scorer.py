"""Compare ``adapterxfer.scoring`` with the official google-research/xtreme scorer on random folders.

Needs a checkout of google-research/xtreme (a folder with evaluate.py and third_party/), imported
at run time and never copied here; for example
    git -C <xtreme git dir> archive HEAD evaluate.py third_party mock_test_data | tar x -C /tmp/xtreme
    .venv/bin/python scripts/check_against_official_scorer.py /tmp/xtreme --trials 20

Each trial writes random prediction and label folders for every task of XTREME and of XTREME-R
(LAReQA aside: the official scorer lists it but cannot score it), scores them with both, and
compares keys, key order and values; it also scores the official mock_test_data (XTREME) and
compares both normalizations of random QA answers. Prints ``RESULT max_abs_diff <value>``.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import random
import sys
import tempfile
from pathlib import Path

from adapterxfer.metrics import normalize_mlqa_answer, normalize_squad_answer
from adapterxfer.scoring import FORMATS, LANGUAGES, score_folders

NER_TAGS = ["O", "O", "O", "B-PER", "I-PER", "B-LOC", "I-LOC", "B-ORG", "I-ORG"]
UPOS_TAGS = "ADJ ADP ADV AUX CCONJ DET INTJ NOUN NUM PART PRON PROPN PUNCT SCONJ SYM VERB X".split()
WORDS = ("The a an Der die das des un una los la el của là những ال الكتاب والقلم Paris 1999 电池 电动势 "
         "鿦 〇 の 東京 hello world").split()
MARKS = list(".,;:!?¿¡«»—–-'\"()[]$+<=>^`|~%&*/\\@#。，、「」《》؟،") + [" ", "  ", "\t", "\u3000", "\xa0", ""]


def random_text(rng: random.Random) -> str:
    return "".join(rng.choice(WORDS) + rng.choice(MARKS) for _ in range(rng.randint(0, 5)))


def random_squad(rng: random.Random, lang: str) -> tuple[dict, dict]:
    qas, predictions = [], {}
    for number in range(rng.randint(1, 6)):
        golds = [random_text(rng) for _ in range(rng.randint(1, 3))]
        qid = f"{lang}-{number}"
        qas.append({"id": qid, "question": "?", "answers": [{"text": g, "answer_start": 0} for g in golds]})
        choice = rng.random()
        if choice < 0.8:
            predictions[qid] = rng.choice(golds) + rng.choice(MARKS) if choice < 0.4 else random_text(rng)
    return {"version": "1.1", "data": [{"title": "t", "paragraphs": [{"context": "c", "qas": qas}]}]}, predictions


def random_lines(rng: random.Random, labels: list[str]) -> tuple[str, str]:
    gold = [rng.choice(labels) for _ in range(rng.randint(1, 12))]
    predicted = [g if rng.random() < 0.5 else rng.choice(labels) for g in gold]
    return "".join(f"{g}\n" for g in gold), "".join(f"{p}\n" for p in predicted)


def random_tags(rng: random.Random, tags: list[str]) -> tuple[str, str]:
    sentences = [[rng.choice(tags) for _ in range(rng.randint(0, 8))] for _ in range(rng.randint(1, 5))]
    noisy = [[t if rng.random() < 0.7 else rng.choice(tags) for t in s] for s in sentences]
    return tuple("".join("".join(f"{t}\n" for t in s) + "\n" for s in group) for group in (sentences, noisy))


def random_bucc(rng: random.Random, lang: str) -> tuple[str, str]:
    pairs = [f"{lang}-{rng.randint(0, 9):06d}\ten-{rng.randint(0, 9):06d}" for _ in range(rng.randint(0, 8))]
    extra = [f"{lang}-{rng.randint(0, 9):06d}\ten-000001"] * rng.randint(0, 2)
    predicted = [p for p in pairs if rng.random() < 0.6] + extra
    return "".join(f"{p}\n" for p in pairs), "".join(f"{p}\n" for p in predicted)


def random_mewslix(rng: random.Random) -> tuple[dict, dict]:
    gold, predicted = {}, {}
    for number in range(rng.randint(0, 6)):
        gold[f"e{number}"] = [f" Q{rng.randint(0, 30)}" if rng.random() < 0.2 else f"Q{rng.randint(0, 30)}"]
        if rng.random() < 0.8:
            predicted[f"e{number}"] = [f"Q{rng.randint(0, 30)}" for _ in range(rng.randint(0, 25))]
    return gold, predicted


def random_pair(rng: random.Random, task: str, lang: str) -> tuple[str, str]:
    """(label file text, prediction file text) for one task and language."""
    if task in ("xquad", "mlqa", "tydiqa"):
        return tuple(json.dumps(x) for x in random_squad(rng, lang))
    if task == "mewslix":
        return tuple(json.dumps(x) for x in random_mewslix(rng))
    if task == "xcopa":
        gold, predicted = random_lines(rng, ["0", "1"])
        return tuple("".join(json.dumps({"label": int(x)}) + "\n" for x in text.split()) for text in (gold, predicted))
    if task in ("panx", "udpos"):
        return random_tags(rng, NER_TAGS if task == "panx" else UPOS_TAGS)
    if task == "bucc2018":
        return random_bucc(rng, lang)
    return random_lines(rng, {"xnli": ["entailment", "neutral", "contradiction"], "pawsx": ["0", "1"]}.get(
        task, [str(i) for i in range(5)]))


def write_random_folders(rng: random.Random, root: Path, benchmark: str) -> None:
    for task, langs in LANGUAGES[benchmark].items():
        for lang in langs:
            for folder, text in zip(("labels", "predictions"), random_pair(rng, task, lang)):
                path = root / folder / task / f"test-{lang}.{FORMATS[task][0]}"
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(text, encoding="utf-8")


def max_diff(official, ours, where: str = "") -> tuple[float, str]:
    """(largest absolute difference, where) of two JSON trees; raises if keys, key order or types differ."""
    if isinstance(official, dict):
        if list(official) != list(ours):
            raise AssertionError(f"{where}: keys {list(official)} != {list(ours)}")
        return max([max_diff(official[k], ours[k], f"{where}/{k}") for k in official], default=(0.0, where))
    if type(official) is not type(ours):
        raise AssertionError(f"{where}: {type(official).__name__} != {type(ours).__name__}")
    return float(abs(official - ours)), where


def official_scores(evaluate_module, predictions: Path, labels: Path, benchmark: str) -> dict:
    with contextlib.redirect_stderr(io.StringIO()):  # "Unanswered question ... will receive score 0."
        overall, detailed = evaluate_module.evaluate(str(predictions), str(labels), benchmark)
    return json_tree({**overall, **detailed})


def json_tree(scores: dict) -> dict:
    """The tree as its JSON file reads back (numpy floats become floats)."""
    return json.loads(json.dumps(scores))


def check_normalization(rng: random.Random, squad_module, mlqa_module, cases: int) -> int:
    mismatches = 0
    for _ in range(cases):
        text = random_text(rng)
        mismatches += squad_module.normalize_answer(text) != normalize_squad_answer(text)
        for lang in ("en", "es", "de", "ar", "hi", "vi", "zh"):
            mismatches += mlqa_module.normalize_answer(text, lang) != normalize_mlqa_answer(text, lang)
    return mismatches


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("official", type=Path, help="a google-research/xtreme checkout (evaluate.py, third_party/)")
    parser.add_argument("--trials", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    sys.path.insert(0, str(args.official.resolve()))
    import evaluate as official  # noqa: E402  (the official scorer, from the checkout)
    from third_party import evaluate_mlqa, evaluate_squad  # noqa: E402

    rng = random.Random(args.seed)
    worst = (0.0, "")
    mock = args.official / "mock_test_data"
    if mock.is_dir():
        worst = max_diff(official_scores(official, mock / "predictions", mock / "labels", "xtreme"),
                         json_tree(score_folders(mock / "predictions", mock / "labels", "xtreme")), "mock")
    for trial in range(args.trials):
        for benchmark in LANGUAGES:
            with tempfile.TemporaryDirectory() as tmp:
                write_random_folders(rng, Path(tmp), benchmark)
                expected = official_scores(official, Path(tmp, "predictions"), Path(tmp, "labels"), benchmark)
                ours = json_tree(score_folders(Path(tmp, "predictions"), Path(tmp, "labels"), benchmark))
                worst = max(worst, max_diff(expected, ours, f"trial {trial} {benchmark}"))
    mismatches = check_normalization(rng, evaluate_squad, evaluate_mlqa, 200 * args.trials)
    print(f"normalization mismatches {mismatches}")
    print(f"largest at {worst[1]}")
    print(f"RESULT max_abs_diff {worst[0]!r}")
    return 1 if mismatches else 0


if __name__ == "__main__":
    sys.exit(main())
