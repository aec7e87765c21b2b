"""The report's figures: titles that fit, labelled axes, intervals, the baseline, a colour scale centred on 0."""

import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.container import ErrorbarContainer

from adapterxfer.study import plots

LANGS = ["ar", "sw", "zh", "fa", "ko", "tr"]
MEANS = [-0.01, -0.03, -0.02, -0.015, -0.025, -0.005]
INTERVALS = [(-0.03, 0.01), (-0.05, -0.01), (-0.04, 0.0), (-0.03, 0.0), (-0.05, 0.0), (-0.02, 0.01)]
POINTS = [{"label": "backbone", "parameters": None, "seconds": None, "score": 0.793},
          {"label": "lora/verses-xref-bi", "parameters": 147456, "seconds": 26, "score": 0.828},
          {"label": "full/verses-xref-bi-multi", "parameters": 7100000, "seconds": 31, "score": 0.797},
          {"label": "bottleneck/verses-xref-bi-multi", "parameters": 300000, "seconds": 17, "score": 0.765}]


def drawn(figure):
    canvas = FigureCanvasAgg(figure)
    canvas.draw()
    return canvas.get_renderer()


def inside(figure, artist, renderer) -> bool:
    box = artist.get_window_extent(renderer)
    return 0 <= box.x0 and box.x1 <= figure.bbox.width and 0 <= box.y0 and box.y1 <= figure.bbox.height


def test_a_contrasts_bars_carry_each_languages_interval_the_average_and_a_title_that_fits():
    title = ("multilingual-intermediate: lora/verses-xref-bi-multi minus lora/verses-xref-bi, verses-retrieval, "
             "6 seeds")
    figure = plots.bars_figure(title, LANGS, MEANS, INTERVALS, (-0.018, -0.031, -0.005), "difference in accuracy@1")
    [axes] = figure.axes
    renderer = drawn(figure)
    assert inside(figure, axes.title, renderer) and axes.title.get_text().replace("\n", " ") == title
    assert axes.get_ylabel() == "difference in accuracy@1" and axes.get_xlabel() == "zero-shot language"
    [errors] = [container for container in axes.containers if isinstance(container, ErrorbarContainer)]
    whiskers = errors.lines[2][0].get_segments()
    assert [bound for segment in whiskers for bound in (segment[0][1], segment[1][1])] == pytest.approx(
        [bound for interval in INTERVALS for bound in interval])
    assert [label.get_text() for label in axes.get_xticklabels()] == LANGS
    assert axes.get_legend().get_texts()[0].get_text() == "zero-shot average -0.018 [-0.031, -0.005]"


@pytest.mark.parametrize("gains, limit", [({("xref", "genre"): -0.007, ("next", "genre"): 0.004}, 0.1),
                                          ({("xref", "genre"): -0.3, ("next", "genre"): 0.2}, 0.3)])
def test_the_gain_heatmaps_colour_scale_is_centred_on_0_and_at_least_five_effects_wide(gains, limit):
    figure = plots.gain_figure("lora", ["xref", "next"], ["genre"], gains, 3, effect=0.02)
    axes = figure.axes[0]
    assert axes.images[0].get_clim() == pytest.approx((-limit, limit))
    assert (axes.get_xlabel(), axes.get_ylabel()) == ("target", "intermediate")
    assert inside(figure, axes.title, drawn(figure))


def test_the_pareto_plot_shows_the_untrained_baseline_and_labels_its_log_axes():
    figure = plots.pareto_figure({"verses-retrieval": POINTS})
    parameters, seconds = figure.axes[:2]
    drawn(figure)
    for axes in (parameters, seconds):
        assert [tuple(line.get_ydata()) for line in axes.lines if line.get_linestyle() == "--"] == [(0.793, 0.793)]
        assert axes.get_xlabel() and axes.get_ylabel() == "zero-shot average"
    assert [label.get_text() for label in parameters.get_xticklabels()] == ["100k", "200k", "500k", "1M", "2M", "5M",
                                                                          "10M"]
    assert [label.get_text() for label in seconds.get_xticklabels()] == ["10", "20", "50"]
    assert [text.get_text() for text in seconds.get_legend().get_texts()] == [
        "backbone (no train seconds)", "lora/verses-xref-bi", "full/verses-xref-bi-multi",
        "bottleneck/verses-xref-bi-multi"]
