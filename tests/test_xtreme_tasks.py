"""XTREME / XTREME-R targets and the paper's intermediate tasks on fixtures in their exact Hub schemas.

tests/fixtures/xtreme/ (written by tests/fixtures/make_xtreme_fixtures.py) is read as
$ADAPTERXFER_DATA_DIR, through the same loader and ``datasets`` path a user's downloaded copy takes.
"""

import json
import shutil
import time
from collections import Counter

import pyarrow
import pyarrow.parquet
import pytest

from adapterxfer.cli import main
from adapterxfer.data.features import _check_rows
from adapterxfer.data.hub import load_rows
from adapterxfer.errors import UserError
from adapterxfer.kinds import KINDS
from adapterxfer.scoring import FORMATS, XTREME_LANGUAGES, XTREME_R_LANGUAGES, score_language
from adapterxfer.tasks import TASKS, xtreme
from fixtures.make_xtreme_fixtures import ROOT

# Two fixture languages per target (the first is the train/dev language where there is one).
FIXTURE_LANGS = {"xnli": ["en", "fr"], "pawsx": ["en", "de"], "udpos": ["en", "de"], "panx": ["en", "de", "pl"],
                 "xquad": ["en", "de"], "mlqa": ["en", "de"], "tydiqa": ["en", "ar"], "bucc2018": ["de", "fr"],
                 "tatoeba": ["de", "fr"], "xcopa": ["et", "zh"], "mewslix": ["en", "de"], "lareqa": ["en", "ar"]}
COUNTS = {"xnli": (15, 15), "pawsx": (7, 7), "udpos": (33, 38), "panx": (40, 48), "xquad": (11, 12), "mlqa": (7, 7),
          "tydiqa": (9, 9), "bucc2018": (4, 4), "tatoeba": (36, 41), "xcopa": (0, 11), "mewslix": (0, 11)}
STEPS = ["max_steps=1", "eval_every=1", "batch_size=2", "precision=fp32", "eval_batch_size=8"]


@pytest.fixture(autouse=True)
def data_dir(monkeypatch):
    monkeypatch.setenv("ADAPTERXFER_DATA_DIR", str(ROOT))
    monkeypatch.setitem(TASKS, "ccg", xtreme.spec("ccg"))  # its tag set is read from the data folder


def test_every_task_is_listed_with_languages_and_metric(capsys):
    assert main(["tasks"]) == 0
    listing = capsys.readouterr().out
    for name in xtreme.TASKS:
        task = TASKS[name]
        assert f"{name:20} {task.kind:16} {task.role:12} metric={task.metric}" in listing
        assert f"languages ({len(task.languages)}): {' '.join(task.languages)}" in listing
    for name, (n_xtreme, n_xtreme_r) in COUNTS.items():
        langs = TASKS[name].languages
        assert set(XTREME_LANGUAGES.get(name, [])) <= set(langs) and set(XTREME_R_LANGUAGES.get(name, [])) <= set(langs)
        assert (len(XTREME_LANGUAGES.get(name, [])), len(langs)) == (n_xtreme, n_xtreme_r)
    assert TASKS["xnli-translate-train"].contaminates == TASKS["mnli-translate-mix"].contaminates == ("xnli",)
    assert TASKS["mnli"].contaminates == () and TASKS["xnli"].role == "target"


@pytest.mark.parametrize("name", list(xtreme.TASKS))
def test_fixtures_load_into_kind_rows(name):
    task = TASKS[name]
    splits = [s for s in ("train", "dev") if task.trainable] + ["test"] * (name in xtreme.TARGETS)
    for split in splits:
        for lang in FIXTURE_LANGS.get(name, ["en"])[:1 if split != "test" else None]:
            rows = task.rows(split, lang if split == "test" else task.train_lang)
            _check_rows(task, split, lang, rows, KINDS[task.kind].COLUMNS)
            if task.kind == "tagging":
                assert all(set(row["tags"]) <= set(task.labels) for row in rows)
    if name == "xnli":  # XNLI label 0/1/2 = entailment/neutral/contradiction, as the Hub's ClassLabel
        assert task.labels == ("entailment", "neutral", "contradiction")
    if name == "anli-plus":  # SNLI's unlabelled (-1) pairs are dropped; every source is read
        assert {row["text"].split()[0] for row in task.rows("train")} == {"snli", "mnli", "train_r1", "train_r2",
                                                                          "train_r3"}


