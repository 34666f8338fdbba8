"""File > Open run: a protocol run directory's items with their metrics, and each item's maps.

The browser reads a run folder (``famegui run ... --out RUN_DIR``) and computes nothing: the table
(:mod:`.run_model`) has one row per item x target with its photos and the AUC of every method x metric
(sortable, undefined values last) and the errors; selecting a row shows the item's photos as the run's model
saw them and, under the probe (every map is drawn on it), the stored maps (``maps/``) of every method
(lines) and target (columns), the tiles scaled to the panel's width so that nothing is cut; "Open in
Pair view" (or a double click) hands the item's photos to ``on_open`` (:class:`OpenRequest`), which
:func:`open_in_window` turns into the window's Pair view (pairs, triplets) or Classes view (images).

With a second run of the same protocol (File > Compare two runs..., ``other=``), each item shows run A's
maps and, under them, run B's map of the same method and target with the agreement of the two (Spearman
rank correlation, top-10 % overlap, as ``famegui report A B`` measures it).
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PySide6.QtCore import QEvent, QItemSelectionModel, Qt, Signal
from PySide6.QtGui import QImage, QPixmap
from PySide6.QtWidgets import (
    QAbstractItemView,
    QApplication,
    QDialog,
    QFileDialog,
    QGridLayout,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QMessageBox,
    QPushButton,
    QScrollArea,
    QSplitter,
    QTableView,
    QVBoxLayout,
    QWidget,
)

from ..core.render import overlay, to_uint8
from .display import DisplaySettings, scaled
from .run_model import (
    RunSortProxy,
    RunTable,
    RunTableModel,
    TableRow,
    method_label,
    model_view,
    read_run_table,
    short_path,
)

MISSING_GRAY = 0.5  # the background of a map whose photo cannot be shown
PHOTO_WIDTH = 200  # px at most of a photo column (the full path is in its tooltip)
TILE_SPACING = 8  # px between the panel's columns
MIN_TILE = 72  # px: the smallest side a tile is scaled down to (below it the panel scrolls)
SIZE = (1300, 760)  # the browser's size on a screen that has room for it
SCREEN_MARGIN = 8


@dataclass(frozen=True)
class OpenRequest:
    """One item of a run to open in the window: its photos (probe first) and what the run did with them."""

    paths: tuple[Path, ...]
    kind: str  # the protocol kind: pairs, triplets or images
    target: str  # e+, e-, decision or class
    label: str  # genuine / impostor / triplet / the class
    model: dict  # run.json's model (name, source, weights ...)

    @property
    def view(self) -> str:
        return "Classes" if self.kind == "images" else "Pair"


@dataclass
class Tile:
    """One picture of the map panel: a stored map on the photo, or a photo of the item."""

    method: str | None  # None: a photo without a map
    target: str | None
    rgb: np.ndarray  # (H, W, 3) uint8, exactly what the tile shows
    caption: str
    run: str = ""  # "" for one run; "A" or "B" when two runs are shown
    path: Path | None = None  # a photo's file
    role: str = ""  # a photo's role in the item: probe, reference, non-mate, image


def _pixmap(rgb: np.ndarray) -> QPixmap:
    a = np.ascontiguousarray(to_uint8(rgb))
    h, w = a.shape[:2]
    return QPixmap.fromImage(QImage(a.data, w, h, 3 * w, QImage.Format_RGB888).copy())


class RunBrowser(QDialog):
    """The table of a run directory's items and the maps of the selected one.

    ``run_dir``: the folder; raises ``ValueError`` (one line) when it is not a readable run.
    ``on_open(request)``: called with an :class:`OpenRequest` by the open button or a double click.
    ``display``: the window's display settings (opacity, colormap); default ones when None.
    """

    row_shown = Signal(int)  # the table row (of the run, not of the sorted view) whose maps are shown

    def __init__(self, run_dir: str | Path, on_open: Callable[[OpenRequest], None] | None = None,
                 display: DisplaySettings | None = None, parent: QWidget | None = None,
                 other: str | Path | None = None) -> None:
        super().__init__(parent)
        self.run: RunTable = read_run_table(run_dir)
        self.other: RunTable | None = None if other is None else read_run_table(other)
        if self.other is not None:
            keys_a = {(r.index, r.key) for r in self.run.rows}
            keys_b = {(r.index, r.key) for r in self.other.rows}
            if keys_a != keys_b:
                diff = sorted(keys_a ^ keys_b)[0][1]
                raise ValueError(f"{run_dir} and {other} do not hold the same protocol (e.g. item {diff})")
        self.on_open = on_open
        self.display = display or DisplaySettings(parent=self)
        self.tiles: list[Tile] = []
        self.photo_labels: list[QLabel] = []  # the pictures on screen, in the order of ``tiles``
        self.map_labels: list[QLabel] = []
        self._shown: list[tuple[QLabel, QLabel, Tile]] = []  # picture, caption, tile of each tile on screen
        self.current: TableRow | None = None
        self._views: dict[Path, np.ndarray | str] = {}  # photo -> model view, or why it cannot be shown
        self.setWindowTitle(f"Run: {self.run.title}" if self.other is None else
                            f"Runs: A {self.run.path.name} vs B {self.other.path.name}")
        self._fit_to_screen(parent)
        self._build()
        self.display.changed.connect(self.redraw)
        if self.run.rows:
            self.table.selectRow(0)

    # ------------------------------------------------------------------ assembly
    def _fit_to_screen(self, parent: QWidget | None) -> None:
        screen = (parent.screen() if parent is not None else None) or QApplication.primaryScreen()
        avail = screen.availableGeometry()
        self.resize(min(SIZE[0], avail.width() - 2 * SCREEN_MARGIN), min(SIZE[1], avail.height() - 2 * SCREEN_MARGIN))

    def _build_table(self) -> QTableView:
        """The run's rows, sortable; the photos' columns as wide as their names (at most ``PHOTO_WIDTH``)."""
        self.model = RunTableModel(self.run, self)
        self.proxy = RunSortProxy(self)
        self.proxy.setSourceModel(self.model)
        self.table = QTableView()
        self.table.setModel(self.proxy)
        self.table.setSortingEnabled(True)
        self.table.sortByColumn(0, Qt.AscendingOrder)
        self.table.setSelectionBehavior(QAbstractItemView.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SingleSelection)
        self.table.setEditTriggers(QAbstractItemView.NoEditTriggers)
        self.table.setWordWrap(False)
        self.table.setTextElideMode(Qt.ElideMiddle)
        header = self.table.horizontalHeader()
        header.setSectionResizeMode(QHeaderView.ResizeToContents)
        for c in self.model.photo_columns:  # the photos' folder and name; the full path in the tooltip
            header.setSectionResizeMode(c, QHeaderView.Interactive)
            header.resizeSection(c, min(PHOTO_WIDTH, max(self.table.sizeHintForColumn(c), header.sectionSizeHint(c))))
        header.setStretchLastSection(True)
        self.table.selectionModel().selectionChanged.connect(lambda *_: self._on_selection())
        self.table.doubleClicked.connect(lambda _i: self.open_current())
        return self.table

    def _build(self) -> None:
        self._build_table()
        both = "" if self.other is None else (
            f" Maps of run A ({self.run.path}) above those of run B ({self.other.path}, {self.other.title}), "
            "with their agreement; the table is run A's.")
        self.summary = QLabel(f"{self.run.title}: {len({r.index for r in self.run.rows})} items, "
                              f"{len(self.run.rows)} rows (item x target). Click a column to sort; "
                              "undefined values (n/a) stay last." + both)
        self.summary.setWordWrap(True)
        problems = self.run.problems + ([] if self.other is None else self.other.problems)
        self.problems = QLabel("\n".join(f"not read: {line}" for line in problems))
        self.problems.setWordWrap(True)
        self.problems.setStyleSheet("color: #b00020")
        self.problems.setTextInteractionFlags(Qt.TextSelectableByMouse)
        self.problems.setVisible(bool(problems))
        self.info = QLabel("")
        self.info.setWordWrap(True)
        self.info.setTextInteractionFlags(Qt.TextSelectableByMouse)
        self.scroll = QScrollArea()
        self.scroll.setWidgetResizable(True)
        self.scroll.installEventFilter(self)  # a new width scales the tiles
        self.open_button = QPushButton(f"Open in {'Classes' if self.run.kind == 'images' else 'Pair'} view")
        self.open_button.clicked.connect(self.open_current)
        self.open_button.setEnabled(False)
        right = QWidget()
        rv = QVBoxLayout(right)
        rv.addWidget(self.info)
        rv.addWidget(self.scroll, 1)
        buttons = QHBoxLayout()
        buttons.addStretch(1)
        buttons.addWidget(self.open_button)
        rv.addLayout(buttons)
        self.right = right
        split = QSplitter(Qt.Horizontal)
        split.addWidget(self.table)
        split.addWidget(right)
        split.setStretchFactor(0, 3)
        split.setStretchFactor(1, 2)
        split.setChildrenCollapsible(False)
        side = max((self.run.meta.get("model") or {}).get("input_size") or [150])
        panel = min(self.width() // 2, self._columns() * (min(side, 224) + 8) + 60)  # the tiles at their size
        split.setSizes([self.width() - panel, panel])
        lay = QVBoxLayout(self)
        lay.addWidget(self.summary)
        lay.addWidget(self.problems)
        lay.addWidget(split, 1)

    # ------------------------------------------------------------------ the table
    def column_of(self, header: str) -> int:
        """The column titled ``header`` (e.g. "Grad-CAM deletion")."""
        return self.model.headers.index(header) if header in self.model.headers else -1

    def sort_by(self, header: str, descending: bool = False) -> None:
        """Sort the table as a click on the column ``header`` does."""
        col = self.column_of(header)
        if col < 0:
            raise ValueError(f"no column {header!r}; columns: {', '.join(self.model.headers)}")
        self.table.sortByColumn(col, Qt.DescendingOrder if descending else Qt.AscendingOrder)

    def shown_values(self, header: str) -> list:
        """The values of column ``header`` top to bottom as the table shows them now."""
        col = self.column_of(header)
        return [self.model.value(self.proxy.mapToSource(self.proxy.index(i, col)).row(), col)
                for i in range(self.proxy.rowCount())]

    def select(self, row: int) -> None:
        """Select the run's row ``row`` (an index into ``run.rows``, wherever sorting put it)."""
        if self.current is self.run.rows[row]:
            self.show_row(row)  # already selected: no selection change would show it again
            return
        view_row = self.proxy.mapFromSource(self.model.index(row, 0)).row()
        self.table.selectionModel().select(self.proxy.index(view_row, 0),
                                           QItemSelectionModel.ClearAndSelect | QItemSelectionModel.Rows)
        self.table.scrollTo(self.proxy.index(view_row, 0))

    def _on_selection(self) -> None:
        rows = self.table.selectionModel().selectedRows()
        if rows:
            self.show_row(self.proxy.mapToSource(rows[0]).row())

    # ------------------------------------------------------------------ the maps of one item
    def _view(self, path: Path) -> np.ndarray | str:
        """The photo as the model saw it, or a one-line reason why it cannot be shown (kept per photo)."""
        if path not in self._views:
            model = self.run.meta.get("model") or {}
            try:
                self._views[path] = model_view(path, model, bool(self.run.meta.get("align", True)))
            except Exception as e:  # a moved photo, an unreadable one, no face: the map is shown alone
                self._views[path] = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        return self._views[path]

    def _row_tiles(self, row: TableRow) -> tuple[list[Tile], list[str]]:
        """The item's photos as the model saw them, then every method's stored map of every target on the
        probe; and notes on what could not be shown."""
        photos = self.run.photos(row)
        notes: list[str] = []
        views = [self._view(p) for p in photos]
        for p, v in zip(photos, views):
            if isinstance(v, str):
                notes.append(f"{p.name}: {v}")
        tiles = [Tile(None, None, to_uint8(v), f"{role}: {short_path(p)}", path=p, role=role)
                 for p, v, role in zip(photos, views, self.run.roles) if not isinstance(v, str)]
        runs = [("", self.run)] if self.other is None else [("A", self.run), ("B", self.other)]
        for method in self.run.methods:
            signed = self.run.signed(method)
            for target in self.run.targets:  # (the run's targets: every map has its column)
                maps = [run.map_array(row, method, target) for _name, run in runs]
                for (name, _run), amap in zip(runs, maps):
                    if isinstance(amap, str):
                        notes.append(f"{name + ': ' if name else ''}{amap}")
                maps = [m if isinstance(m, np.ndarray) else None for m in maps]
                for (name, run), amap in zip(runs, maps):
                    if amap is None:
                        continue
                    base = views[0] if not isinstance(views[0], str) and views[0].shape[:2] == amap.shape else \
                        np.full((*amap.shape, 3), MISSING_GRAY, np.float32)
                    m = scaled([amap], [signed], shared=False)[0]
                    rgb = overlay(base, m, self.display.opacity, self.display.colormap_for(signed))
                    caption = self._caption(run, row, method, target)
                    if name == "B" and maps[0] is not None and maps[0].shape == amap.shape:
                        from ..evaluation.compare_runs import map_agreement

                        rho, top = map_agreement(maps[0], amap)
                        caption += f"\nvs A: Spearman {rho:.2f}, top-10% {top:.2f}"
                    tiles.append(Tile(method, target, rgb, f"{name}: {caption}" if name else caption, name))
        return tiles, notes

    @staticmethod
    def _caption(run: RunTable, row: TableRow, method: str, target: str) -> str:
        """``Grad-CAM e+`` and the AUCs of that map on the item in ``run`` (the first metrics that fit)."""
        other = next((r for r in run.rows if r.index == row.index and r.target == target), row)
        aucs = [f"{metric[:3]} {c.auc:.3f}" for metric in run.metrics
                if (c := other.cells.get((method, metric))) is not None and np.isfinite(c.auc)]
        return f"{method_label(method)} {target}" + (f"\n{', '.join(aucs[:3])}" if aucs else "")

    def show_row(self, row: int) -> None:
        """The maps of the run's row ``row`` (an index into ``run.rows``)."""
        r = self.run.rows[row]
        self.current = r
        self.tiles, notes = self._row_tiles(r)
        self._place_tiles()
        lines = [f"item {r.index} ({r.label}), target {r.target}"]
        lines += [f"{role}: {p}" for role, p in zip(self.run.roles, self.run.photos(r))]
        lines += [f"error: {e}" for e in r.errors] + notes
        if not self.map_labels:
            lines.append("no stored map for this item" + ("" if r.errors else " (the random ranking keeps none)"))
        self.info.setText("\n".join(lines))
        self.open_button.setEnabled(True)
        self.row_shown.emit(row)

    def redraw(self) -> None:
        """Draw the shown item again (the window's opacity or colormap changed)."""
        if self.current is not None:
            self.show_row(self.run.rows.index(self.current))

    def _columns(self) -> int:
        """The panel's columns: one per target under the probe, then the item's other photos."""
        return max(1, len(self.run.targets)) + len(self.run.roles) - 1

    def _place_tiles(self) -> None:
        """The photos on the first line, the probe over the columns of the maps (each map is drawn on it) and the
        other photos beside them; then the maps: one line per method (and run), one column per target."""
        host = QWidget()
        grid = QGridLayout(host)
        grid.setHorizontalSpacing(TILE_SPACING)
        photos = [t for t in self.tiles if t.method is None]
        maps = [t for t in self.tiles if t.method is not None]
        lines = list(dict.fromkeys((t.method, t.run) for t in maps))  # the methods (x runs) with a map here
        under = max(1, len(self.run.targets))  # the probe's columns
        slots = [self.run.roles.index(t.role) for t in photos]
        places = [(0, 0, under) if k == 0 else (0, under + k - 1, 1) for k in slots]
        places += [(2 + 2 * lines.index((t.method, t.run)), self.run.targets.index(t.target), 1) for t in maps]
        self.photo_labels, self.map_labels, self._shown = [], [], []
        for t, (line, col, span) in zip(photos + maps, places):
            picture = QLabel()
            picture.setPixmap(_pixmap(t.rgb))
            picture.setScaledContents(True)  # sized by _fit_tiles to the panel's width
            caption = QLabel(t.caption)
            caption.setAlignment(Qt.AlignCenter)
            caption.setWordWrap(t.method is not None)
            picture.setToolTip(t.caption if t.path is None else f"{t.role}: {t.path}")
            caption.setToolTip(picture.toolTip())
            if t.target is not None and self.current is not None and t.target == self.current.target:
                caption.setStyleSheet("font-weight: bold")  # the maps of the selected row's target
            grid.addWidget(picture, line, col, 1, span, Qt.AlignCenter)
            grid.addWidget(caption, line + 1, col, 1, span, Qt.AlignCenter)
            (self.photo_labels if t.method is None else self.map_labels).append(picture)
            self._shown.append((picture, caption, t))
        grid.setRowStretch(2 + 2 * len(lines), 1)
        self.scroll.setWidget(host)  # the old panel goes with it
        self._fit_tiles()

    def _fit_tiles(self) -> None:
        """Every tile scaled so that the panel's columns fit its width (never above the tile's own size; the
        room of a vertical scroll bar is kept, so that one appearing does not rescale them)."""
        host = self.scroll.widget()
        if host is None or not self._shown:
            return
        m, n = host.layout().contentsMargins(), self._columns()
        bar = self.scroll.verticalScrollBar().sizeHint().width()
        room = self.scroll.width() - 2 * self.scroll.frameWidth() - bar - m.left() - m.right()
        side = max(MIN_TILE, (room - TILE_SPACING * (n - 1)) // n)
        metrics = self.fontMetrics()
        for picture, caption, t in self._shown:
            h, w = t.rgb.shape[:2]
            scale = min(1.0, side / max(h, w, 1))
            picture.setFixedSize(max(1, round(w * scale)), max(1, round(h * scale)))
            caption.setFixedWidth(side)
            if t.path is not None:  # a photo: its role, then its folder and name, cut in the middle to fit
                caption.setText("\n".join(metrics.elidedText(part, Qt.ElideMiddle, side - 4)
                                          for part in (t.role, short_path(t.path))))

    def eventFilter(self, watched, event) -> bool:  # noqa: N802 (Qt API)
        if watched is self.scroll and event.type() == QEvent.Resize:
            self._fit_tiles()
        return super().eventFilter(watched, event)

    # ------------------------------------------------------------------ opening
    def request(self, row: TableRow | None = None) -> OpenRequest | None:
        """What "Open in Pair view" hands on for ``row`` (default: the selected one)."""
        r = row or self.current
        if r is None:
            return None
        return OpenRequest(self.run.photos(r), self.run.kind, r.target, r.label, dict(self.run.meta.get("model") or {}))

    def open_current(self) -> None:
        req = self.request()
        if req is None or self.on_open is None:
            return
        missing = [p for p in req.paths if not p.is_file()]
        if missing:
            self.info.setText(f"cannot open the item: {missing[0]} not found")
            return
        self.on_open(req)


# --------------------------------------------------------------------------- the window
def open_in_window(window, req: OpenRequest) -> None:
    """Load the item's photos into the window and bring its Pair (or Classes) view to the front.

    The run's model is loaded first when the window has another one (the embedded or ``random``
    weights as the run recorded them; a model run with a separate weights file needs it loaded by hand).
    """
    model = req.model
    session_model = window.session.model
    if model.get("name") and (session_model is None or session_model.name != model["name"]):
        window.load_model(model.get("source") or model["name"], "random" if model.get("weights") == "random" else None)
    slots = ("probe",) if req.kind == "images" else ("probe", "reference", "third")
    for slot, path in zip(slots, req.paths):
        window.load_image(slot, str(path))
    if req.kind == "images":
        window.ctx.show_tab(window.classes, quietly=True)
        return
    # the run explained the probe against the reference; the Pair view explains when the photos are in
    window.pair.aim(minus=req.target == "e-" or (req.target == "decision" and req.label == "impostor"))
    window.ctx.show_tab(window.pair, quietly=True)


def _say(window, message: str) -> None:
    ctx = getattr(window, "ctx", None)
    if ctx is not None:
        ctx.show_error(message)
    else:
        QMessageBox.warning(window, "Open run", message)


def open_run(window, folder: str | Path, other: str | Path | None = None) -> RunBrowser | None:
    """The browser of the run in ``folder`` (and of ``other``, a second run of its protocol, beside it) over
    ``window`` (shown, not modal); a folder that is not a run gives one error line in the window and None."""
    try:
        browser = RunBrowser(folder, on_open=lambda req: open_in_window(window, req),
                             display=getattr(window, "display", None), parent=window, other=other)
    except ValueError as e:
        _say(window, str(e).splitlines()[0] if str(e) else f"{folder} is not a run directory")
        return None
    browser.setAttribute(Qt.WA_DeleteOnClose)
    browser.show()
    return browser


def open_run_dialog(window) -> RunBrowser | None:
    """File > Open run...: ask for a run directory, then show its browser."""
    folder = QFileDialog.getExistingDirectory(window, "Open run (a folder written by famegui run --out)")
    if not folder:
        return None
    return open_run(window, folder)


def compare_runs_dialog(window) -> RunBrowser | None:
    """File > Compare two runs...: ask for run A, then run B (the same protocol), then show both."""
    a = QFileDialog.getExistingDirectory(window, "Compare two runs: run A (a folder written by famegui run --out)")
    if not a:
        return None
    b = QFileDialog.getExistingDirectory(window, "Compare two runs: run B (the same protocol, another model or "
                                                 "settings)", str(Path(a).parent))
    if not b:
        return None
    return open_run(window, a, b)
