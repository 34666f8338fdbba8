"""Render the README screenshots: the real app on the embedded demo.

Run under a real X server for a faithful picture (see README), e.g.
    xvfb-run -a python scripts/screenshot.py docs/screenshot.png            # a computed feature-map cell
    xvfb-run -a python scripts/screenshot.py docs/compare.png compare       # Compare methods: the grid
    xvfb-run -a python scripts/screenshot.py docs/faithfulness.png faithfulness
    xvfb-run -a python scripts/screenshot.py docs/sanity.png sanity
    xvfb-run -a python scripts/screenshot.py docs/run_browser.png runs     # a small protocol run, browsed
The Compare views and the run browser are taken at 1366x768 (a laptop screen), the cell at 1500x900.
    xvfb-run -a -s "-screen 0 1366x768x24" python scripts/screenshot.py docs/models.png models
        # the network list open with each model's state, resnet50 offered for download (the whole screen)
It also works with QT_QPA_PLATFORM=offscreen.
"""
from __future__ import annotations

import os
import sys
import tempfile
import time

COMPARED = ["gradcam", "gradcam-ew", "ebp", "gweebp", "xssab", "fame", "fggb", "srise"]
LAPTOP = (1366, 768)


def run_browser_shot(app, w, out: str, pump_until) -> None:
    """`famegui run` on the demo's genuine and impostor pair (Grad-CAM and FAME, deletion), then File > Open run
    on it at 1366x768 with the impostor's e- row selected."""
    from famegui.cli import main as cli
    from famegui.data.pairs import demo_pairs
    from famegui.gui.run_browser import open_run

    folder = tempfile.mkdtemp()
    pairs = os.path.join(folder, "pairs.csv")
    with open(pairs, "w") as f:
        f.writelines(f"{p.a},{p.b},{int(p.same)}\n" for p in demo_pairs())
    run = os.path.join(folder, "run")
    if cli(["run", pairs, "--method", "gradcam,fame", "--metric", "deletion,insertion", "--iterations", "200",
            "--quiet", "--out", run]) != 0:
        raise SystemExit("the run failed")
    browser = open_run(w, run)
    browser.resize(*LAPTOP)
    shown = []
    browser.row_shown.connect(shown.append)
    browser.select(next(i for i, r in enumerate(browser.run.rows) if r.index == 1 and r.target == "e-"))
    pump_until(lambda: bool(shown))
    for _ in range(30):
        app.processEvents()
        time.sleep(0.02)
    if not browser.grab().save(out):
        raise SystemExit(f"could not write {out}")
    print(f"wrote {out}")
    browser.close()
    w.close()


def main(out: str = "docs/screenshot.png", view: str = "cell", cell: str = "1,2", iterations: int = 500) -> None:
    from PySide6.QtCore import QSettings
    from PySide6.QtWidgets import QApplication

    from famegui.gui.main_window import MainWindow

    app = QApplication([])
    ini = os.path.join(tempfile.mkdtemp(), "shot.ini")
    w = MainWindow(settings=QSettings(ini, QSettings.IniFormat))
    if view == "models":
        w.showMaximized()  # the screen's size: 1366x768 as the README's picture
    elif view == "cell":
        w.resize(1500, 900)
        w.show()
    else:
        w.resize(*LAPTOP)
        w.show()

    def pump_until(cond, timeout=180.0):
        t0 = time.perf_counter()
        while not cond() and time.perf_counter() - t0 < timeout:
            app.processEvents()
            time.sleep(0.01)
        if not cond():
            raise SystemExit("timed out waiting for the app")

    pump_until(lambda: w.session.model is not None and {"probe", "reference", "third"} <= set(w.session.inputs)
               and w.feature_map.fmap_canvas.image_shape() is not None)
    w.param_form.set_value("iterations", iterations)
    if view == "models":
        dock = w.model_dock
        dock.pick_model("resnet50")  # not on this machine: offered for download, nothing fetched
        dock.model_combo.showPopup()
        for _ in range(30):
            app.processEvents()
            time.sleep(0.02)
        if not app.primaryScreen().grabWindow(0).save(out):  # the open list is a window of its own
            raise SystemExit(f"could not write {out}")
        print(f"wrote {out}")
        w.close()
        return
    if view == "runs":
        return run_browser_shot(app, w, out, pump_until)
    if view == "cell":
        done = []
        w.result_shown.connect(done.append)
        w.feature_map.request_cell(tuple(int(v) for v in cell.split(",")))
        pump_until(lambda: bool(done))
        w.feature_map.fmap_canvas.hover_at_image(60, 80)  # show a hovered cell
    else:
        tab = w.compare_tab
        w.tabs.setCurrentWidget(tab)
        names = COMPARED if view != "sanity" else ["gradcam", "gradcam-ew", "gweebp", "xssab", "fame"]
        tab.set_checked(names)
        if view == "sanity":
            tab.sanity_button.click()
            pump_until(lambda: "maps change" in tab.info.text(), timeout=600)
        else:
            tab.run()
            pump_until(lambda: len(tab.results) == 2 * len(names) and not w.compute.busy, timeout=600)
            if view == "faithfulness":
                tab.faith_button.click()
                pump_until(lambda: tab.mode == "faithfulness", timeout=600)
    for _ in range(20):
        app.processEvents()
        time.sleep(0.02)
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    if not w.grab().save(out):
        raise SystemExit(f"could not write {out}")
    print(f"wrote {out}")
    w.close()


if __name__ == "__main__":
    argv = sys.argv[1:]
    main(argv[0] if argv else "docs/screenshot.png", argv[1] if len(argv) > 1 else "cell")
