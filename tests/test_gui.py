"""The explorer window, driven like a user would (offscreen Qt, real widgets, real model)."""
import json
import time

import numpy as np
import pytest
from conftest import face
from PIL import Image
from PySide6.QtCore import QSettings, Qt, QTimer

pytest.importorskip("pytestqt")

LONG = 180000  # ms: an upper bound for a busy machine; every wait is for a signal or a condition


def click_cell(qtbot, w, cell):
    """A real mouse click on the feature-map canvas at the centre of ``cell``."""
    fm = w.feature_map
    h, wd = fm.fmap_canvas.image_shape()
    _, fh, fw = w.session.model.layer_info(fm.layer).shape
    x, y = (cell[1] + 0.5) * wd / fw, (cell[0] + 0.5) * h / fh
    pos = fm.fmap_canvas.view_to_widget(x, y)
    qtbot.mouseClick(fm.fmap_canvas.glw.viewport(), Qt.LeftButton, pos=pos)


def test_window_opens_with_the_demo(win):
    assert win.session.model.name == "dlib-resnet"
    assert win.feature_map.layer == "stage4"
    assert win.session.inputs["probe"].tensor.shape == (1, 3, 150, 150)
    assert win.layer_tree.topLevelItemCount() >= 5
    assert not win.error_banner.isVisible()


def test_click_a_cell_shows_a_map_with_boxes(qtbot, win):
    with qtbot.waitSignal(win.result_shown, timeout=LONG) as sig:
        click_cell(qtbot, win, (1, 2))
    res = sig.args[0]
    assert res.target.cell == (1, 2) and res.target.layer == "stage4"
    assert res.map.shape == (150, 150) and 0 <= res.map.min() and res.map.max() == pytest.approx(1)
    assert win.feature_map.fame_canvas.image_shape() == (150, 150)
    fp = win.feature_map.fame_canvas.box_rect("footprint")
    assert fp == pytest.approx((75.0, 37.5, 112.5, 75.0), abs=0.01)  # the cell's patch
    assert "mass inside footprint" in win.feature_map.cell_info.text()
    # repeating the click is served from the cache: shown at once, no new job
    started = []
    win.compute.started.connect(lambda *a: started.append(a))
    with qtbot.waitSignal(win.result_shown, timeout=LONG):
        click_cell(qtbot, win, (1, 2))
    assert not win.compute.busy and not started


def test_second_click_cancels_the_first(qtbot, win):
    win.param_form.set_value("iterations", 3000)
    cancelled = []
    win.compute.cancelled.connect(cancelled.append)
    click_cell(qtbot, win, (0, 0))
    qtbot.waitUntil(lambda: win.compute.current is not None, timeout=LONG)
    first = win.compute.current
    win.param_form.set_value("iterations", 30)
    with qtbot.waitSignal(win.result_shown, timeout=LONG) as sig:
        click_cell(qtbot, win, (3, 3))
    assert first.cancelled() and first.id in cancelled
    assert sig.args[0].target.cell == (3, 3)
    assert win.feature_map.result.target.cell == (3, 3)


def test_gui_thread_keeps_processing_events_during_a_job(qtbot, win):
    win.param_form.set_value("iterations", 150)
    ticks = []
    timer = QTimer()
    timer.timeout.connect(lambda: ticks.append(time.perf_counter()))
    timer.start(20)
    with qtbot.waitSignal(win.result_shown, timeout=LONG):
        click_cell(qtbot, win, (2, 1))
    timer.stop()
    assert len(ticks) >= 5  # the timer kept firing while FAME ran in the background
    progressed = win.progress.value()
    assert progressed == 1000


