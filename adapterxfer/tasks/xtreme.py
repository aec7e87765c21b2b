"""XTREME / XTREME-R targets and the paper's intermediate tasks, read from their Hugging Face datasets.

Like google-research/xtreme's evaluate.py, the registry below is plain data: task -> kind, role,
languages, metric, labels, where each split comes from (Hub id, config, Hub split) and a converter
from the Hub schema to the kind's rows. Data is read by ``adapterxfer.data.hub.load_rows``: a local
copy under ``$ADAPTERXFER_DATA_DIR/<Hub id>/<config>/`` first, else the Hub.

- XTREME-R's larger language sets (PAN-X 48, UD-POS 38, Tatoeba 41, XQuAD 12) are the same task with
  more languages: ``languages`` is the union, and ``adapterxfer score --benchmark xtreme`` reads only
  the XTREME subset of the files (the lists live in adapterxfer/scoring.py).
- QA targets train on English SQuAD v1.1 (XQuAD, MLQA) or the English TyDiQA-GoldP training set, as
  XTREME does. TyDiQA's English dev is held out of its training set (questions whose id hashes to
  bucket 0 of 10), because its English test is the official English dev set. XCOPA trains on English
  SIQA, then English COPA, as XTREME-R (scripts/train_xcopa.sh): its ``stages`` are ("siqa",), so a
  recipe trains ``siqa`` first and ``xcopa`` with ``init_from`` that phase. The dev set (which chooses
  the checkpoint kept) is always English.
- Tatoeba queries are the English sentences and the pool is the other language, as xtreme's
  ``similarity_search(x=source, y=english)`` does. XTREME-R's 5 extra Tatoeba languages (az, lt, pl,
  uk, ro) are not on google/xtreme: they are read from a copy of LASER's ``data/tatoeba/v1`` folder
  (github.com/facebookresearch/LASER, which XTREME-R's download script uses) at
  ``$ADAPTERXFER_DATA_DIR/facebookresearch/LASER/data/tatoeba/v1/tatoeba.<iso3>-eng.{<iso3>,eng}``.
  BUCC: google/xtreme holds only the gold pairs, so the pool mined is the gold sentences (the official
  pool also has unpaired sentences); its scores carry ``gold_only_pool: 1`` to say so.
- CosmosQA is a loading script on the Hub, which ``datasets`` no longer runs: it is read from its Parquet
  export (``refs/convert/parquet``, see adapterxfer/data/hub.py). SIQA is read from ``lighteval/siqa``, a
  Parquet copy of allenai/social_i_qa (a loading script) with its 33,410 / 1,954 rows and its columns.
- Mewsli-X: a query is the sentence holding the mention (the context's ``sentence_spans``), the mention
  marked ``{...}`` in it, as XTREME-R's preprocessing (window of 0 sentences); the whole article, cut to
  the sequence length, would lose every mention past its first ~128 tokens.
- Local-only data (not on the Hub, or licensed): CCGbank supertags as ``ccgbank/default/{train,dev,
  test}.conll`` (token<TAB>supertag lines, blank line between sentences) plus ``tags.txt`` (one tag a
  line, the label set); LAReQA as ``lareqa/xquad-r/<lang>/test.json`` (the XQuAD-R files of
  google-research-datasets/lareqa, which keep ``sentence_breaks``; the Hub's xquad_r drops them);
  Mewsli-X as ``mewsli-x/default/{wikinews_mentions-test,candidate_set_entities}.jsonl`` (from
  xtreme's scripts/download_data.sh); XTREME-R's extra UD-POS languages as ``google/xtreme/udpos.
  <Name>/test.jsonl`` in google/xtreme's udpos schema (XTREME-R reads UD 2.7, not on google/xtreme).
- Multilingual NLI: XNLI's 14 translate-train files are line-aligned machine translations of MNLI
  train (row i is MNLI row i), so the arms are matched in content, not only in count: one seeded
  permutation of MNLI's 392,702 row positions is cut into disjoint slices, one per language, and
  each row is read in its slice's language. ``xnli-translate-train`` gives each of XNLI's 15
  languages an equal slice (English: MNLI itself); ``mnli-translate-mix`` gives English half and
  the 14 translations the other half. Either way every MNLI item is used once, as in English
  ``mnli``; a row's ``ref`` is its MNLI position. Both train on XNLI's languages, so XNLI is not
  zero-shot after them.
"""

