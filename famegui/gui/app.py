"""Application entry point for the GUI."""
from __future__ import annotations

import os
import sys


def _no_display() -> bool:
    """True on Linux without any display Qt could use (Qt would abort with a core dump)."""
    if not sys.platform.startswith("linux") or os.environ.get("QT_QPA_PLATFORM"):
        return False
    return not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def run_app(model: str | None = None, weights: str | None = None, images: list[str] | None = None) -> int:
    if _no_display():
        print("famegui: error: no display to open the window on (DISPLAY is not set); run it in a desktop "
              "session or under `xvfb-run -a famegui`, or use the headless commands (`famegui --help`)",
              file=sys.stderr)
        return 1
    from ..core.threads import configure

    configure("gui")  # the compute thread's cores; decided again for the load before each job
    from PySide6.QtWidgets import QApplication

    from .main_window import MainWindow

    app = QApplication.instance() or QApplication(sys.argv[:1])
    app.setApplicationName("famegui")
    app.setOrganizationName("famegui")
    win = MainWindow(model=model, weights=weights, images=images or [])
    win.show()
    return app.exec()
