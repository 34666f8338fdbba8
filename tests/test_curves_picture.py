"""The exported faithfulness curves picture (issue 24, item 7, for files as well as for the window): every
method's legend entry sits below its panel, never over the curves, no title is cut, and an undefined area says
why. matplotlib's own geometry is the oracle (window extents after a draw)."""
from __future__ import annotations

import numpy as np

from famegui.core.plots import curves_figure, curves_mpl_figure
from famegui.evaluation.curves import Curve

METHODS = ["fame", "gradcam", "corrrise", "fggb", "integrated_gradients", "occlusion", "random"]


def curves() -> list[Curve]:
    fr = list(np.linspace(0, 1, 11))
    out = []
    for target in ("e+", "e-"):
        for mode in ("deletion", "insertion"):
            for k, m in enumerate(METHODS):
                empty = {"undefined": "the map is constant: it ranks no pixel"} if (m, target) == ("gradcam", "e-") \
                    else {}
                scores = list(np.linspace(1, 0, 11) ** (k + 1)) if mode == "deletion" else list(np.linspace(0, 1, 11))
                out.append(Curve(mode, fr, scores, "cosine", m, {"target": target, **empty}))
    return out


def test_legends_sit_below_the_curves_and_titles_are_whole():
    fig = curves_mpl_figure(curves())
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    page = fig.bbox
    axes = fig.get_axes()
    assert len(axes) == 4
    for ax in axes:
        legend = ax.get_legend()
        texts = [t.get_text() for t in legend.get_texts()]
        assert len(texts) == len(METHODS)  # every method in the legend, none hidden
        box, plot = legend.get_window_extent(renderer), ax.get_window_extent(renderer)
        assert box.y1 <= plot.y0 and not box.overlaps(plot)  # below the plot area
        for artist in (legend, ax.title, ax.xaxis.label, ax.yaxis.label):
            e = artist.get_window_extent(renderer)
            assert page.x0 <= e.x0 and e.x1 <= page.x1 and page.y0 <= e.y0 and e.y1 <= page.y1, artist
        for other in axes:  # a legend covers no other panel either
            assert not box.overlaps(other.get_window_extent(renderer))
        assert "is better" in ax.get_title()
    e_minus = [t.get_text() for ax in axes if "e-" in ax.get_title() for t in ax.get_legend().get_texts()]
    assert "gradcam (n/a: empty map)" in e_minus and not any("nan" in t for t in e_minus)
    rgb = curves_figure(curves())
    assert rgb.dtype == np.uint8 and rgb.shape[2] == 3 and rgb.shape[0] > 600
