"""The Compare methods tab: every chosen method on the same image/pair, side by side.

Rows are methods (cheap ones first), columns e+ / e- for a face pair (or one
map for a class). Tiles fill in as the background job finishes them; each shows
the method's name and compute time. Colour scale: shared across tiles or per
tile; signed maps (as their method declares) use a diverging colormap centred on
zero. Click a tile to open it large in the main view of its task (Pair or
Classes); click a tile of the sanity sheet to read its numbers. A line above the
sheet names the image it explains and the other image (the Pair tab's side and
"compare with" choose them). The method list and every parameter control come
from the registry. The faithfulness curves and the sanity test of the computed
maps run the same experiment code as the command line.
"""
from __future__ import annotations

from collections.abc import Callable

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QCheckBox,
    QHBoxLayout,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QPushButton,
    QSizePolicy,
    QStackedWidget,
    QVBoxLayout,
    QWidget,
)

from ...methods import methods
from ...session import MapResult
from ...targets import Target
from ..params import ParamForm
from .base import Tab
from .compare_eval import FAITH_TIP, SANITY_TIP, CurvesView, FaithfulnessPlan, best_areas, sanity_work
from .compare_export import EXPORTERS, MadeFrom, export_name
from .compare_view import (
    OWN_LABEL,
    SheetLayout,
    TileInfo,
    TileSheet,
    compare_tiles,
    empty_notes,
    fixed_scroll,
    grid_colorbar,
    sanity_detail,
    sanity_summary,
    sanity_tiles,
)

