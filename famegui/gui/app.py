"""Application entry point for the GUI."""
from __future__ import annotations

import sys


def run_app(model: str | None = None, weights: str | None = None, images: list[str] | None = None) -> int:
    from PySide6.QtWidgets import QApplication

    from .main_window import MainWindow

    app = QApplication.instance() or QApplication(sys.argv[:1])
    app.setApplicationName("famegui")
    app.setOrganizationName("famegui")
    win = MainWindow(model=model, weights=weights, images=images or [])
    win.show()
    return app.exec()
