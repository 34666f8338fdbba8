"""The status bar: a message line, the device, the progress of the running explanation and Cancel."""
from __future__ import annotations

import torch
from PySide6.QtWidgets import QLabel, QProgressBar, QPushButton, QStatusBar

from .context import AppContext

STEPS = 1000  # resolution of the progress bar


class StatusBarView:
    """Fills ``bar`` with its widgets and keeps them in step with the context's jobs and messages."""

    def __init__(self, bar: QStatusBar, ctx: AppContext) -> None:
        self.label = QLabel("starting...")
        self.progress = QProgressBar()
        self.progress.setRange(0, STEPS)
        self.progress.setMaximumWidth(220)
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
        ctx.status_changed.connect(self.label.setText)
        ctx.progress_changed.connect(lambda f: self.progress.setValue(int(STEPS * f)))
        ctx.busy_changed.connect(self.cancel_button.setEnabled)

    def show_device(self, device) -> None:
        self.device_label.setText(f"device: {device}, {torch.get_num_threads()} threads")
