"""The report's figures (matplotlib, no display needed): the intermediate x target gain heatmap of a
regime, a contrast's per-language bars, and the cost-score Pareto plot."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import NullFormatter


def gain_heatmap(path: Path, regime: str, arms: list[str], targets: list[str], gains: dict, seeds: int) -> Path:
    """``gains[(arm, target)]``: the mean zero-shot gain over the regime's baseline (missing: blank)."""
    values = np.array([[gains.get((arm, target), np.nan) for target in targets] for arm in arms], dtype=float)
    limit = np.nanmax(np.abs(values)) if np.isfinite(values).any() else 1.0
    label_inches = 0.07 * max(map(len, arms))  # arm names sit left of the cells
    figure = Figure(figsize=(2.5 + label_inches + 1.3 * len(targets), 1.4 + 0.45 * len(arms)), layout="constrained")
    axes = figure.subplots()
    image = axes.imshow(values, cmap="RdBu", vmin=-limit or -1, vmax=limit or 1, aspect="auto")
    axes.set_xticks(range(len(targets)), targets, rotation=30, ha="right")
    axes.set_yticks(range(len(arms)), arms)
    for (row, column), value in np.ndenumerate(values):
        if np.isfinite(value):
            axes.text(column, row, f"{value:+.3f}", ha="center", va="center", fontsize=8)
    axes.set_title(f"{regime}: zero-shot gain over baseline (mean of {seeds} seed{'s' * (seeds > 1)})", fontsize=9)
    figure.colorbar(image, ax=axes, shrink=0.8)
    figure.savefig(path, dpi=120)
    return path


def language_bars(path: Path, title: str, langs: list[str], means: list[float], sds: list[float | None]) -> Path:
    """A contrast's difference per language: mean over seeds, with the seeds' sd as error bars."""
    figure = Figure(figsize=(1.5 + 0.45 * len(langs), 3.2), layout="constrained")
    axes = figure.subplots()
    errors = [sd or 0.0 for sd in sds] if any(sd is not None for sd in sds) else None
    axes.bar(range(len(langs)), means, yerr=errors, color=["#2166ac" if m >= 0 else "#b2182b" for m in means],
             capsize=2)
    axes.axhline(0, color="black", linewidth=0.8)
    axes.set_xticks(range(len(langs)), langs, rotation=90)
    axes.set_title(title, fontsize=9)
    figure.savefig(path, dpi=120)
    return path


def pareto(path: Path, panels: dict[str, list[dict]]) -> Path:
    """One row per target: trainable parameters and train seconds against the zero-shot average.

    ``panels[target]``: points {label, parameters, seconds, score}; the line joins the Pareto front
    (no other point is cheaper and better)."""
    figure = Figure(figsize=(10, 3.6 * len(panels)), layout="constrained")
    grid = figure.subplots(len(panels), 2, squeeze=False)
    for row, (target, points) in enumerate(panels.items()):
        for axes, cost, name in zip(grid[row], ("parameters", "seconds"), ("trainable parameters", "train seconds")):
            shown = [p for p in points if p[cost]]
            # one call, each point in its own colour of the cycle (as one call a point draws, but faster)
            axes.scatter([p[cost] for p in shown], [p["score"] for p in shown], s=18,
                         c=[f"C{index % 10}" for index in range(len(shown))])
            for point in shown:
                axes.annotate(point["label"], (point[cost], point["score"]), fontsize=6, xytext=(3, 2),
                              textcoords="offset points")
            front = _front([(p[cost], p["score"]) for p in shown])
            if front:
                axes.step(*zip(*front), where="post", color="grey", linewidth=0.8)
            axes.set_xscale("log")
            axes.xaxis.set_minor_formatter(NullFormatter())  # labelled minor ticks overlap on short ranges
            axes.set_xlabel(f"{name} (log)" + (" of the whole lineage" if cost == "seconds" else ""))
            axes.set_ylabel(f"{target}: zero-shot average")
    figure.savefig(path, dpi=120)
    return path


def _front(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    front, best = [], -np.inf
    for cost, score in sorted(points):
        if score > best:
            front.append((cost, score))
            best = score
    return front
