"""XTREME / XTREME-R targets and the paper's intermediate tasks on fixtures in their exact Hub schemas.

tests/fixtures/xtreme/ (written by tests/fixtures/make_xtreme_fixtures.py) is read as
$ADAPTERXFER_DATA_DIR, through the same loader and ``datasets`` path a user's downloaded copy takes.
"""

import json
import time

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


def test_translate_train_mixes_languages_matched_in_count():
    rows = TASKS["xnli-translate-train"].read("train", "en", 30, 0)
    assert len(rows) == 30 and len({row["text"].split()[0] for row in rows}) == 15
    mix = TASKS["mnli-translate-mix"].read("train", "en", 12, 0)  # half English MNLI, half its translations
    assert len(mix) == 12 and sum(row["text"].startswith("mnli") for row in mix) == 6


def test_hub_offline_is_one_fast_line(monkeypatch, tmp_path):
    monkeypatch.setenv("ADAPTERXFER_DATA_DIR", str(tmp_path))
    started = time.perf_counter()
    with pytest.raises(UserError) as err:
        load_rows("facebook/xnli", "fr", "test")
    assert time.perf_counter() - started < 10
    message = str(err.value)
    assert "\n" not in message and "facebook/xnli" in message and f"{tmp_path}/facebook/xnli/fr/" in message


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
        model = str(root / name)
        assert main(["train", f"task={name}", f"regime={regime}", f"backbone={backbone.path}", f"output_dir={model}", *STEPS,
                     f"max_length={max_length}", f"eval_langs={','.join(FIXTURE_LANGS.get(name, ['en']))}"]) == 0
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
