"""The explorer window: feature-map cells, all-cells sheet, face pairs, classes, export.

The window only arranges widgets and forwards requests: every computation is
a :class:`~famegui.session.Session` call run on a background lane.
"""
from __future__ import annotations

import math
import time
from pathlib import Path

import cv2
import numpy as np
import torch
from PySide6.QtCore import QSettings, Qt, QTimer, Signal
from PySide6.QtGui import QAction, QKeySequence
from PySide6.QtWidgets import (QButtonGroup, QCheckBox, QComboBox, QDockWidget, QFileDialog, QFormLayout,
                               QGroupBox, QHBoxLayout, QLabel, QListWidget, QListWidgetItem, QMainWindow,
                               QProgressBar, QPushButton, QRadioButton, QSlider, QSpinBox, QSplitter,
                               QTabWidget, QTreeWidget, QTreeWidgetItem, QVBoxLayout, QWidget)

from ..targets import Target
from ..methods.fame import FAME_PARAMS
from ..models.receptive import mass_inside
from ..core.render import COLORMAPS, draw_polygon, overlay, sheet, to_uint8
from ..session import MapResult, Session
from .canvas import FOOTPRINT_COLOR, RF_COLOR, SELECT_COLOR, ImageCanvas
from .jobs import Lane, Scheduler
from .params import ParamForm

IMAGE_FILTER = "Images (*.jpg *.jpeg *.png *.bmp *.tif *.tiff *.webp);;All files (*)"
MAX_RECENT = 10


def _method_label(name: str) -> str:
    from ..methods import get_method

    return get_method(name).label


def _demo_paths() -> tuple[str, str, str]:
    from ..data.pairs import demo_pairs

    genuine, impostor = demo_pairs()
    return str(genuine.a), str(genuine.b), str(impostor.b)


