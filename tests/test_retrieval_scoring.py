"""Retrieval scorings (adapterxfer.retrieval.SCORINGS): hubs, language offsets, the task option, errors."""

import dataclasses

import pytest
import torch
from transformers import AutoTokenizer

from adapterxfer.errors import UserError
from adapterxfer.modeling import encoder_model
from adapterxfer.data import verses as corpus
from adapterxfer.retrieval import SCORINGS, centered_on, cosine, csls, embed, hidden_state_index, retrieve
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


def test_cosine_is_the_primary_scoring_everywhere():
    assert get_task("verses-retrieval").options == {"scoring": "cosine", "secondary": "centered", "distractors": True}
    assert get_task("tatoeba").options.get("scoring", "cosine") == "cosine"


def test_retrieve_scores_with_the_task_option(tiny_backbone):
    encoder, tokenizer = encoder_model(tiny_backbone.path), AutoTokenizer.from_pretrained(tiny_backbone.path)
    task = dataclasses.replace(get_task("verses-retrieval"), options={})
    rows = task.rows("test", "fr")
    queries, targets = (embed(encoder, tokenizer, [row[side] for row in rows], -1, 48, 8, "fp32")
                        for side in ("query", "target"))
    for name in ("cosine", "centered-margin"):
        scores, predictions = retrieve(encoder, tokenizer, dataclasses.replace(task, options={"scoring": name}),
                                       ["fr"], -1, 48, 8, "fp32")
        nearest = best(name, queries, targets)
        assert [p["prediction"] for p in predictions["fr"]] == nearest
        assert scores["fr"]["accuracy@1"] == pytest.approx(sum(i == j for i, j in enumerate(nearest)) / len(rows))
        assert scores["fr"]["candidates"] == len(rows)


def test_verses_retrieval_pool_and_dev_centered_secondary(tiny_backbone):
    """Every English test verse is a candidate; the secondary score centers on dev-chapter means."""
    encoder, tokenizer = encoder_model(tiny_backbone.path), AutoTokenizer.from_pretrained(tiny_backbone.path)
    task = get_task("verses-retrieval")
    rows, dev = task.rows("test", "fr"), task.rows("dev", "fr")
    drawn = {row["ref"] for row in rows}
    extra = [row for row in task.rows("candidates", "fr") if row["ref"] not in drawn]
    encode = lambda texts: embed(encoder, tokenizer, texts, -1, 48, 8, "fp32")
    queries = encode([row["query"] for row in rows])
    targets = encode([row["target"] for row in rows] + [row["text"] for row in extra])
    scores, predictions = retrieve(encoder, tokenizer, task, ["fr"], -1, 48, 8, "fp32")
    assert scores["fr"]["candidates"] == len(rows) + len(extra) == len(corpus.retrieval_rows("fr"))
    nearest = cosine(queries, targets).argmax(-1).tolist()
    assert [p["prediction"] for p in predictions["fr"]] == nearest
    means = [encode([row[side] for row in dev]).mean(0) for side in ("query", "target")]
    centered_nearest = centered_on(*means)(queries, targets).argmax(-1)
    assert scores["fr"]["accuracy@1_unsupervised_target_dev_centered"] == pytest.approx(
        (centered_nearest == torch.arange(len(rows))).float().mean().item())


def test_layers_are_numbered_as_xtreme_evaluate_retrieval():
    """xtreme indexes all_layer_outputs[-num_layers:]: the embedding output is not a layer."""
    assert hidden_state_index(13, 24) == 14  # XLM-R large, run_tatoeba.sh's LAYER=13
    assert hidden_state_index(7, 12) == 8 and hidden_state_index(-1, 12) == -1 and hidden_state_index(-12, 12) == -12
    for bad in (12, -13):
        with pytest.raises(UserError, match=f"layer {bad} out of range: the encoder has 12 layers"):
            hidden_state_index(bad, 12)