def test_e_plus_e_minus_toggle_changes_the_map(qtbot, win):
    pair = win.pair
    win.tabs.setCurrentWidget(pair)
    qtbot.waitUntil(lambda: pair.result is not None and pair.result.target.kind == "similar",
                    timeout=LONG)
    e_plus = pair.result.map.copy()
    shown_plus = pair.probe_canvas.image_item.image.copy()
    with qtbot.waitSignal(win.result_shown, timeout=LONG) as sig:
        pair.sign_minus.setChecked(True)
    assert sig.args[0].target.kind == "dissimilar"
    assert np.abs(sig.args[0].map - e_plus).max() > 0.1
    assert not np.array_equal(pair.probe_canvas.image_item.image, shown_plus)
    # the demo loads a mate (reference) and a non-mate (third): both decisions are shown
    qtbot.waitUntil(lambda: "vs third" in pair.scores.text(), timeout=LONG)
    text = pair.scores.text()
    assert "vs reference" in text and "<b>same person" in text and "<b>different people" in text
    # explain the other side
    with qtbot.waitSignal(win.result_shown, timeout=LONG) as sig:
        pair.side_ref.setChecked(True)
    assert sig.args[0].slot == "reference"


def test_export_and_reproduce(qtbot, win, tmp_path, capsys):
    with qtbot.waitSignal(win.result_shown, timeout=LONG):
        click_cell(qtbot, win, (2, 2))
    png = tmp_path / "view.png"
    written = win.export_current(str(png))
    assert {p.suffix for p in written} == {".png", ".npy", ".json"}
    img = Image.open(png)
    img.load()
    assert img.size == (win.display.export_px,) * 2  # a figure's size, not the 150 px model input
    side = json.loads((tmp_path / "view.json").read_text())
    assert side["target"]["cell"] == [2, 2] and side["method"] == "fame"
    assert side["model"]["source"] == "dlib-resnet" and len(side["image"]["sha256"]) == 64
    from famegui.cli import main

    assert main(["reproduce", str(tmp_path / "view.json"), "--save-map", str(tmp_path / "again.npy")]) == 0
    assert np.allclose(np.load(tmp_path / "view.npy"), np.load(tmp_path / "again.npy"), atol=1e-6)
    assert not list(tmp_path.glob("*.part"))  # atomic writes leave no temporaries


def test_unreadable_image_shows_error_and_app_keeps_working(qtbot, win, tmp_path):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 not a jpeg at all")
    with qtbot.waitSignal(win.error_shown, timeout=LONG) as sig:
        win.load_image("probe", str(bad))
    assert "broken.jpg" in sig.args[0]
    assert win.error_banner.isVisible()
    # still usable: load a real photo and compute a cell (on the new photo's feature map: a click on the
    # old one's would be rightly dropped when the new probe arrives)
    new = face("london_005", "neutral.jpg")
    win.load_image("probe", new)
    qtbot.waitUntil(lambda: "probe" in win.session.inputs and win.session.inputs["probe"].image.path == new
                    and not win.io.busy and not win.compute.busy, timeout=LONG)
    with qtbot.waitSignal(win.result_shown, timeout=LONG):
        click_cell(qtbot, win, (0, 1))


def test_no_face_photo_shows_error(qtbot, win, tmp_path):
    flat = tmp_path / "flat.png"
    Image.new("RGB", (300, 300), (128, 128, 128)).save(flat)
    with qtbot.waitSignal(win.error_shown, timeout=LONG) as sig:
        win.load_image("probe", str(flat))
    assert "no face" in sig.args[0]


def test_all_cells_sheet_and_tile_click(qtbot, win, tmp_path):
    win.param_form.set_value("iterations", 10)
    sheet = win.all_cells
    sheet.compute()
    assert win.tabs.currentWidget() is sheet
    qtbot.waitUntil(lambda: sheet.results and all(r is not None for r in sheet.results), timeout=LONG)
    assert len(sheet.results) == 16
    assert [r.target.cell for r in sheet.results][:3] == [(0, 0), (0, 1), (0, 2)]
    th, tw = sheet.tile_shape
    assert (th, tw) == (150, 150) and sheet.tile_origin((1, 2)) == (tw * 2 + 2 * 2, th * 1 + 2)
    with qtbot.waitSignal(win.result_shown, timeout=LONG) as sig:
        sheet.canvas.click_at_image(tw * 2 + 2 * 2 + 5, th * 1 + 2 + 5)  # row 1, col 2
    assert sig.args[0].target.cell == (1, 2)
    assert win.tabs.currentWidget() is win.feature_map
    written = win.export_sheet(str(tmp_path / "sheet.png"))
    assert np.load(written[1]).shape == (16, 150, 150)