def _item(row: dict) -> int:
    """The fixture's item number: NLI fixture premises end with it, in every language."""
    return int(row["text"].split()[-1])


@pytest.mark.parametrize("name, english", [("xnli-translate-train", 2), ("mnli-translate-mix", 15)])
def test_translate_train_slices_are_disjoint_and_hold_every_mnli_item(name, english):
    """Every MNLI item once, each in one language: as many distinct items as English mnli."""
    rows = TASKS[name].read("train", "en", None, 0)
    assert len(rows) == len(TASKS["mnli"].rows("train")) == 30
    assert sorted(_item(row) for row in rows) == list(range(30))  # the slices are disjoint and cover MNLI
    assert all(row["ref"] == f"mnli-train-{_item(row)}" for row in rows)  # row i of a translation is item i
    assert ({row["ref"] for row in rows} == {row["ref"] for row in TASKS["mnli"].rows("train")}
            == {f"mnli-train-{item}" for item in range(30)})  # English MNLI names the same items
    by_lang = Counter(row["text"].split()[0] for row in rows)
    assert by_lang["mnli"] == english and len(by_lang) == 15
    assert rows == TASKS[name].read("train", "en", None, 0) and rows != TASKS[name].read("train", "en", None, 1)


def test_mix_slices_are_disjoint_in_the_shares_given():
    slices = xtreme.mix_slices(100, 90, {"en": 0.5, "fr": 0.25, "de": 0.25}, seed=3)
    assert {lang: len(part) for lang, part in slices.items()} == {"en": 45, "fr": 23, "de": 22}  # round(67.5) = 68
    positions = [p for part in slices.values() for p in part]
    assert len(set(positions)) == 90 and set(positions) <= set(range(100))
    assert sum(map(len, xtreme.mix_slices(10, 50, {"en": 1.0}, seed=0).values())) == 10  # at most every item once


def test_translate_train_refuses_a_translation_not_aligned_with_mnli(tmp_path, monkeypatch):
    shutil.copytree(ROOT, tmp_path, dirs_exist_ok=True)
    pyarrow.parquet.write_table(pyarrow.Table.from_pylist([{"premise": "fr a", "hypothesis": "fr b", "label": 0}]),
                                tmp_path / "facebook/xnli/fr/train-00000-of-00001.parquet")
    monkeypatch.setenv("ADAPTERXFER_DATA_DIR", str(tmp_path))
    with pytest.raises(UserError, match=r"facebook/xnli fr train has 1 rows, MNLI train 30: .*line-aligned") as err:
        TASKS["xnli-translate-train"].read("train", "en", None, 0)
    assert "\n" not in str(err.value)


def test_seen_languages_and_stages():
    assert TASKS["xnli-translate-train"].seen_languages == tuple(XTREME_LANGUAGES["xnli"])
    assert TASKS["mnli"].seen_languages == ("en",) and len(TASKS["wiki-mlm"].seen_languages) == 40
    assert TASKS["xcopa"].stages == ("siqa",) and TASKS["siqa"].role == "intermediate"
    assert TASKS["xcopa"].missing_stages(["mnli"]) == ["siqa"] and TASKS["xcopa"].missing_stages(["siqa"]) == []


def test_tydiqa_english_dev_is_held_out_of_train_not_the_test_set():
    task = TASKS["tydiqa"]
    train, dev, test = ({row["id"] for row in task.rows(split, "en")} for split in ("train", "dev", "test"))
    assert dev == {"english-2"} and train == {"english-0", "english-1", "english-3"}
    assert test == {"english-0", "english-1", "english-2", "english-3"}  # the official English dev set
    assert {row["id"] for row in task.rows("test", "ar")} == {f"arabic-{i}" for i in range(4)}


