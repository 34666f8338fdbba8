"""The comparison view: every chosen method on the same image/pair, side by side.

Rows are methods (cheap ones first), columns e+ / e- for a face pair (or one
map for a class). Tiles fill in as the background job finishes them; each shows
the method's name and compute time. Colour scale: shared across tiles or per
tile; signed maps use a diverging colormap centred on zero. Click a tile to
open it large in the main view of its task (Pair or Classes). The method list and every parameter control come from the registry.
"""
from __future__ import annotations

import numpy as np
from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (QCheckBox, QHBoxLayout, QLabel, QListWidget, QListWidgetItem, QPushButton,
                               QStackedWidget, QVBoxLayout, QWidget)

from ..methods import methods
from ..core.plots import AXIS_LABELS
from ..core.render import labelled, overlay, sheet, to_uint8
from .canvas import ImageCanvas
from .params import ParamForm

GAP = 4


def scaled(maps: list[np.ndarray | None], shared: bool) -> list[np.ndarray | None]:
    """Maps rescaled for display: unsigned to [0,1], signed to [0,1] with 0 at 0.5."""
    peaks = [float(np.abs(m).max()) for m in maps if m is not None]
    common = max(peaks) if peaks else 1.0
    out = []
    for m in maps:
        if m is None:
            out.append(None)
            continue
        peak = common if shared else float(np.abs(m).max())
        peak = peak if peak > 0 else 1.0
        out.append((m / peak + 1.0) / 2.0 if m.min() < 0 else m / peak)
    return out