from __future__ import annotations

import hashlib
import os
import random
from functools import partial
from itertools import accumulate
from pathlib import Path

from ..data.hub import DATA_DIR_ENV, count_rows, load_rows
from ..errors import UserError, unknown
from ..scoring import XTREME_LANGUAGES, XTREME_R_LANGUAGES
from . import register
from .spec import TaskSpec

NLI_LABELS = ("entailment", "neutral", "contradiction")  # XNLI / MNLI / SNLI / ANLI ClassLabel order
PANX_TAGS = ("O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC")
UPOS = ("ADJ", "ADP", "ADV", "AUX", "CCONJ", "DET", "INTJ", "NOUN", "NUM", "PART", "PRON", "PROPN", "PUNCT",
        "SCONJ", "SYM", "VERB", "X")
UDPOS_NAMES = dict(af="Afrikaans", ar="Arabic", bg="Bulgarian", de="German", el="Greek", en="English",
                   es="Spanish", et="Estonian", eu="Basque", fa="Persian", fi="Finnish", fr="French", he="Hebrew",
                   hi="Hindi", hu="Hungarian", id="Indonesian", it="Italian", ja="Japanese", kk="Kazakh",
                   ko="Korean", mr="Marathi", nl="Dutch", pt="Portuguese", ru="Russian", ta="Tamil", te="Telugu",
                   th="Thai", tl="Tagalog", tr="Turkish", ur="Urdu", vi="Vietnamese", yo="Yoruba", zh="Chinese",
                   lt="Lithuanian", pl="Polish", uk="Ukrainian", wo="Wolof", ro="Romanian")
TATOEBA_ISO3 = dict(ar="ara", he="heb", vi="vie", id="ind", jv="jav", tl="tgl", eu="eus", ml="mal", ta="tam",
                    te="tel", af="afr", nl="nld", de="deu", el="ell", bn="ben", hi="hin", mr="mar", ur="urd",
                    fa="pes", fr="fra", it="ita", pt="por", es="spa", bg="bul", ru="rus", ja="jpn", ka="kat",
                    ko="kor", th="tha", sw="swh", zh="cmn", kk="kaz", tr="tur", et="est", fi="fin", hu="hun",
                    az="aze", lt="lit", pl="pol", uk="ukr", ro="ron")
TYDIQA_NAMES = dict(en="english", ar="arabic", bn="bengali", fi="finnish", id="indonesian", ko="korean",
                    ru="russian", sw="swahili", te="telugu")
XNLI_LANGS = tuple(XTREME_LANGUAGES["xnli"])
MLM_LANGS = tuple(XTREME_LANGUAGES["panx"])  # the 40 XTREME languages
MNLI_TRAIN = ("nyu-mll/glue", "mnli", "train")
TATOEBA_LASER = ("az", "lt", "pl", "uk", "ro")  # XTREME-R's extra Tatoeba languages, not on google/xtreme
LASER_TATOEBA_DIR = "facebookresearch/LASER/data/tatoeba/v1"


def _langs(task: str) -> tuple[str, ...]:
    """XTREME and XTREME-R languages of a task, English first."""
    union = dict.fromkeys(XTREME_LANGUAGES.get(task, []) + XTREME_R_LANGUAGES.get(task, []))
    return tuple(sorted(union, key=lambda lang: lang != "en"))


