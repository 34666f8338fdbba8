"""The Compare methods tab: every chosen method on the same image/pair, side by side.

Rows are methods (cheap ones first), columns e+ / e- for a face pair (or one
map for a class). Tiles fill in as the background job finishes them; each shows
the method's name and compute time. Colour scale: shared across tiles or per
tile; signed maps (as their method declares) use a diverging colormap centred on
zero. Click a tile to open it large in the main view of its task (Pair or
Classes). The method list and every parameter control come from the registry.
The faithfulness curves and the sanity test of the computed maps run the same
experiment code as the command line.
"""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QCheckBox,
    QHBoxLayout,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QPushButton,
    QStackedWidget,
    QVBoxLayout,
)

from ...core.render import sheet
from ...methods import methods
from ...session import MapResult
from ...targets import Target
from ..canvas import ImageCanvas
from ..params import ParamForm
from .base import Tab
from .compare_eval import FaithfulnessPlan, sanity_work
from .compare_view import (
    BACKGROUND,
    GAP,
    OWN_LABEL,
    SheetLayout,
    best_deletion,
    draw_curves,
    empty_notes,
    fit_groups,
    grid_colorbar,
    tile_images,
)

SANITY_TIP = ("Adebayo et al.'s randomisation test for the checked methods: each map is recomputed on a copy of "
              "the network with random weights; a method passes when the two maps do not correlate (< 0.5 inside "
              "the face square)")
FAITH_TIP = ("Remove (deletion) or keep only (insertion) the most important pixels of each computed map, 0-100 %, "
             "and plot the explained output; a random ranking is the dashed baseline. With a third photo of "
             "another person, also Wang et al.'s hiding game (PRL 2025) for e+")
CLASS_COLUMN = "top-1 class"