class CompareTab(QWidget):
    """Methods x targets grid for the current image or pair."""

    tile_clicked = Signal(object)  # the MapResult of the clicked tile

    def __init__(self, window) -> None:
        super().__init__()
        self.win = window
        self.results: dict[tuple[str, str], object] = {}
        self.rows: list[str] = []
        self.cols: list[str] = []
        self.tile_shape: tuple[int, int] | None = None
        self.groups = 1  # methods per row of the sheet (chosen to fit the view)
        self.method_list = QListWidget()
        self.method_list.setMaximumWidth(280)
        self.method_list.currentRowChanged.connect(self._show_form)
        self.forms = QStackedWidget()
        self.forms.setMaximumWidth(280)
        self.run_button = QPushButton("Compute checked methods")
        self.run_button.clicked.connect(self.run)
        self.sanity_button = QPushButton("Sanity check: trained vs random weights")
        self.sanity_button.setToolTip("Adebayo et al.'s randomisation test for the checked methods: each map is "
                                      "recomputed on a copy of the network with random weights; a method passes "
                                      "when the two maps do not correlate (< 0.5 inside the face square)")
        self.sanity_button.clicked.connect(self.run_sanity)
        self.faith_button = QPushButton("Faithfulness: deletion / insertion curves")
        self.faith_button.setToolTip("Remove (deletion) or keep only (insertion) the most important pixels of each "
                                     "computed map, 0-100 %, and plot the explained output; a random ranking is "
                                     "the dashed baseline")
        self.faith_button.clicked.connect(self.run_faithfulness)
        self.faith_curves: list = []
        # what the right side shows: "compare" (methods x targets), "sanity" (trained vs random weights)
        # or "faithfulness" (curves)
        self.mode = "compare"
        self.sanity_results: list = []
        self.sanity_slot = "probe"
        self._run_id = 0
        self.shared_scale = QCheckBox("one colour scale for all tiles")
        self.shared_scale.toggled.connect(lambda _v: self.redraw())
        self.info = QLabel("Check methods and compute; click a tile to open it large in the Pair or Classes view.")
        self.info.setWordWrap(True)
        self.grid = ImageCanvas("methods")
        self.grid.clicked.connect(self._on_click)
        import pyqtgraph as pg

        self.plots = pg.GraphicsLayoutWidget()  # dark, like the image views
        self.right = QStackedWidget()
        self.right.addWidget(self.grid)
        self.right.addWidget(self.plots)
        side = QVBoxLayout()
        side.addWidget(QLabel("Methods (cheap first)"))
        side.addWidget(self.method_list, 2)
        side.addWidget(self.forms, 1)
        side.addWidget(self.shared_scale)
        side.addWidget(self.run_button)
        side.addWidget(self.sanity_button)
        side.addWidget(self.faith_button)
        side.addWidget(self.info)
        lay = QHBoxLayout(self)
        lay.addLayout(side)
        lay.addWidget(self.right, 1)
        self.task: str | None = None

    # ------------------------------------------------------------------ methods and forms
    def _new_run(self) -> int:
        """A number for the run that starts now: results of older runs arriving late are dropped."""
        self._run_id += 1
        return self._run_id

    def _is_current(self, run: int) -> bool:
        return run == self._run_id

    def clear(self) -> None:
        """Forget what was computed (another model or image): maps, sanity results and curves."""
        self._new_run()
        self.results = {}
        self.rows, self.cols = [], []
        self.sanity_results, self.faith_curves = [], []
        self.tile_shape = None
        self.mode = "compare"
        self.right.setCurrentIndex(0)
        self.plots.clear()
        self.grid.set_image(None)
        self.grid.set_title("methods")

    def set_task(self, task: str | None) -> None:
        """Fill the method list with what supports ``task`` (verification / classification)."""
        self.clear()
        if task == self.task:
            return
        self.task = task
        self.method_list.clear()
        while self.forms.count():
            w = self.forms.widget(0)
            self.forms.removeWidget(w)
            w.deleteLater()
        if task is None:
            return
        for spec in methods(task):
            item = QListWidgetItem(f"{spec.label}  [{spec.cost}]")
            item.setData(Qt.UserRole, spec.name)
            item.setFlags(item.flags() | Qt.ItemIsUserCheckable)
            item.setCheckState(Qt.Checked if spec.cost == "cheap" or spec.name == "fame" else Qt.Unchecked)
            item.setToolTip(spec.description)
            self.method_list.addItem(item)
            form = ParamForm(spec.params, hidden=("progress_every",))
            self.forms.addWidget(form)
        self.method_list.setCurrentRow(0)

    def _show_form(self, row: int) -> None:
        if 0 <= row < self.forms.count():
            self.forms.setCurrentIndex(row)

    def checked(self) -> list[str]:
        return [self.method_list.item(i).data(Qt.UserRole) for i in range(self.method_list.count())
                if self.method_list.item(i).checkState() == Qt.Checked]

    def set_checked(self, names: list[str]) -> None:
        for i in range(self.method_list.count()):
            it = self.method_list.item(i)
            it.setCheckState(Qt.Checked if it.data(Qt.UserRole) in names else Qt.Unchecked)

    def params_for(self, name: str) -> dict:
        for i in range(self.method_list.count()):
            if self.method_list.item(i).data(Qt.UserRole) == name:
                values = self.forms.widget(i).values()
                if name == "fame":  # FAME follows the main settings panel
                    values.update(self.win.current_params())
                return {k: v for k, v in values.items() if v is not None}
        return {}

    # ------------------------------------------------------------------ running
    def _plan(self, what: str):
        """(methods, targets, explained slot, other slot) for a run, or None after telling the user why.

        ``targets`` is None for classification: the top-1 class is found in the worker (no network
        work in the GUI thread).
        """
        from ..targets import Target

        w = self.win
        if w.session.model is None or "probe" not in w.session.inputs:
            w.show_error("load a model and an image first")
            return None
        names = self.checked()
        if not names:
            w.show_error("check at least one method")
            return None
        if self.task != "verification":
            return names, None, "probe", None
        if "reference" not in w.session.inputs:
            w.show_error(f"the {what} of a pair needs a reference image")
            return None
        return (names, [Target("similar"), Target("dissimilar")]) + w._pair_slots()

    def run(self) -> None:
        from ..targets import Target

        w = self.win
        plan = self._plan("comparison")
        if plan is None:
            return
        names, targets, slot, other = plan
        targets = targets or [None]
        run = self._new_run()
        self.mode = "compare"
        self.rows = names
        self.cols = [t.label() for t in targets] if targets[0] is not None else ["top-1 class"]
        self.results = {}
        self.redraw()  # the grid of waiting tiles, at once
        params = {n: self.params_for(n) for n in names}
        # a third photo (another person) is the non-mate of triplet methods (gweEBP), unless it is in the pair
        non_mate = "third" if self.task == "verification" and "third" in w.session.inputs else None

        def work(job):
            tg = targets if targets[0] is not None else \
                [Target("class", class_index=w.session.top_classes(1)[0][0])]
            plan = [(n, t, params[n]) for n in names for t in tg]
            done = []
            for i, (name, target, method_params) in enumerate(plan):
                def prog(f, _p=None, i=i):
                    job.progress((i + f) / len(plan), None)

                res = w.session.explain(name, target, method_params, slot=slot, other=other, progress=prog,
                                        cancel=job.cancelled, non_mate=non_mate)
                done.append(res)
                job.progress((i + 1) / len(plan), ("tile", res))
            return done

        def progress(_f, payload):
            if isinstance(payload, tuple) and payload[0] == "tile" and self._is_current(run):
                res = payload[1]
                self.results[(res.method, self._col(res))] = res
                self.redraw()

        def finished(results):
            if not self._is_current(run):
                return
            for res in results:
                self.results[(res.method, self._col(res))] = res
            self.redraw()
            total = sum(r.seconds for r in results)
            self.info.setText(f"{len(results)} maps in {total:.1f} s of compute")
            w.result_shown.emit(results[-1] if results else None)

        w._submit(w.compute, work, f"comparing {len(names)} methods", done=finished, progress=progress)

    def run_sanity(self) -> None:
        """The randomisation test for the checked methods, in the background; the grid shows its sheet."""
        from ..targets import Target
        from ..evaluation.sanity import sanity_suite

        w = self.win
        plan = self._plan("sanity check")
        if plan is None:
            return
        names, targets, slot, other = plan
        model = w.session.model
        params = {n: self.params_for(n) for n in names}
        x = w.session.input(slot).tensor
        ref = w.session.input(other).tensor if other else None
        run = self._new_run()
        self.mode = "sanity"
        self.sanity_results = []
        self.sanity_slot = slot
        self.redraw()

        def work(job):
            tg = targets or [Target("class", class_index=w.session.top_classes(1)[0][0])]
            out = []
            for r in sanity_suite(names, model, x, tg, params, reference=ref, prior=False,
                                  progress=lambda f: job.progress(f, None), cancel=job.cancelled):
                out.append(r)
                job.progress(len(out) / (len(names) * len(tg)), ("sanity", r))
            return out

        def progress(_f, payload):
            if isinstance(payload, tuple) and payload[0] == "sanity" and self._is_current(run):
                self.sanity_results.append(payload[1])
                self.redraw()

        def finished(results):
            if not self._is_current(run):
                return
            self.sanity_results = list(results)
            self.redraw()
            failed = [f"{r.method} {r.target.label().split(' ')[0]}" for r in results if not r.passed]
            self.info.setText(f"{len(results) - len(failed)} of {len(results)} maps change with random weights "
                              f"(every correlation < {results[0].threshold if results else 0.5} in the face square)"
                              + (f"; not: {', '.join(failed)}" if failed else ""))

        w._submit(w.compute, work, f"sanity check of {len(names)} methods", done=finished, progress=progress)

    def _col(self, res) -> str:
        return res.target.label() if res.target.kind != "class" else "top-1 class"

    # ------------------------------------------------------------------ drawing
    def tile_images(self) -> tuple[list[np.ndarray], list]:
        w = self.win
        slot = next((r.slot for r in self.results.values()), "probe")
        base = w.session.input_rgb(slot)
        keys = [(m, c) for m in self.rows for c in self.cols]
        maps = scaled([self.results[k].map if k in self.results else None for k in keys],
                      self.shared_scale.isChecked())
        a = w.opacity.value() / 100.0
        cmap = w.cmap_combo.currentText()
        tiles = []
        from ..methods import get_method

        for (name, col), m in zip(keys, maps):
            res = self.results.get((name, col))
            label = get_method(name).label + (f" {col.split(' ')[0]}" if len(self.cols) > 1 else "")
            if res is None or m is None:
                tile = (to_uint8(base) * 0.35).astype(np.uint8)
                label += " ..."
            else:
                signed = res.map.min() < 0
                tile = overlay(base, m, a, "bwr" if signed else cmap)
                label += f" {res.seconds:.2f}s" + (" triplet" if str(res.info.get("gain", "")).startswith("triplet")
                                                   else "")
            tiles.append(labelled(tile, label))
        return tiles, keys

    def run_faithfulness(self) -> None:
        """Deletion and insertion curves of the computed maps (plus a random ranking), in the background."""
        from ..evaluation import curves as metrics

        w = self.win
        results = [self.results[(m, c)] for m in self.rows for c in self.cols if (m, c) in self.results]
        if not results:
            w.show_error("compute the comparison first: the curves use its maps")
            return
        model = w.session.model
        run = self._run_id  # the curves belong to the maps shown now
        inputs = {slot: w.session.input(slot).tensor for r in results for slot in (r.slot, r.other) if slot}
        threshold = None
        non_mate = None
        if self.task == "verification":
            from ..evaluation.verification import default_cosine_threshold

            threshold = default_cosine_threshold(model)  # the decision-flip share needs the decision
            if "third" in w.session.inputs and all("third" not in (r.slot, r.other) for r in results):
                non_mate = w.session.input("third").tensor  # the hiding game's non-mate (seed 004)

        def work(job):
            out, plan = [], []
            for target in dict.fromkeys(r.target for r in results):
                first = next(r for r in results if r.target == target)
                plan.append(("random", target, metrics.random_map(first.map.shape), first.slot, first.other))
            plan += [(r.method, r.target, r.map, r.slot, r.other) for r in results]
            for i, (name, target, amap, slot, other) in enumerate(plan):
                if job.cancelled():
                    from ..core.fame import Cancelled

                    raise Cancelled("cancelled")
                for mode in metrics.MODES:
                    ref = inputs[other] if other else None
                    c = metrics.curve(model, inputs[slot], amap, target, mode, reference=ref, method=name)
                    c.extra["target"] = target.label()
                    if threshold is not None and ref is not None:
                        c.extra["flip"] = metrics.flip_fraction(model, inputs[slot], ref, amap, threshold, mode)
                    out.append(c)
                if non_mate is not None and target.kind == "similar":
                    c = metrics.hiding_curve(model, inputs[slot], inputs[other], non_mate, amap, method=name)
                    c.extra["target"] = target.label()
                    out.append(c)
                job.progress((i + 1) / len(plan), None)
            return out

        def finished(curves):
            if not self._is_current(run):
                return
            self.faith_curves = list(curves)
            self.mode = "faithfulness"
            self.redraw()
            best = {}
            for c in curves:
                if c.mode == "deletion" and c.method != "random":
                    key = c.extra["target"].split(" ")[0]
                    if key not in best or c.auc < best[key].auc:
                        best[key] = c
            self.info.setText("lowest deletion AUC: " + ", ".join(f"{k} {c.method} ({c.auc:.3f})"
                                                                   for k, c in best.items()))

        w._submit(w.compute, work, "faithfulness curves", done=finished)

    def _draw_curves(self) -> None:
        import pyqtgraph as pg

        self.plots.clear()
        targets = list(dict.fromkeys(c.extra.get("target", "") for c in self.faith_curves))
        names = list(dict.fromkeys(c.method for c in self.faith_curves if c.method != "random"))
        for row, target in enumerate(targets):
            for col, mode in enumerate(("deletion", "insertion", "hiding")):
                group = [c for c in self.faith_curves if c.extra.get("target", "") == target and c.mode == mode]
                if not group:
                    continue
                better = "lower" if mode == "deletion" else "higher"
                p = self.plots.addPlot(row=row, col=col)
                p.setTitle(f"{mode} {target.split(' ')[0]}: {better} AUC is better", size="9pt")
                p.getAxis("left").enableAutoSIPrefix(False)
                p.addLegend(offset=(-5, 5), labelTextSize="8pt", brush=pg.mkBrush(0, 0, 0, 170))
                p.setLabel("bottom", AXIS_LABELS[mode].split(" (")[0])  # short: the panels must fit side by side
                p.setMinimumWidth(0)
                p.setLabel("left", group[0].score_name)
                p.showGrid(x=True, y=True, alpha=0.3)
                for c in group:
                    pen = pg.mkPen((200, 200, 200), width=2, style=Qt.DashLine) if c.method == "random" else \
                        pg.mkPen(pg.intColor(names.index(c.method), hues=max(len(names), 1), minValue=200), width=2)
                    flip = ""
                    if "flip" in c.extra:
                        flip = ", flip never" if c.extra["flip"] is None else f", flip {100 * c.extra['flip']:.0f}%"
                    p.plot([100 * f for f in c.fractions], c.scores, pen=pen, symbol="o", symbolSize=4,
                           symbolBrush=pen.color(), name=f"{c.method} ({c.auc:.3f}{flip})")

    def redraw(self) -> None:
        if "probe" not in self.win.session.inputs:
            return
        self.right.setCurrentIndex(1 if self.mode == "faithfulness" else 0)
        if self.mode == "faithfulness":
            self._draw_curves()
            return
        if self.mode == "sanity":
            self._draw_sanity()
            return
        if not self.rows:
            return
        tiles, _ = self.tile_images()
        self.tile_shape = tiles[0].shape[:2]
        self.groups = self._fit_groups(self.tile_shape)
        self.grid.set_image(sheet(tiles, len(self.cols) * self.groups, gap=GAP))
        self.grid.set_title(f"{len(self.rows)} methods x {', '.join(self.cols)}")

    def _fit_groups(self, tile_shape: tuple[int, int]) -> int:
        """How many methods share a row of the sheet, so that its shape suits the view (bigger tiles)."""
        import math

        n, k = len(self.rows), max(len(self.cols), 1)
        if n <= 1:
            return 1
        th, tw = tile_shape
        view = max(self.grid.width(), 1) / max(self.grid.height(), 1)

        def misfit(g: int) -> float:
            rows = math.ceil(n / g)
            return abs(math.log((g * k * (tw + GAP)) / (rows * (th + GAP))) - math.log(view))

        return min(range(1, n + 1), key=misfit)

    def tile_at(self, x: float, y: float) -> tuple[str, str] | None:
        """(method, column) of the tile under image point (x, y) of the sheet, or None."""
        if not self.tile_shape:
            return None
        th, tw = self.tile_shape
        k = len(self.cols)
        c, r = int(x // (tw + GAP)), int(y // (th + GAP))
        if x < 0 or y < 0 or c >= k * self.groups:
            return None
        i = r * k * self.groups + c
        if i >= len(self.rows) * k:
            return None
        return self.rows[i // k], self.cols[i % k]

    def tile_origin(self, method: str, col: str) -> tuple[float, float]:
        """Top-left image point of a tile of the sheet (for scripts and tests)."""
        th, tw = self.tile_shape
        k = len(self.cols)
        i = self.rows.index(method) * k + self.cols.index(col)
        r, c = divmod(i, k * self.groups)
        return c * (tw + GAP), r * (th + GAP)

    def _draw_sanity(self) -> None:
        from ..evaluation.sanity import sanity_sheet

        if not self.sanity_results:
            self.grid.set_image(None)
            self.grid.set_title("sanity check: computing...")
            return
        w = self.win
        base = w.session.input_rgb(self.sanity_slot)
        self.grid.set_image(sanity_sheet(self.sanity_results, base, w.opacity.value() / 100.0,
                                         w.cmap_combo.currentText()))
        n_pass = sum(r.passed for r in self.sanity_results)
        self.grid.set_title(f"trained vs random weights: {n_pass} of {len(self.sanity_results)} pass")

    def sheet_image(self) -> np.ndarray:
        if self.mode == "sanity":
            from ..evaluation.sanity import sanity_sheet

            base = self.win.session.input_rgb(self.sanity_slot)
            return sanity_sheet(self.sanity_results, base, self.win.opacity.value() / 100.0,
                                self.win.cmap_combo.currentText())
        tiles, _ = self.tile_images()
        return sheet(tiles, len(self.cols) * self.groups, gap=GAP)

    def _on_click(self, x: float, y: float) -> None:
        if self.mode != "compare":
            return
        key = self.tile_at(x, y)
        res = self.results.get(key) if key else None
        if res is not None:
            self.tile_clicked.emit(res)  # the main window shows it in its task's view

    def export(self, png: str) -> list:
        """The sheet as one PNG, plus each map as .npy with its sidecar (PNG overlay + JSON)."""
        from pathlib import Path

        from ..export import write_json, write_png

        if self.mode == "faithfulness":
            from ..core.plots import curves_figure

            m = self.win.session.model
            return [write_png(png, curves_figure(self.faith_curves)),
                    write_json(Path(png).with_suffix(".json"),
                               {"model": m.describe(), "curves": [c.to_dict() for c in self.faith_curves]})]
        if self.mode == "sanity":
            if not self.sanity_results:
                raise ValueError("nothing to export: run the sanity check first")
            m = self.win.session.model
            return [write_png(png, self.sheet_image()),
                    write_json(Path(png).with_suffix(".json"),
                               {"model": m.describe(), "sanity": [r.to_dict() for r in self.sanity_results]})]
        if not self.results:
            raise ValueError("nothing to export: compute the comparison first")
        written = [write_png(png, self.sheet_image())]
        stem = Path(png).with_suffix("")
        for (name, col), res in self.results.items():
            tag = "eplus" if res.target.kind == "similar" else "eminus" if res.target.kind == "dissimilar" else "map"
            base = f"{stem}_{name}_{tag}"
            written += self.win.session.export(res, base + ".png", base + ".npy",
                                               opacity=self.win.opacity.value() / 100.0,
                                               cmap="bwr" if res.map.min() < 0 else self.win.cmap_combo.currentText())
        return written