# Converters: one Hub row -> one kind row (None drops it, e.g. SNLI's unlabelled -1 pairs).
def _pair(a, b, row):
    return {"text": row[a], "text_pair": row[b], "label": row["label"]} if row["label"] >= 0 else None


def _tags(field, names, row):
    return {"tokens": row["tokens"], "tags": [names[t] for t in row[field]]}


def _squad(row, prefix=None):
    if prefix and not row["id"].startswith(prefix + "-"):
        return None
    return {key: row[key] for key in ("id", "question", "context", "answers", "title") if key in row}


def _tydiqa(lang, split, row):
    """One language's questions (the id names the language); English train and dev split by id hash."""
    row = _squad(row, prefix=TYDIQA_NAMES[lang])
    if row is None or split == "test":
        return row
    held_out = int(hashlib.sha256(row["id"].encode()).hexdigest(), 16) % 10 == 0
    return row if held_out == (split == "dev") else None


def _siqa(row):
    return {"context": f"{row['context']} {row['question']}",
            "choices": [row[f"answer{letter}"] for letter in "ABC"], "label": int(row["label"]) - 1}


def _copa(row):
    return {"context": f"{row['premise']} What was the {row['question']}?",
            "choices": [row["choice1"], row["choice2"]], "label": row["label"]}


def _hellaswag(row):
    return {"context": row["ctx"], "choices": row["endings"], "label": int(row["label"])} if row["label"] else None


def _cosmos(row):
    return {"context": f"{row['context']} {row['question']}", "choices": [row[f"answer{i}"] for i in range(4)],
            "label": row["label"]}


def _csqa(row):
    choices = row["choices"]
    return ({"context": row["question"], "choices": choices["text"], "label": choices["label"].index(row["answerKey"])}
            if row["answerKey"] else None)


def _tatoeba(row):  # google/xtreme keeps each line's newline
    return {"query": row["target_sentence"].strip(), "target": row["source_sentence"].strip()}


def _bucc(row):  # google/xtreme puts the sentence ids in the *_lang fields
    return {"source_id": row["source_lang"], "source": row["source_sentence"].strip(),
            "target_id": row["target_lang"], "target": row["target_sentence"].strip()}


def _mewslix_mention(lang, row):
    context, mention = row["context"], row["mention"]
    if context["language"] != lang:
        return None
    span = mention["mention_span"]
    sentence = next((s for s in context["sentence_spans"] if s["start"] <= span["start"] < s["end"]), None)
    if sentence is None:
        raise ValueError(f"mention at {span['start']} lies in none of the context's sentence_spans")
    text = context["text"]
    return {"id": mention["example_id"], "gold": [mention["entity_id"]],
            "query": f"{text[sentence['start']:span['start']]}{{{span['text']}}}{text[span['end']:sentence['end']]}"}


def _mewslix_entity(row):
    return {"id": row["entity_id"], "text": f"{row['title']}. {row['description']}"}


# Source specs: split -> function(lang) -> [(Hub id, config, Hub split)], plus the converter.
def _same(dataset, config, splits):
    """Every split from one dataset; ``config`` may name the language as {lang}, {name} (UD) or {iso3} (Tatoeba)."""
    def where(lang, split):
        names = dict(lang=lang, name=UDPOS_NAMES.get(lang), iso3=TATOEBA_ISO3.get(lang))
        return [(dataset, config and config.format(**names), split)]
    return {ours: partial(where, split=hub) for ours, hub in splits.items()}


def _english(dataset, config, train, dev, test=None):
    return _same(dataset, config, {"train": train, "dev": dev} | ({"test": test} if test else {}))


SQUAD_V1 = _english("rajpurkar/squad", "plain_text", "train", "validation")


def _panx(lang):
    extra = lang not in XTREME_LANGUAGES["panx"]  # XTREME-R's 8 extra languages: WikiANN, same schema
    return [("unimelb-nlp/wikiann", lang, "test") if extra else ("google/xtreme", f"PAN-X.{lang}", "test")]


