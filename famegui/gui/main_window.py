"""The explorer window: it assembles the tabs, the docks, the menus and the status bar.

Each tab is its own controller (``famegui.gui.tabs``); tabs and docks share one
:class:`~famegui.gui.context.AppContext` (session, background lanes, settings,
messages) and never reach into the window. Every computation is a
:class:`~famegui.session.Session` call run on a background lane.

The window fits a 1366x768 screen: docks scroll and can be closed (View > Panels),
tabs and views have small minimum sizes, and a remembered geometry or dock layout is
used only if it fits the screen the window opens on.
"""
from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QRect, QSettings, QSize, Qt, QTimer, Signal
from PySide6.QtGui import QAction, QKeySequence
from PySide6.QtWidgets import QApplication, QLabel, QMainWindow, QTabWidget, QVBoxLayout, QWidget

from ..models.wrapper import ModelWrapper
from ..session import MapResult, Session
from .context import AppContext
from .display import DisplaySettings
from .exports import ask_png, export_map, last_export_dir, remember_export, suggested_name
from .files import RecentFiles, demo_paths
from .model_dock import DEFAULT_MODEL, SLOTS, ModelDock
from .settings_dock import SettingsDock
from .status import StatusBarView
from .tabs.all_cells import AllCellsTab
from .tabs.classes import ClassesTab
from .tabs.compare import CompareTab
from .tabs.feature_map import FeatureMapTab
from .tabs.pair import PAIR_KINDS, PairTab

BANNER_STYLE = "background:#7a1f1f;color:white;padding:4px;"
DEFAULT_SIZE = QSize(1500, 900)
SCREEN_MARGIN = 8  # room left around a window sized to the screen (frame borders)


