"""The "Settings" dock: FAME's parameters, the display (colormap, opacity, boxes, export), the device.

Its sections fold away (click a title) and the whole panel scrolls, so it fits a small screen;
the dock itself can be closed and brought back from View > Panels.
"""
from __future__ import annotations

import torch
from PySide6.QtCore import QSettings, Qt, Signal
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDockWidget,
    QFormLayout,
    QGroupBox,
    QLabel,
    QSlider,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from ..core.render import COLORMAPS
from ..methods.fame import FAME_PARAMS
from .display import DisplaySettings
from .params import ParamForm
from .widgets import Section, scrolled

MIN_WIDTH = 210

LEGEND = ("<span style='color:#fff'>&#9632;</span> white: the cell's footprint (the patch under it)"
          "<br><span style='color:#00e6ff'>&#9632;</span> cyan: its theoretical receptive field")


def devices() -> list[str]:
    """The torch devices this machine offers."""
    devs = ["cpu"]
    if torch.cuda.is_available():
        devs.append("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        devs.append("mps")
    return devs


class SettingsDock(QDockWidget):
    """FAME settings (``param_form``) and the display controls, which drive a :class:`DisplaySettings`."""

    device_changed = Signal(str)

    def __init__(self, display: DisplaySettings, parent: QWidget | None = None) -> None:
        super().__init__("Settings", parent)
        self.setObjectName("dock_settings")
        self.display = display
        w = QWidget()
        lay = QVBoxLayout(w)
        lay.setContentsMargins(4, 4, 4, 4)
        self.param_form = ParamForm(FAME_PARAMS, hidden=("progress_every",))
        self.fame_section = Section("FAME", self.param_form)
        self.display_section = Section("Display and export", self._build_display_box())
        legend = QLabel(LEGEND)
        legend.setWordWrap(True)
        lay.addWidget(self.fame_section)
        lay.addWidget(self.display_section)
        lay.addWidget(legend)
        lay.addStretch(1)
        self.setWidget(scrolled(w))
        self.setMinimumWidth(MIN_WIDTH)

    def _build_display_box(self) -> QGroupBox:
        box = QGroupBox()
        form = QFormLayout(box)
        form.setRowWrapPolicy(QFormLayout.WrapLongRows)
        d = self.display
        self.cmap_combo = QComboBox()
        self.cmap_combo.addItems(list(COLORMAPS))
        self.cmap_combo.setCurrentText(d.colormap)
        self.cmap_combo.currentTextChanged.connect(lambda t: setattr(d, "colormap", t))
        self.opacity = QSlider(Qt.Horizontal)
        self.opacity.setRange(0, 100)
        self.opacity.setValue(round(100 * d.opacity))
        self.opacity.valueChanged.connect(lambda v: setattr(d, "opacity", v / 100.0))
        self.show_boxes = QCheckBox("footprint and receptive field")
        self.show_boxes.setChecked(d.boxes)
        self.show_boxes.toggled.connect(lambda on: setattr(d, "boxes", on))
        self.export_on_photo = QCheckBox("export on the full photo")
        self.export_on_photo.setToolTip("exports draw the map on the opened photo instead of the model input")
        self.export_on_photo.setChecked(d.on_photo)
        self.export_on_photo.toggled.connect(lambda on: setattr(d, "on_photo", on))
        self.export_size = QSpinBox()
        self.export_size.setRange(150, 4000)
        self.export_size.setSingleStep(100)
        self.export_size.setSuffix(" px")
        self.export_size.setValue(d.export_px)
        self.export_size.setToolTip("long side of an exported picture (a figure for a paper: 600 px or more)")
        self.export_size.valueChanged.connect(lambda v: setattr(d, "export_px", v))
        self.device_combo = QComboBox()
        self.device_combo.addItems(devices())
        self.device_combo.activated.connect(lambda _i: self.device_changed.emit(self.device_combo.currentText()))
        form.addRow("colormap", self.cmap_combo)
        form.addRow("opacity", self.opacity)
        form.addRow("boxes", self.show_boxes)
        form.addRow("export", self.export_on_photo)
        form.addRow("export size", self.export_size)
        form.addRow("device", self.device_combo)
        return box

    def device(self) -> str:
        return self.device_combo.currentText()

    def on_model_loaded(self, _model) -> None:
        """A new model: its own blur defaults (auto) apply."""
        self.param_form.set_value("blur_kernel", None)
        self.param_form.set_value("blur_sigma", None)

    def restore(self, settings: QSettings) -> None:
        cmap = settings.value("colormap")
        if cmap in COLORMAPS:
            self.cmap_combo.setCurrentText(cmap)
        op = settings.value("opacity")
        if op is not None:
            self.opacity.setValue(int(op))
        px = settings.value("export_px")
        if px is not None:
            self.export_size.setValue(int(px))
        for section, key in ((self.fame_section, "fame_open"), (self.display_section, "display_open")):
            value = settings.value(key)
            if value is not None:
                section.set_expanded(str(value).lower() in ("true", "1"))

    def save(self, settings: QSettings) -> None:
        settings.setValue("colormap", self.cmap_combo.currentText())
        settings.setValue("opacity", self.opacity.value())
        settings.setValue("export_px", self.export_size.value())
        settings.setValue("fame_open", self.fame_section.expanded)
        settings.setValue("display_open", self.display_section.expanded)
