"""What a task is: data-only, no model or regime knowledge."""

from __future__ import annotations

import random
from dataclasses import dataclass, field, replace
from typing import Callable

from ..errors import UserError
from ..shares import Share, item_key

# A reader returns rows in its kind's schema (see adapterxfer/kinds/) for one split and language.
Reader = Callable[[str, str, int | None, int], list[dict]]  # (split, lang, limit, seed) -> rows


@dataclass(frozen=True)
class TaskSpec:
    name: str
    kind: str  # a key of adapterxfer.kinds.KINDS
    role: str  # "intermediate" | "target"
    description: str
    languages: tuple[str, ...]  # evaluation languages, source language first
    read: Reader
    metric: str  # key of adapterxfer.metrics.METRICS
    labels: tuple[str, ...] = ()
    train_lang: str = "en"
    # Per-split example caps; None means the whole split. Test caps keep evaluation affordable.
    limits: dict[str, int | None] = field(default_factory=dict)
    source: str = ""  # where the data comes from, for `adapterxfer tasks` and manifests
    resolve_lang: Callable[[str], str] = str  # "fr" -> "fr-o"; raises UserError for unknown names
    language_of: Callable[[str], str] = str  # the language of an evaluated id: "fr-o" -> "fr"
    max_length: int = 128  # the default sequence length (RunConfig.max_length overrides it)
    # Kind-specific settings passed to featurize/decode (QA: doc_stride, max_answer_length, n_best).
    options: dict = field(default_factory=dict)
    # Target tasks whose test languages this (intermediate) task trains on in translation, so a
    # target model built on it is not zero-shot there (xnli-translate-train -> "xnli"); reports mark them.
    contaminates: tuple[str, ...] = ()
    # Languages whose text the training split shows (seen at test time by a model built on it);
    # empty: the training language alone. verses-xref-multi: its 10 languages; xnli-translate-train: 15.
    train_langs: tuple[str, ...] = ()
    # Tasks the benchmark's recipe trains first, in order, each phase starting from the one before
    # (xcopa: siqa, as XTREME-R's scripts/train_xcopa.sh). A study expands them; ``missing_stages`` checks.
    stages: tuple[str, ...] = ()
    # At most this many rows of every split and language, a seeded sample (a smoke run); candidate pools whole.
    row_cap: int | None = None
    # (level, row field): test items sharing the field's value err together one level above the item (MLQA:
    # the article); the report resamples them so as well. Empty: the test data names no such unit.
    test_group: tuple[str, str] = ()
    # The share of the test items scored (adapterxfer/shares.py); None: all of them.
    share: Share | None = None

    @property
    def dev_metric(self) -> str:
        """The score whose best on the English dev set chooses the checkpoint kept (its metric's ``dev_metric``)."""
        from ..metrics import METRICS
        return METRICS[self.metric].dev_metric

    @property
    def trainable(self) -> bool:
        from ..kinds import KINDS
        return KINDS[self.kind].AUTO_MODEL is not None

    @property
    def seen_languages(self) -> tuple[str, ...]:
        """The languages a model trained on this task has seen text in (see ``train_langs``)."""
        return self.train_langs or (self.train_lang,)

    def missing_stages(self, lineage: list[str]) -> list[str]:
        """The stages (in order) absent from ``lineage``, the task names of the phases this one starts from."""
        return [stage for stage in self.stages if stage not in lineage]

    @property
    def source_lang(self) -> str:
        """The training language's id (verses: "en" -> its translation's id); as is where the task
        does not test it (XCOPA trains on English COPA)."""
        return self.resolve_lang(self.train_lang) if self.train_lang in self.languages else self.train_lang

    def rows(self, split: str, lang: str | None = None, seed: int = 0) -> list[dict]:
        """A split's rows in one language: a seeded sample of ``limits[split]`` (and ``row_cap``) of them,
        drawn from the task's ``share`` of the test items. Candidate pools come whole: a retrieval task with
        distractors draws them itself (``limits["candidates"]`` sizes that pool)."""
        lang = lang or self.train_lang
        limit = None if split == "candidates" else self.limits.get(split)
        if self.row_cap is not None and split != "candidates":
            limit = self.row_cap if limit is None else min(limit, self.row_cap)
        if self.share is None or not self._held(split):
            rows = self.read(split, lang, limit, seed)
        else:
            rows = [row for index, row in enumerate(self.read(split, lang, None, seed))
                    if self.share.keeps(item_key(row, lang, index))]
            if limit is not None and limit < len(rows):
                rows = [rows[i] for i in sorted(random.Random(seed).sample(range(len(rows)), limit))]
        if not rows:
            raise UserError(f"task {self.name}: no {split} rows for language {lang!r}"
                            + (f" in its {self.share.part} share" if self.share and self._held(split) else ""))
        return rows

    def _held(self, split: str) -> bool:
        """Whether the split's rows are test items a share divides: the test set, and a candidate pool made
        of test items (retrieval distractors)."""
        return split == "test" or (split == "candidates" and bool(self.options.get("distractors")))

    def held(self, share: Share | None) -> TaskSpec:
        """This task scoring only ``share`` of its test items (None: all of them)."""
        return self if share is None else replace(self, share=share)

    def sized(self, queries: int | str | None, candidates: int | str | None) -> TaskSpec:
        """This retrieval task scoring ``queries`` test rows per language against a pool of ``candidates``
        targets (the queries' own included), each a number or "all"; None keeps the task's own limit."""
        if (queries, candidates) == (None, None):
            return self
        if self.kind != "retrieval":
            raise UserError(f"queries and candidates size a retrieval task; {self.name} is {self.kind}")
        limits = dict(self.limits)
        for name, key, value in (("queries", "test", queries), ("candidates", "candidates", candidates)):
            if value is not None:
                if value != "all" and not (isinstance(value, int) and not isinstance(value, bool) and value > 0):
                    raise UserError(f"{name}: {value!r} must be a positive number or all")
                limits[key] = None if value == "all" else value
        if None not in (limits.get("test"), limits.get("candidates")) and limits["candidates"] < limits["test"]:
            raise UserError(f"candidates: {limits['candidates']} is below queries: {limits['test']}; the pool "
                            "holds every query's own target")
        return replace(self, limits=limits)

    def capped(self, rows: int | None) -> TaskSpec:
        """This task read at most ``rows`` rows per split and language (None: as it is)."""
        return self if rows is None else replace(self, row_cap=rows)

    def check_langs(self, langs: list[str]) -> list[str]:
        """Validate evaluation languages; an empty list means every language of the task."""
        for lang in langs:
            self.resolve_lang(lang)
        return list(langs) or list(self.languages)

