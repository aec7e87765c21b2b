"""Retrieval scorings (adapterxfer.retrieval.SCORINGS): hubs, language offsets, the task option, errors."""

import dataclasses

import pytest
import torch
from transformers import AutoTokenizer

from adapterxfer.errors import UserError
from adapterxfer.modeling import encoder_model
from adapterxfer.retrieval import SCORINGS, cosine, csls, embed, retrieve
from adapterxfer.tasks import get_task


def unit(rows):
    return torch.nn.functional.normalize(torch.tensor(rows), dim=-1)


def best(name, queries, targets):
    return SCORINGS[name](queries, targets).argmax(-1).tolist()


def test_hub_target_wins_cosine_but_not_the_hubness_corrections():
    targets = unit([[1.0, 0, 0], [0, 1, 0], [1, 1, 1]])  # target 2 lies between everything: a hub
    queries = unit([[1.0, 0.3, 0.5], [0.3, 1, 0.5], [0, 0, 1]])
    assert cosine(queries, targets)[0].tolist() == pytest.approx([0.8638, 0.2592, 0.8977], abs=1e-4)
    assert best("cosine", queries, targets) == [2, 2, 2]
    # CSLS (k = 10, here all 3): the hub's neighbourhood r = (0.8977 + 0.8977 + 0.5774) / 3 = 0.7909
    # costs it more than that of target 0 or 1, r = (0.8638 + 0.2592 + 0) / 3 = 0.3743.
    row = csls(queries, targets)[0] + cosine(queries, targets)[0].mean()  # + r(query 0): the same for every target
    assert row.tolist() == pytest.approx([2 * 0.8638 - 0.3743, 2 * 0.2592 - 0.3743, 2 * 0.8977 - 0.7909], abs=1e-3)
    for name in ("csls", "margin", "centered", "centered-csls"):
        assert best(name, queries, targets) == [0, 1, 2], name


def test_centering_removes_a_shared_language_offset():
    targets = unit([[1.0, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0.5, 1]])
    queries = unit([[1.0, 0, 0, 2], [0, 1, 0, 2], [0, 0, 1, 2], [0, 0, 0.5, 3]])  # every query leans to dim 3
    assert best("cosine", queries, targets) == [3, 3, 3, 3]
    assert best("csls", queries, targets) == [0, 1, 3, 3]
    assert best("centered", queries, targets) == [0, 1, 2, 3]
    assert best("centered-csls", queries, targets) == [0, 1, 2, 3]


def test_defaults_verses_dev_chosen_xtreme_cosine():
    assert get_task("verses-retrieval").options["scoring"] == "centered-margin"
    assert get_task("tatoeba").options.get("scoring", "cosine") == "cosine"


def test_retrieve_scores_with_the_task_option(tiny_backbone):
    encoder, tokenizer = encoder_model(tiny_backbone.path), AutoTokenizer.from_pretrained(tiny_backbone.path)
    task = get_task("verses-retrieval")
    rows = task.rows("test", "fr")
    queries, targets = (embed(encoder, tokenizer, [row[side] for row in rows], -1, 48, 8, False)
                        for side in ("query", "target"))
    for name in ("cosine", "centered-margin"):
        scores, predictions = retrieve(encoder, tokenizer, dataclasses.replace(task, options={"scoring": name}),
                                       ["fr"], -1, 48, 8, False)
        nearest = best(name, queries, targets)
        assert [p["prediction"] for p in predictions["fr"]] == nearest
        assert scores["fr"]["accuracy@1"] == pytest.approx(sum(i == j for i, j in enumerate(nearest)) / len(rows))


def test_unknown_scoring_is_a_one_line_user_error(tiny_backbone):
    task = dataclasses.replace(get_task("verses-retrieval"), options={"scoring": "dot"})
    with pytest.raises(UserError, match="unknown retrieval scoring 'dot'; allowed: cosine, centered, csls") as err:
        retrieve(None, None, task, ["fr"], -1, 48, 8, False)  # refused before any model or data is touched
    assert "\n" not in str(err.value)
