"""How many test verses does each verses task's max_length cut, per language? (me5-small's tokenizer)

Prints every language's rate at the task's default max_length and at 48, and the shortest multiple of
16 that cuts at most --budget of the rows in every language: test rows where the task has a test
split, else dev rows, in every language the task is tested or trained in. Tokenizing only; no model runs.

    PYTHONPATH=. .venv/bin/python scripts/verses_truncation.py [--backbone me5-small] [--budget 0.03]
"""

from __future__ import annotations

import argparse

from transformers import AutoTokenizer

from adapterxfer import backbones
from adapterxfer.data.features import truncation_rates
from adapterxfer.tasks import get_task

TASKS = ("verses-genre", "verses-retrieval", "verses-xref", "verses-xref-multi", "verses-xref-bi", "verses-xref-bi-multi",
         "verses-next", "verses-mlm", "verses-text", "verses-book", "verses-testament", "verses-order",
         "verses-paraphrase", "verses-paraphrase-x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="me5-small")
    parser.add_argument("--budget", type=float, default=0.03)
    args = parser.parse_args()
    tokenizer = AutoTokenizer.from_pretrained(backbones.resolve(args.backbone).path)
    for name in TASKS:
        task = get_task(name)
        split = "test" if "test" in task.limits else "dev"
        # Targets and verses-text: every test language; other intermediate tasks: the languages they train on.
        langs = list(task.languages) if len(task.languages) > 1 else list(task.seen_languages)
        shortest = next(length for length in range(16, 513, 16)
                        if max(truncation_rates(task, tokenizer, length, langs, split).values()) <= args.budget)
        for lang, rate in truncation_rates(task, tokenizer, task.max_length, langs, split).items():
            print(f"RESULT truncation_{name}_{lang}_at_{task.max_length} {rate:.3f}")
        worst = truncation_rates(task, tokenizer, shortest, langs, split)
        print(f"RESULT shortest_max_length_{name} {shortest}  (worst {max(worst, key=worst.get)} "
              f"{max(worst.values()):.3f})")
        for lang, rate in truncation_rates(task, tokenizer, 48, langs, split).items():
            print(f"RESULT truncation_{name}_{lang}_at_48 {rate:.3f}")


if __name__ == "__main__":
    main()
