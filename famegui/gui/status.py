"""The status bar: a message line, the device, the progress of the running explanation and Cancel."""
from __future__ import annotations

import torch
from PySide6.QtWidgets import QLabel, QProgressBar, QPushButton, QSizePolicy, QStatusBar

from .context import AppContext

STEPS = 1000  # resolution of the progress bar


class StatusBarView:
    """Fills ``bar`` with its widgets and keeps them in step with the context's jobs and messages."""

    def __init__(self, bar: QStatusBar, ctx: AppContext) -> None:
        self.label = QLabel("loading the model...")
        # a long message must not widen the window: it is cut, the whole line is its tooltip
        self.label.setSizePolicy(QSizePolicy.Ignored, QSizePolicy.Preferred)
        self.label.setMinimumWidth(40)
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
        self.label.setToolTip(text)

    def show_device(self, device) -> None:
        """The model's device and the torch threads of the running (or last) job: famegui gives a job the
        cores other processes leave free (famegui.core.threads)."""
        from ..core import threads

        self._device = device
        n = threads.state()["threads"] or torch.get_num_threads()
        self.device_label.setText(f"device: {device}, {n} thread{'s' if n != 1 else ''}")