TASKS = {
    # XTREME / XTREME-R targets
    "xnli": dict(kind="classification", metric="accuracy", labels=NLI_LABELS, convert=partial(_pair, "premise",
                 "hypothesis"), splits=_same("facebook/xnli", "{lang}", {"train": "train", "dev": "validation",
                                                                         "test": "test"}),
                 description="XNLI: NLI in 15 languages; train English MNLI-derived data, dev English"),
    "pawsx": dict(kind="classification", metric="accuracy", labels=("0", "1"),
                  convert=partial(_pair, "sentence1", "sentence2"),
                  splits=_same("google-research-datasets/paws-x", "{lang}",
                               {"train": "train", "dev": "validation", "test": "test"}),
                  description="PAWS-X: paraphrase identification in 7 languages"),
    "udpos": dict(kind="tagging", metric="seqeval", labels=UPOS, convert=partial(_tags, "pos_tags", UPOS),
                  splits=_same("google/xtreme", "udpos.{name}", {"train": "train", "dev": "validation",
                                                                 "test": "test"}),
                  description="UD-POS: universal POS tags (UD 2.5; XTREME-R's 5 extra languages local-only)"),
    "panx": dict(kind="tagging", metric="seqeval", labels=PANX_TAGS, convert=partial(_tags, "ner_tags", PANX_TAGS),
                 splits=_same("google/xtreme", "PAN-X.{lang}", {"train": "train", "dev": "validation"})
                 | {"test": _panx},
                 description="PAN-X (WikiANN) NER; XTREME-R's 8 extra languages from unimelb-nlp/wikiann"),
    "xquad": dict(kind="qa", metric="squad", convert=_squad,
                  splits=SQUAD_V1 | _same("google/xquad", "xquad.{lang}", {"test": "validation"}),
                  description="XQuAD: extractive QA in 12 languages; train English SQuAD v1.1"),
    "mlqa": dict(kind="qa", metric="mlqa", convert=_squad,
                 splits=SQUAD_V1 | _same("google/xtreme", "MLQA.{lang}.{lang}", {"test": "test"}),
                 description="MLQA: extractive QA, context and question in the same language; train SQuAD v1.1"),
    "tydiqa": dict(kind="qa", metric="squad", convert_for=lambda lang, split: partial(_tydiqa, lang, split),
                   splits=_same("google-research-datasets/tydiqa", "secondary_task",
                                {"train": "train", "dev": "train", "test": "validation"}),
                   description="TyDiQA-GoldP: train on its English part less a held-out 10% (dev), test each "
                               "language's dev set"),
    "bucc2018": dict(kind="mining", metric="bucc_f1", convert=_bucc,
                     splits=_same("google/xtreme", "bucc18.{lang}", {"dev": "validation", "test": "test"}),
                     description="BUCC 2018 bitext mining, margin scoring; threshold tuned on the dev gold"),
    "tatoeba": dict(kind="retrieval", metric="accuracy@1", convert=_tatoeba,
                    splits=_same("google/xtreme", "tatoeba.{iso3}", {"test": "validation"}),
                    description="Tatoeba: each English sentence retrieves its translation (no training; "
                                "az lt pl uk ro from LASER's files)"),
    "xcopa": dict(kind="multiple_choice", metric="accuracy", convert=_copa, stages=("siqa",),
                  splits=_english("aps/super_glue", "copa", "train", "validation")
                  | _same("cambridgeltl/xcopa", "{lang}", {"test": "test"}),
                  description="XCOPA: causal commonsense in 11 languages; train English SIQA (stage siqa), "
                              "then English COPA"),
    "mewslix": dict(kind="ranking", metric="mrr@20", hub=False, convert_for=lambda lang, split: partial(
                        _mewslix_mention, lang) if split == "test" else _mewslix_entity,
                    splits=_same("mewsli-x", "default", {"test": "wikinews_mentions-test",
                                                         "candidates": "candidate_set_entities"}),
                    description="Mewsli-X entity linking: rank English entity descriptions (local files)"),
    "lareqa": dict(kind="ranking", metric="map@20", hub=False, splits={},
                   description="LAReQA: answer-sentence retrieval from the 11-language XQuAD-R pool (local files)"),
    # English intermediate tasks
    "anli-plus": dict(kind="classification", metric="accuracy", labels=NLI_LABELS,
                      convert=partial(_pair, "premise", "hypothesis"),
                      splits={"train": lambda lang: [("stanfordnlp/snli", "plain_text", "train"), MNLI_TRAIN] + [
                          ("facebook/anli", "plain_text", f"train_r{r}") for r in (1, 2, 3)],
                          "dev": lambda lang: [("facebook/anli", "plain_text", f"dev_r{r}") for r in (1, 2, 3)]},
                      description="ANLI+: SNLI + MNLI + ANLI rounds 1-3 with one 3-way head; dev ANLI r1-r3"),
    "mnli": dict(kind="classification", metric="accuracy", labels=NLI_LABELS,
                 convert=partial(_pair, "premise", "hypothesis"),
                 splits=_english("nyu-mll/glue", "mnli", "train", "validation_matched"),
                 mix={"en": 1.0},  # read as the translate arms read it, so they draw the same items
                 description="MNLI (GLUE); dev matched"),
    "qqp": dict(kind="classification", metric="accuracy", labels=("not_duplicate", "duplicate"),
                convert=partial(_pair, "question1", "question2"),
                splits=_english("nyu-mll/glue", "qqp", "train", "validation"), description="QQP (GLUE)"),
    "squad": dict(kind="qa", metric="squad", convert=_squad, splits=SQUAD_V1, description="SQuAD v1.1"),
    "squad2": dict(kind="qa", metric="squad", convert=_squad, options={"version_2_with_negative": True},
                   splits=_english("rajpurkar/squad_v2", "squad_v2", "train", "validation"),
                   description="SQuAD v2.0 (unanswerable questions)"),
    "hellaswag": dict(kind="multiple_choice", metric="accuracy", convert=_hellaswag,
                      splits=_english("Rowan/hellaswag", None, "train", "validation"), description="HellaSwag"),
    "ccg": dict(kind="tagging", metric="token_accuracy", convert=dict, hub=False,
                splits=_english("ccgbank", None, "train", "dev", "test"),
                description="CCGbank supertagging (licensed: local .conll files, see module docstring)"),
    "cosmosqa": dict(kind="multiple_choice", metric="accuracy", convert=_cosmos,
                     splits=_english("allenai/cosmos_qa", None, "train", "validation"),
                     description="CosmosQA (the Hub's Parquet export, see adapterxfer/data/hub.py)"),
    "siqa": dict(kind="multiple_choice", metric="accuracy", convert=_siqa,
                 splits=_english("lighteval/siqa", None, "train", "validation"),
                 description="Social IQa: XCOPA's first stage in XTREME-R (lighteval/siqa, a Parquet copy)"),
    "commonsenseqa": dict(kind="multiple_choice", metric="accuracy", convert=_csqa,
                          splits=_english("tau/commonsense_qa", None, "train", "validation"),
                          description="CommonsenseQA"),
    # Multilingual intermediate tasks (no official splits of their own: dev is English MNLI matched)
    "xnli-translate-train": dict(kind="classification", metric="accuracy", labels=NLI_LABELS,
                                 convert=partial(_pair, "premise", "hypothesis"), contaminates=("xnli",),
                                 splits=_english("nyu-mll/glue", "mnli", "train", "validation_matched"),
                                 mix={lang: 1 / 15 for lang in XNLI_LANGS},
                                 description="XNLI translate-train: MNLI's items in 15 languages, each item once"),
    "mnli-translate-mix": dict(kind="classification", metric="accuracy", labels=NLI_LABELS,
                               convert=partial(_pair, "premise", "hypothesis"), contaminates=("xnli",),
                               splits=_english("nyu-mll/glue", "mnli", "train", "validation_matched"),
                               mix={lang: 0.5 if lang == "en" else 0.5 / 14 for lang in XNLI_LANGS},
                               description="MNLI's items, half in English, half in its 14 XNLI translations, "
                                           "each item once"),
    "wiki-mlm": dict(kind="mlm", metric="mlm_accuracy",
                     splits={s: (lambda lang: [("wikimedia/wikipedia", f"20231101.{lang}", "train")])
                             for s in ("train", "dev")},
                     description="multilingual MLM on Wikipedia in the 40 XTREME languages (train: equal shares)"),
    "wiki-text": dict(kind="mlm", metric="mlm_accuracy",
                      splits={s: (lambda lang: [("wikimedia/wikipedia", f"20231101.{lang}", "train")])
                              for s in ("train", "dev")},
                      description="MLM on one language's Wikipedia (`language=`; MAD-X language adapters). Any "
                                  "text file works offline as <data dir>/wikimedia/wikipedia/20231101.<lang>/train.txt"),
}
TARGETS = ("xnli", "pawsx", "udpos", "panx", "xquad", "mlqa", "tydiqa", "bucc2018", "tatoeba", "xcopa", "mewslix",
           "lareqa")
