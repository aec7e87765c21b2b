"""Evaluation straight from an encoder, with no head: retrieval, bitext mining and ranking.

Every text is the L2-normalised mean of one layer's states (``embed``; XTREME scores these tasks from
a middle layer). ``layer`` counts as google-research/xtreme's third_party/evaluate_retrieval.py does:
it indexes ``all_layer_outputs[-num_layers:]``, the outputs of the transformer layers without the
embedding output, so layer k is ``hidden_states[k + 1]`` (XLM-R large, 24 layers: ``--layer 13`` is
hidden_states[14]) and -1 is the last layer. One function per evaluation-only kind, all with the
same signature:

- ``retrieve`` (Tatoeba): accuracy@1 of each query's best-scoring target; the gold is its own index.
  With ``options["distractors"]`` a task adds targets (split "candidates", rows {"text"}) that are no
  query's gold: a larger pool leaves headroom. ``TaskSpec.sized`` sets how many queries per language and how
  large a pool (``adapterxfer evaluate --queries --candidates``; a plan's ``evaluation`` block).
  The score is the task's ``options["scoring"]``, a key of ``SCORINGS``: "cosine" by default (XTREME's
  Tatoeba protocol), and the primary metric of every task. With ``options["secondary"] = "centered"``
  a second accuracy, ``accuracy@1`` + ``TARGET_DEV_CENTERED``, scores by cosine after subtracting each
  side's mean vector taken from the task's *dev* rows of that language (not from the sets being scored):
  it uses unlabelled target-language text, an unsupervised adaptation, so it is not strictly zero-shot. The other
  keys of SCORINGS are training-free but take their statistics from the very query and target sets
  being scored, as the papers do (``adapterxfer evaluate --scoring``). "centered": subtract each side's mean vector and
  renormalise, removing the language-specific component (Libovický, Rosa and Fraser 2020, "On the
  language neutrality of pre-trained multilingual representations"). "csls": 2 cos(x, y) - r(x) - r(y),
  r the mean cosine to the 10 nearest neighbours on the other side, which demotes hubs, targets near
  every query (Conneau et al. 2018, "Word translation without parallel data"). "margin": the ratio
  margin of ``mine`` below, cos(x, y) / ((r(x) + r(y)) / 2) with k = 4 (Artetxe and Schwenk 2019,
  "Margin-based parallel corpus mining with multilingual sentence embeddings"); it assumes r > 0, true
  of any real set of hundreds of sentences. "centered-csls", "centered-margin": centering, then that
  score. On untuned me5-small they lift verses accuracy to the ceiling (scripts/retrieval_scoring_study.py:
  mean dev accuracy@1 over 30 translations 0.925 with cosine, 0.990 with centered-margin), where no
  effect of training could show, so verses-retrieval keeps cosine.
- ``mine`` (BUCC): google-research/xtreme's third_party/utils_retrieve.py, ``mine_bitext`` with mode
  "mine", retrieval "max", ratio margin and k = 4: each side's 4 nearest neighbours, a candidate's
  score cos(x, y) / ((mean kNN sim of x + mean kNN sim of y) / 2), the best candidate of every
  source and every target, taken greedily by score so each sentence is used once. Sentences are
  de-duplicated first, and a text occurring under two ids is dropped (``read_sent2id``). The
  threshold is ``bucc_optimize`` on the dev gold, applied to test as run_retrieval.py does; the
  prediction is the set of "src_id<TAB>tgt_id" pairs scoring at least the threshold. google/xtreme
  holds only the gold pairs, so the pool is the gold sentences alone (the official pool has many
  unpaired ones, which makes mining harder): scores carry ``gold_only_pool: true`` to say so.
- ``rank`` (Mewsli-X, LAReQA): each query ranks the task's candidate pool (split "candidates") by
  cosine; the top 20 are kept. Mewsli-X: MRR@20 as the official ``mewslix_scores`` ("map@20");
  LAReQA: mAP@20, the mean over queries of the precision at each gold hit in the top 20, divided by
  min(number of golds, 20).
"""

