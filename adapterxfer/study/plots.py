"""The report's figures (matplotlib, no display needed): the intermediate x target gain heatmap of a
regime, a contrast's per-language bars with their intervals, and the cost-score Pareto plot with the
baseline."""

from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import NullFormatter

# The smallest half-range of the gain heatmap's colour scale, in units of the plan's effect of interest: a
# gain well below the effect stays pale, not saturated.
SCALE_IN_EFFECTS = 5
LEGEND_ROWS = 20  # entries in a column of the Pareto plot's legend


def gain_heatmap(path: Path, regime: str, arms: list[str], targets: list[str], gains: dict, seeds: int,
                 effect: float = 0.01) -> Path:
    return _saved(gain_figure(regime, arms, targets, gains, seeds, effect), path)


def gain_figure(regime: str, arms: list[str], targets: list[str], gains: dict, seeds: int, effect: float) -> Figure:
    """``gains[(arm, target)]``: the mean zero-shot gain over the regime's baseline (missing: blank), on a
    colour scale centred on 0 and symmetric, at least ``SCALE_IN_EFFECTS`` effects of interest each way."""
    values = np.array([[gains.get((arm, target), np.nan) for target in targets] for arm in arms], dtype=float)
    limit = max(np.nanmax(np.abs(values)) if np.isfinite(values).any() else 0.0, SCALE_IN_EFFECTS * effect)
    label_inches = 0.075 * max(map(len, arms))  # arm names sit left of the cells
    figure = Figure(figsize=(3.2 + label_inches + 1.4 * len(targets), 1.6 + 0.45 * len(arms)), layout="constrained")
    axes = figure.subplots()
    image = axes.imshow(values, cmap="RdBu", vmin=-limit, vmax=limit, aspect="auto")
    axes.set_xticks(range(len(targets)), targets, rotation=20, ha="right")
    axes.set_yticks(range(len(arms)), arms)
    axes.set_xlabel("target")
    axes.set_ylabel("intermediate")
    for (row, column), value in np.ndenumerate(values):
        if np.isfinite(value):
            axes.text(column, row, f"{value:+.3f}", ha="center", va="center", fontsize=8)
    _title(axes, f"{regime}: zero-shot gain over the {regime} baseline, mean of {seeds} seed{'s' * (seeds > 1)}",
           figure)
    figure.colorbar(image, ax=axes, shrink=0.8, label="gain (headline metric)")
    return figure


def language_bars(path: Path, title: str, langs: list[str], means: list[float],
                  intervals: list[tuple[float, float] | None], overall: tuple[float, float, float] | None = None,
                  ylabel: str = "difference") -> Path:
    return _saved(bars_figure(title, langs, means, intervals, overall, ylabel), path)


def bars_figure(title: str, langs: list[str], means: list[float], intervals: list[tuple[float, float] | None],
                overall: tuple[float, float, float] | None, ylabel: str) -> Figure:
    """A contrast's difference per language (the mean over seeds) with its 95% interval, and the
    zero-shot average's ``overall`` (mean, low, high) as a dashed line over a shaded band."""
    figure = Figure(figsize=(max(4.5, 1.6 + 0.5 * len(langs)), 3.6), layout="constrained")
    axes = figure.subplots()
    below = [mean - interval[0] if interval else 0.0 for mean, interval in zip(means, intervals)]
    above = [interval[1] - mean if interval else 0.0 for mean, interval in zip(means, intervals)]
    axes.bar(range(len(langs)), means, yerr=[below, above] if any(intervals) else None, capsize=3,
             color=["#2166ac" if m >= 0 else "#b2182b" for m in means])
    axes.axhline(0, color="black", linewidth=0.8)
    if overall:
        mean, low, high = overall
        axes.axhspan(low, high, color="grey", alpha=0.15, linewidth=0)
        axes.axhline(mean, color="grey", linestyle="--", linewidth=1,
                     label=f"zero-shot average {mean:+.3f} [{low:+.3f}, {high:+.3f}]")
        axes.legend(fontsize=7, loc="best")
    axes.set_xticks(range(len(langs)), langs, rotation=90 if len(langs) > 12 else 0)
    axes.set_xlabel("zero-shot language")
    axes.set_ylabel(ylabel)
    _title(axes, title, figure)
    return figure