CLASS_COLUMN = "top-1 class"
SIDE_WIDTH = 280
FORM_LINES, INFO_LINES = 6, 4  # the parameter form and the result text keep these heights: nothing jumps


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
        self.kinds: dict[str, str] = {}  # column -> its target's kind (e+ / e- drawn in their colours)
        self.sheet_keys: tuple[list, list] = ([], [])  # (rows, columns) of the sheet on screen
        # what the right side shows: "compare" (methods x targets), "sanity" (trained vs random weights)
        # or "faithfulness" (curves)
        self.mode = "compare"
        self.sanity_results: list = []
        self.sanity_slot = "probe"
        self.sanity_summary = ""
        self.sanity_selected: tuple[str, str] | None = None  # (method, target) clicked on the sanity sheet
        self.faith_curves: list = []
        # per view: the images, targets and parameters its run started with (caption, export name, sidecar)
        self.made_from: dict[str, MadeFrom | None] = dict.fromkeys(("compare", "sanity", "faithfulness"))
        self._run_id = 0
        self._build()

    def _build(self) -> None:
        self.method_list = QListWidget()
        self.method_list.setMinimumWidth(150)
        self.method_list.currentRowChanged.connect(self._show_form)
        self.forms = QStackedWidget()
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
        self.info.setAlignment(Qt.AlignTop | Qt.AlignLeft)
        line = self.fontMetrics().lineSpacing()
        self.form_area, self.info_area = fixed_scroll(self.forms, FORM_LINES * line), \
            fixed_scroll(self.info, INFO_LINES * line + 6)
        # which image the view explains, against which: two lines always reserved (the sheet never moves)
        self.explains = QLabel()
        self.explains.setWordWrap(True)
        self.explains.setFixedHeight(2 * line + 4)
        self.grid = TileSheet("methods")
        self.grid.clicked.connect(self._on_click)
        self.curves = self.plots = CurvesView()  # the curves' panels (plots.ci: their PlotItems)
        self.right = QStackedWidget()
        self.right.addWidget(self.grid)
        self.right.addWidget(self.curves)
        left = QWidget()
        left.setMaximumWidth(SIDE_WIDTH)
        side = QVBoxLayout(left)
        side.setContentsMargins(0, 0, 0, 0)
        side.addWidget(QLabel("Methods (cheap first)"))
        side.addWidget(self.method_list, 1)
        for w in (self.form_area, self.shared_scale, self.run_button, self.sanity_button, self.faith_button,
                  self.info_area):
            side.addWidget(w)
        view = QVBoxLayout()
        view.addWidget(self.explains)
        view.addWidget(self.right, 1)
        lay = QHBoxLayout(self)
        lay.addWidget(left)
        lay.addLayout(view, 1)

    # ------------------------------------------------------------------ tab protocol
    def on_model_loaded(self, model) -> None:
        self.set_task("verification" if model.task == "embedding" else "classification")

    def on_image_loaded(self, slot: str) -> None:
        self.clear()  # its maps were of the previous image

    def on_shown(self) -> None:
        self.show_explains()  # the Pair tab's side or other image may have changed meanwhile

    def redraw(self) -> None:
        if "probe" not in self.session.inputs:
            return
        self.show_explains()
        self.right.setCurrentWidget(self.curves if self.mode == "faithfulness" else self.grid)
        if self.mode == "faithfulness":
            self.curves.show_curves(self.faith_curves)
        elif self.mode == "sanity":
            self._draw_sanity()
        elif self.rows:
            self.sheet_keys = (self.rows, self.cols)
            self.grid.set_tiles(self.compare_infos(), len(self.cols))
            self.grid.set_title(f"{len(self.rows)} methods x {', '.join(self.cols)}")
            self.grid.set_colorbar(*grid_colorbar(self.results, self.ctx.display, self.shared_scale.isChecked())
                                   if self.results else (None,))

    # ------------------------------------------------------------------ what is shown
    def shown(self) -> MadeFrom | None:
        """What the view on screen was computed from (None: nothing computed yet)."""
        has = {"compare": bool(self.rows), "sanity": self.mode == "sanity", "faithfulness": bool(self.faith_curves)}
        return self.made_from.get(self.mode) if has.get(self.mode) else None

    def _slots_now(self) -> tuple[str, str | None, str | None]:
        """(explained, other, non-mate) slots a run would use now (the Pair tab's side and other image)."""
        if self.task != "verification":
            return "probe", None, None
        slot, other = self.pair_slots()
        third = "third" if "third" in self.session.inputs and "third" not in (slot, other) else None
        return slot, other, third

    def show_explains(self) -> None:
        """The line above the view: which image it explains and against which."""
        made = self.shown()
        if made is None:
            if self.ctx.model is None or "probe" not in self.session.inputs:
                self.explains.setText("")
                return
            made, head = MadeFrom(self.session, *self._slots_now()), "Next run explains "
        else:
            head = "Explains "
        tail = ". Side and other image: Pair tab." if self.task == "verification" else ": its top-1 class."
        self.explains.setText(head + made.caption() + tail)
        self.explains.setToolTip(self.explains.text())

    def suggested_name(self) -> str:
        """The file name of the export of what is on screen (the one naming rule of every export)."""
        made = self.shown() or MadeFrom(self.session, *self._slots_now())
        return export_name(made, self.mode)

    @property
    def tile_shape(self) -> tuple[int, int] | None:
        """(height, width) of a tile of the sheet on screen (None: no sheet)."""
        return self.grid.tile_shape if self.grid.infos else None

    @property
    def groups(self) -> int:
        """Methods per row of the sheet (chosen to fit the view)."""
        return self.grid.groups

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
        self.made_from = dict.fromkeys(self.made_from)
        self.sheet_keys = ([], [])
        self.mode = "compare"
        self.right.setCurrentWidget(self.grid)
        self.curves.show_curves([])
        self.grid.set_tiles([], 1)
        self.grid.set_colorbar(None)
        self.grid.set_title("methods")
        self.show_explains()

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
            for i in range(self.forms.count()):  # the stack as tall as this form, not as the tallest
                self.forms.widget(i).setSizePolicy(QSizePolicy.Preferred, QSizePolicy.Preferred if i == row
                                                   else QSizePolicy.Ignored)
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
        """(methods, targets, explained slot, other slot, non-mate slot) for a run, or None after telling the
        user why.

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
            return names, None, "probe", None, None
        if "reference" not in s.inputs:
            self.ctx.show_error(f"the {what} of a pair needs a reference image")
            return None
        return (names, [Target("similar"), Target("dissimilar")]) + self._slots_now()

    def _col(self, res: MapResult) -> str:
        return res.target.label() if res.target.kind != "class" else CLASS_COLUMN

    def _targets_of(self, view: str, results) -> None:
        """A classification run's targets are known once it is done (the top-1 class found in the worker)."""
        made = self.made_from.get(view)
        if made is not None and not made.targets:
            made.targets = list(dict.fromkeys(r.target for r in results))

    def run(self) -> None:
        """Every checked method for every target, one background job; tiles appear as maps finish."""
        plan = self._plan("comparison")
        if plan is None:
            return
        names, targets, slot, other, non_mate = plan
        run = self._new_run()
        params = {n: self.params_for(n) for n in names}
        self.made_from["compare"] = MadeFrom(self.session, slot, other, non_mate, targets, params)
        self.made_from["faithfulness"], self.faith_curves = None, []
        self.mode = "compare"
        self.rows = names
        self.cols = [t.label() for t in targets] if targets else [CLASS_COLUMN]
        self.kinds = {t.label(): t.kind for t in targets or []}
        self.results = {}
        self.redraw()  # the grid of waiting tiles, at once
        work = self._comparison_work(names, targets, params, slot, other, non_mate)

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
            self._targets_of("compare", results)
            self.redraw()
            self.info.setText(f"{len(results)} maps in {sum(r.seconds for r in results):.1f} s of compute. "
                              + empty_notes(self.results))
            self.ctx.announce(results[-1] if results else None)

        self.ctx.submit(self.ctx.compute, work, f"comparing {len(names)} methods", done=finished, progress=progress)

    def _comparison_work(self, names: list[str], targets, params: dict, slot: str, other: str | None,
                         non_mate: str | None):
        """The job: each method for each target; a third photo not in the pair is triplet methods' non-mate."""
        session = self.session

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
        names, targets, slot, other, _non_mate = plan  # the test takes no non-mate
        params = {n: self.params_for(n) for n in names}
        run = self._new_run()
        self.made_from["sanity"] = MadeFrom(self.session, slot, other, None, targets, params)
        self.mode = "sanity"
        self.sanity_results, self.sanity_summary, self.sanity_selected = [], "", None
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
            self._targets_of("sanity", results)
            self.redraw()
            self.sanity_summary = sanity_summary(results)
            self.info.setText(self.sanity_summary + " Click a tile for its numbers.")

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
        made = self.made_from["compare"]
        made = MadeFrom(self.session, made.slot, made.other, "third" if plan.non_mate is not None else None,
                        made.targets, {r.method: r.params for r in results})

        def work(job):
            return plan.run(progress=lambda f: job.progress(f, None), cancel=job.cancelled)

        def finished(curves):
            if not self._is_current(run):
                return
            self.faith_curves = list(curves)
            self.made_from["faithfulness"] = made
            self.mode = "faithfulness"
            self.redraw()
            self.info.setText(best_areas(self.faith_curves))

        self.ctx.submit(self.ctx.compute, work, "faithfulness curves", done=finished)

    # ------------------------------------------------------------------ the sheet
    def compare_infos(self) -> list[TileInfo]:
        """The tiles of the comparison (what the sheet shows and its export draws)."""
        made = self.made_from["compare"]
        return compare_tiles(self.session.input_rgb(made.slot if made else "probe"), self.results, self.rows,
                             self.cols, self.kinds, self.ctx.display, self.shared_scale.isChecked())

    def _layout(self) -> SheetLayout | None:
        rows, cols = self.sheet_keys
        return SheetLayout(rows, cols, self.tile_shape, self.groups) if self.tile_shape and rows else None

    def tile_at(self, x: float, y: float) -> tuple[str, str] | None:
        """(method, column) of the tile under point (x, y) of the sheet, or None."""
        layout = self._layout()
        return layout.tile_at(x, y) if layout else None

    def tile_origin(self, method: str, col: str) -> tuple[float, float]:
        """Top-left point of a tile of the sheet (for scripts and tests)."""
        return self._layout().tile_origin(method, col)

    def _draw_sanity(self) -> None:
        self.grid.set_colorbar(*self.ctx.display.colorbar(False, OWN_LABEL))
        if not self.sanity_results:
            self.sheet_keys = ([], [])
            self.grid.set_tiles([], 1)
            self.grid.set_title("sanity check: computing...")
            return
        d = self.ctx.display
        rows, cols, infos = sanity_tiles(self.sanity_results, self.session.input_rgb(self.sanity_slot), d.opacity,
                                         d.colormap)
        self.sheet_keys = (rows, cols)
        self.grid.set_tiles(infos, len(cols))
        self._select_sanity(self.sanity_selected)
        n_pass = sum(r.passed for r in self.sanity_results)
        n_undefined = sum(r.verdict == "undefined" for r in self.sanity_results)
        self.grid.set_title(f"trained vs random weights: {n_pass} of {len(self.sanity_results)} pass"
                            + (f", {n_undefined} undefined (a constant map)" if n_undefined else ""))

    def _select_sanity(self, key: tuple[str, str] | None) -> None:
        """Mark the trained and random tiles of (method, target) and put their numbers in the result text."""
        r = next((r for r in self.sanity_results if key and (r.method, r.target.label().split(" ")[0]) == key), None)
        self.sanity_selected = key if r is not None else None
        if r is None:
            self.grid.set_selected([])
            return
        self.grid.set_selected([self._layout().index(key[0], f"{key[1]} {w}") for w in ("trained", "random")])
        self.info.setText(sanity_detail(r) + (f"\n{self.sanity_summary}" if self.sanity_summary else ""))

    def _on_click(self, x: float, y: float) -> None:
        key = self.tile_at(x, y)
        if key is None:
            return
        if self.mode == "sanity":
            self._select_sanity((key[0], key[1].split(" ")[0]))
            return
        res = self.results.get(key) if self.mode == "compare" else None
        if res is not None:
            self.tile_clicked.emit(res)  # the window shows it in its task's view

    # ------------------------------------------------------------------ export
    def export(self, png: str) -> list:
        """What the tab shows, with a JSON sidecar of every input, parameter and seed it was made with: the
        comparison's sheet (and each map's own set: PNG overlay, .npy, sidecar), the sanity sheet or the
        curves. Name it :meth:`suggested_name`."""
        return EXPORTERS[self.mode](self, png)