def test_settings_change_marks_result_stale(qtbot, win):
    with qtbot.waitSignal(win.result_shown, timeout=LONG):
        click_cell(qtbot, win, (1, 1))
    assert not win.feature_map.recompute_button.isVisibleTo(win)
    win.param_form.set_value("iterations", 41)
    assert win.feature_map.recompute_button.isVisibleTo(win)
    assert "stale" in win.feature_map.fame_canvas.title.text
    assert len(win.session.cache) >= 1  # the cache is kept


def test_window_state_is_remembered(qtbot, tmp_path):
    from famegui.gui.main_window import MainWindow

    ini = str(tmp_path / "s.ini")
    w = MainWindow(settings=QSettings(ini, QSettings.IniFormat), load_demo=False)
    qtbot.addWidget(w)
    avail = w.available_geometry()
    w.resize(avail.width() - 30, avail.height() - 60)  # a size that fits the screen is remembered
    size = w.size()
    w.cmap_combo.setCurrentText("viridis")
    w.close()
    w2 = MainWindow(settings=QSettings(ini, QSettings.IniFormat), load_demo=False)
    qtbot.addWidget(w2)
    assert w2.cmap_combo.currentText() == "viridis"
    assert w2.geometry_restored and w2.size() == size  # the saved geometry was found and applied
    w2.close()


def test_classifier_top5_and_class_map(qtbot, tmp_path):
    import torch
    import torchvision

    from famegui.gui.main_window import MainWindow

    torch.manual_seed(0)
    weights = tmp_path / "r18.pth"
    torch.save(torchvision.models.resnet18().state_dict(), weights)
    w = MainWindow(model="resnet18", weights=str(weights), images=[face("joe_biden", "vp_portrait.jpg")],
                   settings=QSettings(str(tmp_path / "s.ini"), QSettings.IniFormat))
    qtbot.addWidget(w)
    w.show()
    qtbot.waitUntil(lambda: w.classes.class_list.count() == 5, timeout=LONG)
    assert w.session.model.name == "resnet18" and w.feature_map.layer == "layer4"
    assert not w.tabs.isTabEnabled(w.tabs.indexOf(w.pair))  # no pair view for a classifier
    w.param_form.set_value("iterations", 10)
    w.tabs.setCurrentWidget(w.classes)
    item = w.classes.class_list.item(0)
    index = item.data(Qt.UserRole)
    with qtbot.waitSignal(w.result_shown, timeout=LONG) as sig:
        w.classes.class_list.itemClicked.emit(item)
    res = sig.args[0]
    assert res.target.kind == "class" and res.target.class_index == index
    assert res.map.shape == (224, 224)
    w.close()


def test_closing_during_a_job_exits_cleanly(qtbot, tmp_path):
    from famegui.gui.main_window import MainWindow

    w = MainWindow(settings=QSettings(str(tmp_path / "s.ini"), QSettings.IniFormat))
    qtbot.addWidget(w)
    w.show()
    qtbot.waitUntil(lambda: w.feature_map.fmap_canvas.image_shape() is not None, timeout=LONG)
    w.param_form.set_value("iterations", 5000)
    w.feature_map.request_cell((0, 0))
    qtbot.waitUntil(lambda: w.compute.current is not None, timeout=LONG)
    t0 = time.perf_counter()
    w.close()
    assert time.perf_counter() - t0 < 60  # the job stops at its next cancel check, not at its end
    assert not w.scheduler.isRunning()


