"""Which training-free retrieval scoring suits verses-retrieval? Chosen on dev, then reported on test.

Every non-English translation retrieves its English verse (the default English translation) among
300, as in verses-retrieval, with each scoring of adapterxfer.retrieval.SCORINGS. Dev sets are the
same kind of pairs drawn from the dev chapters (genre_rows: the same seeded refs in every language,
limit 300, seed 0); test sets are the task's own rows. Embeddings (``embed``, layer -1, the task's
max_length) are cached in --cache, so rescoring is cheap. The scoring with the best mean dev
accuracy@1 (ties: the best min) is then scored on test, next to cosine.

    .venv/bin/python scripts/retrieval_scoring_study.py [--backbone me5-small]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from transformers import AutoTokenizer

from adapterxfer import backbones
from adapterxfer.data import verses as corpus
from adapterxfer.modeling import encoder_model
from adapterxfer.retrieval import SCORINGS, embed
from adapterxfer.tasks import get_task

TASK = get_task("verses-retrieval")
ENGLISH = corpus.DEFAULT_TRANSLATION["en"]
TRANSLATIONS = [t for t in corpus.TRANSLATIONS if t != ENGLISH]
LIMIT = 300


def pairs(split: str, translation: str) -> tuple[list[str], list[str]]:
    """(queries, English targets) of one split: the task's test rows, or dev rows of the same kind."""
    if split == "test":
        rows = TASK.rows("test", translation)
        return [r["query"] for r in rows], [r["target"] for r in rows]
    queries, targets = (corpus.genre_rows(split, lang, LIMIT, 0) for lang in (translation, ENGLISH))
    assert [r["ref"] for r in queries] == [r["ref"] for r in targets]
    return [r["text"] for r in queries], [r["text"] for r in targets]


def embeddings(split: str, backbone: str, cache: Path) -> dict[str, torch.Tensor]:
    """{translation: query vectors, "target": English vectors} of one split, cached as npz."""
    path = cache / f"{backbone}-{split}.npz"
    if not path.exists():
        folder = backbones.resolve(backbone).path
        tokenizer, encoder = AutoTokenizer.from_pretrained(folder), encoder_model(folder)
        encode = lambda texts: embed(encoder, tokenizer, texts, -1, TASK.max_length, 32, "fp32").numpy()
        vectors = {t: encode(pairs(split, t)[0]) for t in TRANSLATIONS}
        vectors["target"] = encode(pairs(split, TRANSLATIONS[0])[1])
        cache.mkdir(parents=True, exist_ok=True)
        np.savez(path, **vectors)
    return {key: torch.from_numpy(value) for key, value in np.load(path).items()}


def accuracies(vectors: dict[str, torch.Tensor], names: list[str]) -> dict[str, dict[str, float]]:
    """{scoring: {translation: accuracy@1}}."""
    gold = torch.arange(len(vectors["target"]))
    return {name: {t: (SCORINGS[name](vectors[t], vectors["target"]).argmax(-1) == gold).float().mean().item()
                   for t in TRANSLATIONS} for name in names}


def table(split: str, acc: dict[str, dict[str, float]]) -> None:
    names = list(acc)
    print(f"\n{split} accuracy@1\n{'translation':12}" + "".join(f"{n:>16}" for n in names))
    for t in TRANSLATIONS:
        print(f"{t:12}" + "".join(f"{acc[n][t]:16.3f}" for n in names))
    for label, reduce in (("mean", np.mean), ("min", np.min)):
        print(f"{label:12}" + "".join(f"{reduce(list(acc[n].values())):16.3f}" for n in names))
    print(f"{'>= 0.7':12}" + "".join(f"{sum(v >= 0.7 for v in acc[n].values()):16d}" for n in names))
    for n in names:
        weakest = sorted(acc[n].items(), key=lambda item: item[1])[:3]
        print(f"weakest {n}: " + ", ".join(f"{t} {v:.3f}" for t, v in weakest))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backbone", default="me5-small")
    parser.add_argument("--cache", type=Path, default=Path("/tmp/retrieval_scoring_study"))
    args = parser.parse_args()
    dev = accuracies(embeddings("dev", args.backbone, args.cache), list(SCORINGS))
    table("dev", dev)
    chosen = max(dev, key=lambda n: (np.mean(list(dev[n].values())), min(dev[n].values())))
    print(f"\nchosen on dev: {chosen}")
    test = accuracies(embeddings("test", args.backbone, args.cache), list(dict.fromkeys(["cosine", chosen])))
    table("test", test)
    print(f"RESULT verses_retrieval_min_test_{chosen} {min(test[chosen].values()):.4f}")


if __name__ == "__main__":
    main()