class MainWindow(QMainWindow):
    """famegui's main window."""

    result_shown = Signal(object)  # a MapResult drawn in a view (tests and scripts wait on it)
    model_ready = Signal()
    images_ready = Signal()
    error_shown = Signal(str)

    def __init__(self, model: str | None = None, weights: str | None = None, images=(),
                 settings: QSettings | None = None, load_demo: bool = True) -> None:
        super().__init__()
        self.setWindowTitle("famegui")
        self.setAcceptDrops(True)
        self.session = Session()
        self.settings = settings or QSettings("famegui", "famegui")
        self.scheduler = Scheduler()  # one worker thread for all network work
        self.io = Lane("io", self.scheduler, priority=0, latest_wins=False, parent=self)
        self.compute = Lane("compute", self.scheduler, priority=1, latest_wins=True, parent=self)
        self._handlers: dict[int, tuple] = {}
        for lane in (self.io, self.compute):
            lane.started.connect(lambda job_id, label, lane=lane: self._on_started(lane, job_id, label))
            lane.progress.connect(self._on_progress)
            lane.finished.connect(lambda job_id, result, lane=lane: self._on_finished(lane, job_id, result))
            lane.failed.connect(self._on_failed)
            lane.cancelled.connect(self._on_cancelled)
        self.layer: str | None = None
        self.cell: tuple[int, int] | None = None
        self.hover_cell: tuple[int, int] | None = None
        self.cell_result: MapResult | None = None
        self.pair_result: MapResult | None = None
        self.class_result: MapResult | None = None
        self.sheet_results: list[MapResult | None] = []
        self.sheet_layer: str | None = None
        self.sheet_columns = 1
        self.last_error = ""
        self._job_started: dict[int, float] = {}
        self._build_ui()
        self._restore_state()
        if load_demo or model or images:
            QTimer.singleShot(0, lambda: self.start(model, weights, list(images)))

    # ================================================================== UI
    def _build_ui(self) -> None:
        self.tabs = QTabWidget()
        self.error_banner = QLabel()
        self.error_banner.setObjectName("error_banner")
        self.error_banner.setStyleSheet("background:#7a1f1f;color:white;padding:4px;")
        self.error_banner.setWordWrap(True)
        self.error_banner.hide()
        self.error_banner.mousePressEvent = lambda _e: self.error_banner.hide()
        central = QWidget()
        v = QVBoxLayout(central)
        v.setContentsMargins(2, 2, 2, 2)
        v.addWidget(self.error_banner)
        v.addWidget(self.tabs)
        self.setCentralWidget(central)

        # --- tab 1: feature map cells
        cell_tab = QWidget()
        split = QSplitter(Qt.Horizontal)
        self.fmap_canvas = ImageCanvas("feature map")
        self.fame_canvas = ImageCanvas("FAME")
        split.addWidget(self.fmap_canvas)
        split.addWidget(self.fame_canvas)
        self.cell_info = QLabel("Pick a layer, then click a cell of its feature map.")
        self.cell_info.setObjectName("cell_info")
        self.cell_info.setWordWrap(True)
        self.recompute_button = QPushButton("Recompute with current settings")
        self.recompute_button.hide()
        self.recompute_button.clicked.connect(self._recompute_cell)
        lay = QVBoxLayout(cell_tab)
        lay.addWidget(split, 1)
        row = QHBoxLayout()
        row.addWidget(self.cell_info, 1)
        row.addWidget(self.recompute_button)
        lay.addLayout(row)
        self.tabs.addTab(cell_tab, "Feature map")
        self.fmap_canvas.hovered.connect(self._on_fmap_hover)
        self.fmap_canvas.clicked.connect(self._on_fmap_click)

        # --- tab 2: all cells
        sheet_tab = QWidget()
        self.sheet_canvas = ImageCanvas("all cells")
        self.sheet_button = QPushButton("Compute all cells of the layer")
        self.sheet_button.clicked.connect(self.compute_all_cells)
        self.sheet_info = QLabel("Every cell of the layer as one batched job; click a tile to enlarge it.")
        lay = QVBoxLayout(sheet_tab)
        row = QHBoxLayout()
        row.addWidget(self.sheet_button)
        row.addWidget(self.sheet_info, 1)
        lay.addLayout(row)
        lay.addWidget(self.sheet_canvas, 1)
        self.tabs.addTab(sheet_tab, "All cells")
        self.sheet_canvas.clicked.connect(self._on_sheet_click)

        # --- tab 3: pair (verification)
        pair_tab = QWidget()
        self.probe_canvas = ImageCanvas("probe")
        self.ref_canvas = ImageCanvas("reference")
        self.third_canvas = ImageCanvas("third (optional)")
        split = QSplitter(Qt.Horizontal)
        for c in (self.probe_canvas, self.ref_canvas, self.third_canvas):
            split.addWidget(c)
        self.third_canvas.hide()
        self.sign_plus = QRadioButton("e+ (what makes them similar)")
        self.sign_minus = QRadioButton("e- (what makes them different)")
        self.sign_plus.setChecked(True)
        self.side_probe = QRadioButton("explain probe")
        self.side_ref = QRadioButton("explain other side")
        self.side_probe.setChecked(True)
        g1, g2 = QButtonGroup(self), QButtonGroup(self)
        for b in (self.sign_plus, self.sign_minus):
            g1.addButton(b)
            b.toggled.connect(lambda on: on and self.request_pair())
        for b in (self.side_probe, self.side_ref):
            g2.addButton(b)
            b.toggled.connect(lambda on: on and self.request_pair())
        self.compare_with = QComboBox()
        self.compare_with.addItems(["reference", "third"])
        self.compare_with.currentTextChanged.connect(lambda _t: self.request_pair())
        self.demo_combo = QComboBox()
        self.demo_combo.addItems(["demo: genuine pair", "demo: impostor pair"])
        self.demo_combo.activated.connect(self._load_demo_pair)
        self.pair_scores = QLabel("")
        self.pair_scores.setObjectName("pair_scores")
        self.pair_info = QLabel("")
        self.pair_info.setWordWrap(True)
        lay = QVBoxLayout(pair_tab)
        lay.addWidget(split, 1)
        row = QHBoxLayout()
        for w in (self.sign_plus, self.sign_minus, self.side_probe, self.side_ref, QLabel("compare with"),
                  self.compare_with, self.demo_combo):
            row.addWidget(w)
        row.addStretch(1)
        lay.addLayout(row)
        lay.addWidget(self.pair_scores)
        lay.addWidget(self.pair_info)
        self.tabs.addTab(pair_tab, "Pair")

        # --- tab 4: classes
        cls_tab = QWidget()
        self.class_canvas = ImageCanvas("class explanation")
        self.class_list = QListWidget()
        self.class_list.setMaximumWidth(320)
        self.class_list.itemClicked.connect(self._on_class_clicked)
        self.gallery_button = QPushButton("Identification: choose gallery folder...")
        self.gallery_button.clicked.connect(self._choose_gallery)
        self.class_info = QLabel("Top-5 classes of the probe image; click one to explain it.")
        self.class_info.setWordWrap(True)
        side = QVBoxLayout()
        side.addWidget(self.class_info)
        side.addWidget(self.class_list, 1)
        side.addWidget(self.gallery_button)
        lay = QHBoxLayout(cls_tab)
        lay.addLayout(side)
        lay.addWidget(self.class_canvas, 1)
        self.tabs.addTab(cls_tab, "Classes")

        # --- tab 5: compare methods
        from .compare import CompareTab

        self.compare_tab = CompareTab(self)
        self.compare_tab.tile_clicked.connect(self.show_in_main_view)
        self.tabs.addTab(self.compare_tab, "Compare methods")
        self.tabs.currentChanged.connect(self._on_tab_changed)

        self._build_model_dock()
        self._build_settings_dock()
        self._build_status()
        self._build_menus()

    def _build_model_dock(self) -> None:
        from ..models.zoo import zoo_names

        w = QWidget()
        lay = QVBoxLayout(w)
        box = QGroupBox("Model")
        form = QFormLayout(box)
        self.model_combo = QComboBox()
        self.model_combo.addItems(zoo_names())
        self.model_combo.activated.connect(lambda _i: self.load_model(self.model_combo.currentText(), None))
        self.weights_label = QLabel("embedded")
        self.weights_label.setWordWrap(True)
        wb = QPushButton("Weights / TorchScript...")
        wb.clicked.connect(self._choose_weights)
        form.addRow("network", self.model_combo)
        form.addRow("weights", self.weights_label)
        form.addRow(wb)
        lay.addWidget(box)
        self.layer_tree = QTreeWidget()
        self.layer_tree.setHeaderLabels(["layer", "type", "shape", "RF"])
        self.layer_tree.itemSelectionChanged.connect(self._on_layer_selected)
        self.show_all_layers = QCheckBox("show every module (not only feature maps)")
        self.show_all_layers.toggled.connect(lambda _on: self._fill_layers())
        lay.addWidget(QLabel("Layers (pick one to see its feature map)"))
        lay.addWidget(self.layer_tree, 2)
        lay.addWidget(self.show_all_layers)
        ib = QGroupBox("Images")
        form = QFormLayout(ib)
        self.image_labels = {}
        for slot in ("probe", "reference", "third"):
            label = QLabel("-")
            label.setWordWrap(True)
            btn = QPushButton("Open...")
            btn.clicked.connect(lambda _c=False, s=slot: self._choose_image(s))
            row = QHBoxLayout()
            row.addWidget(label, 1)
            row.addWidget(btn)
            form.addRow(slot, row)
            self.image_labels[slot] = label
        self.face_spin = QSpinBox()
        self.face_spin.setRange(0, 50)
        self.face_spin.setToolTip("which face of the probe photo (0 = largest)")
        self.face_spin.valueChanged.connect(self._on_face_index)
        self.align_box = QCheckBox("align faces (off: centre crop)")
        self.align_box.setChecked(True)
        self.align_box.toggled.connect(self._on_align_toggled)
        form.addRow("probe face", self.face_spin)
        form.addRow(self.align_box)
        lay.addWidget(ib)
        self.chip_canvas = ImageCanvas("probe photo and model input region")
        self.chip_canvas.setMinimumHeight(160)
        lay.addWidget(self.chip_canvas, 1)
        dock = QDockWidget("Model and images", self)
        dock.setObjectName("dock_model")
        dock.setWidget(w)
        self.addDockWidget(Qt.LeftDockWidgetArea, dock)

    def _build_settings_dock(self) -> None:
        w = QWidget()
        lay = QVBoxLayout(w)
        box = QGroupBox("FAME")
        bl = QVBoxLayout(box)
        self.param_form = ParamForm(FAME_PARAMS, hidden=("progress_every",))
        self.param_form.changed.connect(self._on_settings_changed)
        bl.addWidget(self.param_form)
        lay.addWidget(box)
        box = QGroupBox("Display")
        form = QFormLayout(box)
        self.cmap_combo = QComboBox()
        self.cmap_combo.addItems(list(COLORMAPS))
        self.cmap_combo.currentTextChanged.connect(lambda _t: self.redraw())
        self.opacity = QSlider(Qt.Horizontal)
        self.opacity.setRange(0, 100)
        self.opacity.setValue(55)
        self.opacity.valueChanged.connect(lambda _v: self.redraw())
        self.show_boxes = QCheckBox("footprint and receptive field")
        self.show_boxes.setChecked(True)
        self.show_boxes.toggled.connect(lambda _v: self.redraw())
        self.device_combo = QComboBox()
        self.device_combo.addItems(self._devices())
        self.device_combo.activated.connect(lambda _i: self.load_model(self.session.model_spec or "dlib-resnet",
                                                                        self.session.weights))
        form.addRow("colormap", self.cmap_combo)
        form.addRow("opacity", self.opacity)
        form.addRow("boxes", self.show_boxes)
        self.export_on_photo = QCheckBox("export on the full photo")
        self.export_on_photo.setToolTip("exports draw the map on the opened photo instead of the model input")
        form.addRow("export", self.export_on_photo)
        form.addRow("device", self.device_combo)
        lay.addWidget(box)
        legend = QLabel("<span style='color:#fff'>&#9632;</span> white: the cell's footprint (the patch under it)"
                        "<br><span style='color:#00e6ff'>&#9632;</span> cyan: its theoretical receptive field")
        lay.addWidget(legend)
        lay.addStretch(1)
        dock = QDockWidget("Settings", self)
        dock.setObjectName("dock_settings")
        dock.setWidget(w)
        self.addDockWidget(Qt.RightDockWidgetArea, dock)

    @staticmethod
    def _devices() -> list[str]:
        devs = ["cpu"]
        if torch.cuda.is_available():
            devs.append("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            devs.append("mps")
        return devs

    def _build_status(self) -> None:
        sb = self.statusBar()
        self.status_label = QLabel("starting...")
        self.progress = QProgressBar()
        self.progress.setRange(0, 1000)
        self.progress.setMaximumWidth(220)
        self.progress.setTextVisible(True)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setEnabled(False)
        self.cancel_button.clicked.connect(self.cancel_jobs)
        self.device_label = QLabel(f"device: cpu, {torch.get_num_threads()} threads")
        sb.addWidget(self.status_label, 1)
        sb.addPermanentWidget(self.device_label)
        sb.addPermanentWidget(self.progress)
        sb.addPermanentWidget(self.cancel_button)

    def _build_menus(self) -> None:
        m = self.menuBar().addMenu("&File")

        def act(menu, text, slot, shortcut=None):
            a = QAction(text, self)
            if shortcut:
                a.setShortcut(QKeySequence(shortcut))
            a.triggered.connect(slot)
            menu.addAction(a)
            return a

        act(m, "Open probe image...", lambda: self._choose_image("probe"), "Ctrl+O")
        act(m, "Open reference image...", lambda: self._choose_image("reference"), "Ctrl+Shift+O")
        act(m, "Open third image...", lambda: self._choose_image("third"))
        self.recent_menu = m.addMenu("Recent images")
        m.addSeparator()
        act(m, "Load weights or TorchScript...", self._choose_weights, "Ctrl+W")
        m.addSeparator()
        act(m, "Export view...", lambda: self._export_dialog(), "Ctrl+E")
        act(m, "Export sheet...", lambda: self._export_dialog(sheet=True), "Ctrl+Shift+E")
        act(m, "Export comparison...", lambda: self._export_dialog(compare=True))
        m.addSeparator()
        act(m, "Quit", self.close, "Ctrl+Q")
        r = self.menuBar().addMenu("&Run")
        act(r, "Compute all cells", self.compute_all_cells, "Ctrl+Shift+A")
        act(r, "Cancel", self.cancel_jobs, "Esc")
        v = self.menuBar().addMenu("&View")
        for i, name in enumerate(["Feature map", "All cells", "Pair", "Classes", "Compare methods"]):
            act(v, name, lambda _c=False, i=i: self.tabs.setCurrentIndex(i), f"Ctrl+{i + 1}")
        self._fill_recent()

    # ================================================================== jobs plumbing
    def _submit(self, lane: Lane, fn, label: str, done=None, progress=None, failed=None):
        job = lane.submit(fn, label)
        self._handlers[job.id] = (done, progress, failed)
        return job

    def _on_started(self, lane: Lane, job_id: int, label: str) -> None:
        self._job_started[job_id] = time.perf_counter()
        if lane is self.compute:  # the progress bar and Cancel belong to the explanations
            self.status_label.setText(label + "...")
            self.cancel_button.setEnabled(True)
            self.progress.setValue(0)

    def _on_progress(self, job_id: int, fraction: float, payload) -> None:
        self.progress.setValue(int(1000 * min(max(fraction, 0.0), 1.0)))
        h = self._handlers.get(job_id)
        if h and h[1]:
            h[1](fraction, payload)

    def _job_over(self, job_id: int):
        self._job_started.pop(job_id, None)
        h = self._handlers.pop(job_id, None)
        if not self.compute.busy:
            self.cancel_button.setEnabled(False)
        return h

    def _on_finished(self, lane: Lane, job_id: int, result) -> None:
        started = self._job_started.get(job_id)
        h = self._job_over(job_id)
        if lane is self.compute:
            self.progress.setValue(1000)
            if started is not None:
                self.status_label.setText(f"done in {time.perf_counter() - started:.2f} s")
        if h and h[0]:
            try:
                h[0](result)
            except Exception as e:  # a display error must not take the app down
                self.show_error(f"display failed: {e}")

    def _on_failed(self, job_id: int, message: str) -> None:
        h = self._job_over(job_id)
        self.show_error(message)
        if h and h[2]:
            h[2](message)

    def _on_cancelled(self, job_id: int) -> None:
        self._job_over(job_id)
        self.status_label.setText("cancelled")

    def _on_tab_changed(self, index: int) -> None:
        if index == 2:  # the pair view computes its map when it is looked at
            self.request_pair()

    def cancel_jobs(self) -> None:
        self.compute.cancel_all()

    def show_error(self, message: str) -> None:
        self.last_error = message
        self.error_banner.setText(f"{message}   (click to dismiss)")
        self.error_banner.show()
        self.status_label.setText("error: " + message)
        self.error_shown.emit(message)

    def clear_error(self) -> None:
        self.error_banner.hide()

    # ================================================================== start-up, model, images
    def start(self, model: str | None, weights: str | None, images: list[str]) -> None:
        self.load_model(model or "dlib-resnet", weights)
        if images:
            for slot, path in zip(("probe", "reference", "third"), images):
                self.load_image(slot, path)
        else:
            probe, ref, impostor = _demo_paths()  # a mate and a non-mate: the genuine and the impostor pair
            self.load_image("probe", probe)
            self.load_image("reference", ref)
            self.load_image("third", impostor)

    def load_model(self, spec: str, weights: str | None) -> None:
        device = self.device_combo.currentText() if hasattr(self, "device_combo") else "cpu"
        self.compute.cancel_all()

        def work(_job):
            return self.session.load_model(spec, weights, device)

        def failed(_msg):  # the working model stays: show it again in the combo
            current = self.session.model_spec
            if current is not None and self.model_combo.findText(current) >= 0:
                self.model_combo.setCurrentText(current)

        self._submit(self.io, work, f"loading {spec}", done=self._on_model_loaded, failed=failed)

    def _on_model_loaded(self, model) -> None:
        i = self.model_combo.findText(self.session.model_spec or model.name)
        if i < 0:
            self.model_combo.addItem(self.session.model_spec or model.name)
            i = self.model_combo.count() - 1
        self.model_combo.setCurrentIndex(i)
        self.weights_label.setText(self.session.weights or ("embedded" if model.alignment else model.weights_id[:24]))
        self.device_label.setText(f"device: {model.device}, {torch.get_num_threads()} threads")
        self.setWindowTitle(f"famegui - {model.name}")
        is_face = model.task == "embedding"
        self.tabs.setTabEnabled(2, is_face)
        self.compare_tab.set_task("verification" if is_face else "classification")
        self.param_form.set_value("blur_kernel", None)
        self.param_form.set_value("blur_sigma", None)
        self.cell_result = self.pair_result = self.class_result = None
        self.sheet_results = []
        self.layer = None
        self._fill_layers()
        self.model_ready.emit()
        for message in self.session.input_errors.values():
            self.show_error(message)
        self._refresh_inputs()

    def _fill_layers(self) -> None:
        self.layer_tree.blockSignals(True)
        self.layer_tree.clear()
        model = self.session.model
        if model is None:
            self.layer_tree.blockSignals(False)
            return
        layers = model.layers() if self.show_all_layers.isChecked() else model.spatial_layers()
        select = None
        items: dict[str, QTreeWidgetItem] = {}
        for info in layers:  # a tree by dotted names: stages on top, their blocks inside
            item = QTreeWidgetItem([info.name, info.type, "x".join(map(str, info.shape)), ""])
            item.setData(0, Qt.UserRole, info.name)
            parts = info.name.split(".")
            parent = next((items[".".join(parts[:i])] for i in range(len(parts) - 1, 0, -1)
                           if ".".join(parts[:i]) in items), None)
            if parent is None:
                self.layer_tree.addTopLevelItem(item)
            else:
                parent.addChild(item)
            items[info.name] = item
            if info.name == (self.layer or model.default_layer):
                select = item
        for c in range(4):
            self.layer_tree.resizeColumnToContents(c)
        self.layer_tree.blockSignals(False)
        for i in range(self.layer_tree.topLevelItemCount()):  # receptive fields of the stages, in the background
            item = self.layer_tree.topLevelItem(i)
            name = item.data(0, Qt.UserRole)
            if model.layer_info(name).is_spatial:
                self._fill_rf_column(item, name)
        if select is not None:
            self.layer_tree.setCurrentItem(select)
        if not layers:
            self.cell_info.setText(f"{model.name} exposes no feature-map layers (e.g. TorchScript); "
                                   "use the Classes or Pair tab.")

    def load_image(self, slot: str, path: str, face_index: int | None = None) -> None:
        idx = self.face_spin.value() if (slot == "probe" and face_index is None) else (face_index or 0)

        def work(_job):
            self.session.set_image(slot, path, face_index=idx)
            return slot

        def failed(_msg):
            self.session.clear_image(slot)
            self.image_labels[slot].setText("-")
            self._refresh_inputs()

        self._submit(self.io, work, f"loading {Path(path).name}", done=lambda s: self._on_image_loaded(s, path),
                     failed=failed)

    def _on_image_loaded(self, slot: str, path: str) -> None:
        inp = self.session.inputs.get(slot)
        label = Path(path).name
        if inp is not None and inp.note:
            label += f" ({inp.note})"
        self.image_labels[slot].setText(label)
        self.compare_tab.clear()  # its maps were of the previous image
        self._add_recent(path)
        self._refresh_inputs()
        self.images_ready.emit()

    def _refresh_inputs(self) -> None:
        """Redraw everything that depends on the images (after a model or image change)."""
        if self.session.model is None:
            return
        if "probe" in self.session.inputs:
            self._draw_chip_preview()
            self._show_feature_map()
            if self.session.model.task == "classification":
                self._request_classes()
        self.third_canvas.setVisible("third" in self.session.inputs)
        self._draw_pair_images()
        if self.tabs.currentIndex() == 2:
            self.request_pair()

    def _draw_chip_preview(self) -> None:
        inp = self.session.inputs.get("probe")
        if inp is None:
            return
        photo = to_uint8(inp.image.rgb)
        h, w = inp.prepared.input_size
        corners = np.array([[0, 0, 1], [w, 0, 1], [w, h, 1], [0, h, 1]], float) - [0.5, 0.5, 0]
        pts = corners @ inp.prepared.to_image.T + 0.5
        thick = max(2, int(max(photo.shape[:2]) / 250))
        self.chip_canvas.set_image(draw_polygon(photo, pts, (255, 220, 0), thick))
        faces = f", {inp.n_faces} faces" if inp.n_faces and inp.n_faces > 1 else ""
        self.chip_canvas.set_title(f"{Path(inp.image.path).name}: {inp.prepared.mode}{faces}")

    # ================================================================== feature map tab
    def _on_layer_selected(self) -> None:
        items = self.layer_tree.selectedItems()
        if not items:
            return
        name = items[0].data(0, Qt.UserRole)
        info = self.session.model.layer_info(name) if self.session.model else None
        if info is None or not info.is_spatial:
            self.cell_info.setText(f"{name} has output {info.shape if info else '?'}: not a feature map")
            return
        self.layer = name
        self.cell = None
        self.cell_result = None
        self.fame_canvas.set_image(None)
        for b in ("footprint", "rf"):
            self.fame_canvas.set_box(b, None)
        self.fmap_canvas.set_box("selected", None)
        self._show_feature_map()
        self._fill_rf_column(items[0], name)

    def _fill_rf_column(self, item: QTreeWidgetItem, layer: str) -> None:
        model = self.session.model
        if item.text(3):
            return
        _, fh, fw = model.layer_info(layer).shape
        centre = (fh // 2, fw // 2)

        def work(_job):
            return self.session.cell_geometry(layer, centre, io=True)[1]

        def done(rf):
            if self.session.model is not model:
                return  # the tree shows another model by now
            for it in self.layer_tree.findItems(layer, Qt.MatchExactly | Qt.MatchRecursive, 0):
                it.setText(3, f"{int(rf.width)}x{int(rf.height)}")
                it.setToolTip(3, f"theoretical receptive field of the centre cell {centre}, clipped to the input")

        self._submit(self.io, work, f"receptive field of {layer}", done=done)

    def _show_feature_map(self) -> None:
        if self.layer is None or "probe" not in self.session.inputs:
            return
        layer = self.layer

        def work(_job):
            return layer, self.session.feature_map(layer), self.session.input_rgb("probe")

        self._submit(self.io, work, f"feature map of {layer}", done=self._draw_feature_map)

    def _draw_feature_map(self, payload) -> None:
        layer, fmap, rgb = payload
        if layer != self.layer:
            return
        self._fmap = fmap
        h, w = rgb.shape[:2]
        fh, fw = fmap.shape
        norm = fmap / fmap.max() if fmap.max() > 0 else fmap
        up = cv2.resize(norm.astype(np.float32), (w, h), interpolation=cv2.INTER_NEAREST)  # no torch here
        self.fmap_canvas.set_image(overlay(rgb, up, 0.45, "inferno"))
        self.fmap_canvas.set_grid(fh, fw, (h, w))
        self.fmap_canvas.set_title(f"{layer}: sum_c |a| ({fh}x{fw} cells) - click a cell")
        if self.cell is not None:
            self._mark_selected_cell()
        self.redraw()

    def _cell_at(self, x: float, y: float) -> tuple[int, int] | None:
        if self.layer is None or self.fmap_canvas.image_shape() is None:
            return None
        h, w = self.fmap_canvas.image_shape()
        _, fh, fw = self.session.model.layer_info(self.layer).shape
        r, c = int(y * fh / h), int(x * fw / w)
        if 0 <= r < fh and 0 <= c < fw:
            return r, c
        return None

    def _cell_rect(self, cell) -> tuple[float, float, float, float]:
        h, w = self.fmap_canvas.image_shape()
        _, fh, fw = self.session.model.layer_info(self.layer).shape
        r, c = cell
        return (c * w / fw, r * h / fh, (c + 1) * w / fw, (r + 1) * h / fh)

    def _on_fmap_hover(self, x: float, y: float) -> None:
        cell = None if math.isnan(x) else self._cell_at(x, y)
        self.hover_cell = cell
        if cell is None:
            self.fmap_canvas.set_hover_rect(None)
            return
        self.fmap_canvas.set_hover_rect(self._cell_rect(cell))
        value = float(self._fmap[cell]) if getattr(self, "_fmap", None) is not None else float("nan")
        self.status_label.setText(f"{self.layer} cell ({cell[0]},{cell[1]}): sum_c|a| = {value:.4g}")

    def _on_fmap_click(self, x: float, y: float) -> None:
        cell = self._cell_at(x, y)
        if cell is not None:
            self.request_cell(cell)

    def _mark_selected_cell(self) -> None:
        self.fmap_canvas.set_box("selected", self._cell_rect(self.cell), SELECT_COLOR)

    def current_params(self) -> dict:
        return self.param_form.values()

    def request_cell(self, cell: tuple[int, int], layer: str | None = None) -> None:
        """Explain one cell: instant from the cache, else a background job (which supersedes older ones)."""
        layer = layer or self.layer
        if layer is None:
            return
        self.layer, self.cell = layer, tuple(cell)
        self._mark_selected_cell()
        target = Target("cell", layer=layer, cell=self.cell)
        params = self.current_params()
        hit = self.session.cached("fame", target, params)
        from ..models.receptive import cached_receptive_field

        if hit is not None and cached_receptive_field(self.session.model, layer, self.cell) is not None:
            self.compute.cancel_all()
            self._show_cell_result(hit)
            return
        self.fame_canvas.set_title(f"FAME {target.label()} - computing...")

        def work(job):
            fp, rf = self.session.cell_geometry(layer, target.cell)
            job.progress(0.0, ("geometry", fp, rf))
            return self.session.explain("fame", target, params, progress=job.progress, cancel=job.cancelled)

        def progress(fraction, payload):
            if isinstance(payload, tuple) and payload and payload[0] == "geometry":
                self._geometry = (payload[1], payload[2])
                self._draw_boxes()
            elif payload is not None and self.cell == target.cell and self.layer == layer:
                self._draw_map(self.fame_canvas, "probe", payload)
                self.fame_canvas.set_title(f"FAME {target.label()} - {100 * fraction:.0f}%")
                self.cell_info.setText(f"computing... {100 * fraction:.0f}% "
                                       f"(mass inside footprint so far: {self._mass(payload):.1%})")

        self._submit(self.compute, work, f"FAME {target.label()}", done=self._show_cell_result, progress=progress)

    def _mass(self, amap: np.ndarray) -> float:
        geo = getattr(self, "_geometry", None)
        return mass_inside(amap, geo[0]) if geo else float("nan")

    def _show_cell_result(self, res: MapResult) -> None:
        if res.target.layer != self.layer or res.target.cell != self.cell:
            return  # an old result arriving late
        self.cell_result = res
        self._geometry = self.session.cell_geometry(res.target.layer, res.target.cell)
        self.redraw()
        self.result_shown.emit(res)

    def _draw_boxes(self) -> None:
        geo = getattr(self, "_geometry", None)
        show = self.show_boxes.isChecked() and geo is not None
        self.fame_canvas.set_box("footprint", geo[0].as_tuple() if show else None, FOOTPRINT_COLOR)
        self.fame_canvas.set_box("rf", geo[1].as_tuple() if show else None, RF_COLOR, dashed=True)

    def _draw_map(self, canvas: ImageCanvas, slot: str, amap: np.ndarray) -> None:
        rgb = self.session.input_rgb(slot)
        a = self.opacity.value() / 100.0
        cmap = self.cmap_combo.currentText()
        if amap.min() < 0:  # signed map: diverging colormap, 0 in the middle
            amap, cmap = (amap + 1.0) / 2.0, "bwr"
        canvas.set_image(overlay(rgb, amap, a, cmap))

    def _is_stale(self, res: MapResult | None) -> bool:
        if res is None:
            return False
        from ..methods import get_method
        from ..targets import task_of

        return get_method(res.method).resolve(self.current_params(), task_of(res.target)) != res.params

    def redraw(self) -> None:
        """Re-render the shown maps (opacity, colormap, boxes) without recomputing."""
        res = self.cell_result
        if res is not None and "probe" in self.session.inputs:
            self._draw_map(self.fame_canvas, "probe", res.map)
            self._draw_boxes()
            fp, rf = self._geometry
            stale = self._is_stale(res)
            info = res.info
            self.fame_canvas.set_title(f"FAME {res.target.label()}" + ("  (stale: settings changed)" if stale else ""))
            self.recompute_button.setVisible(stale)
            loss = (f"loss {info['initial_loss']:.4g} -> {info['final_loss']:.4g} in {info['iterations']} it; "
                    if "initial_loss" in info else "")
            self.cell_info.setText(
                f"cell {res.target.cell} of {res.target.layer}: mass inside footprint "
                f"<b>{mass_inside(res.map, fp):.1%}</b> (footprint {fp.width:.0f}x{fp.height:.0f} px = "
                f"{fp.width * fp.height / res.map.size:.1%} of the input); receptive field "
                f"{rf.width:.0f}x{rf.height:.0f} px; {loss}{res.seconds:.2f} s")
        if self.pair_result is not None:
            self._draw_pair_images()
        if self.class_result is not None:
            self._draw_map(self.class_canvas, "probe", self.class_result.map)
        if self.sheet_results:
            self._draw_sheet()
        if self.compare_tab.results:
            self.compare_tab.redraw()

    def _recompute_cell(self) -> None:
        if self.cell is not None:
            self.request_cell(self.cell)

    def _on_settings_changed(self) -> None:
        # affected results are marked stale; the cache keeps everything else
        self.redraw()
        if self.tabs.currentIndex() == 2:
            self.request_pair()

    # ================================================================== all cells
    def compute_all_cells(self) -> None:
        if self.layer is None or "probe" not in self.session.inputs:
            self.show_error("load an image and pick a layer first")
            return
        layer = self.layer
        params = self.current_params()
        _, fh, fw = self.session.model.layer_info(layer).shape
        if fh * fw > 1024:
            self.show_error(f"{layer} has {fh * fw} cells; pick a deeper layer for the all-cells sheet")
            return
        self.sheet_layer, self.sheet_columns = layer, fw
        self.sheet_results = [None] * (fh * fw)
        self.tabs.setCurrentIndex(1)

        def work(job):
            return self.session.explain_cells(layer, params, progress=job.progress, cancel=job.cancelled)

        def progress(fraction, payload):
            if payload is not None:
                self.sheet_results = list(payload)
                self._draw_sheet()
            self.sheet_info.setText(f"{layer}: {fh}x{fw} cells, {100 * fraction:.0f}% done")

        def done(results):
            self.sheet_results = list(results)
            self._draw_sheet()
            secs = sum(r.seconds for r in results)
            self.sheet_info.setText(f"{layer}: {fh}x{fw} cells done ({secs:.1f} s of compute); click a tile")

        self._submit(self.compute, work, f"all cells of {layer}", done=done, progress=progress)

    def _draw_sheet(self) -> None:
        if not self.sheet_results or "probe" not in self.session.inputs:
            return
        rgb = self.session.input_rgb("probe")
        a = self.opacity.value() / 100.0
        cmap = self.cmap_combo.currentText()
        gray = (to_uint8(rgb).mean(2, keepdims=True).repeat(3, 2) * 0.5).astype(np.uint8)
        tiles = [overlay(rgb, r.map, a, cmap) if r is not None else gray for r in self.sheet_results]
        img = sheet(tiles, self.sheet_columns, gap=2)
        self._sheet_tile = rgb.shape[:2]
        self.sheet_canvas.set_image(img)
        self.sheet_canvas.set_title(f"all cells of {self.sheet_layer} (feature-map order)")

    def _on_sheet_click(self, x: float, y: float) -> None:
        if not self.sheet_results:
            return
        th, tw = self._sheet_tile
        c, r = int(x // (tw + 2)), int(y // (th + 2))
        i = r * self.sheet_columns + c
        if 0 <= c < self.sheet_columns and 0 <= i < len(self.sheet_results) and self.sheet_results[i] is not None:
            res = self.sheet_results[i]
            self.tabs.setCurrentIndex(0)
            self.layer = res.target.layer
            self.request_cell(res.target.cell, res.target.layer)

    # ================================================================== pair tab
    def _pair_slots(self) -> tuple[str, str]:
        other = "third" if self.compare_with.currentText() == "third" and "third" in self.session.inputs \
            else "reference"
        return ("probe", other) if self.side_probe.isChecked() else (other, "probe")

    def request_pair(self) -> None:
        model = self.session.model
        if model is None or model.task != "embedding":
            return
        slot, other = self._pair_slots()
        if slot not in self.session.inputs or other not in self.session.inputs:
            return
        target = Target("similar" if self.sign_plus.isChecked() else "dissimilar")
        params = self.current_params()

        def scores(_job):
            others = [o for o in ("reference", "third") if o in self.session.inputs]
            return [(o, self.session.pair_scores("probe", o)) for o in others]

        self._submit(self.io, scores, "similarity", done=self._show_scores)
        hit = self.session.cached("fame", target, params, slot, other)
        if hit is not None:
            self.compute.cancel_all()
            self._show_pair_result(hit)
            return

        def work(job):
            return self.session.explain("fame", target, params, slot=slot, other=other, progress=job.progress,
                                        cancel=job.cancelled)

        def progress(fraction, payload):
            if payload is not None:
                self._draw_pair_images(partial=(slot, payload))
                self.pair_info.setText(f"computing {target.label()} for the {slot}... {100 * fraction:.0f}%")

        self._submit(self.compute, work, f"FAME {target.label()} ({slot})", done=self._show_pair_result,
                     progress=progress)

    def _show_scores(self, rows) -> None:
        self.pair_scores.setText("<br>".join(
            f"probe vs {o}: cosine <b>{s.cosine:.4f}</b>   distance <b>{s.distance:.4f}</b>   "
            f"rule: {s.rule}   decision: <b>{s.decision}</b>" for o, s in rows))

    def _show_pair_result(self, res: MapResult) -> None:
        self.pair_result = res
        self._draw_pair_images()
        note = ""
        if res.info.get("empty"):
            note = (" The map is empty: the loss was already below the early-stop epsilon at the start "
                    "(e.g. e+ of an impostor pair). Lower or clear epsilon.")
        self.pair_info.setText(f"{_method_label(res.method)} {res.target.label()} for the {res.slot} (against the "
                               f"{res.other}), {res.seconds:.2f} s." + note)
        self.result_shown.emit(res)

    def show_in_main_view(self, res: MapResult) -> None:
        """A map from the comparison, shown large in its task's view (Pair or Classes), controls in step."""
        if res.target.kind == "class":
            self._show_class_result(res)
            self._switch_tab_quietly(3)
            return
        if res.target.kind not in ("similar", "dissimilar"):
            return
        states = ((self.sign_plus, res.target.kind == "similar"), (self.sign_minus, res.target.kind != "similar"),
                  (self.side_probe, res.slot == "probe"), (self.side_ref, res.slot != "probe"))
        for button, on in states:  # no recompute: the controls only follow the shown map
            button.blockSignals(True)
            button.setChecked(on)
            button.blockSignals(False)
        other = res.other if res.slot == "probe" else res.slot
        self.compare_with.blockSignals(True)
        self.compare_with.setCurrentText("third" if other == "third" else "reference")
        self.compare_with.blockSignals(False)
        self._switch_tab_quietly(2)  # the Pair view would otherwise start its own FAME job
        self._show_pair_result(res)

    def _switch_tab_quietly(self, index: int) -> None:
        self.tabs.blockSignals(True)
        self.tabs.setCurrentIndex(index)
        self.tabs.blockSignals(False)

    def _draw_pair_images(self, partial=None) -> None:
        canvases = {"probe": self.probe_canvas, "reference": self.ref_canvas, "third": self.third_canvas}
        res = self.pair_result
        for slot, canvas in canvases.items():
            if slot not in self.session.inputs:
                canvas.set_image(None)
                continue
            if partial is not None and partial[0] == slot:
                self._draw_map(canvas, slot, partial[1])
            elif partial is None and res is not None and res.slot == slot:
                self._draw_map(canvas, slot, res.map)
            else:
                canvas.set_image(to_uint8(self.session.input_rgb(slot)))
            shown = res is not None and res.slot == slot and partial is None
            canvas.set_title(slot + (f": {_method_label(res.method)} {res.target.label()}" if shown else ""))

    def _load_demo_pair(self, index: int) -> None:
        probe, genuine, impostor = _demo_paths()
        self.load_image("probe", probe)
        self.load_image("reference", genuine if index == 0 else impostor)

    # ================================================================== classes tab
    def _request_classes(self) -> None:
        def work(_job):
            return self.session.top_classes(5)

        def done(rows):
            self.class_list.clear()
            for idx, name, score in rows:
                item = QListWidgetItem(f"{name}  ({score:.3f})")
                item.setData(Qt.UserRole, idx)
                self.class_list.addItem(item)

        self._submit(self.io, work, "top-5 classes", done=done)

    def _on_class_clicked(self, item: QListWidgetItem) -> None:
        self.request_class(int(item.data(Qt.UserRole)))

    def request_class(self, class_index: int) -> None:
        target = Target("class", class_index=class_index)
        params = self.current_params()
        hit = self.session.cached("fame", target, params)
        if hit is not None:
            self._show_class_result(hit)
            return

        def work(job):
            return self.session.explain("fame", target, params, progress=job.progress, cancel=job.cancelled)

        def progress(fraction, payload):
            if payload is not None:
                self._draw_map(self.class_canvas, "probe", payload)

        self._submit(self.compute, work, f"FAME class {class_index}", done=self._show_class_result,
                     progress=progress)

    def _show_class_result(self, res: MapResult) -> None:
        self.class_result = res
        names = self.session.model.class_names or []
        k = res.target.class_index
        self.class_canvas.set_title(f"{_method_label(res.method)}: {names[k] if k < len(names) else k}")
        self._draw_map(self.class_canvas, "probe", res.map)
        self.result_shown.emit(res)

    def _choose_gallery(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Gallery: one sub-folder per identity")
        if folder:
            self.use_gallery(folder)

    def use_gallery(self, folder: str) -> None:
        from ..models.identification import build_identification_model

        base = self.session.model

        def work(_job):
            model = build_identification_model(base, folder)
            self.session.set_model(model, model.source, self.session.weights)
            return model

        def done(model):
            self._on_model_loaded(model)
            skipped = model.extras.get("skipped") or []
            self.class_info.setText(f"identification over {len(model.class_names)} identities"
                                    + (f"; skipped {len(skipped)} photos: {'; '.join(map(str, skipped[:3]))}"
                                       if skipped else ""))
            self.tabs.setCurrentIndex(3)

        self._submit(self.io, work, "building the identification gallery", done=done)

    # ================================================================== files, export, state
    def _choose_image(self, slot: str) -> None:
        path, _ = QFileDialog.getOpenFileName(self, f"Open {slot} image", self._last_dir(), IMAGE_FILTER)
        if path:
            self.load_image(slot, path)

    def _choose_weights(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Weights (.pth/.pt) or TorchScript", self._last_dir(),
                                              "PyTorch files (*.pth *.pt *.ts *.torchscript *.ckpt *.dat);;All (*)")
        if not path:
            return
        from ..models.zoo import _looks_like_torchscript

        if _looks_like_torchscript(Path(path)):
            self.load_model(path, None)
        else:
            self.load_model(self.model_combo.currentText(), path)

    def _on_face_index(self, value: int) -> None:
        if "probe" in self.session.images:
            self.load_image("probe", self.session.images["probe"].path, face_index=value)

    def _on_align_toggled(self, on: bool) -> None:
        self.session.align = on

        def work(_job):
            for slot in list(self.session.images):
                self.session.prepare(slot)
            return None

        self._submit(self.io, work, "re-aligning", done=lambda _r: self._refresh_inputs())

    def dragEnterEvent(self, event) -> None:  # noqa: N802 (Qt API)
        if event.mimeData().hasUrls():
            event.acceptProposedAction()

    def dropEvent(self, event) -> None:  # noqa: N802
        paths = [u.toLocalFile() for u in event.mimeData().urls() if u.isLocalFile()]
        slots = ["reference", "third"] if self.tabs.currentIndex() == 2 and len(paths) == 1 \
            and "probe" in self.session.inputs and event.position().x() > self.width() / 2 else \
            ["probe", "reference", "third"]
        for slot, p in zip(slots, paths):
            self.load_image(slot, p)

    def current_result(self) -> MapResult | None:
        return {0: self.cell_result, 2: self.pair_result, 3: self.class_result}.get(self.tabs.currentIndex()) \
            or self.cell_result or self.pair_result or self.class_result

    def export_current(self, png: str, npy: str | None = None, on_photo: bool | None = None) -> list[Path]:
        """Export the shown map: overlay PNG (+ boxes for a cell), raw .npy, JSON sidecar next to the PNG."""
        res = self.current_result()
        if res is None:
            raise ValueError("nothing to export yet: compute a map first")
        on_photo = self.export_on_photo.isChecked() if on_photo is None else on_photo
        boxes = None
        if res.target.kind == "cell" and self.show_boxes.isChecked():
            fp, rf = self.session.cell_geometry(res.target.layer, res.target.cell)
            boxes = [(fp.as_tuple(), FOOTPRINT_COLOR), (rf.as_tuple(), RF_COLOR)]
        return self.session.export(res, png, npy or str(Path(png).with_suffix(".npy")), on_photo=on_photo,
                                   opacity=self.opacity.value() / 100.0, cmap=self.cmap_combo.currentText(),
                                   boxes=boxes)

    def export_sheet(self, png: str) -> list[Path]:
        from ..export import write_json, write_npy, write_png
        from ..report import explain_record

        done = [r for r in self.sheet_results if r is not None]
        if not done or len(done) != len(self.sheet_results):
            raise ValueError("compute all cells first")
        rgb = self.session.input_rgb("probe")
        a, cmap = self.opacity.value() / 100.0, self.cmap_combo.currentText()
        img = sheet([overlay(rgb, r.map, a, cmap) for r in done], self.sheet_columns, gap=2)
        stack = np.stack([r.map for r in done]).astype(np.float32)
        rec = explain_record(self.session.model, self.session.weights, self.session.input("probe"), None,
                             done[0].target, "fame", done[0].params)
        rec["sheet"] = {"layer": self.sheet_layer, "cells": [list(r.target.cell) for r in done],
                        "columns": self.sheet_columns, "maps": str(Path(png).with_suffix(".npy").resolve())}
        return [write_png(png, img), write_npy(Path(png).with_suffix(".npy"), stack),
                write_json(Path(png).with_suffix(".json"), rec)]

    def _export_dialog(self, sheet: bool = False, compare: bool = False) -> None:
        title = "Export sheet" if sheet else "Export comparison" if compare else \
            "Export view (PNG; .npy and .json are written beside it)"
        path, _ = QFileDialog.getSaveFileName(self, title, self._last_dir(), "PNG (*.png)")
        if not path:
            return
        path = path if path.endswith(".png") else path + ".png"
        try:
            written = self.export_sheet(path) if sheet else self.compare_tab.export(path) if compare \
                else self.export_current(path)
            self.status_label.setText("exported " + ", ".join(p.name for p in written))
        except (ValueError, OSError) as e:
            self.show_error(f"export failed: {e}")

    def _last_dir(self) -> str:
        recent = self.settings.value("recent", []) or []
        return str(Path(recent[0]).parent) if recent else str(Path.home())

    def _add_recent(self, path: str) -> None:
        recent = [p for p in (self.settings.value("recent", []) or []) if p != path]
        self.settings.setValue("recent", [path] + recent[:MAX_RECENT - 1])
        self._fill_recent()

    def _fill_recent(self) -> None:
        self.recent_menu.clear()
        for p in self.settings.value("recent", []) or []:
            a = self.recent_menu.addAction(p)
            a.triggered.connect(lambda _c=False, p=p: self.load_image("probe", p))

    def _restore_state(self) -> None:
        geo = self.settings.value("geometry")
        self.geometry_restored = False
        if geo is not None:
            self.geometry_restored = bool(self.restoreGeometry(geo))
        else:
            self.resize(1500, 900)
        state = self.settings.value("windowState")
        if state is not None:
            self.restoreState(state)
        cmap = self.settings.value("colormap")
        if cmap in COLORMAPS:
            self.cmap_combo.setCurrentText(cmap)
        op = self.settings.value("opacity")
        if op is not None:
            self.opacity.setValue(int(op))

    def closeEvent(self, event) -> None:  # noqa: N802
        self.settings.setValue("geometry", self.saveGeometry())
        self.settings.setValue("windowState", self.saveState())
        self.settings.setValue("colormap", self.cmap_combo.currentText())
        self.settings.setValue("opacity", self.opacity.value())
        self.settings.sync()
        self.scheduler.shutdown()
        super().closeEvent(event)
