"""Controls generated from a method's parameter declarations (the registry is the one source).

The GUI starts some parameters elsewhere than the registry's defaults (:data:`GUI_DEFAULTS`): the
registry's defaults are the papers' settings, which the CLI, sidecars and goldens keep; a person
clicking cells wants the fast settings that give the same picture (FAME stops once its map has
converged, and cells run on their receptive field's crop). Sidecars record the values used, so an
export made from the GUI reproduces with them.
"""
from __future__ import annotations

from PySide6.QtCore import Signal
from PySide6.QtWidgets import QCheckBox, QComboBox, QDoubleSpinBox, QFormLayout, QLineEdit, QSpinBox, QWidget

from ..methods import Param
from ..methods.fame import FAST_PARAMS

GUI_DEFAULTS = dict(FAST_PARAMS)  # FAME: stop at convergence, cells on their receptive field's crop


def gui_default(p: Param):
    """The value the GUI's control starts at: :data:`GUI_DEFAULTS`, else the registry's default."""
    return GUI_DEFAULTS.get(p.name, p.default)


class ParamForm(QWidget):
    """A form with one control per :class:`Param`; ``values()`` gives the dict a method takes.

    A text field takes only what its parameter accepts: other text is put back to the last accepted value when
    the editing ends, and ``invalid(message)`` says why; half-typed text is never read."""

    changed = Signal()
    invalid = Signal(str)

    def __init__(self, params: tuple[Param, ...], hidden: tuple[str, ...] = (), parent: QWidget | None = None):
        super().__init__(parent)
        self.params = {p.name: p for p in params if p.name not in hidden}
        self.widgets: dict[str, QWidget] = {}
        self._accepted: dict[str, str] = {}  # the last valid text of each text field
        form = QFormLayout(self)
        form.setContentsMargins(0, 0, 0, 0)
        for p in self.params.values():
            w = self._make(p)
            w.setToolTip(p.help)
            w.setObjectName(f"param_{p.name}")
            self.widgets[p.name] = w
            form.addRow(p.name.replace("_", " "), w)

    def _make(self, p: Param) -> QWidget:
        default = gui_default(p)
        if p.choices:
            w = QComboBox()
            w.addItems([str(c) for c in p.choices])
            w.setCurrentText(str(default))
            w.currentTextChanged.connect(self.changed)
        elif p.type is bool:
            w = QCheckBox()
            w.setChecked(bool(default))
            w.toggled.connect(self.changed)
        elif p.default is None or p.type is str:
            w = QLineEdit("" if default is None else str(default))
            w.setPlaceholderText(("off" if p.name.startswith("converge") else "auto") if p.default is None else "")
            self._accepted[p.name] = w.text()
            w.editingFinished.connect(lambda p=p, w=w: self._edited(p, w))
        elif p.type is int:
            w = QSpinBox()
            w.setRange(int(p.min if p.min is not None else -10**9), int(p.max if p.max is not None else 10**9))
            w.setValue(int(default))
            w.setKeyboardTracking(False)
            w.valueChanged.connect(self.changed)
        else:
            w = QDoubleSpinBox()
            w.setDecimals(6)
            w.setRange(float(p.min if p.min is not None else -1e9), float(p.max if p.max is not None else 1e9))
            w.setSingleStep(abs(default) / 4 if default else 0.1)
            w.setValue(float(default))
            w.setKeyboardTracking(False)
            w.valueChanged.connect(self.changed)
        return w

    def _edited(self, p: Param, w: QLineEdit) -> None:
        text = w.text().strip()
        try:
            p.coerce(text or None)
        except ValueError as e:
            w.setText(self._accepted[p.name])
            self.invalid.emit(str(e))
            return
        self._accepted[p.name] = w.text()
        self.changed.emit()

    def values(self) -> dict:
        """Current values; text fields left empty mean the method's default ("auto"). A text field gives its last
        accepted text: what is typed counts once its editing ends (as ``changed`` says)."""
        out = {}
        for name, w in self.widgets.items():
            p = self.params[name]
            if isinstance(w, QComboBox):
                out[name] = p.coerce(w.currentText())
            elif isinstance(w, QCheckBox):
                out[name] = w.isChecked()
            elif isinstance(w, QLineEdit):
                text = self._accepted[name].strip()
                out[name] = None if text == "" else p.coerce(text)
            else:
                out[name] = w.value()
        return out

    def set_value(self, name: str, value) -> None:
        w = self.widgets[name]
        if isinstance(w, QComboBox):
            w.setCurrentText(str(value))
        elif isinstance(w, QCheckBox):
            w.setChecked(bool(value))
        elif isinstance(w, QLineEdit):
            w.setText("" if value is None else str(value))
            self._accepted[name] = w.text()
            self.changed.emit()
        else:
            w.setValue(value)
