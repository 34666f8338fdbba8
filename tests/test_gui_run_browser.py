"""File > Open run: the run browser on a real run made with `famegui run` (offscreen Qt, real widgets, the real
model). The browser reads the run folder and computes nothing; every value it shows is checked against the
files (the parquet parts, the .npy maps) and every picture against the model's own input preparation."""
from __future__ import annotations

import json
import math
import os

import numpy as np
import pytest
from conftest import drop_item, face
from PySide6.QtCore import QPoint, QSettings, Qt
from PySide6.QtGui import QImage

pytest.importorskip("pytestqt")

from famegui.core.render import overlay, to_uint8  # noqa: E402
from famegui.evaluation import rundir, runfiles  # noqa: E402
from famegui.gui.run_browser import RunBrowser, compare_runs_dialog, open_run, open_run_dialog  # noqa: E402
from famegui.gui.run_model import method_label  # noqa: E402

LONG = 120000  # ms: the waits are on conditions, never on a time
GENUINE = (face("london_001", "neutral.jpg"), face("london_001", "smiling.jpg"))
IMPOSTOR = (face("london_001", "neutral.jpg"), face("london_005", "neutral.jpg"))
METHODS = ("gradcam", "xssab")
COLUMN = "Grad-CAM deletion"
CORRUPT = 0  # the item index of the pair with a corrupt photo
# the tests on a real run share one `famegui run` (about a minute on two busy cores, the spawned worker included)
RUN = pytest.mark.slow


@pytest.fixture(scope="module")
def pair_run(tmp_path_factory):
    """`famegui run pairs.csv` from the list's folder (run.json keeps the relative path): a corrupt photo (a
    relative path; first, so its undefined values come first in the run's order), a genuine and an impostor pair."""
    from famegui.cli import main

    tmp = tmp_path_factory.mktemp("browse")
    (tmp / "corrupt.jpg").write_bytes(b"\xff\xd8 this is not a jpeg")
    (tmp / "pairs.csv").write_text(f"corrupt.jpg,{GENUINE[1]},1\n{GENUINE[0]},{GENUINE[1]},1\n"
                                   f"{IMPOSTOR[0]},{IMPOSTOR[1]},0\n")
    here = os.getcwd()
    os.chdir(tmp)
    try:
        assert main(["run", "pairs.csv", "--method", ",".join(METHODS), "--metric", "deletion", "--quiet",
                     "--out", "run"]) == 0
    finally:
        os.chdir(here)
    assert json.loads((tmp / "run" / "run.json").read_text())["protocol"]["path"] == "pairs.csv"
    return tmp / "run"


@pytest.fixture
def browser(qtbot, pair_run):
    got = []
    b = RunBrowser(pair_run, on_open=got.append)
    qtbot.addWidget(b)
    b.show()
    b.opened = got
    return b


def row_of(b: RunBrowser, index: int, target: str) -> int:
    return next(i for i, r in enumerate(b.run.rows) if r.index == index and r.target == target)


def pixels(label) -> np.ndarray:
    """What a QLabel shows, as an (H, W, 3) uint8 array."""
    img = label.pixmap().toImage().convertToFormat(QImage.Format_RGB888)
    w, h, bpl = img.width(), img.height(), img.bytesPerLine()
    return np.frombuffer(img.constBits(), np.uint8, h * bpl).reshape(h, bpl)[:, :3 * w].reshape(h, w, 3).copy()


@RUN
def test_the_table_has_a_row_per_item_and_target_with_the_stored_aucs(browser, pair_run):
    rows = rundir.read_results(pair_run).to_pylist()
    assert browser.model.rowCount() == 3 * 2 == len({(r["item_index"], r["target"]) for r in rows})
    headers = browser.model.headers
    for m in ("Grad-CAM", "xSSAB", "random ranking"):
        assert f"{m} deletion" in headers
    for r in rows:  # every AUC of the run is in its cell, and nothing else is
        shown = browser.model.value(row_of(browser, r["item_index"], r["target"]),
                                    browser.column_of(f"{method_label(r['method'])} deletion"))
        assert (math.isnan(shown) and math.isnan(r["auc"])) or shown == r["auc"]
    errors = {(r.index, r.target): "; ".join(r.errors) for r in browser.run.rows}
    assert all(("corrupt.jpg" in e) == (i == CORRUPT) and bool(e) == (i == CORRUPT) for (i, _t), e in errors.items())
    assert "\n" not in errors[(CORRUPT, "e+")]


