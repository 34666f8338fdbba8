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


@pytest.mark.parametrize("engine", ["local", pytest.param("ray", marks=pytest.mark.slow)])
def test_the_engines_give_the_numbers_of_one_process_and_resume(engine, tmp_path, capsys):
    """The parts computed by two worker processes (or Ray actors) from the command line equal those measured in
    this process (within float noise: a worker uses one torch thread); a second call reuses every part."""
    if engine == "ray":
        pytest.importorskip("ray")
    images = tmp_path / "images.txt"
    images.write_text(f"{face('london_001', 'neutral.jpg')}\n{face('london_005', 'neutral.jpg')}\n")
    here = famegui.locality("dlib-resnet", [face("london_001", "neutral.jpg"), face("london_005", "neutral.jpg")],
                            ["stage1", "stage3"], cells=2, iterations=3)
    args = ["locality", "--images", str(images), "--layers", "stage1,stage3", "--cells", "2", "--iterations", "3",
            "--engine", engine, "--workers", "2", "--out", str(tmp_path / "o"), "--quiet"]
    assert main(args) == 0
    doc = json.loads((tmp_path / "o" / "locality.json").read_text())
    assert [(c["image"], c["layer"], c["row"], c["col"]) for c in doc["cells"]] == [
        (c["image"], c["layer"], c["row"], c["col"]) for c in here.cells]
    for key in ("inside", "inside_2x", "r50"):
        assert [c[key] for c in doc["cells"]] == pytest.approx([c[key] for c in here.cells], rel=1e-3, abs=1e-4)
    assert len(list((tmp_path / "o" / "parts").glob("*.json"))) == 4
    capsys.readouterr()
    assert main(args) == 0
    assert "4 image x layer parts reused" in capsys.readouterr().out


@pytest.mark.parametrize("args, words", [
    (["--cells", "0"], "--cells must be"),
    (["--layers", "stage9"], "stage9"),
    (["--layers", "fc"], "not a grid of cells"),
    (["--images", "/nonexistent/folder"], "no such folder"),
    (["--blur", "25"], "--blur must be"),
    (["--engine", "local", "--workers", "0"], "--workers"),
])
def test_command_line_mistakes_are_one_line(args, words, tmp_path, capsys):
    code = main(["locality", "--out", str(tmp_path / "o"), "--iterations", "1", "--cells", "1", *args])
    err = capsys.readouterr().err.strip().splitlines()
    assert code in (1, 2) and len(err) == 1 and words in err[0], err  # 2: argparse refused the value


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
