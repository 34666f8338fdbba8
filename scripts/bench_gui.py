"""GUI responsiveness and latency benchmark (not a CI test; budgets from the explorer issue).

Starts the real window on the embedded face model, clicks a feature-map cell and
measures, while FAME runs in the background:
- the largest gap between ticks of a 10 ms GUI timer (target <= 100 ms),
- the time until the first progressive map is drawn (target <= 0.5 s),
- the time until the final map is shown: with the GUI's default settings FAME stops once the
  map has converged (targets, FAME speed issue: first map <= 0.3 s, converged stage4 map <= 3 s);
  ``--no-converge`` runs all iterations (the explorer issue's target: <= 10 s for 500).

Usage: QT_QPA_PLATFORM=offscreen python scripts/bench_gui.py [--iterations 500] [--layer stage4] [--cell 2,2]
       [--no-converge]
Prints one JSON line.
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile
import time

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--iterations", type=int, default=500)
    ap.add_argument("--layer", default="stage4")
    ap.add_argument("--cell", default="2,2")
    ap.add_argument("--no-converge", action="store_true", help="run every iteration (no convergence stop)")
    args = ap.parse_args()
    from PySide6.QtCore import QSettings, QTimer
    from PySide6.QtWidgets import QApplication

    from famegui.gui.main_window import MainWindow

    app = QApplication([])  # noqa: F841 - must exist while the window lives
    ini = os.path.join(tempfile.mkdtemp(), "bench.ini")
    w = MainWindow(settings=QSettings(ini, QSettings.IniFormat))
    w.show()

    from PySide6.QtCore import QEventLoop

    def pump_until(cond, timeout=120.0):
        """Run the real event loop (idle waits, as in the app) until ``cond()`` holds."""
        loop = QEventLoop()
        check = QTimer()
        check.timeout.connect(lambda: cond() and loop.quit())
        check.start(5)
        QTimer.singleShot(int(timeout * 1000), loop.quit)
        if not cond():
            loop.exec()
        check.stop()
        return cond()

    t_start = time.perf_counter()
    fm = w.feature_map
    pump_until(lambda: w.session.model is not None and "probe" in w.session.inputs
               and fm.fmap_canvas.image_shape() is not None)
    startup = time.perf_counter() - t_start
    w.param_form.set_value("iterations", args.iterations)
    if args.no_converge:
        w.param_form.set_value("converge_tol", None)
    if fm.layer != args.layer:
        fm.select_layer(args.layer)
        pump_until(lambda: fm.fmap_canvas.title.text.startswith(args.layer))
    cell = tuple(int(v) for v in args.cell.split(","))
    ticks: list[float] = []
    timer = QTimer()
    timer.timeout.connect(lambda: ticks.append(time.perf_counter()))
    timer.start(10)
    first_map: list[float] = []
    done: list[float] = []
    orig = fm.fame_canvas.set_image

    def spy(rgb):  # the first map drawn in the FAME view (a progressive one)
        if rgb is not None and not first_map:
            first_map.append(time.perf_counter())
        orig(rgb)

    fm.fame_canvas.set_image = spy
    shown = []
    w.result_shown.connect(lambda r: (done.append(time.perf_counter()), shown.append(r)))
    t0 = time.perf_counter()
    fm.request_cell(cell, args.layer)
    pump_until(lambda: bool(done), timeout=300)
    timer.stop()
    during = [t for t in ticks if t0 <= t <= (done[0] if done else time.perf_counter())]
    gaps = [b - a for a, b in zip(during, during[1:])]
    result = {
        "model": w.session.model.name, "layer": args.layer, "cell": list(cell), "iterations": args.iterations,
        "startup_s": round(startup, 2),
        "first_map_s": round(first_map[0] - t0, 3) if first_map else None,
        "full_map_s": round(done[0] - t0, 2) if done else None,
        "compute_s": round(shown[0].seconds, 2) if shown else None,
        "iterations_taken": shown[0].info.get("iterations") if shown else None,
        "converge_tol": w.param_form.values().get("converge_tol"),
        "max_tick_gap_ms": round(1000 * max(gaps), 1) if gaps else None,
        "median_tick_gap_ms": round(1000 * sorted(gaps)[len(gaps) // 2], 1) if gaps else None,
        "ticks": len(during),
    }
    print(json.dumps(result))
    w.close()


if __name__ == "__main__":
    main()
