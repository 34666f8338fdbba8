"""The model dock's Download action: weights of a catalogue model fetched when the user asks, with a progress bar,
a Cancel button, and the licence shown before a model's first download.

The download runs on the context's ``downloads`` lane (its own thread: the network's thread keeps explaining);
:mod:`famegui.models.download` streams, verifies and renames the file into the cache the loaders read, so the
model then loads by its name. A failure is one line in the window's banner; a cancel leaves nothing behind.
Which licences the user has seen is kept in the app's settings (``licence_seen/NAME``).
"""
from __future__ import annotations

from PySide6.QtCore import QSettings, QSize, Qt, Signal
from PySide6.QtGui import QColor, QIcon, QPainter, QPixmap, QPolygonF
from PySide6.QtWidgets import (
    QComboBox,
    QHBoxLayout,
    QLabel,
    QMessageBox,
    QProgressBar,
    QPushButton,
    QSizePolicy,
    QStyledItemDelegate,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from .context import AppContext

STATE_WORDS = {"ready": "ready", "fetch": "can be downloaded", "manual": "needs a weights file from you"}
LEGEND = "green dot: ready; blue arrow: can be downloaded (Download button); grey ring: needs a weights file"


def state_icon(state: str) -> QIcon:
    """A small mark of a model's state for the network list: a green dot (ready), a blue arrow (can be
    downloaded), a grey ring (needs a weights file)."""
    from PySide6.QtCore import QPointF

    pix = QPixmap(14, 14)
    pix.fill(Qt.transparent)
    p = QPainter(pix)
    p.setRenderHint(QPainter.Antialiasing)
    if state == "fetch":
        p.setPen(Qt.NoPen)
        p.setBrush(QColor(40, 110, 220))
        p.drawRect(5, 1, 4, 6)
        p.drawPolygon(QPolygonF([QPointF(1.5, 6.5), QPointF(12.5, 6.5), QPointF(7, 12.5)]))
    elif state == "ready":
        p.setPen(Qt.NoPen)
        p.setBrush(QColor(40, 170, 70))
        p.drawEllipse(2, 2, 10, 10)
    else:
        p.setPen(QColor(130, 130, 130))
        p.setBrush(Qt.NoBrush)
        p.drawEllipse(3, 3, 8, 8)
    p.end()
    return QIcon(pix)


STATE_ROLE = Qt.UserRole + 1  # a list row's short state ("ready", "103 MB", "file"), drawn at its right


def state_short(state: str, size_text: str = "") -> str:
    """The few words at the right of a row of the network list."""
    return {"ready": "ready", "fetch": size_text or "download", "manual": "file"}.get(state, "")


class StateDelegate(QStyledItemDelegate):
    """Rows of the network list with their state in grey at the right (``STATE_ROLE``)."""

    GAP = 16

    def paint(self, painter, option, index) -> None:
        super().paint(painter, option, index)
        text = index.data(STATE_ROLE)
        if text:
            painter.save()
            painter.setPen(option.palette.color(option.palette.ColorRole.PlaceholderText))
            painter.drawText(option.rect.adjusted(0, 0, -6, 0), Qt.AlignRight | Qt.AlignVCenter, text)
            painter.restore()

    def sizeHint(self, option, index) -> QSize:  # noqa: N802 - Qt's name
        hint = super().sizeHint(option, index)
        text = index.data(STATE_ROLE)
        if text:
            hint.setWidth(hint.width() + self.GAP + option.fontMetrics.horizontalAdvance(text) + 6)
        return hint


def mark_states(combo: QComboBox) -> None:
    """Draw ``STATE_ROLE`` in ``combo``'s list, which opens wide enough for it."""
    combo.setItemDelegate(StateDelegate(combo))
    view = combo.view()
    view.setMinimumWidth(view.sizeHintForColumn(0) + view.verticalScrollBar().sizeHint().width() + 8)


class DownloadPanel(QWidget):
    """"NAME is not on this machine" with a Download (size) button; while it runs, a progress bar and Cancel.

    ``fetched(name)`` when the weights are in place (verified); ``licence_shown(name)`` when the licence box
    opens (tests and scripts count it).
    """

    fetched = Signal(str)
    licence_shown = Signal(str)

    def __init__(self, ctx: AppContext, settings: QSettings, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.ctx = ctx
        self.settings = settings
        self.entry = None  # the WeightsEntry on offer
        self.job = None
        self.licence_box: QMessageBox | None = None
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        self.label = QLabel()
        self.label.setSizePolicy(QSizePolicy.Ignored, QSizePolicy.Preferred)  # long names: see the tooltip
        self.button = QPushButton("Download")
        self.button.clicked.connect(self.request)
        self.bar = QProgressBar()
        self.bar.setRange(0, 1000)
        self.bar.setTextVisible(True)
        self.cancel_button = QToolButton()
        self.cancel_button.setText("Cancel")
        self.cancel_button.setToolTip("stop the download (nothing is kept)")
        self.cancel_button.clicked.connect(self.cancel)
        row = QHBoxLayout()
        row.addWidget(self.bar, 1)
        row.addWidget(self.cancel_button)
        lay.addWidget(self.label)
        lay.addWidget(self.button)
        lay.addLayout(row)
        self._show(running=False)
        self.hide()

    # ------------------------------------------------------------------ offer
    def offer(self, entry) -> None:
        """Offer ``entry``'s download (a :class:`~famegui.models.weights_index.WeightsEntry` that can be fetched)."""
        if self.running:
            self.ctx.show_status(f"{self.entry.name} is still downloading")
            return
        self.entry = entry
        self.label.setText(f"{entry.name}: not on this machine")
        self.button.setText(f"Download ({entry.size_text()})")
        tip = (f"{entry.name}: {entry.size_text()} from {entry.source}\ninto {entry.destination()}\n"
               f"licence: {entry.licence or 'see ' + (entry.page or 'its page')}")
        for w in (self.label, self.button):
            w.setToolTip(tip)
        self._show(running=False)
        self.show()

    def withdraw(self) -> None:
        """No download on offer (another model was picked); a running download goes on."""
        if not self.running:
            self.entry = None
            self.hide()

    @property
    def running(self) -> bool:
        return self.job is not None

    def _show(self, running: bool) -> None:
        self.button.setVisible(not running)
        self.bar.setVisible(running)
        self.cancel_button.setVisible(running)

    # ------------------------------------------------------------------ licence
    def licence_seen(self, name: str) -> bool:
        return bool(self.settings.value(f"licence_seen/{name}", False, type=bool))

    def request(self) -> None:
        """The Download button: the licence first (once per model), then the download."""
        if self.entry is None or self.running:
            return
        if self.licence_seen(self.entry.name):
            self.start()
            return
        e = self.entry
        box = QMessageBox(QMessageBox.Information, f"Download {e.name}",
                          f"<b>{e.name}</b>: {e.size_text()}<br>from {e.source}<br>into {e.destination()}", parent=self)
        box.setInformativeText(f"Licence: {e.licence or 'not stated in the catalogue'}"
                               + (f"\nSee {e.page}" if e.page else "")
                               + "\n\nThe file is checked against the catalogue's checksum before it is used.")
        box.setTextFormat(Qt.RichText)
        box.addButton("Accept and download", QMessageBox.AcceptRole)
        box.addButton(QMessageBox.Cancel)
        box.finished.connect(lambda _r, b=box, name=e.name: self._licence_answered(b, name))
        self.licence_box = box
        box.open()
        self.licence_shown.emit(e.name)

    def _licence_answered(self, box: QMessageBox, name: str) -> None:
        self.licence_box = None
        if box.buttonRole(box.clickedButton()) != QMessageBox.AcceptRole:
            self.ctx.show_status(f"{name}: not downloaded")
            return
        self.settings.setValue(f"licence_seen/{name}", True)
        if self.entry is not None and self.entry.name == name:
            self.start()

    # ------------------------------------------------------------------ download
    def start(self) -> None:
        """Fetch the offered weights on the downloads lane."""
        from ..core.fame import Cancelled
        from ..models.download import DownloadCancelled, fetch

        entry = self.entry

        def work(job):
            def progress(done: int, total: int | None) -> None:
                job.progress(done / total if total else 0.0, (done, total))

            try:
                return fetch(entry, progress=progress, cancel=lambda: job.cancel_requested)
            except DownloadCancelled:
                raise Cancelled("download cancelled") from None

        self.bar.setValue(0)
        self.bar.setFormat(f"%p% of {entry.size_text()}")
        self._show(running=True)
        self.job = self.ctx.submit(self.ctx.downloads, work, f"downloading {entry.name}", done=self._done,
                                   progress=self._progress, failed=self._ended, cancelled=self._ended,
                                   clears_error=True)

    def cancel(self) -> None:
        if self.job is not None:
            self.job.cancel()

    def _progress(self, fraction: float, payload) -> None:
        self.bar.setValue(int(round(1000 * min(max(fraction, 0.0), 1.0))))
        if payload and payload[1]:
            self.bar.setFormat(f"%p% of {payload[1] / 1e6:.0f} MB" if payload[1] >= 1e7 else
                               f"%p% of {payload[1] / 1e6:.1f} MB")

    def _ended(self, *_args) -> None:  # failed (the window shows why) or cancelled: offer it again
        self.job = None
        self._show(running=False)

    def _done(self, where) -> None:
        self.bar.setValue(1000)
        name = self.entry.name
        self.job = None
        self.ctx.show_status(f"{name}: verified, {where}")
        self.entry = None
        self._show(running=False)
        self.hide()
        self.fetched.emit(name)