MIX_DEFAULT = 392_702  # len(MNLI train) = len(XNLI train) in every language
MLM_DEFAULT = {"train": 200_000, "dev": 1_000}  # Wikipedia is streamed: rows read, not whole dumps


# Test sets whose languages translate the same items: a test row's ref names its item in every
# language, so the statistics resample languages together. XNLI, PAWS-X and XCOPA: the position in
# the split (every test row is labelled, so positions line up); XQuAD and MLQA: the question id.
PARALLEL_BY_POSITION = ("xnli", "pawsx", "xcopa")
PARALLEL_BY_ID = ("xquad", "mlqa")


# The unit above the item in a parallel test set, as (level, row field): MLQA's Wikipedia article; XQuAD's
# paragraph (its Hub copy names no article); the premise XNLI's hypotheses share; the sentence PAWS-X's
# pairs were made from. The other targets' test data names none.
TEST_GROUPS = {"mlqa": ("article", "title"), "xquad": ("paragraph", "context"), "xnli": ("premise", "text"),
               "pawsx": ("sentence", "text")}


def _read(name: str, split: str, lang: str, limit: int | None, seed: int) -> list[dict]:
    rows = _read_rows(name, split, lang, limit, seed)
    if split != "test":
        return rows
    if name in PARALLEL_BY_POSITION:
        return [row | {"ref": f"{name}-{position}"} for position, row in enumerate(rows)]
    if name in PARALLEL_BY_ID:
        return [row | {"ref": row["id"]} for row in rows]
    if name == "tatoeba":  # each language its own English sentences: the line, in that language
        return [row | {"ref": f"{lang}-{line}"} for line, row in enumerate(rows)]
    return rows


