"""The status bar: a message line, the device, the progress of the running explanation and Cancel."""
from __future__ import annotations

import torch
from PySide6.QtWidgets import QLabel, QProgressBar, QPushButton, QSizePolicy, QStatusBar

from .context import AppContext

STEPS = 1000  # resolution of the progress bar


def whole_words(text: str, fits) -> str:
    """``text``, or its longest run of whole words that ``fits(candidate)`` followed by " ..." (a word, a path
    or a URL is never cut in the middle; "" when not even the first word fits)."""
    if fits(text):
        return text
    words = text.split(" ")
    lo, hi = 0, len(words) - 1  # the most words w with fits(" ".join(words[:w]) + " ...")
    while lo < hi:
        mid = (lo + hi + 1) // 2
        lo, hi = (mid, hi) if fits(" ".join(words[:mid]) + " ...") else (lo, mid - 1)
    return " ".join(words[:lo]) + " ..." if lo else ""


class MessageLabel(QLabel):
    """A one-line message that never widens the window and is cut only between words, with " ..." where
    it is cut; the whole message is its tooltip."""

    def __init__(self, text: str = "") -> None:
        super().__init__()
        self.setSizePolicy(QSizePolicy.Ignored, QSizePolicy.Preferred)
        self.setMinimumWidth(40)
        self.message = ""
        self.setText(text)

    def setText(self, text: str) -> None:  # noqa: N802 (Qt API)
        self.message = text
        self.setToolTip(text)
        self._fit()

    def resizeEvent(self, event) -> None:  # noqa: N802 (Qt API)
        super().resizeEvent(event)
        self._fit()

    def _fit(self) -> None:
        metrics, room = self.fontMetrics(), self.contentsRect().width()
        super().setText(whole_words(self.message, lambda t: metrics.horizontalAdvance(t) <= room))


class StatusBarView:
    """Fills ``bar`` with its widgets and keeps them in step with the context's jobs and messages."""

    def __init__(self, bar: QStatusBar, ctx: AppContext) -> None:
        self.label = MessageLabel("loading the model...")  # a long message is cut between words
        self.progress = QProgressBar()
        self.progress.setRange(0, STEPS)
        self.progress.setMaximumWidth(160)
        self.progress.setTextVisible(True)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setEnabled(False)
        self.cancel_button.clicked.connect(ctx.cancel_jobs)
        self.device_label = QLabel()
        self.show_device("cpu")
        bar.addWidget(self.label, 1)
        bar.addPermanentWidget(self.device_label)
        bar.addPermanentWidget(self.progress)
        bar.addPermanentWidget(self.cancel_button)
        ctx.status_changed.connect(self.show)
        ctx.progress_changed.connect(lambda f: self.progress.setValue(int(STEPS * f)))
        ctx.busy_changed.connect(self.cancel_button.setEnabled)
        ctx.busy_changed.connect(lambda busy: busy and self.show_device(self._device))

    def show(self, text: str) -> None:
        self.label.setText(text)

    def show_device(self, device) -> None:
        """The model's device and the torch threads of the running (or last) job: famegui gives a job the
        cores other processes leave free (famegui.core.threads)."""
        from ..core import threads

        self._device = device
        n = threads.state()["threads"] or torch.get_num_threads()
        self.device_label.setText(f"device: {device}, {n} thread{'s' if n != 1 else ''}")