def test_tatoeba_extra_languages_come_from_laser_files(tmp_path, monkeypatch):
    rows = TASKS["tatoeba"].rows("test", "pl")
    assert rows[1] == {"query": "the cats number 1", "target": "pol zdanie o kotach 1", "ref": "pl-1"} and len(rows) == 5
    shutil.copytree(ROOT / "facebookresearch", tmp_path / "facebookresearch")
    (tmp_path / xtreme.LASER_TATOEBA_DIR / "tatoeba.aze-eng.aze").unlink()
    monkeypatch.setenv("ADAPTERXFER_DATA_DIR", str(tmp_path))
    with pytest.raises(UserError, match=r"^tatoeba az: not on google/xtreme .*tatoeba.aze-eng.aze and "
                                        r"tatoeba.aze-eng.eng from github.com/facebookresearch/LASER") as err:
        TASKS["tatoeba"].rows("test", "az")
    assert "\n" not in str(err.value)


def test_hub_layouts_are_read_as_downloaded():
    """The fixtures lie as `hf download --local-dir` writes them: config folders of Parquet shards
    (facebook/xnli/fr/test-00000-of-00001.parquet), data/ with the README's configs (tau/commonsense_qa,
    lighteval/siqa's hashed shard names), data/ alone (Rowan/hellaswag), and the Parquet export branch's
    default/<split>/0000.parquet (allenai/cosmos_qa, a loading script on the Hub)."""
    assert (ROOT / "lighteval/siqa/data/validation-00000-of-00001-90bb85eab85fcfa8.parquet").is_file()
    assert TASKS["siqa"].source == "lighteval/siqa"
    assert TASKS["siqa"].rows("dev")[2] == {"context": "Sam lent Ash a pen. How would Ash feel 2?",
                                             "choices": ["grateful", "angry", "asleep"], "label": 2}
    assert TASKS["cosmosqa"].rows("train")[1]["choices"][0] == "They missed the bus."
    assert [row["label"] for row in TASKS["hellaswag"].rows("dev")] == [0, 1, 2, 3]
    assert TASKS["commonsenseqa"].rows("dev")[3] == {"context": "Where do you keep milk 3?", "label": 3,
                                                      "choices": ["fridge", "roof", "shoe", "cloud", "river"]}
    assert len(TASKS["mnli"].rows("dev")) == 6  # nyu-mll/glue/mnli/validation_matched-*, not validation_mismatched


def test_readme_configs_decide_where_a_split_lies(tmp_path, monkeypatch):
    """A README's data_files win over the folder names; an older export's <name>-<split>.parquet is read."""
    monkeypatch.setenv("ADAPTERXFER_DATA_DIR", str(tmp_path))
    rows = [{"premise": "p", "hypothesis": "h", "label": 1}]
    pyarrow.parquet.write_table(pyarrow.Table.from_pylist(rows), tmp_path / "held.parquet")
    (tmp_path / "owner/nli/custom").mkdir(parents=True)
    shutil.copy(tmp_path / "held.parquet", tmp_path / "owner/nli/custom/part-a.parquet")
    (tmp_path / "owner/nli/README.md").write_text("---\nconfigs:\n- config_name: fr\n  data_files:\n"
                                                  "  - split: test\n    path: custom/part-*.parquet\n---\n")
    assert load_rows("owner/nli", "fr", "test") == rows
    (tmp_path / "owner/old/default").mkdir(parents=True)
    shutil.copy(tmp_path / "held.parquet", tmp_path / "owner/old/default/old-train.parquet")
    assert load_rows("owner/old", None, "train") == rows
    with pytest.raises(UserError, match=r"not readable"):
        load_rows("owner/old", None, "validation")


