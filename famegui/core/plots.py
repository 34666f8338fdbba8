"""Pictures of curves without Qt (matplotlib's Agg canvas): for exports and the command line."""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

AXIS_LABELS = {"deletion": "% of pixels removed", "insertion": "% of pixels kept",
               "hiding": "% of pixels from the non-mate (least important first)"}


def curves_figure(curves: Sequence, width: float = 5.0, height: float = 3.6, dpi: int = 100) -> np.ndarray:
    """Deletion / insertion curves as an RGB uint8 image: one panel per (target, mode), AUC in the legend."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    if not curves:
        raise ValueError("no curves to draw")
    panels: dict[tuple[str, str], list] = {}
    for c in curves:
        panels.setdefault((c.extra.get("target", ""), c.mode), []).append(c)
    targets = list(dict.fromkeys(t for t, _ in panels))
    modes = list(dict.fromkeys(m for _, m in panels))
    fig = Figure(figsize=(width * len(modes), height * len(targets)), dpi=dpi)
    FigureCanvasAgg(fig)
    from matplotlib import colormaps

    names = list(dict.fromkeys(c.method for c in curves if c.method != "random"))
    palette = colormaps["tab10" if len(names) <= 10 else "tab20"]
    colour = {n: palette(i % palette.N) for i, n in enumerate(names)}  # one colour per method in every panel
    for (target, mode), group in panels.items():
        ax = fig.add_subplot(len(targets), len(modes), targets.index(target) * len(modes) + modes.index(mode) + 1)
        for c in group:
            style = dict(color="0.5", linestyle="--") if c.method == "random" else dict(color=colour[c.method])
            ax.plot(100 * np.asarray(c.fractions), c.scores, marker=".", label=f"{c.method} ({c.auc:.3f})",
                    **style)
        better = "lower" if mode == "deletion" else "higher"
        ax.set_title(f"{mode}{' - ' + target if target else ''} (AUC, {better} is better)", fontsize=9)
        ax.set_xlabel(AXIS_LABELS.get(mode, "% of pixels"))
        ax.set_ylabel(group[0].score_name)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.canvas.draw()
    return np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()
