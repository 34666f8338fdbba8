"""Render the README screenshot: the real app on the embedded demo with a computed cell.

Run under a real X server for a faithful picture (see README), e.g.
    xvfb-run -a python scripts/screenshot.py docs/screenshot.png
It also works with QT_QPA_PLATFORM=offscreen.
"""
from __future__ import annotations

import os
import sys
import tempfile
import time


def main(out: str = "docs/screenshot.png", cell: str = "1,2", iterations: int = 500) -> None:
    from PySide6.QtCore import QSettings
    from PySide6.QtWidgets import QApplication

    from famegui.gui.main_window import MainWindow

    app = QApplication([])
    ini = os.path.join(tempfile.mkdtemp(), "shot.ini")
    w = MainWindow(settings=QSettings(ini, QSettings.IniFormat))
    w.resize(1500, 900)
    w.show()

    def pump_until(cond, timeout=180.0):
        t0 = time.perf_counter()
        while not cond() and time.perf_counter() - t0 < timeout:
            app.processEvents()
            time.sleep(0.01)
        if not cond():
            raise SystemExit("timed out waiting for the app")

    pump_until(lambda: w.session.model is not None and "probe" in w.session.inputs
               and w.fmap_canvas.image_shape() is not None)
    w.param_form.set_value("iterations", iterations)
    done = []
    w.result_shown.connect(done.append)
    w.request_cell(tuple(int(v) for v in cell.split(",")))
    pump_until(lambda: bool(done))
    from PySide6.QtCore import QPointF

    w.fmap_canvas._on_move((w.fmap_canvas.view.mapViewToScene(QPointF(60, 80)),))  # show a hovered cell
    for _ in range(20):
        app.processEvents()
        time.sleep(0.02)
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    if not w.grab().save(out):
        raise SystemExit(f"could not write {out}")
    print(f"wrote {out}")
    w.close()


if __name__ == "__main__":
    main(*sys.argv[1:])