def test_loading_script_repo_is_retried_from_its_parquet_export(tmp_path, monkeypatch):
    """Stand-in for the Hub (unreachable here): datasets 5's refusal of a loading script, then the retry's
    arguments. The retry's own failure is one line naming the local-copy route."""
    import datasets

    from adapterxfer.data import hub

    calls = []

    def hub_standin(path, name=None, **options):
        calls.append((path, name, options))
        if "revision" not in options:
            raise RuntimeError("Dataset scripts are no longer supported, but found cosmos_qa.py")
        raise datasets.exceptions.DatasetNotFoundError(f"Revision {options['revision']} doesn't exist")

    monkeypatch.setenv("ADAPTERXFER_DATA_DIR", str(tmp_path))
    monkeypatch.setattr(hub, "hub_reachable", lambda: True)
    monkeypatch.setattr(datasets, "load_dataset", hub_standin)
    with pytest.raises(UserError) as err:
        load_rows("allenai/cosmos_qa", None, "train")
    assert calls[1] == ("allenai/cosmos_qa", None, {"split": "train", "revision": "refs/convert/parquet",
                                                    "data_dir": "default", "streaming": False})
    message = str(err.value)
    assert "\n" not in message and "its Parquet export (refs/convert/parquet) failed too" in message
    assert f"--local-dir {tmp_path}/allenai/cosmos_qa/` (on a machine with access)" in message


# Real Hub layouts (repo, README configs or None, files as the Hub names them, from the fixtures) placed in an
# HF cache, the way `hf download <id> --repo-type dataset` leaves them on a login node.
CACHED = {
    "hellaswag": ("Rowan/hellaswag", None, ["data/validation-00000-of-00001.parquet"]),
    "commonsenseqa": ("tau/commonsense_qa", "README.md", ["data/validation-00000-of-00001.parquet"]),
    "xnli": ("facebook/xnli", None, ["fr/test-00000-of-00001.parquet"]),
    "panx": ("google/xtreme", None, ["PAN-X.de/test-00000-of-00001.parquet"]),
    "pawsx": ("google-research-datasets/paws-x", None, ["de/test-00000-of-00001.parquet"]),
}


def _hf_cache(home, repo: str, files: list[str]) -> None:
    """huggingface_hub's cache layout: blobs by hash, snapshots/<commit>/ links, refs/main naming the commit."""
    import hashlib

    folder = home / "hub" / f"datasets--{repo.replace('/', '--')}"
    commit = hashlib.sha1(repo.encode()).hexdigest()
    for name in files:
        data = (ROOT / repo / name).read_bytes()
        blob = folder / "blobs" / hashlib.sha256(data).hexdigest()
        blob.parent.mkdir(parents=True, exist_ok=True)
        blob.write_bytes(data)
        link = folder / "snapshots" / commit / name
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(blob)
    (folder / "refs").mkdir(exist_ok=True)
    (folder / "refs" / "main").write_text(commit)


@pytest.mark.parametrize("name", list(CACHED))
def test_offline_node_reads_the_hf_cache(name, tmp_path, monkeypatch):
    """HF_HOME with the dataset downloaded, HF_HUB_OFFLINE=1 and no local copy: found through huggingface_hub."""
    import huggingface_hub.constants

    repo, card, files = CACHED[name]
    _hf_cache(tmp_path, repo, files + ([card] if card else []))
    monkeypatch.setenv("ADAPTERXFER_DATA_DIR", str(tmp_path / "no-copies"))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    task = TASKS[name]
    split, lang = ("dev", "en") if task.role == "intermediate" else ("test", FIXTURE_LANGS[name][1])
    monkeypatch.setenv("ADAPTERXFER_DATA_DIR", str(ROOT))
    expected = task.rows(split, lang)
    monkeypatch.setenv("ADAPTERXFER_DATA_DIR", str(tmp_path / "no-copies"))
    assert task.rows(split, lang) == expected


def test_mewslix_query_is_the_mention_sentence():
    """XTREME-R's preprocessing: the mention's own sentence, marked; the article's long lead is not in it."""
    rows = TASKS["mewslix"].rows("test", "de")
    assert rows[1] == {"id": "de-1", "gold": ["Q1"], "query": "The mayor of {Place 1} spoke."}


def test_hub_offline_is_one_fast_line(monkeypatch, tmp_path):
    monkeypatch.setenv("ADAPTERXFER_DATA_DIR", str(tmp_path))
    started = time.perf_counter()
    with pytest.raises(UserError) as err:
        load_rows("facebook/xnli", "fr", "test")
    assert time.perf_counter() - started < 10
    message = str(err.value)
    assert "\n" not in message and f"{tmp_path}/facebook/xnli/ in the Hub's layout (fr/test-00000-of-00001" in message