def pareto(path: Path, panels: dict[str, list[dict]]) -> Path:
    return _saved(pareto_figure(panels), path)


def pareto_figure(panels: dict[str, list[dict]]) -> Figure:
    """One row per target: trainable parameters and train seconds against the zero-shot average.

    ``panels[target]``: points {label, parameters, seconds, score}; the line joins the Pareto front
    (no other point is cheaper and better). A point that cost nothing (the untuned backbone, a baseline
    evaluated only) is a dashed horizontal line: a log axis has no 0. Points are told apart by colour,
    named in the legend."""
    # the legend (one entry a point, right of each row) gets room by its longest label and its entries
    entries = max(len(points) for points in panels.values())
    columns = -(-entries // LEGEND_ROWS)
    legend_inches = columns * (0.6 + 0.055 * max(len(p["label"]) + 17 for points in panels.values() for p in points))
    figure = Figure(figsize=(10 + legend_inches, 1.2 + max(3.4, 0.16 * min(entries, LEGEND_ROWS)) * len(panels)),
                    layout="constrained")
    grid = figure.subplots(len(panels), 2, squeeze=False)
    for row, (target, points) in enumerate(panels.items()):
        # ten colours, then the next marker: every point its own look in the legend
        looks = {point["label"]: (f"C{index % 10}", "os^vD"[index // 10 % 5]) for index, point in enumerate(points)}
        for axes, cost, name in zip(grid[row], ("parameters", "seconds"), ("trainable parameters", "train seconds")):
            for point in points:
                if point[cost]:
                    colour, marker = looks[point["label"]]
                    axes.scatter(point[cost], point["score"], s=24, color=colour, marker=marker, label=point["label"],
                                 zorder=3)
                else:
                    axes.axhline(point["score"], color=looks[point["label"]][0], linestyle="--", linewidth=1,
                                 label=f"{point['label']} (no {name})")
            front = _front([(p[cost], p["score"]) for p in points if p[cost]])
            if front:
                axes.step(*zip(*front), where="post", color="grey", linewidth=0.8, zorder=2)
            axes.set_xscale("log")
            costs = [p[cost] for p in points if p[cost]]
            if costs:  # labelled ticks at 1, 2, 5 x 10^k, however short the range
                axes.set_xticks(_log_ticks(min(costs), max(costs)), map(_compact, _log_ticks(min(costs), max(costs))))
                axes.xaxis.set_minor_formatter(NullFormatter())
            axes.set_xlabel(f"{name} (log scale)" + (", whole lineage" if cost == "seconds" else ""))
            axes.set_ylabel("zero-shot average")
            axes.set_title(target, fontsize=9)
        grid[row][1].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0, ncols=columns)
    return figure


def _saved(figure: Figure, path: Path) -> Path:
    figure.savefig(path, dpi=120)
    return path


def _log_ticks(low: float, high: float) -> list[float]:
    """1, 2 and 5 x 10^k from below ``low`` to above ``high``: at least two, so the axis is readable."""
    ticks = [m * 10.0 ** k for k in range(int(np.floor(np.log10(low))) - 1, int(np.ceil(np.log10(high))) + 1)
             for m in (1, 2, 5)]
    inside = [t for t in ticks if low <= t <= high]
    below = [t for t in ticks if t < low][-1:]
    above = [t for t in ticks if t > high][:1]
    return below + inside + above


def _compact(value: float) -> str:
    """200000 -> 200k, 7100000 -> 7.1M, 20 -> 20."""
    for unit, size in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if value >= size:
            return f"{value / size:g}{unit}"
    return f"{value:g}"


def _title(axes, title: str, figure: Figure) -> None:
    """A title wrapped to the figure's width (about 100 characters a 6 inches at 9 points)."""
    width = int(figure.get_figwidth() * 15)
    axes.set_title("\n".join(textwrap.wrap(title, width=max(30, width))), fontsize=9)


def _front(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    front, best = [], -np.inf
    for cost, score in sorted(points):
        if score > best:
            front.append((cost, score))
            best = score
    return front