class MainWindow(QMainWindow):
    """famegui's main window."""

    result_shown = Signal(object)  # a MapResult drawn in a view (tests and scripts wait on it)
    model_ready = Signal()
    images_ready = Signal()
    error_shown = Signal(str)

    def __init__(self, model: str | ModelWrapper | None = None, weights: str | None = None, images=(),
                 settings: QSettings | None = None, load_demo: bool = True) -> None:
        super().__init__()
        self.setWindowTitle("famegui")
        self.setAcceptDrops(True)
        self.session = Session()
        self.settings = settings or QSettings("famegui", "famegui")
        self.display = DisplaySettings(parent=self)
        self.tabs = QTabWidget()
        self.settings_dock = SettingsDock(self.display, self)
        self.ctx = AppContext(self.session, self.tabs, self.settings_dock.param_form.values, self.display,
                              parent=self)
        self.recent = RecentFiles(self.settings, self)
        self.model_dock = ModelDock(self.ctx, self.recent, self)
        self._build_tabs()
        self._build_central()
        self.setDockOptions(QMainWindow.AnimatedDocks | QMainWindow.AllowTabbedDocks | QMainWindow.AllowNestedDocks)
        self.addDockWidget(Qt.LeftDockWidgetArea, self.model_dock)
        self.addDockWidget(Qt.RightDockWidgetArea, self.settings_dock)
        self.status = StatusBarView(self.statusBar(), self.ctx)
        self._build_menus()
        self._expose_parts()
        self._connect()
        self._restore_state()
        if load_demo or model or images:
            QTimer.singleShot(0, lambda: self.start(model, weights, list(images)))
        else:
            self.status.show("choose a model and open an image (File menu)")

    # ================================================================== assembly
    def _build_tabs(self) -> None:
        ctx = self.ctx
        self.feature_map = FeatureMapTab(ctx)
        self.all_cells = AllCellsTab(ctx, self.feature_map)
        self.pair = PairTab(ctx, load_image=self.model_dock.load_image, unload_image=self.model_dock.unload_image)
        self.classes = ClassesTab(ctx, model_loaded=self.model_dock.adopt_model)
        self.compare_tab = CompareTab(ctx, pair_slots=self.pair.slots)
        self.tab_list = [self.feature_map, self.all_cells, self.pair, self.classes, self.compare_tab]
        for tab in self.tab_list:
            self.tabs.addTab(tab, tab.title)

    def _build_central(self) -> None:
        self.error_banner = QLabel()
        self.error_banner.setObjectName("error_banner")
        self.error_banner.setStyleSheet(BANNER_STYLE)
        self.error_banner.setWordWrap(True)
        self.error_banner.hide()
        self.error_banner.mousePressEvent = lambda _e: self.error_banner.hide()
        self.tabs.setMinimumWidth(300)
        central = QWidget()
        v = QVBoxLayout(central)
        v.setContentsMargins(2, 2, 2, 2)
        v.addWidget(self.error_banner)
        v.addWidget(self.tabs)
        self.setCentralWidget(central)

    def _expose_parts(self) -> None:
        """Short names for the parts scripts and tests drive (the controls a user would touch)."""
        self.scheduler, self.io, self.compute = self.ctx.scheduler, self.ctx.io, self.ctx.compute
        self.param_form = self.settings_dock.param_form
        self.cmap_combo, self.opacity = self.settings_dock.cmap_combo, self.settings_dock.opacity
        self.show_boxes, self.export_on_photo = self.settings_dock.show_boxes, self.settings_dock.export_on_photo
        self.model_combo, self.layer_tree = self.model_dock.model_combo, self.model_dock.layer_tree
        self.status_label, self.progress = self.status.label, self.status.progress

    def _connect(self) -> None:
        ctx, dock = self.ctx, self.model_dock
        ctx.result_shown.connect(self.result_shown)
        ctx.error_shown.connect(self._show_banner)
        ctx.error_shown.connect(self.error_shown)
        ctx.error_cleared.connect(self.error_banner.hide)
        self.display.changed.connect(self.redraw)
        self.param_form.changed.connect(self._on_settings_changed)
        self.param_form.invalid.connect(self.ctx.show_error)
        self.tabs.currentChanged.connect(self._on_tab_changed)
        self.compare_tab.tile_clicked.connect(self.show_in_main_view)
        dock.model_loaded.connect(self._on_model_loaded)
        dock.inputs_changed.connect(self._refresh_inputs)
        dock.image_loaded.connect(self._on_image_loaded)
        self.layer_tree.layer_chosen.connect(self.feature_map.select_layer)
        dock.show_all_layers.toggled.connect(lambda on: self.layer_tree.fill(self.feature_map.layer, on))
        self.settings_dock.device_changed.connect(self._on_device)
        self.recent.changed.connect(self._fill_recent)

    def _build_menus(self) -> None:
        dock = self.model_dock

        def act(menu, text, slot, shortcut=None):
            a = QAction(text, self)
            if shortcut:
                a.setShortcut(QKeySequence(shortcut))
            a.triggered.connect(slot)
            menu.addAction(a)
            return a

        m = self.menuBar().addMenu("&File")
        act(m, "Open probe image...", lambda: dock.choose_image("probe"), "Ctrl+O")
        act(m, "Open reference image...", lambda: dock.choose_image("reference"), "Ctrl+Shift+O")
        act(m, "Open third image...", lambda: dock.choose_image("third"))
        self.recent_menu = m.addMenu("Recent images")
        act(m, "Open run...", self.open_run)
        act(m, "Compare two runs...", lambda: self.open_run(two=True))
        m.addSeparator()
        act(m, "Load weights or model file...", dock.choose_weights, "Ctrl+W")
        m.addSeparator()
        act(m, "Export view...", lambda: self._export_dialog("view"), "Ctrl+E")
        act(m, "Export sheet...", lambda: self._export_dialog("sheet"), "Ctrl+Shift+E")
        act(m, "Export comparison...", lambda: self._export_dialog("comparison"), "Ctrl+Alt+E")
        m.addSeparator()
        act(m, "Quit", self.close, "Ctrl+Q")
        r = self.menuBar().addMenu("&Run")
        act(r, "Compute all cells", self.all_cells.compute, "Ctrl+Shift+A")
        act(r, "Cancel", self.cancel_jobs, "Esc")
        v = self.menuBar().addMenu("&View")
        for n, tab in enumerate(self.tab_list, 1):
            act(v, tab.title, lambda _c=False, tab=tab: self.tabs.setCurrentWidget(tab), f"Ctrl+{n}")
        panels = v.addMenu("Panels")  # a closed dock comes back from here
        for dock_widget in (self.model_dock, self.settings_dock):
            panels.addAction(dock_widget.toggleViewAction())
        self._fill_recent()

    def open_run(self, two: bool = False) -> None:
        """File > Open run... (a protocol run folder) or Compare two runs... (two runs of one protocol): the
        run browser, when it is installed."""
        try:
            from .run_browser import compare_runs_dialog, open_run_dialog
        except ImportError as e:
            self.ctx.show_error(f"opening runs is not available in this installation ({e})")
            return
        (compare_runs_dialog if two else open_run_dialog)(self)

    def _fill_recent(self) -> None:
        self.recent.fill_menu(self.recent_menu, lambda p: self.load_image("probe", p))

    # ================================================================== events between the parts
    @property
    def last_error(self) -> str:
        return self.ctx.last_error

    def _show_banner(self, message: str) -> None:
        log = self.ctx.error_log
        details = f"; details in {log}" if log is not None else ""
        self.error_banner.setText(f"{message}   (click to dismiss{details})")
        self.error_banner.show()
        self.status.show("error: " + message)

    def _on_tab_changed(self, _index: int) -> None:
        tab = self.tabs.currentWidget()
        if tab is not None:
            tab.on_shown()

    def cancel_jobs(self) -> None:
        self.ctx.cancel_jobs()

    def redraw(self) -> None:
        """Re-render every shown map (opacity, colormap, boxes) without recomputing."""
        for tab in self.tab_list:
            tab.redraw()

    def _on_settings_changed(self) -> None:
        # affected results are marked stale; the cache keeps everything else
        for tab in self.tab_list:
            tab.on_settings_changed()

    def _on_device(self, device: str) -> None:
        self.ctx.device = device
        self.model_dock.reload()

    def _on_model_loaded(self, model) -> None:
        self.status.show_device(model.device)
        self.setWindowTitle(f"famegui - {model.name}")
        for tab in self.tab_list:  # the tabs forget the old model's maps first: the settings change redraws them
            tab.on_model_loaded(model)
        self.settings_dock.on_model_loaded(model)
        self.layer_tree.fill(None, self.model_dock.show_all_layers.isChecked())
        self.model_ready.emit()
        for message in self.session.input_errors.values():
            self.ctx.show_error(message)
        self._refresh_inputs()

    def _refresh_inputs(self) -> None:
        """Redraw everything that depends on the images (after a model or image change)."""
        if self.session.model is None:
            return
        self.model_dock.draw_chip_preview()
        for tab in self.tab_list:
            tab.on_inputs_changed()

    def _on_image_loaded(self, slot: str) -> None:
        for tab in self.tab_list:
            tab.on_image_loaded(slot)
        self.images_ready.emit()

    def show_in_main_view(self, res: MapResult) -> None:
        """A map from the comparison, shown large in its task's view (Pair or Classes), controls in step."""
        if res.target.kind == "class":
            self.classes.open_result(res)
        elif res.target.kind in PAIR_KINDS:
            self.pair.open_result(res)

    # ================================================================== start-up, files, export, state
    def start(self, model, weights: str | None, images: list) -> None:
        """Load the model and the images (none given: the demo's probe, its mate and a non-mate). ``model``: a
        spec to load, or a model already in memory (``famegui.open``); images: files or LoadedImages."""
        if isinstance(model, ModelWrapper):
            self.model_dock.use_model(model)
        else:
            self.load_model(model or DEFAULT_MODEL, weights)
        for slot, path in zip(SLOTS, images or demo_paths()):
            self.load_image(slot, path)

    def load_model(self, spec: str, weights: str | None) -> None:
        self.model_dock.load_model(spec, weights)

    def load_image(self, slot: str, path: str, face_index: int | None = None) -> None:
        self.model_dock.load_image(slot, path, face_index)

    def dragEnterEvent(self, event) -> None:  # noqa: N802 (Qt API)
        if event.mimeData().hasUrls():
            event.acceptProposedAction()

    def dropEvent(self, event) -> None:  # noqa: N802
        paths = [u.toLocalFile() for u in event.mimeData().urls() if u.isLocalFile()]
        one_more = self.ctx.is_current(self.pair) and len(paths) == 1 and "probe" in self.session.inputs \
            and event.position().x() > self.width() / 2
        for slot, p in zip(["reference", "third"] if one_more else SLOTS, paths):
            self.load_image(slot, p)

    def current_result(self) -> MapResult | None:
        """The map of the current tab, else the first shown of cell, pair and class maps."""
        return self.tabs.currentWidget().current_result() or self.feature_map.result or self.pair.result \
            or self.classes.result

    def export_current(self, png: str, npy: str | None = None, on_photo: bool | None = None) -> list[Path]:
        """Export the shown map: overlay PNG at the export size (+ boxes for a cell), raw .npy, JSON sidecar."""
        if self.tabs.currentWidget() is self.compare_tab:  # what is on screen: the grid, sanity sheet or curves
            return self.export_comparison(png)
        res = self.current_result()
        boxes = self.feature_map.cell_boxes(res) if res is not None else None
        written = export_map(self.ctx, res, png, npy, on_photo, boxes)
        remember_export(self.settings, png)
        return written

    def export_sheet(self, png: str) -> list[Path]:
        written = self.all_cells.export(png)
        remember_export(self.settings, png)
        return written

    def export_comparison(self, png: str) -> list[Path]:
        written = self.compare_tab.export(png)
        remember_export(self.settings, png)
        return written

    def suggested_export_path(self, what: str) -> str:
        """Where an export dialog starts: the last export folder and a name from image, method and target."""
        probe = self.session.images.get("probe")
        image = probe.path if probe is not None else None
        if what == "sheet":
            name = suggested_name(image, "fame", f"all cells {self.all_cells.layer or ''}")
        elif what == "comparison" or self.tabs.currentWidget() is self.compare_tab:
            name = self.compare_tab.suggested_name()
        else:
            res = self.current_result()
            if res is not None and res.slot in self.session.images:
                image = self.session.images[res.slot].path
            other = self.session.images.get(res.other) if res is not None and res.other else None
            name = suggested_name(image, res.method if res else None, res.target.label() if res else None,
                                  other.path if other is not None else None)
        return str(Path(last_export_dir(self.settings, self.recent.last_dir())) / name)

    def _export_dialog(self, what: str) -> None:
        titles = {"view": "Export view (PNG; .npy and .json are written beside it)", "sheet": "Export sheet",
                  "comparison": "Export comparison"}
        writers = {"view": self.export_current, "sheet": self.export_sheet, "comparison": self.export_comparison}
        path = ask_png(self, titles[what], self.suggested_export_path(what))
        if path is None:
            return
        try:
            written = writers[what](path)
            self.status.show("exported " + ", ".join(p.name for p in written))
        except (ValueError, OSError) as e:
            self.ctx.show_error(f"export failed: {e}")

    # ------------------------------------------------------------------ window size and layout
    def available_geometry(self) -> QRect:
        """The part of the window's screen it may use (without task bars)."""
        screen = self.screen() or QApplication.primaryScreen()
        return screen.availableGeometry()

    def fits(self, rect: QRect | None = None) -> bool:
        """Whether the window (its frame, or ``rect``) and its minimum size fit the available screen."""
        avail = self.available_geometry()
        frame = rect or self.frameGeometry()
        hint = self.minimumSizeHint()
        return avail.contains(frame) and hint.width() <= avail.width() and hint.height() <= avail.height()

    def _fit_to_screen(self) -> None:
        """A default size that fits the screen, centred on it, with the docks at a share of its width."""
        avail = self.available_geometry()
        w = min(DEFAULT_SIZE.width(), avail.width() - 2 * SCREEN_MARGIN)
        h = min(DEFAULT_SIZE.height(), avail.height() - 2 * SCREEN_MARGIN)
        self.resize(w, h)
        self.move(avail.x() + (avail.width() - w) // 2, avail.y() + (avail.height() - h) // 2)
        side = max(self.settings_dock.minimumWidth(), min(320, w // 5))
        self.resizeDocks([self.model_dock, self.settings_dock], [side, side], Qt.Horizontal)

    def _restore_state(self) -> None:
        """The remembered geometry and dock layout, each only if it fits this screen (else the defaults)."""
        default_state = self.saveState()
        self._fit_to_screen()
        geo = self.settings.value("geometry")
        self.geometry_restored = False
        if geo is not None:
            before = self.saveGeometry()
            if self.restoreGeometry(geo) and self.fits():
                self.geometry_restored = True
            else:
                self.restoreGeometry(before)
        state = self.settings.value("windowState")
        if state is not None and self.restoreState(state):
            hint, avail = self.minimumSizeHint(), self.available_geometry()
            if hint.width() > avail.width() or hint.height() > avail.height():
                self.restoreState(default_state)  # a layout from a bigger screen
        self.settings_dock.restore(self.settings)

    def closeEvent(self, event) -> None:  # noqa: N802
        self.settings.setValue("geometry", self.saveGeometry())
        self.settings.setValue("windowState", self.saveState())
        self.settings_dock.save(self.settings)
        self.settings.sync()
        self.ctx.shutdown()
        super().closeEvent(event)