@RUN
def test_sorting_by_a_metric_orders_its_values_and_keeps_undefined_last(qtbot, browser):
    header = browser.table.horizontalHeader()
    col = browser.column_of(COLUMN)
    browser.table.scrollTo(browser.proxy.index(0, col))
    seen = []
    for _click in range(2):  # a click on the column's title sorts by it; a second click reverses the order
        x = header.sectionViewportPosition(col) + header.sectionSize(col) // 2
        qtbot.mouseClick(header.viewport(), Qt.LeftButton, pos=QPoint(x, header.height() // 2))
        assert header.sortIndicatorSection() == col
        values = browser.shown_values(COLUMN)
        finite = [v for v in values if not math.isnan(v)]
        assert len(finite) == 4 and all(math.isnan(v) for v in values[4:])  # the corrupt item's two rows last
        assert finite == sorted(finite, reverse=header.sortIndicatorOrder() == Qt.DescendingOrder)
        seen.append(header.sortIndicatorOrder())
    assert set(seen) == {Qt.AscendingOrder, Qt.DescendingOrder}
    orders = set()
    for descending in (False, True):
        browser.sort_by(COLUMN, descending)
        values = browser.shown_values(COLUMN)
        assert values[:4] == sorted(values[:4], reverse=descending) and all(math.isnan(v) for v in values[4:])
        orders.add(tuple(values[:4]))
    assert len(orders) == 2  # the two orders differ: the values do


@RUN
def test_a_row_shows_every_methods_stored_maps_on_the_model_input(qtbot, browser, pair_run, dlib):
    from famegui.data.pipeline import prepare_for_model

    r = row_of(browser, 2, "e-")  # the impostor pair
    with qtbot.waitSignal(browser.row_shown, timeout=LONG):
        browser.select(r)
    maps = [t for t in browser.tiles if t.method is not None]
    assert {(t.method, t.target) for t in maps} == {(m, t) for m in METHODS for t in ("e+", "e-")}
    assert len(browser.map_labels) == len(maps) == 4
    chips = [prepare_for_model(dlib, p).tensor[0].permute(1, 2, 0).numpy() for p in IMPOSTOR]
    photos = [t for t in browser.tiles if t.method is None]
    assert len(photos) == 2 and all(np.array_equal(t.rgb, to_uint8(c)) for t, c in zip(photos, chips))
    d = browser.display
    for tile, label in zip(maps, browser.map_labels):
        m = runfiles.read_map(pair_run, f"maps/2/{tile.method}_{tile.target}.npy")
        expected = overlay(chips[0], m / np.abs(m).max(), d.opacity, d.colormap)  # both methods are unsigned
        assert np.array_equal(tile.rgb, expected)
        assert np.array_equal(pixels(label), expected)  # what is on screen
    assert len({t.rgb.tobytes() for t in maps}) == 4  # four different maps, not one drawn four times
    with qtbot.waitSignal(browser.row_shown, timeout=LONG):
        d.opacity = 0.9  # the window's display settings: the maps are drawn again, not recomputed
    m = runfiles.read_map(pair_run, "maps/2/gradcam_e+.npy")
    tile = next(t for t in browser.tiles if (t.method, t.target) == ("gradcam", "e+"))
    assert np.array_equal(tile.rgb, overlay(chips[0], m / np.abs(m).max(), 0.9, d.colormap))


@RUN
def test_a_bad_item_shows_its_error_and_no_map(qtbot, browser):
    with qtbot.waitSignal(browser.row_shown, timeout=LONG):
        browser.select(row_of(browser, CORRUPT, "e+"))
    assert browser.map_labels == [] and [t for t in browser.tiles if t.method is not None] == []
    assert "error:" in browser.info.text() and "corrupt.jpg" in browser.info.text()


@RUN
def test_open_hands_the_items_photos_to_the_callback(qtbot, browser, pair_run):
    browser.select(row_of(browser, 1, "e-"))
    qtbot.mouseClick(browser.open_button, Qt.LeftButton)
    req = browser.opened[-1]
    assert [str(p) for p in req.paths] == list(GENUINE) and (req.kind, req.target, req.label) == \
        ("pairs", "e-", "genuine") and req.view == "Pair"
    browser.select(row_of(browser, CORRUPT, "e+"))
    view_row = browser.table.selectionModel().selectedRows()[0]
    rect = browser.table.visualRect(view_row)
    qtbot.mouseClick(browser.table.viewport(), Qt.LeftButton, pos=rect.center())  # a double click: press first
    qtbot.mouseDClick(browser.table.viewport(), Qt.LeftButton, pos=rect.center())
    req = browser.opened[-1]  # a relative path of a list given by a relative path: found beside the run
    assert req.paths == (pair_run.parent / "corrupt.jpg", type(req.paths[0])(GENUINE[1]))
    assert len(browser.opened) == 2


@RUN
def test_two_runs_show_both_maps_of_an_item_with_their_agreement(qtbot, tmp_path, pair_run, monkeypatch):
    """Run B: a copy of run A whose Grad-CAM e+ map of item 2 is turned upside down (another setting's map);
    the browser shows A's and B's maps of the item, the agreement measured as famegui report A B does."""
    import shutil

    from PySide6.QtWidgets import QFileDialog

    from famegui.evaluation.compare_runs import map_agreement

    other = tmp_path / "b"
    shutil.copytree(pair_run, other)
    flipped = runfiles.read_map(pair_run, "maps/2/gradcam_e+.npy")[::-1].copy()
    (other / "maps" / "2").mkdir()
    np.save(other / "maps" / "2" / "gradcam_e+.npy", flipped)  # a loose map comes before the store's copy
    monkeypatch.setenv("FAMEGUI_LOG_DIR", str(tmp_path / "logs"))
    w = window(qtbot, tmp_path)
    picks = iter([str(pair_run), str(other)])
    monkeypatch.setattr(QFileDialog, "getExistingDirectory", staticmethod(lambda *a, **k: next(picks)))
    b = compare_runs_dialog(w)  # File > Compare two runs...: A, then B
    assert b is not None and b.other is not None and "vs B b" in b.windowTitle()
    with qtbot.waitSignal(b.row_shown, timeout=LONG):
        b.select(row_of(b, 2, "e+"))
    maps = [t for t in b.tiles if t.method is not None]
    assert sorted((t.run, t.method, t.target) for t in maps) == sorted(
        (r, m, t) for r in "AB" for m in METHODS for t in ("e+", "e-"))
    assert len(b.map_labels) == 8
    a_map = runfiles.read_map(pair_run, "maps/2/gradcam_e+.npy")
    rho, top = map_agreement(a_map, flipped)
    tile = next(t for t in maps if (t.run, t.method, t.target) == ("B", "gradcam", "e+"))
    assert f"Spearman {rho:.2f}, top-10% {top:.2f}" in tile.caption and rho < 0.99
    same = next(t for t in maps if (t.run, t.method, t.target) == ("B", "xssab", "e+"))
    assert "Spearman 1.00, top-10% 1.00" in same.caption
    assert np.array_equal(same.rgb, next(t.rgb for t in maps if (t.run, t.method, t.target) == ("A", "xssab", "e+")))
    # a run of another protocol (one item fewer) is refused in one line
    drop_item(other, 1)
    assert open_run(w, pair_run, other) is None
    assert "do not hold the same protocol" in w.last_error and "\n" not in w.last_error
    w.close()


def window(qtbot, tmp_path):
    from famegui.gui.main_window import MainWindow

    w = MainWindow(settings=QSettings(str(tmp_path / "settings.ini"), QSettings.IniFormat), load_demo=False)
    qtbot.addWidget(w)
    return w


def test_a_folder_that_is_not_a_run_gives_one_clear_line(qtbot, tmp_path, monkeypatch):
    from PySide6.QtWidgets import QFileDialog

    monkeypatch.setenv("FAMEGUI_LOG_DIR", str(tmp_path / "logs"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="not a run directory"):
        RunBrowser(tmp_path / "empty")
    w = window(qtbot, tmp_path)
    assert open_run(w, tmp_path / "empty") is None
    assert w.last_error.startswith("not a run directory") and "\n" not in w.last_error
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "run.json").write_text("{ not json")
    monkeypatch.setattr(QFileDialog, "getExistingDirectory", staticmethod(lambda *a, **k: str(tmp_path / "broken")))
    assert open_run_dialog(w) is None  # File > Open run... on that folder
    assert "run.json is broken" in w.last_error and "\n" not in w.last_error
    w.close()


@RUN
def test_open_in_window_loads_the_pair_into_the_pair_view(qtbot, tmp_path, pair_run, monkeypatch):
    monkeypatch.setenv("FAMEGUI_LOG_DIR", str(tmp_path / "logs"))
    w = window(qtbot, tmp_path)
    w.show()
    b = open_run(w, pair_run)
    assert b is not None and b.isVisible()
    w.param_form.set_value("iterations", 5)  # the Pair view explains what it shows (its own FAME), briefly
    b.select(row_of(b, 2, "e-"))
    b.open_current()
    qtbot.waitUntil(lambda: w.session.model is not None and {"probe", "reference"} <= set(w.session.inputs)
                    and w.session.images["reference"].path == IMPOSTOR[1], timeout=LONG)
    assert w.session.model.name == "dlib-resnet" and w.session.images["probe"].path == IMPOSTOR[0]
    assert w.ctx.is_current(w.pair) and w.pair.sign_minus.isChecked()
    w.ctx.cancel_jobs()
    w.close()


@RUN
def test_an_image_run_opens_in_the_classes_view(qtbot, tmp_path, monkeypatch, resnet18_random):
    """A labelled image list on a classifier (untrained resnet18): its map on the classifier's crop, and the
    photo opened in the Classes view with the run's model (its recorded "random" weights)."""
    from famegui.cli import main
    from famegui.data.pipeline import prepare_for_model

    monkeypatch.setenv("FAMEGUI_LOG_DIR", str(tmp_path / "logs"))
    photo = face("london_005", "neutral.jpg")
    (tmp_path / "images.csv").write_text(f"path,class\n{photo},3\n")
    out = tmp_path / "run"
    assert main(["run", str(tmp_path / "images.csv"), "--model", "resnet18", "--weights", "random", "--method",
                 "gradcam", "--metric", "deletion", "--quiet", "--out", str(out)]) == 0
    w = window(qtbot, tmp_path)
    w.show()
    b = open_run(w, out)
    assert b.model.rowCount() == 1 and b.open_button.text() == "Open in Classes view"
    [tile] = [t for t in b.tiles if t.method is not None]
    crop = prepare_for_model(resnet18_random, photo).tensor[0].permute(1, 2, 0).numpy()
    m = runfiles.read_map(out, "maps/0/gradcam_class.npy")
    assert np.array_equal(tile.rgb, overlay(crop, m / np.abs(m).max(), b.display.opacity, b.display.colormap))
    b.open_current()
    qtbot.waitUntil(lambda: w.session.model is not None and "probe" in w.session.inputs, timeout=LONG)
    assert w.session.model.name == "resnet18" and w.session.images["probe"].path == photo
    assert w.ctx.is_current(w.classes)
    w.close()