from __future__ import annotations

import random

import torch
from tqdm.auto import tqdm

from .errors import UserError
from .evaluate import forward_batches
from .metrics import METRICS, score_rows
from .tasks.spec import TaskSpec

MARGIN_K = 4
CSLS_K = 10
TOP_K = 20


def hidden_state_index(layer: int, num_layers: int) -> int:
    """The index into ``hidden_states`` (embedding output first) of xtreme's ``layer`` (see the module docstring)."""
    if not -num_layers <= layer < num_layers:
        raise UserError(f"layer {layer} out of range: the encoder has {num_layers} layers, numbered "
                        f"0..{num_layers - 1} as xtreme's evaluate_retrieval.py does (-1 = last)")
    return layer + 1 if layer >= 0 else layer


@torch.no_grad()  # not inference_mode: see adapterxfer/evaluate.py
def embed(encoder, tokenizer, texts: list[str], layer: int, max_length: int, batch_size: int,
          precision: str) -> torch.Tensor:
    """L2-normalised mean-pooled states of transformer layer ``layer`` (xtreme's numbering; -1 = last)."""
    index = hidden_state_index(layer, encoder.config.num_hidden_layers)
    encoded = tokenizer(texts, truncation=True, max_length=max_length)
    examples = [{"input_ids": ids} for ids in encoded["input_ids"]]
    out = torch.empty(len(texts), encoder.config.hidden_size)
    pad = lambda rows: tokenizer.pad(rows, return_tensors="pt")
    for ids, batch, output in forward_batches(encoder, examples, pad, batch_size, precision,
                                              lengths=[len(e["input_ids"]) for e in examples],
                                              output_hidden_states=True):
        hidden = output.hidden_states[index].float()
        mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(1) / mask.sum(1)
        out[ids] = torch.nn.functional.normalize(pooled, dim=-1).cpu()
    return out


# The suffix of a secondary score adapted on unlabelled target-language dev text (reports mark it).
TARGET_DEV_CENTERED = "_unsupervised_target_dev_centered"
# The suffix of a secondary score with the English side embedded by the untuned backbone: what a trained encoder
# changes on the query (target-language) side alone, against the English-side adaptation both sides include.
BACKBONE_ENGLISH = "_backbone_english"


def retrieve(encoder, tokenizer, task: TaskSpec, langs: list[str], layer: int, max_length: int,
             batch_size: int, precision: str, english=None) -> tuple[dict, dict]:
    """Tatoeba-style accuracy@1 per language: each query's best target must be its own translation. With
    ``english`` (the untuned backbone's ``embed``), also the score of this encoder's queries against the
    backbone's English pool (``BACKBONE_ENGLISH``): what the encoder changed on the query side alone."""
    score = scoring(task.options.get("scoring", "cosine"))
    secondary = task.options.get("secondary")
    if secondary not in (None, "centered"):
        raise UserError(f"task {task.name}: unknown secondary retrieval scoring {secondary!r}; allowed: centered")
    encode = texts_once(_encoder(encoder, tokenizer, layer, max_length, batch_size, precision), {})  # shared verses
    scores, predictions = {}, {}
    for lang in tqdm(langs, desc=f"{task.name} layer {layer}", unit="lang"):
        rows = task.rows("test", lang)
        pool = [row["target"] for row in rows] + [row["text"] for row in _distractors(task, lang, rows)]
        queries, targets = encode([row["query"] for row in rows]), encode(pool)
        nearest = score(queries, targets).argmax(-1).tolist()
        gold = list(range(len(rows)))
        scores[lang] = METRICS[task.metric](nearest, gold, lang) | {"candidates": len(pool)}
        if english is not None:
            query_side = score(queries, english(pool)).argmax(-1).tolist()
            scores[lang][task.metric + BACKBONE_ENGLISH] = METRICS[task.metric](query_side, gold, lang)[task.metric]
        if secondary:
            dev = task.rows("dev", lang)
            dev_means = [encode([row[side] for row in dev]).mean(0) for side in ("query", "target")]
            centered_nearest = centered_on(*dev_means)(queries, targets).argmax(-1).tolist()
            scores[lang][task.metric + TARGET_DEV_CENTERED] = METRICS[task.metric](centered_nearest, gold, lang)[task.metric]
        predictions[lang] = [{"ref": row.get("ref"), "label": g, "prediction": p}
                             for row, g, p in zip(rows, gold, nearest)]
    return scores, predictions


