"""Arms matched item for item: what a phase's steps draw, and its record (adapterxfer/items.py)."""

import json
from collections import Counter

import torch
from transformers import AutoTokenizer
from transformers.trainer_pt_utils import LengthGroupedSampler

from adapterxfer import items
from adapterxfer.cli import main
from adapterxfer.config import RunConfig
from adapterxfer.data.features import featurized, split_rows
from adapterxfer.kinds import KINDS
from adapterxfer.tasks import get_task
from adapterxfer.train import BatchStream, Source

STEPS, BATCH, SEED = 4, 8, 1


def source(task_name: str, backbone) -> tuple[Source, list[str]]:
    """A task's training source as a phase builds it, and each feature's language."""
    task = get_task(task_name)
    tokenizer = AutoTokenizer.from_pretrained(backbone.path)
    features, rows, _ = featurized(task, "train", "en", tokenizer, 48, SEED, with_rows=True)
    features, row_of = split_rows(features)
    kind = KINDS[task.kind]
    return (Source(features, [kind.length(f) for f in features], kind.collator(tokenizer),
                   [items.row_ref(rows[r], r) for r in row_of]), [rows[r]["lang"] for r in row_of])


def drawn(src: Source) -> Counter:
    config = RunConfig(task="x", seed=SEED, batch_size=BATCH, group_by_length=True)
    stream = BatchStream(src, config, processes=1, rank=0, drawn=STEPS * BATCH)
    for _ in range(STEPS):
        stream.next()
    return Counter(src.items[i] for i in stream.consumed())


def test_a_task_and_its_multilingual_rendering_draw_the_same_items_grouped_by_length(tiny_backbone):
    english, english_langs = source("verses-xref-bi", tiny_backbone)
    multi, multi_langs = source("verses-xref-bi-multi", tiny_backbone)
    assert sorted(english.items) == sorted(multi.items) and english.lengths != multi.lengths
    assert set(english_langs) == {"en"} and len(set(multi_langs)) == 10
    ours, theirs = drawn(english), drawn(multi)
    assert ours == theirs and sum(ours.values()) == STEPS * BATCH == len(ours)  # 32 distinct items, once each

    def old_draw(src):  # the sampler before: sorted by length over the whole set, then the first 32 taken
        order = list(LengthGroupedSampler(BATCH, lengths=src.lengths,
                                          generator=torch.Generator().manual_seed(SEED * 1_000_003)))
        return {src.items[i] for i in order[:STEPS * BATCH]}
    assert old_draw(english) != old_draw(multi)  # what made "matched" arms train on different items


def test_items_are_drawn_in_the_same_order_whatever_the_rows_order(tiny_backbone):
    english, _ = source("verses-xref-bi", tiny_backbone)
    backwards = Source(english.features, english.lengths, english.collate, english.items[::-1])
    generator = lambda: torch.Generator().manual_seed(7)
    assert ([english.items[i] for i in english.item_order(generator())]
            == [backwards.items[i] for i in backwards.item_order(generator())])


def train(tmp_path, task: str, backbone, seed: int = SEED):
    out = tmp_path / f"{task}-{seed}"
    assert main(["train", f"task={task}", "regime=lora", f"backbone={backbone.path}", f"output_dir={out}",
                 f"seed={seed}", f"max_steps={STEPS}", f"eval_every={STEPS}", f"batch_size={BATCH}", "max_length=48",
                 "group_by_length=true", "precision=fp32"]) == 0
    return out, json.loads((out / "manifest.json").read_text())["train_items"]


def test_phases_record_what_they_drew_and_compare_item_for_item(tmp_path, tiny_backbone):
    (english_out, english), (multi_out, multi) = (train(tmp_path, task, tiny_backbone)
                                                  for task in ("verses-xref-bi", "verses-xref-bi-multi"))
    ours, theirs = english["verses-xref-bi"], multi["verses-xref-bi-multi"]
    assert ours["multiset"] == theirs["multiset"] and ours["examples"] == theirs["examples"] == STEPS * BATCH
    assert set(ours["by_lang"]) == {"en"} and sum(v["examples"] for v in theirs["by_lang"].values()) == STEPS * BATCH
    lines = [json.loads(line) for line in (multi_out / items.FILE).read_text().splitlines()]
    assert {lang: sum(1 for line in lines if line["lang"] == lang) for lang in theirs["by_lang"]} == {
        lang: counts["examples"] for lang, counts in theirs["by_lang"].items()}
    assert theirs["tokens"] == sum(line["tokens"] for line in lines)
    assert items.compare(english, multi, english_out, multi_out) == items.Match(True, 32, 32, 32)

    other_out, other = train(tmp_path, "verses-xref-bi", tiny_backbone, seed=2)  # another seed: another draw
    a, b = items.read(english_out), items.read(other_out)
    assert items.compare(english, other, english_out, other_out) == items.Match(False, len(a.keys() & b.keys()), 32, 32)
    assert len(a.keys() & b.keys()) < 32


def test_seeds_one_arm_ran_alone_are_named_and_left_out_not_a_mismatch():
    """A regime run on fewer seeds (``regime_seeds``) is compared on the seeds both arms ran."""
    from adapterxfer.study.matching import Check
    check = Check([], [1], {"run": [2, 3], "versus": []}, (True, False))
    assert check.problems == []
    assert check.summary == "versus trains nothing (the backbone); 1 seeds (seeds only in run, left out: 2, 3)"
