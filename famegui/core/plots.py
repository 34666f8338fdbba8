"""Pictures of curves without Qt (matplotlib's Agg canvas): for exports and the command line."""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

AXIS_LABELS = {"deletion": "% of pixels removed", "insertion": "% of pixels kept",
               "hiding": "% of pixels from the non-mate (least important first)"}


def curves_figure(curves: Sequence, width: float = 5.0, height: float = 3.6, dpi: int = 100) -> np.ndarray:
    """Deletion / insertion curves as an RGB uint8 image: one panel per (target, mode), each method's AUC in
    the legend below its panel (never over the curves; "n/a: empty map" where the area is undefined)."""
    fig = curves_mpl_figure(curves, width, height, dpi)
    fig.canvas.draw()
    return np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()


LEGEND_COLUMNS = 2  # methods per legend row below a panel
LEGEND_ROW = 0.2  # inches per legend row


def area_text(c) -> str:
    """The area of curve ``c`` as a legend shows it: the number (and the decision-flip share), or why there is
    none ("n/a: empty map" for a constant map, which ranks no pixel)."""
    flip = "" if "flip" not in c.extra else \
        ", flip never" if c.extra["flip"] is None else f", flip {100 * c.extra['flip']:.0f}%"
    if np.isfinite(c.auc):
        return f"{c.auc:.3f}{flip}"
    why = str(c.extra.get("undefined") or "no finite score")
    return "n/a: empty map" if "constant" in why else f"n/a: {why}"


def curves_mpl_figure(curves: Sequence, width: float = 5.0, height: float = 3.6, dpi: int = 100):
    """The matplotlib Figure :func:`curves_figure` draws (constrained layout, legends outside the axes)."""
    from matplotlib import colormaps
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    if not curves:
        raise ValueError("no curves to draw")
    panels: dict[tuple[str, str], list] = {}
    for c in curves:
        panels.setdefault((c.extra.get("target", ""), c.mode), []).append(c)
    targets = list(dict.fromkeys(t for t, _ in panels))
    modes = list(dict.fromkeys(m for _, m in panels))
    rows = max(-(-len(g) // LEGEND_COLUMNS) for g in panels.values())  # legend rows of the fullest panel
    fig = Figure(figsize=(width * len(modes), (height + LEGEND_ROW * rows) * len(targets)), dpi=dpi,
                 layout="constrained")
    FigureCanvasAgg(fig)
    names = list(dict.fromkeys(c.method for c in curves if c.method != "random"))
    palette = colormaps["tab10" if len(names) <= 10 else "tab20"]
    colour = {n: palette(i % palette.N) for i, n in enumerate(names)}  # one colour per method in every panel
    for (target, mode), group in panels.items():
        ax = fig.add_subplot(len(targets), len(modes), targets.index(target) * len(modes) + modes.index(mode) + 1)
        for c in group:
            style = dict(color="0.5", linestyle="--") if c.method == "random" else dict(color=colour[c.method])
            ax.plot(100 * np.asarray(c.fractions), c.scores, marker=".", label=f"{c.method} ({area_text(c)})",
                    **style)
        better = "lower" if mode == "deletion" else "higher"
        ax.set_title(f"{mode}{' - ' + target if target else ''}\n(AUC, {better} is better)", fontsize=9)
        ax.set_xlabel(AXIS_LABELS.get(mode, "% of pixels"))
        ax.set_ylabel(group[0].score_name)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.22), ncol=LEGEND_COLUMNS, frameon=False)
    return fig