def _distractors(task: TaskSpec, lang: str, queries: list[dict]) -> list[dict]:
    """The task's extra candidates (split "candidates": the targets of none of the ``queries``), a seeded
    sample of them where ``limits["candidates"]`` caps the pool; none where the task has no such split."""
    if not task.options.get("distractors"):
        return []
    drawn = {row["ref"] for row in queries}
    extra = [row for row in task.rows("candidates", lang) if row["ref"] not in drawn]
    pool = task.limits.get("candidates")
    if pool is None or pool - len(queries) >= len(extra):
        return extra
    return [extra[i] for i in sorted(random.Random(0).sample(range(len(extra)), pool - len(queries)))]


def centered_on(query_mean: torch.Tensor, target_mean: torch.Tensor):
    """Cosine after subtracting fixed mean vectors (taken from other data than the sets scored)."""
    return lambda queries, targets: cosine(torch.nn.functional.normalize(queries - query_mean, dim=-1),
                                           torch.nn.functional.normalize(targets - target_mean, dim=-1))


def mine(encoder, tokenizer, task: TaskSpec, langs: list[str], layer: int, max_length: int,
         batch_size: int, precision: str, english=None) -> tuple[dict, dict]:
    """BUCC F1 per language: margin-mined pairs over the dev-tuned threshold (see the module docstring). With
    ``english`` (the untuned backbone's ``embed``), also the F1 with the English side embedded by it
    (``BACKBONE_ENGLISH``), its own threshold tuned on dev the same way."""
    encode = _encoder(encoder, tokenizer, layer, max_length, batch_size, precision)
    scores, predictions = {}, {}
    for lang in tqdm(langs, desc=f"{task.name} layer {layer}", unit="lang"):
        mined, gold, threshold = _mine_split(task, lang, encode, encode)
        predictions[lang] = pair_items(mined, gold)
        scores[lang] = score_rows(task.metric, predictions[lang], lang) | {"threshold": threshold,
                                                                           "gold_only_pool": True}
        if english is not None:
            query_side = pair_items(*_mine_split(task, lang, encode, english)[:2])
            scores[lang][task.metric + BACKBONE_ENGLISH] = next(iter(score_rows(task.metric, query_side, lang).values()))
    return scores, predictions


def _mine_split(task: TaskSpec, lang: str, encode, encode_english) -> tuple[list[str], list[str], float]:
    """The mined test pairs over the dev-tuned threshold, the gold pairs and the threshold."""
    threshold = bucc_threshold(*_mined("dev", task, lang, encode, encode_english))
    candidates, gold = _mined("test", task, lang, encode, encode_english)
    return [f"{src}\t{tgt}" for (src, tgt), score in candidates.items() if score >= threshold], gold, threshold


def pair_items(mined: list[str], gold: list[str]) -> list[dict]:
    """BUCC's prediction rows: one per gold pair (ref: the pair) with the mined pairs of its source
    sentence, then one per mined pair whose source has no gold pair, so the statistics resample gold
    pairs. The rows' lists together are the mined and the gold lines, which bucc_f1 scores as one set."""
    by_source: dict[str, list[str]] = {}
    for line in mined:
        by_source.setdefault(line.split("\t")[0], []).append(line)
    rows = [{"ref": line, "label": [line], "prediction": by_source.pop(line.split("\t")[0], [])} for line in gold]
    return rows + [{"ref": line, "label": [], "prediction": [line]} for lines in by_source.values() for line in lines]