def test_malformed_local_rows_name_file_and_row(tmp_path):
    (tmp_path / "test.jsonl").write_text('{"premise": "a", "hypothesis": "b", "label": 0}\n{"premise": "c"}\n')
    with pytest.raises(UserError, match=r"test.jsonl row 1: does not fit"):
        load_rows("facebook/xnli", "fr", "test", data_dir=tmp_path, convert=xtreme.TASKS["xnli"]["convert"])
    (tmp_path / "test.jsonl").write_text('{"premise": "a",\n')
    with pytest.raises(UserError, match=r"test.jsonl: cannot be read as jsonl"):
        load_rows("facebook/xnli", "fr", "test", data_dir=tmp_path)


def test_bucc_margin_mining_and_threshold():
    import torch
    from adapterxfer.retrieval import bucc_threshold, margin_candidates
    x = torch.nn.functional.normalize(torch.eye(4) + 0.1, dim=-1)
    pairs = margin_candidates(x, x.clone())
    assert sorted(pairs) == [(i, i) for i in range(4)]
    candidates = {("s1", "t1"): 1.3, ("s2", "t2"): 1.2, ("s3", "t9"): 1.1, ("s4", "t4"): 0.9}
    assert bucc_threshold(candidates, ["s1\tt1", "s2\tt2"]) == pytest.approx(1.15)


def test_bucc_rows_are_gold_pairs_with_the_pairs_mined_for_their_source():
    from adapterxfer.retrieval import pair_items
    from adapterxfer.study.stats import metric_value
    rows = pair_items(["s1\tt1", "s2\tt9", "s7\tt7"], ["s1\tt1", "s2\tt2", "s3\tt3"])
    assert rows == [{"ref": "s1\tt1", "label": ["s1\tt1"], "prediction": ["s1\tt1"]},
                    {"ref": "s2\tt2", "label": ["s2\tt2"], "prediction": ["s2\tt9"]},
                    {"ref": "s3\tt3", "label": ["s3\tt3"], "prediction": []},
                    {"ref": "s7\tt7", "label": [], "prediction": ["s7\tt7"]}]
    assert metric_value("bucc_f1", rows, "de") == pytest.approx(1 / 3)  # 1 of 3 mined right, 1 of 3 gold found


def test_parallel_test_sets_name_each_item_alike_in_every_language():
    """XNLI, PAWS-X (position), XQuAD, MLQA (question id): the same refs in every language, so the
    statistics resample languages together; Tatoeba's lines and PAN-X are each language's own."""
    from adapterxfer.study.stats import parallel_languages

    def refs(name, lang):
        return [row.get("ref") for row in TASKS[name].rows("test", lang)]

    assert refs("xnli", "en") == refs("xnli", "fr") == [f"xnli-{i}" for i in range(6)]
    assert refs("pawsx", "en") == refs("pawsx", "de") == [f"pawsx-{i}" for i in range(6)]
    assert refs("xquad", "en") == refs("xquad", "de") == [f"xquad-{i}" for i in range(4)]
    assert refs("mlqa", "en") == refs("mlqa", "de") == [f"mlqa-{i}" for i in range(4)]
    assert refs("tatoeba", "de") == [f"de-{i}" for i in range(5)]
    assert refs("panx", "de") == [None] * 4
    assert parallel_languages({lang: refs("xnli", lang) for lang in ("en", "fr")})
    assert not parallel_languages({lang: refs("tatoeba", lang) for lang in ("de", "fr")})
    assert not parallel_languages({lang: refs("panx", lang) for lang in ("en", "de")})


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_backbone):
    return {"root": tmp_path_factory.mktemp("xtreme"), "backbone": tiny_backbone}