def test_compare_methods_grid_and_export(qtbot, win, tmp_path):
    tab = win.compare_tab
    names = [tab.method_list.item(i).data(Qt.UserRole) for i in range(tab.method_list.count())]
    assert {"fame", "gradcam", "corrrise"} <= set(names)  # the list comes from the registry
    tab.set_checked(["gradcam", "fame", "gweebp"])
    win.param_form.set_value("iterations", 20)
    win.tabs.setCurrentWidget(tab)
    tab.run()
    qtbot.waitUntil(lambda: len(tab.results) == 6, timeout=LONG)
    # the demo's third photo (another person) is gweEBP's non-mate: the triplet gain of Wang et al. for e+
    g = tab.results[("gweebp", "e+ (similar)")]
    assert g.non_mate == "third" and g.info["gain"].startswith("triplet")
    assert tab.results[("gweebp", "e- (dissimilar)")].info["gain"] == "1 - cos(a, p)"
    assert tab.results[("gradcam", "e+ (similar)")].non_mate is None
    assert tab.cols == ["e+ (similar)", "e- (dissimilar)"]
    g_plus = tab.results[("gradcam", "e+ (similar)")].map
    g_minus = tab.results[("gradcam", "e- (dissimilar)")].map
    assert g_plus.shape == (150, 150) and np.abs(g_plus - g_minus).max() > 0.05
    th, tw = tab.tile_shape
    g = tab.groups  # methods per sheet row, chosen to fit the view
    rows = -(-3 // g)
    assert tab.grid.image_shape() == (rows * th + (rows - 1) * 4, 2 * g * tw + (2 * g - 1) * 4)
    assert [tab.tile_at(*tab.tile_origin(m, c)) for m in tab.rows for c in tab.cols] == \
        [(m, c) for m in tab.rows for c in tab.cols]
    win.param_form.set_value("iterations", 30)  # the Pair view's own FAME map is not in the cache now
    with qtbot.waitSignal(tab.tile_clicked, timeout=LONG) as sig:
        x0, y0 = tab.tile_origin("fame", "e- (dissimilar)")
        tab.grid.click_at_image(x0 + 10, y0 + 30)
    assert sig.args[0].method == "fame" and sig.args[0].target.kind == "dissimilar"
    # the clicked tile opens large in the Pair view, its controls following without a recompute
    # nothing started behind it (the Pair view would submit its own FAME job at once when looked at)
    assert not win.compute.busy
    assert win.tabs.currentWidget() is win.pair and win.pair.result is sig.args[0]
    assert win.pair.sign_minus.isChecked() and win.pair.side_probe.isChecked()
    assert win.compute.current is None
    assert "FAME e- (dissimilar)" in win.pair.probe_canvas.title.text
    shown = win.pair.probe_canvas.image_shape()
    assert shown == (150, 150)
    win.tabs.setCurrentWidget(tab)
    with qtbot.waitSignal(tab.tile_clicked, timeout=LONG) as sig:
        x0, y0 = tab.tile_origin("gradcam", "e+ (similar)")
        tab.grid.click_at_image(x0 + 10, y0 + 30)
    assert win.tabs.currentWidget() is win.pair and win.pair.result.method == "gradcam"
    assert win.pair.sign_plus.isChecked() and "Grad-CAM e+" in win.pair.probe_canvas.title.text
    written = tab.export(str(tmp_path / "cmp.png"))
    assert (tmp_path / "cmp.png").exists() and (tmp_path / "cmp_gradcam_eplus.npy").exists()
    assert json.loads((tmp_path / "cmp_fame_eminus.json").read_text())["method"] == "fame"
    assert len(written) == 2 + 6 * 3  # the sheet and its sidecar, then each map's set
    assert json.loads((tmp_path / "cmp_gweebp_eplus.json").read_text())["non_mate"]["path"].endswith("neutral.jpg")


def test_a_signed_map_opens_in_the_diverging_scale(qtbot, win):
    """X-Maps-like signed maps: negative blue, positive red, zero white, whatever colormap is chosen."""
    from famegui.session import MapResult
    from famegui.targets import Target

    signed = np.zeros((150, 150), np.float32)
    signed[:, :50], signed[:, 100:] = -1.0, 1.0
    win.opacity.setValue(100)
    win.cmap_combo.setCurrentText("jet")
    res = MapResult(signed, "xmaps", Target("similar"), {}, "probe", "reference", 0.1)
    with qtbot.waitSignal(win.result_shown, timeout=LONG):
        win.show_in_main_view(res)
    assert win.tabs.currentWidget() is win.pair and "X-Maps" in win.pair.probe_canvas.title.text
    rgb = win.pair.probe_canvas.image_item.image
    left, mid, right = rgb[75, 20].astype(int), rgb[75, 75].astype(int), rgb[75, 130].astype(int)
    assert left[2] > left[0] + 100 and right[0] > right[2] + 100  # blue / red
    assert mid.min() > 240  # white at zero (jet would be green there)


def test_compare_tab_sanity_check(qtbot, win, tmp_path):
    """The randomisation test from the GUI: a sheet of trained vs random-weight maps, exported with numbers."""
    tab = win.compare_tab
    tab.set_checked(["gradcam", "xssab"])
    win.tabs.setCurrentWidget(tab)
    tab.sanity_button.click()
    qtbot.waitUntil(lambda: "maps change" in tab.info.text(), timeout=LONG)
    assert [(r.method, r.target.kind) for r in tab.sanity_results] == [
        ("gradcam", "similar"), ("gradcam", "dissimilar"), ("xssab", "similar"), ("xssab", "dissimilar")]
    # Grad-CAM's e- map of the random network is empty (ReLU'd to zero): undefined, not a pass
    verdicts = {(r.method, r.target.kind): r.verdict for r in tab.sanity_results}
    assert verdicts == {("gradcam", "similar"): "pass", ("gradcam", "dissimilar"): "undefined",
                        ("xssab", "similar"): "pass", ("xssab", "dissimilar"): "pass"}
    assert "3 of 4" in tab.info.text() and "undefined" in tab.info.text() and "gradcam e-" in tab.info.text()
    th, tw = tab.tile_shape  # 2 methods x (trained, random) x (e+, e-), on screen
    rows, per_row = -(-2 // tab.groups), 4 * min(tab.groups, 2)
    assert tab.grid.image_shape() == (rows * (th + 4) - 4, per_row * (tw + 4) - 4)
    assert "3 of 4 pass, 1 undefined" in tab.grid.title.text()
    written = tab.export(str(tmp_path / "sanity.png"))
    data = json.loads((tmp_path / "sanity.json").read_text())
    assert len(written) == 2 and len(data["sanity"]) == 4 and data["sanity"][0]["inside"]["spearman"] < 0.5
    tab.grid.click_at_image(10, 30)  # tiles of the sanity sheet do not open in the Pair view
    assert win.tabs.currentWidget() is tab


def test_compare_tab_faithfulness_curves(qtbot, win, tmp_path):
    """Deletion / insertion curves of the computed maps, drawn with pyqtgraph and exported."""
    import pyqtgraph as pg

    tab = win.compare_tab
    win.tabs.setCurrentWidget(tab)
    tab.faith_button.click()  # nothing computed yet: a clear message, no job
    assert "compute the comparison first" in win.last_error and not win.compute.busy
    tab.set_checked(["gradcam", "xssab"])
    tab.run()
    qtbot.waitUntil(lambda: len(tab.results) == 4 and not win.compute.busy, timeout=LONG)
    tab.faith_button.click()
    qtbot.waitUntil(lambda: tab.mode == "faithfulness", timeout=LONG)
    assert tab.right.currentWidget() is tab.plots
    got = {(c.method, c.extra["target"].split(" ")[0], c.mode) for c in tab.faith_curves}
    # the demo's third photo is the non-mate of the hiding game (Wang et al., PRL 2025) for e+
    compared = ("random", "gradcam", "xssab")
    assert got == {(m, t, mode) for m in compared for t in ("e+", "e-")
                   for mode in ("deletion", "insertion")} | {(m, "e+", "hiding") for m in compared}
    plots = [i for i in tab.plots.ci.items if isinstance(i, pg.PlotItem)]
    assert len(plots) == 5 and all(len(p.listDataItems()) == 3 for p in plots)
    g = next(c for c in tab.faith_curves if c.method == "gradcam" and c.mode == "deletion"
             and c.extra["target"].startswith("e+"))
    cos0 = g.scores[0]
    assert cos0 == pytest.approx(win.session.pair_scores("probe", "reference").cosine, abs=1e-4)
    # the experiment of famegui.evaluation: the same numbers as its curves computed directly
    from famegui.evaluation import curves as C
    from famegui.models.thresholds import default_cosine_threshold

    s = win.session
    x, ref, nm = (s.input(k).tensor for k in ("probe", "reference", "third"))
    res = tab.results[("gradcam", "e+ (similar)")]
    amap = res.map
    assert g.scores == pytest.approx(C.curve(s.model, x, amap, res.target, "deletion", reference=ref).scores,
                                     abs=1e-5)
    assert g.extra["flip"] == C.flip_fraction(s.model, x, ref, amap, default_cosine_threshold(s.model), "deletion")
    hid = next(c for c in tab.faith_curves if c.method == "random" and c.mode == "hiding")
    assert hid.scores == pytest.approx(C.hiding_curve(s.model, x, ref, nm, C.random_map((150, 150))).scores,
                                       abs=1e-5)
    assert "lowest deletion AUC" in tab.info.text()
    assert all(c.extra["flip"] is None or 0 <= c.extra["flip"] <= 1 for c in tab.faith_curves if c.mode != "hiding")
    written = tab.export(str(tmp_path / "faith.png"))
    assert len(written) == 2 and len(json.loads((tmp_path / "faith.json").read_text())["curves"]) == 15
    tab.run()  # back to the maps
    assert tab.right.currentWidget() is tab.grid
    # a new image makes the computed maps history: a late result of the old run is dropped
    qtbot.waitUntil(lambda: not win.compute.busy, timeout=LONG)
    tab.set_checked(["fame"])
    win.param_form.set_value("iterations", 150)  # not cached: the run is still going when the image changes
    ended = []  # the old run's end (finished or cancelled), once it reached the window
    win.compute.finished.connect(lambda job_id, _r: ended.append(job_id))
    win.compute.cancelled.connect(ended.append)
    tab.run()
    qtbot.waitUntil(lambda: win.compute.current is not None, timeout=LONG)
    old_run = win.compute.current
    with qtbot.waitSignal(win.images_ready, timeout=LONG):
        win.load_image("probe", face("london_006", "neutral.jpg"))
    assert tab.results == {} and tab.rows == [] and tab.grid.image_shape() is None
    qtbot.waitUntil(lambda: old_run.id in ended, timeout=LONG)
    assert tab.results == {}


def test_gui_code_addresses_tabs_by_widget_and_methods_by_paper():
    """No tab-index literals, no method named by its seed number, no signedness guessed from map values."""
    import re
    from pathlib import Path

    import famegui.gui

    root = Path(famegui.gui.__file__).parent
    for path in root.rglob("*.py"):
        text = path.read_text()
        assert not re.search(r"tabs\.(setCurrentIndex|currentIndex)\(|TabEnabled\(\s*\d", text), path
        assert not re.search(r"seed\s*0\d\d", text), path
        assert not re.search(r"\.min\(\)\s*<\s*0", text), path


def test_one_worker_thread_and_quick_jobs_do_not_wait_for_long_ones(qtbot):
    import threading

    from famegui.gui.jobs import Lane, Scheduler

    sched = Scheduler()
    io = Lane("io", sched, priority=0, latest_wins=False)
    compute = Lane("compute", sched, priority=1, latest_wins=True)
    threads, order = set(), []

    def long_job(job):
        threads.add(threading.get_ident())
        t0 = time.perf_counter()
        while time.perf_counter() - t0 < 1.5:  # an iterative job: checks cancel between steps
            if job.cancelled():
                return "cancelled"
            time.sleep(0.005)
        order.append("long")
        return "long"

    def quick_job(job):
        threads.add(threading.get_ident())
        order.append("quick")
        return "quick"

    done = []
    compute.finished.connect(lambda _i, r: done.append(r))
    io.finished.connect(lambda _i, r: done.append(r))
    compute.submit(long_job)
    qtbot.waitUntil(lambda: compute.current is not None, timeout=LONG)
    io.submit(quick_job)
    qtbot.waitUntil(lambda: len(done) == 2, timeout=LONG)
    assert order == ["quick", "long"]  # the quick job ran inside the long one's cancel check
    assert len(threads) == 1 and threading.get_ident() not in threads
    assert sched.shutdown()


def test_layer_tree_shows_receptive_field_sizes(qtbot, win):
    items = {win.layer_tree.topLevelItem(i).text(0): win.layer_tree.topLevelItem(i)
             for i in range(win.layer_tree.topLevelItemCount())}
    qtbot.waitUntil(lambda: items["stage1"].text(3) != "" and items["stage4"].text(3) != "", timeout=LONG)
    # stem 7x7/2 + maxpool 3x3/2 + 6 convs 3x3 at jump 4: a 59 px window for the centre cell of stage1
    assert items["stage1"].text(3) == "59x59"
    assert items["stage4"].text(3) == "147x147"


def test_drop_files_and_export_on_photo(qtbot, win, tmp_path):
    from PySide6.QtCore import QMimeData, QPointF, QUrl
    from PySide6.QtGui import QDropEvent

    mime = QMimeData()
    mime.setUrls([QUrl.fromLocalFile(face("london_005", "neutral.jpg")),
                  QUrl.fromLocalFile(face("london_005", "smiling.jpg"))])
    win.tabs.setCurrentWidget(win.feature_map)
    ev = QDropEvent(QPointF(10, 10), Qt.CopyAction, mime, Qt.LeftButton, Qt.NoModifier)
    win.dropEvent(ev)
    qtbot.waitUntil(lambda: win.session.images["reference"].path.endswith("london_005/smiling.jpg")
                    and "reference" in win.session.inputs, timeout=LONG)
    assert win.session.images["probe"].path.endswith("london_005/neutral.jpg")
    with qtbot.waitSignal(win.result_shown, timeout=LONG):
        click_cell(qtbot, win, (1, 1))
    win.export_on_photo.setChecked(True)
    win.export_current(str(tmp_path / "photo.png"))
    # the whole photo, enlarged to the export size (long side) with its aspect kept
    pw, ph = Image.open(face("london_005", "neutral.jpg")).size
    w, h = Image.open(tmp_path / "photo.png").size
    assert max(w, h) == max(win.display.export_px, pw, ph) and abs(w / h - pw / ph) < 0.01


def test_wrong_weights_show_an_error_and_keep_the_model(qtbot, win, tmp_path):
    bad = tmp_path / "weights.pth"
    bad.write_text("these are not weights")
    win.model_combo.setCurrentText("resnet18")
    with qtbot.waitSignal(win.error_shown, timeout=LONG) as sig:
        win.load_model("resnet18", str(bad))
    assert "not a PyTorch weights file" in sig.args[0]
    assert win.session.model.name == "dlib-resnet"  # the working model stays
    qtbot.waitUntil(lambda: win.model_combo.currentText() == "dlib-resnet", timeout=LONG)
    with qtbot.waitSignal(win.result_shown, timeout=LONG):
        click_cell(qtbot, win, (3, 0))


def test_compare_methods_for_a_classifier(qtbot, tmp_path, r18_weights):
    from famegui.gui.main_window import MainWindow

    w = MainWindow(model="resnet18", weights=r18_weights, images=[face("joe_biden", "vp_portrait.jpg")],
                   settings=QSettings(str(tmp_path / "s.ini"), QSettings.IniFormat))
    qtbot.addWidget(w)
    w.show()
    qtbot.waitUntil(lambda: w.classes.class_list.count() == 5, timeout=LONG)
    tab = w.compare_tab
    names = [tab.method_list.item(i).data(Qt.UserRole) for i in range(tab.method_list.count())]
    assert "rise" in names and "corrrise" not in names  # only what fits classification
    tab.set_checked(["gradcam", "hirescam"])
    tab.run()
    qtbot.waitUntil(lambda: len(tab.results) == 2, timeout=LONG)
    top = w.classes.class_list.item(0).data(Qt.UserRole)
    assert {r.target.class_index for r in tab.results.values()} == {top}
    assert tab.cols == ["top-1 class"]  # one map per method
    th, tw = tab.tile_shape
    g = tab.groups
    assert tab.grid.image_shape() == (-(-2 // g) * (th + 4) - 4, g * (tw + 4) - 4)
    # a tile opens in the Classes view
    with qtbot.waitSignal(tab.tile_clicked, timeout=LONG):
        x0, y0 = tab.tile_origin("hirescam", "top-1 class")
        tab.grid.click_at_image(x0 + 10, y0 + 30)
    assert w.tabs.currentWidget() is w.classes and w.classes.result.method == "hirescam"
    assert w.classes.canvas.title.text.startswith("HiResCAM")
    # faithfulness of a class map: the class probability as pixels go
    w.tabs.setCurrentWidget(tab)
    tab.faith_button.click()
    qtbot.waitUntil(lambda: tab.mode == "faithfulness", timeout=LONG)
    assert {c.score_name for c in tab.faith_curves} == {"class probability"}
    assert {c.method for c in tab.faith_curves} == {"random", "gradcam", "hirescam"}
    assert all("flip" not in c.extra for c in tab.faith_curves)  # no decision for a class
    w.close()


def test_switching_to_a_face_model_reports_a_photo_without_a_face(qtbot, tmp_path, r18_weights):
    from famegui.gui.main_window import MainWindow

    flat = tmp_path / "flat.png"
    Image.new("RGB", (300, 300), (90, 120, 150)).save(flat)
    w = MainWindow(model="resnet18", weights=r18_weights, images=[str(flat)],
                   settings=QSettings(str(tmp_path / "s.ini"), QSettings.IniFormat))
    qtbot.addWidget(w)
    w.show()
    qtbot.waitUntil(lambda: "probe" in w.session.inputs, timeout=LONG)  # a classifier takes any image
    with qtbot.waitSignal(w.error_shown, timeout=LONG) as sig:
        w.load_model("dlib-resnet", None)
    assert "probe image" in sig.args[0] and "no face" in sig.args[0]
    assert "probe" in w.session.images and "probe" not in w.session.inputs  # the photo is kept
    w.close()


def test_a_finished_job_has_left_its_lane_when_its_end_is_announced(qtbot):
    """Handlers of finished/failed/cancelled see an idle lane (no race with the worker's bookkeeping)."""
    from famegui.core.fame import Cancelled
    from famegui.gui.jobs import Lane, Scheduler

    sched = Scheduler()
    lane = Lane("compute", sched, priority=1, latest_wins=False)
    seen = []
    for sig in (lane.finished, lane.failed, lane.cancelled):
        # a direct connection runs the handler at the moment of emission, in the worker thread
        sig.connect(lambda *args: seen.append(lane.busy), Qt.DirectConnection)

    def fail(_job):
        raise ValueError("bad")

    def cancel(_job):
        raise Cancelled("stop")

    sched.start()
    for fn in (lambda _job: 1, fail, cancel):
        lane.submit(fn, "job")
        qtbot.waitUntil(lambda: not lane.busy, timeout=LONG)
    qtbot.waitUntil(lambda: len(seen) == 3, timeout=LONG)
    assert seen == [False, False, False]
    assert sched.shutdown()


def test_model_list_and_weights_dialog_take_onnx(qtbot, win, tmp_path):
    """The model list shows what `famegui models` can explain; a picked ONNX file opens as the model itself,
    any other file as weights of the listed network."""
    import warnings

    import torch
    from torch import nn

    from famegui.models.zoo import model_catalogue

    listed = [win.model_combo.itemText(i) for i in range(win.model_combo.count())]
    assert listed == [r.name for r in model_catalogue() if r.explainable]
    assert win.model_combo.itemData(0, Qt.ToolTipRole)  # each row says what it needs
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten()).eval()
    path = tmp_path / "tiny_face.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(net, torch.rand(1, 3, 112, 112), str(path), input_names=["x"], output_names=["y"],
                          opset_version=17, dynamo=False)
    with qtbot.waitSignal(win.model_ready, timeout=LONG):
        win.model_dock.open_file(str(path))
    assert win.session.model.source == str(path) and win.session.model.input_size == (112, 112)
    bad = tmp_path / "w.pth"
    bad.write_text("not weights")
    win.model_combo.setCurrentText("resnet18")
    with qtbot.waitSignal(win.error_shown, timeout=LONG) as sig:
        win.model_dock.open_file(str(bad))  # weights for the network in the list
    assert "not a PyTorch weights file" in sig.args[0] and win.session.model.source == str(path)
