"""The Compare tab's checks of its maps: faithfulness curves and the sanity test as background work, and the
curves drawn (one panel per target and metric, its legend below its axes, in a scroll area).

The curves are those of every registered metric that declares itself fit for the GUI
(``Metric.gui``, :func:`famegui.evaluation.metrics.metric_names` with ``gui=True``) and applies to a
sample; a metric registered elsewhere is run here without an edit. Curves and sanity test call the same
Qt-free experiment code as ``famegui faithfulness`` / ``famegui sanity``
(:func:`famegui.evaluation.experiment.evaluate`, :func:`famegui.evaluation.sanity.sanity_suite`);
the functions here only gather their inputs from the session.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import pyqtgraph as pg
import torch
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QApplication, QFrame, QScrollArea

from ...core.plots import AXIS_LABELS, area_text
from ...evaluation.curves import TIE_SEED
from ...evaluation.experiment import RANDOM, baseline, evaluate
from ...evaluation.metrics import Sample, get_metric, metric_names
from ...methods import get_method
from ...session import MapResult, Session

SANITY_TIP = ("Adebayo et al.'s randomisation test for the checked methods: each map is recomputed on a copy of "
              "the network with random weights; a method passes when the two maps do not correlate (< 0.5 inside "
              "the face square)")
FAITH_TIP = ("Remove (deletion) or keep only (insertion) the most important pixels of each computed map, 0-100 %, "
             "and plot the explained output; a random ranking is the dashed baseline. With a third photo of "
             "another person, also Wang et al.'s hiding game (PRL 2025) for e+")
BASELINE_SEED = 0  # the random ranking every method is drawn against
SANITY_SEED = 0  # the random weights of the sanity test
SANITY_REGION = "face"  # the correlations are measured inside the face square of an aligned chip
PANEL_MIN_W = 210  # a panel narrower than this is not drawn beside another: the panels wrap
PLOT_MIN_H = 190


class FaithfulnessPlan:
    """What the curves of ``results`` need, read from the session in the GUI thread (no network work).

    ``verification``: the maps explain a face pair; the decision threshold (for S-RISE's flip share) is
    looked up in the worker. A third photo not in the pair is the non-mate of the hiding game.
    ``metrics``: the registry's GUI metrics when the plan is made; the experiment skips, per sample, those
    that do not apply (the hiding game without a non-mate, a class metric on a pair).
    """

    def __init__(self, session: Session, results: Sequence[MapResult], verification: bool) -> None:
        self.model = session.model
        self.results = list(results)
        self.verification = verification
        self.inputs: dict[str, torch.Tensor] = {slot: session.input(slot).tensor for r in self.results
                                                for slot in (r.slot, r.other) if slot}
        self.non_mate: torch.Tensor | None = None
        if verification and "third" in session.inputs and \
                all("third" not in (r.slot, r.other) for r in self.results):
            self.non_mate = session.input("third").tensor
        self.metrics: list[str] = metric_names(gui=True)

    def samples(self) -> list[Sample]:
        """A random-ranking baseline per target, then every map, in the order of ``results``."""
        threshold = None
        if self.verification:
            from ...explanation import decision_threshold

            threshold = decision_threshold(self.model)  # the decision-flip share needs the decision

        def sample(r: MapResult, **kw) -> Sample:
            ref = self.inputs[r.other] if r.other else None
            return Sample(self.model, self.inputs[r.slot], r.target, reference=ref, non_mate=self.non_mate,
                          threshold=threshold, **kw)

        out = []
        for target in dict.fromkeys(r.target for r in self.results):
            first = next(r for r in self.results if r.target == target)
            out.append(baseline(sample(first), seed=BASELINE_SEED))
        out += [sample(r, amap=r.map, method=r.method, params=r.params) for r in self.results]
        return out

    def run(self, progress: Callable[[float], None] | None = None,
            cancel: Callable[[], bool] | None = None) -> list:
        """The curves (in the worker thread): every GUI metric that applies to each sample."""
        return evaluate(self.samples(), self.metrics, progress=progress, cancel=cancel)


def sanity_work(session: Session, names: list[str], targets, params: dict, slot: str, other: str | None,
                report: Callable) -> Callable:
    """A job that runs the randomisation test of ``names``; ``report(job, result, done, total)`` per result.

    ``targets`` None: the top-1 class, found in the worker.
    """
    from ...evaluation.sanity import sanity_suite
    from ...targets import Target

    model = session.model
    x = session.input(slot).tensor
    ref = session.input(other).tensor if other else None

    def work(job):
        tg = targets or [Target("class", class_index=session.top_classes(1)[0][0])]
        out = []
        for r in sanity_suite(names, model, x, tg, params, reference=ref, prior=False, seed=SANITY_SEED,
                              region=SANITY_REGION,
                              progress=lambda f: job.progress(f, None), cancel=job.cancelled):
            out.append(r)
            report(job, r, len(out), len(names) * len(tg))
        return out

    return work


def sanity_record() -> dict:
    """What the tab's sanity test was run with, for its export's sidecar (the test's own defaults)."""
    return {"seed": SANITY_SEED, "region": SANITY_REGION, "prior": False}


def curves_record() -> dict:
    """What the tab's curves were run with, for their export's sidecar."""
    return {"seed": BASELINE_SEED, "tie_seed": TIE_SEED}


# ---------------------------------------------------------------------------------------- drawing the curves
def _metric(c) -> tuple[str, bool]:
    """(label, lower area is better) of the metric that made curve ``c`` (from the registry)."""
    try:
        m = get_metric(c.metric or c.mode)
        return m.label or m.name, bool(m.lower_is_better)
    except ValueError:  # a curve of a metric no longer registered
        return c.metric or c.mode, False


def _method_label(name: str) -> str:
    if name == RANDOM:
        return "random"  # the dashed line
    try:
        return get_method(name).label
    except (KeyError, ValueError):
        return name


def _pen(method: str, names: list[str]):
    if method == RANDOM:
        return pg.mkPen((200, 200, 200), width=2, style=Qt.DashLine)
    return pg.mkPen(pg.intColor(names.index(method), hues=max(len(names), 1), minValue=200), width=2)


def _panel(p: pg.PlotItem, group: list, names: list[str], title: str, size: str) -> None:
    """One panel: its two-line title, its curves, their legend in the row below the x axis (never over them)."""
    p.setTitle(title, size=size)
    h = math.ceil(p.titleLabel.item.boundingRect().height()) + 2
    p.titleLabel.setMaximumHeight(h)
    p.layout.setRowFixedHeight(0, h)  # pyqtgraph's 30 px cut a two-line title
    p.getAxis("left").enableAutoSIPrefix(False)
    p.setLabel("bottom", AXIS_LABELS.get(group[0].mode, "% of pixels").split(" (")[0])
    p.setLabel("left", group[0].score_name)
    p.showGrid(x=True, y=True, alpha=0.3)
    legend = pg.LegendItem(labelTextSize=size, verSpacing=-4, brush=pg.mkBrush(0, 0, 0, 0), pen=pg.mkPen(None))
    p.layout.addItem(legend, 4, 0, 1, 3)
    for c in group:
        pen = _pen(c.method, names)
        item = p.plot([100 * f for f in c.fractions], c.scores, pen=pen, symbol="o", symbolSize=4,
                      symbolBrush=pen.color())
        legend.addItem(item, f"{_method_label(c.method)} ({area_text(c)})")
    legend.updateSize()
    legend.setMinimumSize(legend.width(), legend.height())
    legend.setMaximumHeight(legend.height())
    p.legend = legend
    p.setMinimumWidth(max(PANEL_MIN_W, legend.width() + 10, p.titleLabel.item.boundingRect().width() + 10))
    p.setMinimumHeight(h + PLOT_MIN_H + legend.height())


def draw_curves(plots: pg.GraphicsLayoutWidget, curves: list, columns: int = 3) -> tuple[int, int]:
    """One panel per (target, metric), each target's panels ``columns`` to a row; the (width, height) they
    need."""
    plots.clear()
    plots.ci.setContentsMargins(4, 4, 16, 4)  # room for the last tick label of the rightmost x axis
    panels: dict[tuple[str, str], list] = {}
    for c in curves:  # grouped by the metric that made them: two metrics of one mode are two panels
        panels.setdefault((c.extra.get("target", ""), c.metric or c.mode), []).append(c)
    names = list(dict.fromkeys(c.method for c in curves if c.method != RANDOM))
    size = f"{QApplication.font().pointSizeF():g}pt"  # the UI font
    row, heights, widths = 0, {}, {}
    for target in dict.fromkeys(t for t, _ in panels):
        metrics = [m for t, m in panels if t == target]
        for i, metric in enumerate(metrics):
            group = panels[(target, metric)]
            label, lower = _metric(group[0])
            r = row + i // columns
            p = plots.addPlot(row=r, col=i % columns)
            _panel(p, group, names, f"{label} {target.split(' ')[0]}<br>{'lower' if lower else 'higher'} AUC "
                   "is better", size)
            heights[r] = max(heights.get(r, 0), p.minimumHeight())
            widths[r] = widths.get(r, 0) + p.minimumWidth() + 10
        row += math.ceil(len(metrics) / columns)
    return int(max(widths.values(), default=0)) + 10, int(sum(heights.values())) + 10 * max(row, 1)


class CurvesView(QScrollArea):
    """The faithfulness panels (``panels``, a GraphicsLayoutWidget) in a scroll area: they keep a legible size
    and scroll instead. ``ci``: the panels' layout (its PlotItems), as a GraphicsLayoutWidget's."""

    def __init__(self) -> None:
        super().__init__()
        self.panels = pg.GraphicsLayoutWidget()  # dark, like the image views
        self.setFrameShape(QFrame.NoFrame)
        self.setWidgetResizable(True)
        self.setWidget(self.panels)
        self.curves: list = []
        self.columns = 0

    @property
    def ci(self):
        return self.panels.ci

    def _fit(self) -> int:
        width = self.width() - self.verticalScrollBar().sizeHint().width()
        most = max([sum(1 for t2 in {(c.extra.get("target", ""), c.metric or c.mode) for c in self.curves}
                        if t2[0] == t) for t in {c.extra.get("target", "") for c in self.curves}] or [1])
        return max(1, min(most, width // PANEL_MIN_W))

    def show_curves(self, curves: list) -> None:
        """Draw ``curves`` in as many columns as fit the view's width (else one, scrolled sideways)."""
        self.curves, self.columns = list(curves), self._fit()
        room = self.width() - self.verticalScrollBar().sizeHint().width()
        need = (0, 0)
        while self.curves:
            need = draw_curves(self.panels, self.curves, self.columns)
            if need[0] <= room or self.columns == 1:
                break
            self.columns -= 1
        if not self.curves:
            self.panels.clear()
        self.panels.setMinimumSize(*need)

    def resizeEvent(self, event) -> None:  # noqa: N802 (Qt API)
        super().resizeEvent(event)
        if self.curves and self._fit() != self.columns:
            self.show_curves(self.curves)


def best_areas(curves: list) -> str:
    """Per metric where a lower area is better (deletion), the method with the lowest area for each target."""
    best: dict = {}
    for c in curves:
        label, lower = _metric(c)
        if lower and c.method != RANDOM and math.isfinite(c.auc):
            key = (label, c.extra.get("target", "").split(" ")[0])
            if key not in best or c.auc < best[key].auc:
                best[key] = c
    by_metric: dict = {}
    for (label, target), c in best.items():
        by_metric.setdefault(label, []).append(f"{target} {c.method} ({c.auc:.3f})")
    return "; ".join(f"lowest {label} AUC: " + ", ".join(v) for label, v in by_metric.items())