class CompareTab(Tab):
    """Methods x targets grid for the current image or pair; sanity sheet and faithfulness curves of it."""

    title = "Compare methods"
    tile_clicked = Signal(object)  # the MapResult of the clicked tile

    def __init__(self, ctx, pair_slots: Callable[[], tuple[str, str]]) -> None:
        super().__init__(ctx)
        self.pair_slots = pair_slots  # (explained slot, other slot) of the Pair tab's controls
        self.task: str | None = None
        self.results: dict[tuple[str, str], MapResult] = {}
        self.rows: list[str] = []
        self.cols: list[str] = []
        self.tile_shape: tuple[int, int] | None = None
        self.groups = 1  # methods per row of the sheet (chosen to fit the view)
        # what the right side shows: "compare" (methods x targets), "sanity" (trained vs random weights)
        # or "faithfulness" (curves)
        self.mode = "compare"
        self.sanity_results: list = []
        self.sanity_slot = "probe"
        self.faith_curves: list = []
        self._run_id = 0
        self._build()

    def _build(self) -> None:
        self.method_list = QListWidget()
        self.method_list.setMaximumWidth(280)
        self.method_list.setMinimumWidth(150)
        self.method_list.currentRowChanged.connect(self._show_form)
        self.forms = QStackedWidget()
        self.forms.setMaximumWidth(280)
        self.run_button = QPushButton("Compute checked methods")
        self.run_button.clicked.connect(self.run)
        self.sanity_button = QPushButton("Sanity check")
        self.sanity_button.setToolTip(SANITY_TIP)
        self.sanity_button.clicked.connect(self.run_sanity)
        self.faith_button = QPushButton("Faithfulness curves")
        self.faith_button.setToolTip(FAITH_TIP)
        self.faith_button.clicked.connect(self.run_faithfulness)
        self.shared_scale = QCheckBox("one colour scale")
        self.shared_scale.setToolTip("one colour scale for all tiles (else each tile is scaled to its own peak)")
        self.shared_scale.toggled.connect(lambda _v: self.redraw())
        self.info = QLabel("Check methods and compute; click a tile to open it large in the Pair or Classes view.")
        self.info.setWordWrap(True)
        self.grid = ImageCanvas("methods", colorbar=True)
        self.grid.clicked.connect(self._on_click)
        self.plots = pg.GraphicsLayoutWidget()  # dark, like the image views
        self.right = QStackedWidget()
        self.right.addWidget(self.grid)
        self.right.addWidget(self.plots)
        side = QVBoxLayout()
        side.addWidget(QLabel("Methods (cheap first)"))
        side.addWidget(self.method_list, 2)
        side.addWidget(self.forms, 1)
        for w in (self.shared_scale, self.run_button, self.sanity_button, self.faith_button, self.info):
            side.addWidget(w)
        lay = QHBoxLayout(self)
        lay.addLayout(side)
        lay.addWidget(self.right, 1)

    # ------------------------------------------------------------------ tab protocol
    def on_model_loaded(self, model) -> None:
        self.set_task("verification" if model.task == "embedding" else "classification")

    def on_image_loaded(self, slot: str) -> None:
        self.clear()  # its maps were of the previous image

    def redraw(self) -> None:
        if "probe" not in self.session.inputs:
            return
        self.right.setCurrentWidget(self.plots if self.mode == "faithfulness" else self.grid)
        if self.mode == "faithfulness":
            draw_curves(self.plots, self.faith_curves)
        elif self.mode == "sanity":
            self._draw_sanity()
        elif self.rows:
            tiles = self.tile_images()
            self.tile_shape = tiles[0].shape[:2]
            view = max(self.grid.width(), 1) / max(self.grid.height(), 1)
            self.groups = fit_groups(len(self.rows), len(self.cols), self.tile_shape, view)
            self.grid.set_image(sheet(tiles, len(self.cols) * self.groups, gap=GAP, background=BACKGROUND))
            self.grid.set_title(f"{len(self.rows)} methods x {', '.join(self.cols)}")
            self.grid.set_colorbar(*grid_colorbar(self.results, self.ctx.display, self.shared_scale.isChecked())
                                   if self.results else (None,))

    # ------------------------------------------------------------------ runs
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
        self.right.setCurrentWidget(self.grid)
        self.plots.clear()
        self.grid.set_image(None)
        self.grid.set_colorbar(None)
        self.grid.set_title("methods")

    # ------------------------------------------------------------------ methods and forms
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
            form.invalid.connect(self.ctx.show_error)
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
        """The parameters of method ``name`` from its form (FAME's from the Settings dock)."""
        for i in range(self.method_list.count()):
            if self.method_list.item(i).data(Qt.UserRole) == name:
                values = self.forms.widget(i).values()
                if name == "fame":  # FAME follows the main settings panel
                    values.update(self.ctx.current_params())
                return {k: v for k, v in values.items() if v is not None}
        return {}

    def _plan(self, what: str):
        """(methods, targets, explained slot, other slot) for a run, or None after telling the user why.

        ``targets`` is None for classification: the top-1 class is found in the worker (no network
        work in the GUI thread).
        """
        s = self.session
        if self.ctx.model is None or "probe" not in s.inputs:
            self.ctx.show_error("load a model and an image first")
            return None
        names = self.checked()
        if not names:
            self.ctx.show_error("check at least one method")
            return None
        if self.task != "verification":
            return names, None, "probe", None
        if "reference" not in s.inputs:
            self.ctx.show_error(f"the {what} of a pair needs a reference image")
            return None
        return (names, [Target("similar"), Target("dissimilar")]) + tuple(self.pair_slots())

    def _col(self, res: MapResult) -> str:
        return res.target.label() if res.target.kind != "class" else CLASS_COLUMN

    def run(self) -> None:
        """Every checked method for every target, one background job; tiles appear as maps finish."""
        plan = self._plan("comparison")
        if plan is None:
            return
        names, targets, slot, other = plan
        run = self._new_run()
        self.mode = "compare"
        self.rows = names
        self.cols = [t.label() for t in targets] if targets else [CLASS_COLUMN]
        self.results = {}
        self.redraw()  # the grid of waiting tiles, at once
        work = self._comparison_work(names, targets, slot, other)

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
            self.info.setText(f"{len(results)} maps in {sum(r.seconds for r in results):.1f} s of compute. "
                              + empty_notes(self.results))
            self.ctx.announce(results[-1] if results else None)

        self.ctx.submit(self.ctx.compute, work, f"comparing {len(names)} methods", done=finished, progress=progress)

    def _comparison_work(self, names: list[str], targets, slot: str, other: str | None):
        session = self.session
        params = {n: self.params_for(n) for n in names}
        # a third photo (another person) is the non-mate of triplet methods (gweEBP), unless it is in the pair
        non_mate = "third" if self.task == "verification" and "third" in session.inputs else None

        def work(job):
            tg = targets or [Target("class", class_index=session.top_classes(1)[0][0])]
            todo = [(n, t) for n in names for t in tg]
            done = []
            for i, (name, target) in enumerate(todo):
                def prog(f, _p=None, i=i):
                    job.progress((i + f) / len(todo), None)

                res = session.explain(name, target, params[name], slot=slot, other=other, progress=prog,
                                      cancel=job.cancelled, non_mate=non_mate)
                done.append(res)
                job.progress((i + 1) / len(todo), ("tile", res))
            return done

        return work

    def run_sanity(self) -> None:
        """The randomisation test for the checked methods, in the background; the grid shows its sheet."""
        plan = self._plan("sanity check")
        if plan is None:
            return
        names, targets, slot, other = plan
        params = {n: self.params_for(n) for n in names}
        run = self._new_run()
        self.mode = "sanity"
        self.sanity_results = []
        self.sanity_slot = slot
        self.redraw()
        work = sanity_work(self.session, names, targets, params, slot, other,
                           report=lambda job, r, n, total: job.progress(n / total, ("sanity", r)))

        def progress(_f, payload):
            if isinstance(payload, tuple) and payload[0] == "sanity" and self._is_current(run):
                self.sanity_results.append(payload[1])
                self.redraw()

        def finished(results):
            if not self._is_current(run):
                return
            self.sanity_results = list(results)
            self.redraw()
            def name(r):
                return f"{r.method} {r.target.label().split(' ')[0]}"

            failed = [name(r) for r in results if r.verdict == "FAIL"]
            undefined = [name(r) for r in results if r.verdict == "undefined"]
            n_pass = len(results) - len(failed) - len(undefined)
            self.info.setText(f"{n_pass} of {len(results)} maps change with random weights "
                              f"(every correlation < {results[0].threshold if results else 0.5} in the face square)"
                              + (f"; not: {', '.join(failed)}" if failed else "")
                              + (f"; undefined (a constant map ranks nothing): {', '.join(undefined)}"
                                 if undefined else ""))

        self.ctx.submit(self.ctx.compute, work, f"sanity check of {len(names)} methods", done=finished,
                        progress=progress)

    def run_faithfulness(self) -> None:
        """Deletion and insertion curves of the computed maps (plus a random ranking), in the background."""
        results = [self.results[(m, c)] for m in self.rows for c in self.cols if (m, c) in self.results]
        if not results:
            self.ctx.show_error("compute the comparison first: the curves use its maps")
            return
        run = self._run_id  # the curves belong to the maps shown now
        plan = FaithfulnessPlan(self.session, results, verification=self.task == "verification")

        def work(job):
            return plan.run(progress=lambda f: job.progress(f, None), cancel=job.cancelled)

        def finished(curves):
            if not self._is_current(run):
                return
            self.faith_curves = list(curves)
            self.mode = "faithfulness"
            self.redraw()
            self.info.setText(best_deletion(self.faith_curves))

        self.ctx.submit(self.ctx.compute, work, "faithfulness curves", done=finished)

    # ------------------------------------------------------------------ the sheet
    def tile_images(self) -> list[np.ndarray]:
        slot = next((r.slot for r in self.results.values()), "probe")
        return tile_images(self.session.input_rgb(slot), self.results, self.rows, self.cols, self.ctx.display,
                           self.shared_scale.isChecked())

    def _layout(self) -> SheetLayout | None:
        return SheetLayout(self.rows, self.cols, self.tile_shape, self.groups) if self.tile_shape else None

    def tile_at(self, x: float, y: float) -> tuple[str, str] | None:
        """(method, column) of the tile under image point (x, y) of the sheet, or None."""
        layout = self._layout()
        return layout.tile_at(x, y) if layout else None

    def tile_origin(self, method: str, col: str) -> tuple[float, float]:
        """Top-left image point of a tile of the sheet (for scripts and tests)."""
        return self._layout().tile_origin(method, col)

    def _sanity_sheet(self) -> np.ndarray:
        from ...evaluation.sanity import sanity_sheet

        d = self.ctx.display
        return sanity_sheet(self.sanity_results, self.session.input_rgb(self.sanity_slot), d.opacity, d.colormap)

    def _draw_sanity(self) -> None:
        if not self.sanity_results:
            self.grid.set_image(None)
            self.grid.set_title("sanity check: computing...")
            return
        self.grid.set_image(self._sanity_sheet())
        self.grid.set_colorbar(*self.ctx.display.colorbar(False, OWN_LABEL))
        n_pass = sum(r.passed for r in self.sanity_results)
        n_undefined = sum(r.verdict == "undefined" for r in self.sanity_results)
        self.grid.set_title(f"trained vs random weights: {n_pass} of {len(self.sanity_results)} pass"
                            + (f", {n_undefined} undefined (a constant map)" if n_undefined else ""))

    def sheet_image(self) -> np.ndarray:
        if self.mode == "sanity":
            return self._sanity_sheet()
        return sheet(self.tile_images(), len(self.cols) * self.groups, gap=GAP, background=BACKGROUND)

    def _on_click(self, x: float, y: float) -> None:
        if self.mode != "compare":
            return
        key = self.tile_at(x, y)
        res = self.results.get(key) if key else None
        if res is not None:
            self.tile_clicked.emit(res)  # the window shows it in its task's view

    # ------------------------------------------------------------------ export
    def export(self, png: str) -> list:
        """The sheet as one PNG, plus each map as .npy with its sidecar (PNG overlay + JSON)."""
        from ...export import json_bytes, png_bytes, write_png, write_set

        model = self.ctx.model
        if self.mode == "faithfulness":
            from ...core.plots import curves_figure

            return write_set([(png, png_bytes(curves_figure(self.faith_curves))),
                              (Path(png).with_suffix(".json"), json_bytes(
                                  {"model": model.describe(), "curves": [c.to_dict() for c in self.faith_curves]}))],
                             anchor=png)
        if self.mode == "sanity":
            if not self.sanity_results:
                raise ValueError("nothing to export: run the sanity check first")
            return write_set([(png, png_bytes(self.sheet_image())),
                              (Path(png).with_suffix(".json"), json_bytes(
                                  {"model": model.describe(), "sanity": [r.to_dict() for r in self.sanity_results]}))],
                             anchor=png)
        if not self.results:
            raise ValueError("nothing to export: compute the comparison first")
        written = [write_png(png, self.sheet_image())]
        stem = Path(png).with_suffix("")
        d = self.ctx.display
        for (name, _col), res in self.results.items():
            tag = "eplus" if res.target.kind == "similar" else "eminus" if res.target.kind == "dissimilar" else "map"
            base = f"{stem}_{name}_{tag}"
            written += self.session.export(res, base + ".png", base + ".npy", opacity=d.opacity,
                                           cmap=d.colormap_for(res.signed))
        return written
