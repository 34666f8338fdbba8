"""The "Model and images" dock: network and weights, its layers, the three image slots, the probe preview.

Loading runs on the io lane; the dock announces a usable model with
``model_loaded(model)`` and new images with ``image_loaded(slot)``, and asks
for a redraw of everything that depends on the images with ``inputs_changed``.
A load that fails keeps what the slot held before. Slots name the file (folder and
name) and, for the bundled sample photos, the person on them. The panel scrolls when
the screen is small.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDockWidget,
    QFileDialog,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QSizePolicy,
    QSpinBox,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from ..core.render import draw_polygon, to_uint8
from .canvas import ImageCanvas
from .context import AppContext
from .download_panel import LEGEND, STATE_ROLE, STATE_WORDS, DownloadPanel, mark_states, state_icon, state_short
from .files import IMAGE_FILTER, WEIGHTS_FILTER, RecentFiles
from .layer_tree import LayerTree
from .messages import photo_caption
from .widgets import scrolled

SLOTS = ("probe", "reference", "third")
DEFAULT_MODEL = "dlib-resnet"
MIN_WIDTH = 220


class ModelDock(QDockWidget):
    """Model choice, layer tree, image slots; loads models and images in the background."""

    model_loaded = Signal(object)  # the new ModelWrapper, after the dock shows it
    inputs_changed = Signal()  # images or their preparation changed: redraw what depends on them
    image_loaded = Signal(str)  # the slot of a newly loaded image (after inputs_changed)

    def __init__(self, ctx: AppContext, recent: RecentFiles, parent: QWidget | None = None) -> None:
        super().__init__("Model and images", parent)
        self.setObjectName("dock_model")
        self.ctx = ctx
        self.recent = recent
        self.index_problem: str | None = None
        w = QWidget()
        lay = QVBoxLayout(w)
        lay.addWidget(self._build_model_box())
        self.layer_tree = LayerTree(ctx)
        self.layer_tree.setMinimumHeight(90)
        self.show_all_layers = QCheckBox("every module")
        self.show_all_layers.setToolTip("show every module of the network, not only feature maps")
        # no word-wrapped labels in this panel: they would lay it out at its preferred height in the scroll
        # area, and the layer list would not shrink to leave room for the images on a short screen
        layers_label = QLabel("Layers (pick one)")
        layers_label.setToolTip("pick a layer to see its feature map")
        lay.addWidget(layers_label)
        lay.addWidget(self.layer_tree, 2)
        lay.addWidget(self.show_all_layers)
        lay.addWidget(self._build_images_box())
        self.chip_canvas = ImageCanvas("probe photo and model input region", min_side=100)
        lay.addWidget(self.chip_canvas, 1)
        self.setWidget(scrolled(w))
        self.setMinimumWidth(MIN_WIDTH)
        if self.index_problem:
            self.ctx.show_status(f"weights index ignored: {self.index_problem}")

    @property
    def session(self):
        return self.ctx.session

    def _build_model_box(self) -> QGroupBox:
        box = QGroupBox("Model")
        form = QFormLayout(box)
        self.model_combo = QComboBox()
        self.model_combo.setSizeAdjustPolicy(QComboBox.AdjustToMinimumContentsLengthWithIcon)
        self.model_combo.setMinimumContentsLength(12)
        self.model_combo.setToolTip(LEGEND)
        self.fill_models()
        self.model_combo.activated.connect(lambda i: self.pick_model(self.model_combo.itemText(i)))
        self.download = DownloadPanel(self.ctx, self.recent.settings)
        self.download.fetched.connect(self._on_fetched)
        self.weights_label = QLabel("embedded")
        self.weights_label.setSizePolicy(QSizePolicy.Ignored, QSizePolicy.Preferred)  # long paths: see tooltip
        wb = QPushButton("Weights / ONNX / TorchScript...")
        wb.clicked.connect(self.choose_weights)
        form.addRow("network", self.model_combo)
        form.addRow(self.download)
        form.addRow("weights", self.weights_label)
        form.addRow(wb)
        return box

    def fill_models(self) -> None:
        """The network list: zoo names, insightface packs and cached timm weights, each marked with its state
        (ready, can be downloaded, needs a file); the model in use stays selected."""
        from ..models.wrapper import ModelLoadError
        from ..models.zoo import model_catalogue

        try:
            rows = model_catalogue()
        except ModelLoadError as e:  # a broken $FAMEGUI_WEIGHTS_INDEX: the shipped list, and say why
            rows = model_catalogue(user=False)
            self.index_problem = str(e)
        current = self.model_combo.currentText()
        self.model_combo.clear()
        for row in rows:
            if row.explainable:
                self.model_combo.addItem(state_icon(row.state), row.name)
                words, i = STATE_WORDS.get(row.state, ""), self.model_combo.count() - 1
                self.model_combo.setItemData(i, f"{words}: {row.note}" if words else row.note, Qt.ToolTipRole)
                size = f"{row.size / 1e6:.0f} MB" if row.size else ""
                self.model_combo.setItemData(i, state_short(row.state, size), STATE_ROLE)
        if current and self.model_combo.findText(current) >= 0:
            self.model_combo.setCurrentText(current)
        mark_states(self.model_combo)

    def pick_model(self, name: str) -> None:
        """A name chosen in the list: loaded if it can be; a model whose weights can be downloaded is offered
        for download instead (nothing is fetched until the user asks), and the list shows the model in use."""
        entry = self._fetchable(name)
        if entry is None:
            self.download.withdraw()
            self.load_model(name, None)
            return
        self.download.offer(entry)
        current = self.session.model_spec
        if current is not None and self.model_combo.findText(current) >= 0:
            self.model_combo.setCurrentText(current)
        self.ctx.show_status(f"{name}: not on this machine; Download ({entry.size_text()}) fetches it")

    def _fetchable(self, name: str):
        """The weights entry of ``name`` when it is not on disk and can be fetched, else None."""
        from ..models.weights_index import catalogue, state
        from ..models.wrapper import ModelLoadError

        try:
            entry = catalogue().get(name)
        except ModelLoadError:
            entry = catalogue(user=False).get(name)
        return entry if entry is not None and state(entry) == "fetch" else None

    def _on_fetched(self, name: str) -> None:
        self.fill_models()
        if self.model_combo.findText(name) < 0:  # an insightface pack lists its recognition model(s)
            found = [self.model_combo.itemText(i) for i in range(self.model_combo.count())
                     if self.model_combo.itemText(i).startswith(name)]
            name = found[0] if found else name
        self.load_model(name, None)

    def _build_images_box(self) -> QGroupBox:
        box = QGroupBox("Images")
        form = QFormLayout(box)
        self.image_labels: dict[str, QLabel] = {}
        for slot in SLOTS:
            label = QLabel("-")
            label.setMinimumWidth(60)
            btn = QToolButton()
            btn.setText("...")
            btn.setToolTip(f"open the {slot} image")
            btn.clicked.connect(lambda _c=False, s=slot: self.choose_image(s))
            row = QHBoxLayout()  # the slot and its button, then the photo's two lines across the panel
            row.addWidget(QLabel(f"<b>{slot}</b>"), 1)
            row.addWidget(btn)
            form.addRow(row)
            form.addRow(label)
            self.image_labels[slot] = label
        self.face_spin = QSpinBox()
        self.face_spin.setRange(0, 50)
        self.face_spin.setToolTip("which face of the probe photo (0 = largest)")
        self.face_spin.valueChanged.connect(self._on_face_index)
        self.align_box = QCheckBox("align faces")
        self.align_box.setToolTip("off: a centre crop of the image as it is")
        self.align_box.setChecked(True)
        self.align_box.toggled.connect(self._on_align_toggled)
        form.addRow("probe face", self.face_spin)
        form.addRow(self.align_box)
        return box

    # ------------------------------------------------------------------ model
    def load_model(self, spec: str, weights: str | None) -> None:
        """Load a model (zoo name, file or entry point) on the io lane; a failure keeps the working one."""
        device = self.ctx.device
        self.ctx.cancel_jobs()

        def work(_job):
            return self.session.load_model(spec, weights, device)

        def failed(_msg):  # the working model stays: show it again in the combo
            current = self.session.model_spec
            if current is not None and self.model_combo.findText(current) >= 0:
                self.model_combo.setCurrentText(current)

        self.ctx.submit(self.ctx.io, work, f"loading {spec}", done=self.adopt_model, failed=failed, clears_error=True,
                        any_model=True)

    def use_model(self, model) -> None:
        """Use a model already in memory (``famegui.open(module)``): moved to the chosen device and prepared
        on the io lane like a loaded one."""
        device = self.ctx.device
        self.ctx.cancel_jobs()

        def work(_job):
            if device != "cpu":
                model.to(device)
            self.session.set_model(model)
            return model

        self.ctx.submit(self.ctx.io, work, f"using {model.name}", done=self.adopt_model, clears_error=True,
                        any_model=True)

    def reload(self) -> None:
        """The current model again (e.g. on another device); a model from memory is moved, not loaded."""
        model = self.ctx.model
        if model is not None and model.extras.get("in_memory"):
            self.use_model(model)
            return
        self.load_model(self.session.model_spec or DEFAULT_MODEL, self.session.weights)

    def adopt_model(self, model) -> None:
        """Show ``model`` (now the session's) in the dock and announce it: the window's model from now on."""
        self.ctx.model = model
        name = self.session.model_spec or model.name
        i = self.model_combo.findText(name)
        if i < 0:
            self.model_combo.addItem(name)
            i = self.model_combo.count() - 1
        self.model_combo.setCurrentIndex(i)
        self.weights_label.setText(self.session.weights or ("embedded" if model.alignment else model.weights_id[:24]))
        self.weights_label.setToolTip(self.weights_label.text())
        self.model_loaded.emit(model)

    def choose_weights(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Weights (.safetensors/.pth) or a model file (.onnx, TorchScript)",
                                              self.recent.last_dir(), WEIGHTS_FILTER)
        if path:
            self.open_file(path)

    def open_file(self, path: str) -> None:
        """A whole model file (ONNX, TorchScript) is loaded as the model; anything else as weights of the
        network chosen in the list."""
        from ..models.onnx_models import looks_like_onnx
        from ..models.zoo import looks_like_torchscript

        if looks_like_onnx(Path(path)) or looks_like_torchscript(Path(path)):  # a whole model, not weights
            self.load_model(path, None)
        else:
            self.load_model(self.model_combo.currentText(), path)

    # ------------------------------------------------------------------ images
    def choose_image(self, slot: str) -> None:
        path, _ = QFileDialog.getOpenFileName(self, f"Open {slot} image", self.recent.last_dir(), IMAGE_FILTER)
        if path:
            self.load_image(slot, path)

    def load_image(self, slot: str, path, face_index: int | None = None) -> None:
        """Load and prepare the image of ``slot`` on the io lane (the probe's face from the spin box);
        if that fails the slot keeps the image it had. ``path``: a file, or an image already in memory
        (a :class:`~famegui.data.images.LoadedImage`, from ``famegui.open``)."""
        idx = self.face_spin.value() if (slot == "probe" and face_index is None) else (face_index or 0)

        def work(_job):
            s = self.session
            before = s.images.get(slot), s.face_index.get(slot, 0)
            try:
                s.set_image(slot, path, face_index=idx)
            except Exception:
                self._put_back(slot, *before)
                raise
            return slot

        name = path if isinstance(path, str) else path.path  # a LoadedImage is named by where it came from
        self.ctx.submit(self.ctx.io, work, f"loading {Path(name).name}", done=lambda s: self._on_image_loaded(s, name),
                        clears_error=True, any_model=True)

    def unload_image(self, slot: str) -> None:
        """Empty ``slot`` (after the loads already queued on the io lane, so the order of requests holds)."""
        def work(_job):
            self.session.clear_image(slot)
            return slot

        def done(_slot):
            self.image_labels[slot].setText("-")
            self.image_labels[slot].setToolTip("")
            self.inputs_changed.emit()

        self.ctx.submit(self.ctx.io, work, f"removing the {slot} photo", done=done, any_model=True)

    def _put_back(self, slot: str, image, face_index: int) -> None:
        """The image ``slot`` held before a failed load (in the worker: preparing it may run the network)."""
        if image is None:
            self.session.clear_image(slot)
            return
        try:
            self.session.set_image(slot, image, face_index=face_index)
        except (ValueError, OSError):  # it had no usable input before either: keep the photo, as before
            pass

    def _on_image_loaded(self, slot: str, path: str) -> None:
        inp = self.session.inputs.get(slot)
        label = photo_caption(path).replace(", ", "\n", 1)  # the person, then the file: two short lines
        tip = str(Path(path).resolve())
        if inp is not None and inp.note:
            tip += f"\n{inp.note}"
            label += "\n(see the tooltip)" if len(inp.note) > 30 else f"\n({inp.note})"
        self.image_labels[slot].setText(label)
        self.image_labels[slot].setToolTip(tip)
        if Path(path).is_file():  # not an image from memory
            self.recent.add(path)
        self.inputs_changed.emit()
        self.image_loaded.emit(slot)

    def _on_face_index(self, value: int) -> None:
        if "probe" in self.session.images:
            self.load_image("probe", self.session.images["probe"].path, face_index=value)

    def _on_align_toggled(self, on: bool) -> None:
        self.session.align = on

        def work(_job):
            for slot in list(self.session.images):
                self.session.prepare(slot)
            return None

        self.ctx.submit(self.ctx.io, work, "re-aligning", done=lambda _r: self.inputs_changed.emit(), any_model=True)

    def draw_chip_preview(self) -> None:
        """The probe photo with the region the model sees (the aligned or cropped input)."""
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
        self.chip_canvas.set_title(f"{photo_caption(inp.image.path)}: {inp.prepared.mode}{faces}")
