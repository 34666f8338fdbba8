"""Locality over layers: the measures on maps whose answer is known by hand, the measurement on the embedded
face network (files, resume), and the command line's errors."""
import json
import math

import numpy as np
import pytest
from conftest import face

import famegui
from famegui.cli import main
from famegui.evaluation.locality import choose_cells, mass_radius, measure, scaled_box
from famegui.models.receptive import Box


def test_a_point_under_the_cell_is_all_inside_and_a_flat_map_is_its_area():
    fp, rf = Box(40, 40, 60, 60), Box(0, 0, 100, 100)
    point = np.zeros((100, 100), np.float32)
    point[49:51, 49:51] = 1.0
    m = measure(point, fp, rf)
    assert m["inside"] == m["inside_2x"] == m["inside_4x"] == 1.0
    assert m["r50"] <= 1.0 and m["r90"] <= 1.0
    flat = np.ones((100, 100), np.float32)
    m = measure(flat, fp, rf)
    assert m["inside"] == pytest.approx(400 / 10000)
    assert m["inside_2x"] == pytest.approx(1600 / 10000) and m["inside_4x"] == pytest.approx(6400 / 10000)
    # half of a flat map lies within the disc of area 5000 px around the centre: r = sqrt(5000 / pi)
    assert m["r50"] == pytest.approx(math.sqrt(5000 / math.pi), abs=1.0)
    assert m["r50_rf"] == pytest.approx(m["r50"] / math.sqrt(10000 / math.pi))


def test_radius_grows_with_the_share_and_boxes_are_clipped():
    rng = np.random.default_rng(0)
    amap = rng.random((64, 64))
    radii = [mass_radius(amap, (10.0, 50.0), q) for q in (0.1, 0.5, 0.9, 1.0)]
    assert radii == sorted(radii) and radii[-1] <= math.hypot(64, 64)
    assert math.isnan(mass_radius(np.zeros((8, 8)), (4, 4), 0.5))
    assert scaled_box(Box(0, 0, 10, 10), 4, (64, 64)).as_tuple() == (0.0, 0.0, 25.0, 25.0)


def test_cells_are_drawn_once_and_the_same_for_every_call():
    a, b = choose_cells((7, 9), 5, seed=3), choose_cells((7, 9), 5, seed=3)
    assert a == b and len(set(a)) == 5 and all(0 <= r < 7 and 0 <= c < 9 for r, c in a)
    assert choose_cells((7, 9), 5, seed=4) != a
    assert len(choose_cells((3, 3), "all")) == 9 == len(choose_cells((3, 3), 100))


def test_locality_on_the_face_network_writes_everything_and_resumes(tmp_path):
    images = [face("london_001", "neutral.jpg"), face("london_005", "neutral.jpg")]
    out = tmp_path / "loc"
    r = famegui.locality("dlib-resnet", images, ["stage1", "stage4"], cells=2, iterations=3, out=out)
    assert [row["layer"] for row in r.layers] == ["stage1", "stage4"] and r.reused == 0
    assert all(row["n"] == 4 and row["images"] == 2 for row in r.layers)
    for name in ("locality.json", "locality.md", "locality.csv", "locality.tex", "locality.png"):
        assert (out / name).is_file()
    doc = json.loads((out / "locality.json").read_text())
    assert len(doc["cells"]) == 8 and doc["params"]["blur_kernel"] == 0
    for row in doc["layers"]:  # the table's means are those of the cells
        cells = [c["inside"] for c in doc["cells"] if c["layer"] == row["layer"]]
        assert row["inside"]["mean"] == pytest.approx(np.mean(cells))
        assert 0 <= row["inside"]["mean"] <= row["inside_2x"]["mean"] <= row["inside_4x"]["mean"] <= 1
    # resume: the parts are read back, not computed again; a broken part is measured again
    parts = sorted((out / "parts").glob("*.json"))
    assert len(parts) == 4
    parts[0].write_text("{broken")
    again = famegui.locality("dlib-resnet", images, ["stage1", "stage4"], cells=2, iterations=3, out=out)
    assert again.reused == 3
    assert [c["inside"] for c in again.cells] == pytest.approx([c["inside"] for c in r.cells], abs=1e-6)


@pytest.mark.parametrize("args, words", [
    (["--cells", "0"], "--cells must be"),
    (["--layers", "stage9"], "stage9"),
    (["--layers", "fc"], "not a grid of cells"),
    (["--images", "/nonexistent/folder"], "no such folder"),
    (["--blur", "25"], "--blur must be"),
])
def test_command_line_mistakes_are_one_line(args, words, tmp_path, capsys):
    code = main(["locality", "--out", str(tmp_path / "o"), "--iterations", "1", "--cells", "1", *args])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and len(err) == 1 and words in err[0], err


def test_the_feature_map_tab_shows_the_curve_for_the_probe(win, qtbot):
    """The window's button measures the probe image's stages (and the layer on screen, marked) in the
    background and shows the curve in a window of its own."""
    from PySide6.QtCore import Qt

    tab = win.feature_map
    win.param_form.set_value("iterations", 5)
    assert tab.select_layer("stage2.0")
    qtbot.mouseClick(tab.locality_button, Qt.LeftButton)
    qtbot.waitUntil(lambda: tab.locality_result is not None, timeout=180000)
    layers = [r["layer"] for r in tab.locality_result.layers]
    assert {"stage1", "stage2.0", "stage4"} <= set(layers) and layers.index("stage2.0") < layers.index("stage4")
    assert all(r["n"] == 4 for r in tab.locality_result.layers)
    assert tab.locality_dialog.isVisible() and tab.locality_canvas.image_shape() is not None
    assert "<b>stage2.0" in tab.locality_text.text()