def _read_rows(name: str, split: str, lang: str, limit: int | None, seed: int) -> list[dict]:
    entry = TASKS[name]
    if name == "lareqa":
        return _lareqa(split, lang)
    if name == "tatoeba" and lang in TATOEBA_LASER:
        return _laser_tatoeba(lang)
    if split not in entry["splits"]:
        raise UserError(f"task {name} has no {split!r} split (it has: {', '.join(entry['splits'])})")
    if "mix" in entry and split == "train":
        return _mix(entry, limit or MIX_DEFAULT, seed)
    if name in ("wiki-mlm", "wiki-text"):
        return _mlm(split, MLM_LANGS if name == "wiki-mlm" else (lang,), limit or MLM_DEFAULT[split], seed)
    # convert_for keeps one language's rows of a file holding them all (TyDiQA, Mewsli-X): sample after it
    convert = entry["convert_for"](lang, split) if "convert_for" in entry else entry["convert"]
    parts = entry["splits"][split](lang)
    sampled_first = len(parts) == 1 and "convert_for" not in entry
    rows = [row for dataset, config, hub_split in parts for row in load_rows(
        dataset, config, hub_split, convert=convert, hub=entry.get("hub", True),
        limit=limit if sampled_first else None, seed=seed)]
    return rows if sampled_first or limit is None or limit >= len(rows) else _sample(rows, limit, seed)