def test_embed_layer_zero_is_the_first_transformer_layer(tiny_backbone):
    encoder, tokenizer = encoder_model(tiny_backbone.path), AutoTokenizer.from_pretrained(tiny_backbone.path)
    texts = ["the river runs", "a lamp by the window stood"]
    batch = tokenizer(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        states = encoder(**batch, output_hidden_states=True).hidden_states
    mask = batch["attention_mask"].unsqueeze(-1).float()
    for layer, index in ((0, 1), (1, 2), (-1, 2)):
        expected = torch.nn.functional.normalize((states[index] * mask).sum(1) / mask.sum(1), dim=-1)
        assert torch.allclose(embed(encoder, tokenizer, texts, layer, 48, 8, "fp32"), expected, atol=1e-5)


def test_unknown_scoring_is_a_one_line_user_error(tiny_backbone):
    task = dataclasses.replace(get_task("verses-retrieval"), options={"scoring": "dot"})
    with pytest.raises(UserError, match="unknown retrieval scoring 'dot'; allowed: cosine, centered, csls") as err:
        retrieve(None, None, task, ["fr"], -1, 48, 8, "fp32")  # refused before any model or data is touched
    assert "\n" not in str(err.value)


def test_queries_and_candidates_size_the_retrieval(tiny_backbone):
    """Fewer queries, and a pool cut to a seeded sample of distractors that still holds every query's target."""
    encoder, tokenizer = encoder_model(tiny_backbone.path), AutoTokenizer.from_pretrained(tiny_backbone.path)
    task = get_task("verses-retrieval")
    every = len(corpus.retrieval_rows("fr"))
    sized = task.sized(4, 7)
    scores, predictions = retrieve(encoder, tokenizer, sized, ["fr"], -1, 48, 8, "fp32")
    assert scores["fr"]["candidates"] == 7 and len(predictions["fr"]) == 4 < every
    assert [row["ref"] for row in sized.rows("test", "fr")] == [row["ref"] for row in predictions["fr"]]
    scores, _ = retrieve(encoder, tokenizer, task.sized("all", None), ["fr"], -1, 48, 8, "fp32")
    assert scores["fr"]["candidates"] == every  # every test verse a query: no distractor is left
    for queries, candidates, message in ((5, 3, "candidates: 3 is below queries: 5"),
                                         (0, None, "queries: 0 must be a positive number or all")):
        with pytest.raises(UserError, match=message):
            task.sized(queries, candidates)
    with pytest.raises(UserError, match="queries and candidates size a retrieval task; verses-genre is classification"):
        get_task("verses-genre").sized(10, None)


def test_query_side_score_against_the_backbones_english_pool(tiny_backbone):
    """The English side embedded by another encoder: by the same one, the query-side score is the score itself;
    by an encoder whose weights changed, queries meet targets they were not embedded with."""
    tokenizer = AutoTokenizer.from_pretrained(tiny_backbone.path)
    encoder, other = encoder_model(tiny_backbone.path), encoder_model(tiny_backbone.path)
    with torch.no_grad():
        for param in other.encoder.layer[-1].parameters():
            param.add_(torch.randn(param.shape, generator=torch.Generator().manual_seed(0)), alpha=0.5)
    task = get_task("verses-retrieval")
    rows = task.rows("test", "fr")
    same = lambda texts: embed(encoder, tokenizer, texts, -1, 48, 8, "fp32")
    scores, _ = retrieve(encoder, tokenizer, task, ["fr"], -1, 48, 8, "fp32", english=same)
    assert scores["fr"]["accuracy@1_backbone_english"] == scores["fr"]["accuracy@1"]
    changed = lambda texts: embed(other, tokenizer, texts, -1, 48, 8, "fp32")
    scores, _ = retrieve(encoder, tokenizer, task, ["fr"], -1, 48, 8, "fp32", english=changed)
    pool = [row["target"] for row in rows] + [row["text"] for row in task.rows("candidates", "fr")
                                               if row["ref"] not in {r["ref"] for r in rows}]
    nearest = cosine(same([row["query"] for row in rows]), changed(pool)).argmax(-1)
    assert scores["fr"]["accuracy@1_backbone_english"] == pytest.approx(
        float((nearest == torch.arange(len(rows))).float().mean()))