def rank(encoder, tokenizer, task: TaskSpec, langs: list[str], layer: int, max_length: int,
         batch_size: int, precision: str, english=None) -> tuple[dict, dict]:
    """Top-20 candidate ids for each query; MRR@20 or mAP@20 per language (see the module docstring). Its pools
    are not one English side (LAReQA's hold 11 languages; Mewsli-X's are entity descriptions): ``english``
    is not used."""
    encode = _encoder(encoder, tokenizer, layer, max_length, batch_size, precision)
    pool = task.rows("candidates", langs[0])
    pool_vectors = encode([row["text"] for row in pool])
    scores, predictions = {}, {}
    for lang in tqdm(langs, desc=f"{task.name} layer {layer}", unit="lang"):
        rows = task.rows("test", lang)
        similarity = encode([row["query"] for row in rows]) @ pool_vectors.T
        top = similarity.topk(min(TOP_K, len(pool)), dim=-1).indices.tolist()
        predictions[lang] = [{"ref": row["id"], "label": row["gold"], "prediction": [pool[i]["id"] for i in ids]}
                             for row, ids in zip(rows, top)]
        scores[lang] = score_rows(task.metric, predictions[lang], lang)
    return scores, predictions


def cosine(queries: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Query-by-target cosine similarities of L2-normalised rows."""
    return queries @ targets.T


def csls(queries: torch.Tensor, targets: torch.Tensor, k: int = CSLS_K) -> torch.Tensor:
    """Cross-domain similarity local scaling: 2 cos(x, y) - r(x) - r(y) (see the module docstring)."""
    sim = cosine(queries, targets)
    return 2 * sim - _knn_mean(sim, k, 1)[:, None] - _knn_mean(sim, k, 0)[None, :]


def ratio_margin(queries: torch.Tensor, targets: torch.Tensor, k: int = MARGIN_K) -> torch.Tensor:
    """Ratio margin: cos(x, y) / ((r(x) + r(y)) / 2) (see the module docstring)."""
    sim = cosine(queries, targets)
    return sim / ((_knn_mean(sim, k, 1)[:, None] + _knn_mean(sim, k, 0)[None, :]) / 2)


def centered(score):
    """``score`` of each side's vectors minus that side's mean, renormalised (see the module docstring)."""
    return lambda queries, targets: score(*(torch.nn.functional.normalize(x - x.mean(0), dim=-1)
                                            for x in (queries, targets)))


SCORINGS = {"cosine": cosine, "centered": centered(cosine), "csls": csls, "margin": ratio_margin,
            "centered-csls": centered(csls), "centered-margin": centered(ratio_margin)}


def scoring(name: str):
    """The function of SCORINGS called ``name``: (queries, targets) -> query-by-target scores."""
    if name not in SCORINGS:
        raise UserError(f"unknown retrieval scoring {name!r}; allowed: {', '.join(SCORINGS)}")
    return SCORINGS[name]


EVALUATORS = {"retrieval": retrieve, "mining": mine, "ranking": rank}


def margin_candidates(x: torch.Tensor, y: torch.Tensor, k: int = MARGIN_K) -> dict[tuple[int, int], float]:
    """xtreme's ``mine_bitext`` (mine, max, ratio): {(source index, target index): margin score}."""
    fwd_sim, fwd_ind = _knn(x, y, min(k, len(y)))
    bwd_sim, bwd_ind = _knn(y, x, min(k, len(x)))
    fwd_mean, bwd_mean = fwd_sim.mean(1), bwd_sim.mean(1)
    fwd_scores = fwd_sim / ((fwd_mean[:, None] + bwd_mean[fwd_ind]) / 2)
    bwd_scores = bwd_sim / ((bwd_mean[:, None] + fwd_mean[bwd_ind]) / 2)
    fwd_best = fwd_ind.gather(1, fwd_scores.argmax(1, keepdim=True)).squeeze(1)
    bwd_best = bwd_ind.gather(1, bwd_scores.argmax(1, keepdim=True)).squeeze(1)
    pairs = list(zip(range(len(x)), fwd_best.tolist())) + list(zip(bwd_best.tolist(), range(len(y))))
    values = torch.cat([fwd_scores.max(1).values, bwd_scores.max(1).values]).tolist()
    chosen, seen_src, seen_tgt = {}, set(), set()
    for index in sorted(range(len(pairs)), key=lambda i: -values[i]):
        src, tgt = pairs[index]
        if src not in seen_src and tgt not in seen_tgt:
            seen_src.add(src)
            seen_tgt.add(tgt)
            if values[index] > 0:
                chosen[(src, tgt)] = values[index]
    return chosen


def bucc_threshold(candidates: dict[tuple[str, str], float], gold: list[str]) -> float:
    """xtreme's ``bucc_optimize``: the midpoint below the score that gives the best F1 on ``gold``."""
    items = sorted(candidates.items(), key=lambda item: -item[1])
    gold_set, correct, threshold, best_f1 = set(gold), 0, 0.0, 0.0
    for extracted, ((src, tgt), score) in enumerate(items, 1):
        correct += f"{src}\t{tgt}" in gold_set
        if correct:
            precision, recall = correct / extracted, correct / len(gold_set)
            f1 = 2 * precision * recall / (precision + recall)
            if f1 > best_f1:
                following = items[extracted][1] if extracted < len(items) else score
                best_f1, threshold = f1, (score + following) / 2
    return threshold


def _mined(split: str, task: TaskSpec, lang: str, encode, encode_english) -> tuple[dict[tuple[str, str], float],
                                                                                  list[str]]:
    """{(source id, target id): score} of one split (the English target side by ``encode_english``), and its
    gold "src<TAB>tgt" lines."""
    rows = task.rows(split, lang)
    sides = [_unique_ids([(row[f"{side}_id"], row[side]) for row in rows]) for side in ("source", "target")]
    texts = [list(dict.fromkeys(row[side] for row in rows)) for side in ("source", "target")]
    scored = margin_candidates(encode(texts[0]), encode_english(texts[1]))
    candidates = {}
    for (i, j), score in scored.items():
        src, tgt = sides[0].get(texts[0][i]), sides[1].get(texts[1][j])
        if src is not None and tgt is not None:
            candidates[(src, tgt)] = max(score, candidates.get((src, tgt), score))
    return candidates, [f"{row['source_id']}\t{row['target_id']}" for row in rows]


def _unique_ids(pairs: list[tuple[str, str]]) -> dict[str, str]:
    """text -> id, leaving out texts that occur under more than one id (xtreme's ``read_sent2id``)."""
    ids: dict[str, set] = {}
    for key, text in pairs:
        ids.setdefault(text, set()).add(key)
    return {text: next(iter(keys)) for text, keys in ids.items() if len(keys) == 1}


def _knn(x: torch.Tensor, y: torch.Tensor, k: int, chunk: int = 4096) -> tuple[torch.Tensor, torch.Tensor]:
    """The k largest cosine similarities of each row of x among the rows of y, in chunks of x."""
    parts = [(x[start:start + chunk] @ y.T).topk(k, dim=1) for start in range(0, len(x), chunk)]
    return torch.cat([p.values for p in parts]), torch.cat([p.indices for p in parts])


def _knn_mean(sim: torch.Tensor, k: int, dim: int) -> torch.Tensor:
    """The mean of the k largest similarities along ``dim`` (each query's or each target's neighbourhood)."""
    return sim.topk(min(k, sim.shape[dim]), dim=dim).values.mean(dim)


def _encoder(encoder, tokenizer, layer, max_length, batch_size, precision):
    return lambda texts: embed(encoder, tokenizer, texts, layer, max_length, batch_size, precision)


def texts_once(encode, vectors: dict[str, torch.Tensor]):
    """``encode`` that embeds only the texts ``vectors`` lacks, in one call, and keeps their vectors there."""
    def encode_once(texts: list[str]) -> torch.Tensor:
        new = [text for text in dict.fromkeys(texts) if text not in vectors]
        if new:
            vectors.update(zip(new, encode(new)))
        return torch.stack([vectors[text] for text in texts])
    return encode_once