def _sample(rows: list, limit: int, seed: int) -> list:
    return random.Random(seed).sample(rows, limit)


def mix_slices(size: int, total: int, shares: dict[str, float], seed: int) -> dict[str, list[int]]:
    """Disjoint slices of one seeded permutation of ``size`` item positions, ``total`` in all (at most
    ``size``): {language: positions}, each language's slice in proportion to its share."""
    order = random.Random(seed).sample(range(size), min(total, size))
    bounds = [0] + [round(len(order) * share) for share in accumulate(shares.values())]
    return {lang: order[start:end] for lang, start, end in zip(shares, bounds, bounds[1:])}


def _mix(entry: dict, total: int, seed: int) -> list[dict]:
    """``total`` distinct MNLI items, each read in the language of its slice (see the module docstring)."""
    size = count_rows(*MNLI_TRAIN)
    rows = []
    for lang, positions in mix_slices(size, total, entry["mix"], seed).items():
        source = MNLI_TRAIN if lang == "en" else ("facebook/xnli", lang, "train")
        if lang != "en" and count_rows(*source) != size:
            raise UserError(f"{source[0]} {lang} train has {count_rows(*source)} rows, MNLI train {size}: the "
                            f"translate-train files must be line-aligned with MNLI")
        part = load_rows(*source, convert=entry["convert"], indices=positions)
        if len(part) != len(positions):
            raise UserError(f"{source[0]} {lang} train: {len(positions) - len(part)} of the rows asked for are "
                            "unlabelled, so rows no longer line up with MNLI")
        rows += [row | {"ref": f"mnli-train-{position}", "lang": lang} for position, row in zip(positions, part)]
    return _sample(rows, len(rows), seed)


def _laser_tatoeba(lang: str) -> list[dict]:
    """XTREME-R's extra Tatoeba languages from LASER's line-aligned text files (see the module docstring)."""
    iso3 = TATOEBA_ISO3[lang]
    root = Path(os.environ.get(DATA_DIR_ENV, "$" + DATA_DIR_ENV)).expanduser() / LASER_TATOEBA_DIR
    files = [root / f"tatoeba.{iso3}-eng.{side}" for side in (iso3, "eng")]
    if not all(file.is_file() for file in files):
        raise UserError(f"tatoeba {lang}: not on google/xtreme (XTREME-R added it); put tatoeba.{iso3}-eng.{iso3} "
                        f"and tatoeba.{iso3}-eng.eng from github.com/facebookresearch/LASER ({LASER_TATOEBA_DIR}) "
                        f"in {root}/")
    other, english = (file.read_text(encoding="utf-8").splitlines() for file in files)
    if len(other) != len(english):
        raise UserError(f"{files[0]} has {len(other)} lines, {files[1]} {len(english)}: they must be line-aligned")
    return [{"query": query.strip(), "target": target.strip()} for query, target in zip(english, other)]


