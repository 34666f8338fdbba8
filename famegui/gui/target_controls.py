"""The choice of target kind in a view: one radio button per registered kind of the view's task that declares
a :class:`famegui.targets.GuiChoice` (the Classes view: classification kinds, the Pair view: verification
kinds), so that a kind registered before the window is built is offered without an edit here."""
from __future__ import annotations

from collections.abc import Callable

from PySide6.QtWidgets import QButtonGroup, QRadioButton, QVBoxLayout, QWidget

from ..targets import all_kinds


class KindChoice(QWidget):
    """Radio buttons, one per kind of ``task`` with a GUI choice, in registration order (the first checked);
    ``changed()`` is called when the user picks another one."""

    def __init__(self, task: str, changed: Callable[[], None], parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.buttons: dict[str, QRadioButton] = {}  # kind name -> its button
        self._group = QButtonGroup(self)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        for kind in all_kinds(task):
            if kind.gui is None:
                continue
            button = QRadioButton(kind.gui.label)
            button.setToolTip(kind.gui.tip)
            self._group.addButton(button)
            lay.addWidget(button)
            button.toggled.connect(lambda on: on and changed())
            self.buttons[kind.name] = button
        if self.buttons:
            next(iter(self.buttons.values())).setChecked(True)

    def kind(self) -> str:
        """The name of the chosen kind."""
        return next(name for name, b in self.buttons.items() if b.isChecked())

    def label(self, kind: str) -> str:
        """The text of ``kind``'s button."""
        return self.buttons[kind].text()

    def offers(self, kind: str) -> bool:
        return kind in self.buttons

    def set_kind(self, kind: str) -> None:
        """Check ``kind``'s button without calling ``changed`` (the controls follow a map shown)."""
        button = self.buttons[kind]
        button.blockSignals(True)
        button.setChecked(True)
        button.blockSignals(False)
