"""results.json rows -> a Markdown report: one per-language table per task, with averages."""

from __future__ import annotations

from pathlib import Path


def column_name(row: dict) -> str:
    """A run's label; a run whose intermediate task saw the target's own data is marked."""
    if row["regime"] in ("majority", "backbone"):
        return row["regime"]
    name = f"{row['regime']}" + (f" +{row['intermediate']}" if row["intermediate"] else " baseline")
    name += f" [{row['variant']}]" if row.get("variant") else ""
    return name + (" (not zero-shot)" if row.get("zero_shot") is False else "")


def task_table(results: list[dict], task: str) -> str:
    rows = [r for r in results if r["task"] == task]
    if not rows:
        return ""
    columns = list(dict.fromkeys(column_name(r) for r in rows))
    langs = list(dict.fromkeys(r["lang"] for r in rows))
    cell = {(r["lang"], column_name(r)): r["value"] for r in rows}
    metric = rows[0]["metric"]
    lines = [f"### {task} ({metric})", "", "| lang | " + " | ".join(columns) + " |",
             "|---|" + "---:|" * len(columns)]
    for lang in langs:
        lines.append(f"| {lang} | " + " | ".join(_fmt(cell.get((lang, c))) for c in columns) + " |")
    for label, keep in (("avg non-en", lambda lang: not lang.startswith("en")), ("avg all", lambda lang: True)):
        means = [_mean([cell[(lang, c)] for lang in langs if keep(lang) and (lang, c) in cell]) for c in columns]
        lines.append(f"| **{label}** | " + " | ".join(_fmt(m) for m in means) + " |")
    return "\n".join(lines) + "\n"


RUN_FIELDS = (  # (label, the row's cell); the cell is empty where the row lacks the figure
    ("trainable params", "{trainable_parameters:,}"), ("artifact MB", "{artifact_mb:.1f}"),
    ("train s", "{train_seconds:.0f}"), ("peak RSS MB", "{peak_rss_mb:.0f}"), ("English dev", "{english_dev:.3f}"),
    ("zero-shot avg (non-en)", "{zero_shot_avg:.3f}"),
    ("gain over baseline [95% CI]",
     "{zero_shot_gain:+.3f} [{zero_shot_gain_ci95[0]:+.3f}, {zero_shot_gain_ci95[1]:+.3f}]"),
)


def run_table(results: list[dict], task: str) -> str:
    """One line per trained target model: what it cost and how it did (target phase only)."""
    runs = {column_name(r): r for r in results if r["task"] == task and "english_dev" in r}
    if not runs:
        return ""
    lines = [f"### {task}: runs (same data, seeds, steps and evaluation)", "",
             "| run | " + " | ".join(label for label, _ in RUN_FIELDS) + " |",
             "|---|" + "---:|" * len(RUN_FIELDS)]
    for name, row in runs.items():
        lines.append(f"| {name} | " + " | ".join(_cell(template, row) for _, template in RUN_FIELDS) + " |")
    return "\n".join(lines) + "\n"


def _cell(template: str, row: dict) -> str:
    try:
        return template.format(**row)
    except (KeyError, TypeError):  # a figure the row lacks (None, or a baseline's gain)
        return ""


def comparison_table(comparisons: list[dict]) -> str:
    """Paired zero-shot differences between two runs of one regime (the research question)."""
    rows = [c for c in comparisons if "zero_shot_gain" in c]
    if not rows:
        return ""
    lines = ["### Comparisons (zero-shot avg, non-en; paired bootstrap over test verses)", "",
             "| regime | run | versus | difference [95% CI] |", "|---|---|---|---:|"]
    for row in rows:
        low, high = row["zero_shot_gain_ci95"]
        lines.append(f"| {row['regime']} | {row['run'] or 'baseline'} | {row['versus'] or 'baseline'} | "
                     f"{row['zero_shot_gain']:+.3f} [{low:+.3f}, {high:+.3f}] |")
    return "\n".join(lines) + "\n"


def write_report(path: Path, results: list[dict], *tasks: str, title: str, note: str = "",
                 comparisons: list[dict] = ()) -> str:
    tables = [run_table(results, tasks[0]), comparison_table(list(comparisons))] + [task_table(results, task)
                                                                                    for task in tasks]
    body = "\n".join(table for table in tables if table)
    text = f"# {title}\n\n{note}\n\n{body}"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return text


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def _fmt(value: float | None) -> str:
    return "" if value is None else f"{value:.3f}"