def _mlm(split: str, langs: tuple[str, ...], limit: int, seed: int) -> list[dict]:
    """Wikipedia articles. Train: an equal share of ``limit`` per language; dev: English when several
    languages train together (wiki-mlm), else that language; drawn with another seed."""
    def articles(code: str, count: int, draw_seed: int) -> list[dict]:
        return load_rows("wikimedia/wikipedia", f"20231101.{code}", "train", convert=lambda row: {"text": row["text"], "lang": code},
                         limit=count, seed=draw_seed, streaming=True)
    if split == "dev":
        return articles("en" if len(langs) > 1 else langs[0], limit, seed + 1)
    rows = [row for code in langs for row in articles(code, max(1, limit // len(langs)), seed)]
    return _sample(rows, len(rows), seed)


def _lareqa(split: str, lang: str) -> list[dict]:
    """Questions of ``lang`` (split "test") or the candidate sentences of all 11 languages ("candidates").

    As xtreme's utils_lareqa: a candidate is one sentence of a paragraph (by ``sentence_breaks``);
    a question's gold candidates are the sentences holding its answer in every language.
    """
    if split not in ("test", "candidates"):
        raise UserError(f"task lareqa has no {split!r} split (it has: test, candidates)")
    questions, candidates, gold = [], [], {}
    for code in TASK_LANGS["lareqa"]:
        articles = load_rows("lareqa/xquad-r", code, "test", hub=False, field="data")
        for number, paragraph in enumerate((p for a in articles for p in a["paragraphs"]), 1):
            breaks, context = paragraph["sentence_breaks"], paragraph["context"]
            for position, (start, end) in enumerate(breaks):
                candidates.append({"id": f"{code}_{number}_{position}", "text": context[start:end]})
            for qa in paragraph["qas"]:
                start = qa["answers"][0]["answer_start"]
                hit = next((p for p, (s, e) in enumerate(breaks) if s <= start < e), None)
                if hit is not None:
                    gold.setdefault(qa["id"], []).append(f"{code}_{number}_{hit}")
                    if code == lang:
                        questions.append({"id": qa["id"], "query": qa["question"]})
    if split == "candidates":
        return candidates
    return [q | {"gold": gold[q["id"]]} for q in questions]


# Languages whose text an intermediate task trains on (the rest train on English alone).
TRAIN_LANGS = {"xnli-translate-train": XNLI_LANGS, "mnli-translate-mix": XNLI_LANGS, "wiki-mlm": MLM_LANGS}
TASK_LANGS = {name: _langs(name) for name in TARGETS} | {"wiki-text": MLM_LANGS} | {
    "lareqa": ("en", "ar", "de", "el", "es", "hi", "ru", "th", "tr", "vi", "zh")}  # XQuAD-R's 11


def _ccg_labels() -> tuple[str, ...]:
    """The supertag set from ``$ADAPTERXFER_DATA_DIR/ccgbank/default/tags.txt`` (empty when absent)."""
    path = Path(os.environ.get(DATA_DIR_ENV, "/nonexistent")).expanduser() / "ccgbank" / "default" / "tags.txt"
    return tuple(line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()) \
        if path.is_file() else ()


def spec(name: str) -> TaskSpec:
    entry = TASKS[name]
    langs = TASK_LANGS.get(name, ("en",))
    labels = _ccg_labels() if name == "ccg" else entry.get("labels", ())
    limits = {"dev": 2000, "test": None}

    def resolve(lang: str) -> str:
        if lang not in langs:
            raise UserError(f"task {name}: " + unknown("language", lang, langs))
        return lang

    return TaskSpec(name=name, kind=entry["kind"], role="target" if name in TARGETS else "intermediate",
                    description=entry["description"], languages=langs, read=partial(_read, name),
                    metric=entry["metric"], labels=labels, limits=limits,
                    max_length=384 if entry["kind"] == "qa" else 128,
                    options=entry.get("options", {}) | ({"labels": labels} if entry["kind"] == "tagging" else {}),
                    source=", ".join(sorted({p[0] for f in entry["splits"].values() for p in f(langs[0])}))
                    or "local files", resolve_lang=resolve, contaminates=entry.get("contaminates", ()),
                    train_langs=TRAIN_LANGS.get(name, ()), stages=entry.get("stages", ()),
                    test_group=TEST_GROUPS.get(name, ()))


for _name in TASKS:
    register(spec(_name))