@pytest.mark.parametrize("regime", ["full", "lora"])
@pytest.mark.parametrize("name", list(xtreme.TASKS))
def test_end_to_end_on_the_tiny_backbone(name, regime, trained, monkeypatch):
    task = TASKS[name]
    root, backbone = trained["root"] / regime, trained["backbone"]
    model, max_length = str(backbone.path), 160 if task.kind == "qa" else 32  # QA windows exceed doc_stride 128
    if task.trainable:
        model, start = str(root / name), []
        for stage in task.stages:  # xcopa: siqa first, as its recipe trains it (a target without it is refused)
            assert main(["train", f"task={stage}", f"regime={regime}", f"backbone={backbone.path}", *STEPS,
                         f"output_dir={root / f'{name}.{stage}'}", *start]) == 0
            start = [f"init_from={root / f'{name}.{stage}'}"]
        assert main(["train", f"task={name}", f"regime={regime}", f"backbone={backbone.path}", f"output_dir={model}", *STEPS,
                     f"max_length={max_length}", f"eval_langs={','.join(FIXTURE_LANGS.get(name, ['en']))}", *start]) == 0
    if task.role != "target":
        return
    out = root / f"{name}-eval"
    fmt = ["--format", "xtreme"] if name in FORMATS else []
    assert main(["evaluate", "--model", model, "--task", name, "--langs", ",".join(FIXTURE_LANGS[name]),
                 "--output", str(out), "--max-length", str(max_length), "--layer", "1", "--precision", "fp32", *fmt]) == 0
    assert (out / "scores.json").is_file()
    for lang in FIXTURE_LANGS[name] if fmt else []:
        files = [out / sub / name / f"test-{lang}.{FORMATS[name][0]}" for sub in ("xtreme", "xtreme-gold")]
        scores = score_language(name, *files, lang)  # what `adapterxfer score` runs for each file pair
        assert all(0 <= value <= 100 for value in scores.values())


def test_xnli_after_its_own_translate_train_data_is_marked_not_zero_shot(trained):
    import json

    root, backbone = trained["root"] / "contaminated", trained["backbone"]
    common = [f"backbone={backbone.path}", *STEPS, "max_length=32"]
    assert main(["train", "task=xnli-translate-train", f"output_dir={root / 'tt'}", *common]) == 0
    assert main(["train", "task=xnli", f"init_from={root / 'tt'}", "eval_langs=fr", f"output_dir={root / 'xnli'}",
                 *common]) == 0
    assert json.loads((root / "xnli" / "manifest.json").read_text())["zero_shot"] is False
    assert main(["train", "task=pawsx", f"init_from={root / 'tt'}", "eval_langs=de", f"output_dir={root / 'pawsx'}",
                 *common]) == 0
    assert json.loads((root / "pawsx" / "manifest.json").read_text())["zero_shot"] is True


@pytest.mark.parametrize("name", ["udpos", "squad", "hellaswag", "mnli", "wiki-mlm"])
def test_head_probe_runs_for_every_trainable_kind(name, trained):
    """LP-FT on tagging, span QA, multiple choice, pair classification and MLM (fixtures, tiny backbone)."""
    backbone, out = trained["backbone"], trained["root"] / "probe" / name
    max_length = 160 if TASKS[name].kind == "qa" else 32
    assert main(["train", f"task={name}", f"backbone={backbone.path}", f"output_dir={out}", *STEPS,
                 "probe_steps=3", "probe_examples=4", f"max_length={max_length}",
                 f"eval_langs={','.join(FIXTURE_LANGS.get(name, ['en']))}"]) == 0
    log = json.loads((out / "manifest.json").read_text())["dev"]["log"]
    assert [entry["step"] for entry in log] == [0, 1] and log[0]["train_loss"] > 0


def test_xcopa_trains_after_its_siqa_stage(trained):
    """XTREME-R's XCOPA recipe: English SIQA, then English COPA from that phase, then zero-shot XCOPA."""
    root, backbone = trained["root"] / "xcopa-stages", trained["backbone"]
    common = [f"backbone={backbone.path}", *STEPS, "max_length=32"]
    assert main(["train", "task=siqa", f"output_dir={root / 'siqa'}", *common]) == 0
    assert main(["train", "task=xcopa", f"init_from={root / 'siqa'}", "eval_langs=et,zh",
                 f"output_dir={root / 'xcopa'}", *common]) == 0
    manifest = json.loads((root / "xcopa" / "manifest.json").read_text())
    lineage = [parent["task"] for parent in manifest["parents"]]
    assert lineage == ["siqa"] and TASKS["xcopa"].missing_stages(lineage) == []
    assert set(json.loads((root / "xcopa" / "scores.json").read_text())) == {"et", "zh"}
