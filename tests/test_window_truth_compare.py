"""Issue 24, the Compare tab: its sheets and curves are legible on a 1366x768 laptop, it says which image it
explains, nothing jumps when results arrive, and its exports name and record what is on screen.

The real window and model (offscreen Qt); cheap methods; every wait is on a condition, never a fixed time.
"""
import json

import numpy as np
import pytest
from conftest import face
from PySide6.QtCore import QPoint, QRectF, Qt
from PySide6.QtWidgets import QApplication, QLabel

pytest.importorskip("pytestqt")

LONG = 180000  # ms: an upper bound for a busy machine
LAPTOP_W, LAPTOP_H = 1366 - 8, 768 - 84  # what a 1366x768 screen leaves a window (task bar, title bar, borders)
MIN_SIDE = 120  # the bound for a tile on screen
CHEAP = ["gradcam", "hirescam", "xssab", "gweebp", "layercam"]
ELEVEN = ["cebp", "ebp", "gbp", "gradcam", "gradcam-ew", "gradcam-pp", "gweebp", "hirescam", "layercam", "xssab",
          "fame"]


def idle(w) -> bool:
    return not w.io.busy and not w.compute.busy


def laptop(qtbot, win):
    win.resize(LAPTOP_W, LAPTOP_H)
    qtbot.waitUntil(lambda: win.width() == LAPTOP_W and win.height() == LAPTOP_H, timeout=10000)
    tab = win.compare_tab
    win.tabs.setCurrentWidget(tab)
    qtbot.waitUntil(lambda: idle(win), timeout=LONG)
    return tab


def compare(qtbot, win, names):
    tab = win.compare_tab
    tab.set_checked(names)
    tab.run()
    qtbot.waitUntil(lambda: len(tab.results) == 2 * len(names) and idle(win), timeout=LONG)
    QApplication.processEvents()
    return tab


def sanity(qtbot, win, names):
    tab = win.compare_tab
    tab.set_checked(names)
    tab.sanity_button.click()
    qtbot.waitUntil(lambda: "maps change" in tab.info.text() and idle(win), timeout=LONG)
    QApplication.processEvents()
    return tab


def tile_sides(tab) -> list[tuple[float, float]]:
    """(width, height) on screen of every tile's picture of the sheet shown."""
    grid = tab.grid
    if hasattr(grid, "tiles"):  # tiles as widgets
        return [(t.picture.pixmap().width(), t.picture.pixmap().height()) for t in grid.tiles[:len(grid.infos)]]
    # one picture in an image view (before issue 24): a tile's side is its image side times the view's scale
    sx, sy = grid.view.viewPixelSize()
    h, w = tab.session.model.input_size
    return [(w / sx, h / sy)]


def fake_comparison(tab, names):
    """The sheet of ``names`` x (e+, e-) with maps as a finished run leaves them (no compute: the drawing is
    what is tested here; the runs are tested in test_gui)."""
    from famegui.session import MapResult
    from famegui.targets import Target

    yy, xx = np.mgrid[0:150, 0:150].astype(np.float32)
    targets = [Target("similar"), Target("dissimilar")]
    tab.rows, tab.cols, tab.mode = list(names), [t.label() for t in targets], "compare"
    tab.results = {}
    for i, name in enumerate(names):
        for j, t in enumerate(targets):
            amap = np.exp(-((xx - 30 - 9 * i) ** 2 + (yy - 40 - 60 * j) ** 2) / 400).astype(np.float32)
            tab.results[(name, t.label())] = MapResult(amap, name, t, {}, "probe", "reference", 0.5)
    tab.redraw()
    QApplication.processEvents()


def set_pair_side(win, explain_other: bool, third: bool):
    """The Pair tab's "explain other side" and "compare with: third", without starting its own FAME job."""
    pair = win.pair
    for w in (pair.side_probe, pair.side_ref, pair.compare_with):
        w.blockSignals(True)
    (pair.side_ref if explain_other else pair.side_probe).setChecked(True)
    pair.compare_with.setCurrentText("third" if third else "reference")
    for w in (pair.side_probe, pair.side_ref, pair.compare_with):
        w.blockSignals(False)


def visible_texts(widget) -> list[str]:
    return [lab.text() for lab in widget.findChildren(QLabel) if lab.isVisible() and lab.text()]


# ---------------------------------------------------------------------------------------------- item 6
def test_compare_tiles_are_legible_on_a_laptop(qtbot, win):
    """Item 6: every tile at least 120 px on screen (the sheet scrolls instead), captions in the UI font,
    e+ and e- told apart by words and colour."""
    tab = laptop(qtbot, win)
    fake_comparison(tab, ELEVEN)  # the cheap methods checked at first start: 11 rows of e+ and e-
    sides = tile_sides(tab)
    assert min(min(s) for s in sides) >= MIN_SIDE, sides
    assert len(sides) == 2 * len(ELEVEN)
    grid = tab.grid
    # what does not fit scrolls: the whole sheet is reachable
    body, port = grid.body.size(), grid.scroll.viewport().size()
    assert body.height() <= port.height() or grid.scroll.verticalScrollBar().maximum() >= body.height() - port.height()
    ui = QApplication.font().pointSizeF()
    for tile in grid.tiles[:len(grid.infos)]:
        for line in tile.lines:
            assert line.isVisibleTo(tab) and line.fontInfo().pointSizeF() >= ui
            assert line.height() >= line.fontMetrics().height()  # not cut
    plus = grid.tiles[tab._layout().index("gradcam", "e+ (similar)")]
    minus = grid.tiles[tab._layout().index("gradcam", "e- (dissimilar)")]
    assert plus.lines[1].text().startswith("e+ (similar)") and minus.lines[1].text().startswith("e- (dissimilar)")
    a, b = np.array(plus.accent), np.array(minus.accent)
    assert np.abs(a - b).max() >= 100  # two colours, not one
    # a real click on a tile still opens it large in the Pair view
    pos = plus.picture.mapTo(grid.body, QPoint(20, 20))
    grid.scroll.ensureVisible(pos.x(), pos.y())
    with qtbot.waitSignal(tab.tile_clicked, timeout=LONG) as sig:
        qtbot.mouseClick(plus.picture, Qt.LeftButton, pos=QPoint(20, 20))
    assert sig.args[0].method == "gradcam" and sig.args[0].target.kind == "similar"


def test_sanity_tiles_are_legible_and_a_click_shows_their_numbers(qtbot, win):
    """Item 6: the sanity sheet's tiles as big and captioned as the comparison's; a click on one selects its
    trained/random pair and says its correlations."""
    tab = laptop(qtbot, win)
    sanity(qtbot, win, CHEAP)
    sides = tile_sides(tab)
    assert min(min(s) for s in sides) >= MIN_SIDE, sides
    assert len(sides) == 4 * len(CHEAP)
    ui = QApplication.font().pointSizeF()
    grid = tab.grid
    assert all(line.fontInfo().pointSizeF() >= ui for t in grid.tiles[:len(sides)] for line in t.lines)
    summary = tab.info.text()
    i = tab._layout().index("xssab", "e- random")
    tile = grid.tiles[i]
    pos = tile.picture.mapTo(grid.body, QPoint(20, 20))
    grid.scroll.ensureVisible(pos.x(), pos.y())
    qtbot.mouseClick(tile.picture, Qt.LeftButton, pos=QPoint(20, 20))
    assert not any("nan" in line.text() for t in grid.tiles[:len(sides)] for line in t.lines)
    assert win.tabs.currentWidget() is tab  # it stays here
    assert tab.info.text() != summary and "xSSAB e- (dissimilar)" in tab.info.text()
    assert "Spearman" in tab.info.text() and "maps change" in tab.info.text()
    selected = [j for j, t in enumerate(grid.tiles[:len(sides)]) if t.selected]
    assert selected == [tab._layout().index("xssab", "e- trained"), i]


# ---------------------------------------------------------------------------------------------- item 7
def _curves():
    from famegui.evaluation.curves import Curve

    fr = [i / 10 for i in range(11)]
    out = []
    methods = ["random", "gradcam", "gweebp", "hirescam", "xssab", "corrrise", "fame"]
    for target in ("e+ (similar)", "e- (dissimilar)"):
        metrics = ["deletion", "insertion"] + (["hiding"] if target.startswith("e+") else [])
        for metric in metrics:
            for j, m in enumerate(methods):
                extra = {"target": target, "flip": 0.25}
                if m == "gradcam" and target.startswith("e-"):
                    extra["undefined"] = "the map is constant: it ranks no pixel"
                out.append(Curve(metric, fr, list(np.linspace(0.9, 0.1 * j, 11)), "cosine", m, extra, metric=metric))
    # a plug-in metric whose curves have the mode of deletion: a panel of its own, not mixed into deletion's
    out += [Curve("deletion", fr, list(np.linspace(0.8, 0.2, 11)), "cosine", m, {"target": "e+ (similar)"},
                  metric="toy-blur") for m in ("random", "gradcam")]
    return out


def test_faithfulness_legends_sit_outside_the_plots_and_name_every_method(qtbot, win):
    """Item 7: legends outside the axes, whole titles, every method in its panel's visible legend, a NaN area
    says why; panels are one per metric (not per curve mode)."""
    import pyqtgraph as pg

    tab = laptop(qtbot, win)
    curves = _curves()
    tab.faith_curves, tab.mode = curves, "faithfulness"
    tab.redraw()
    QApplication.processEvents()
    plots = [i for i in tab.plots.ci.items if isinstance(i, pg.PlotItem)]
    panels = tab.curves.panels
    canvas = QRectF(0, 0, panels.width(), panels.height())
    for p in plots:
        legend = p.legend
        assert legend is not None
        lrect, vrect = legend.sceneBoundingRect(), p.vb.sceneBoundingRect()
        assert not lrect.intersects(vrect), (lrect, vrect)  # never over the curves
        assert canvas.contains(lrect)  # wholly drawn (the view scrolls to it)
        title = p.titleLabel.item
        trect = title.mapRectToScene(title.boundingRect())
        assert p.sceneBoundingRect().contains(trect) and canvas.contains(trect), (p.titleLabel.text, trect)
        assert "AUC is better" in title.toPlainText()
        names = [label.text for _sample, label in legend.items]
        assert len(names) == len(p.listDataItems())
        for n in names:
            assert "nan" not in n
        joined = " ".join(names)
        if "toy-blur" in p.titleLabel.text:
            assert len(names) == 2  # its own panel: not mixed into deletion's
            continue
        for label in ("random", "Grad-CAM", "gweEBP", "HiResCAM", "xSSAB", "CorrRISE", "FAME"):
            assert label in joined, (p.titleLabel.text, joined)
        if "e-" in p.titleLabel.text:
            assert "Grad-CAM (n/a: empty map)" in joined
    # the panels do not fit a laptop's view: it scrolls, nothing is squeezed
    area = tab.curves
    assert panels.height() <= area.viewport().height() or area.verticalScrollBar().maximum() > 0
    assert all(p.vb.sceneBoundingRect().height() >= 100 for p in plots)
    assert len(plots) == 6  # e+: deletion, insertion, hiding, toy-blur; e-: deletion, insertion


# ---------------------------------------------------------------------------------------------- item 8
def test_the_grid_says_which_image_it_explains_and_against_which(qtbot, win):
    """Item 8: the Pair tab's side and "compare with" choose the images; the Compare tab says so in a line."""
    tab = laptop(qtbot, win)
    set_pair_side(win, explain_other=True, third=True)  # explain the third photo against the probe
    win.tabs.setCurrentWidget(win.feature_map)
    win.tabs.setCurrentWidget(tab)

    def says(*parts):
        return [t for t in visible_texts(tab) if "xplains" in t and all(p in t for p in parts)]

    assert says("london_005/neutral.jpg (third)", "london_001/neutral.jpg (probe)"), visible_texts(tab)
    compare(qtbot, win, ["gradcam"])
    assert {(r.slot, r.other) for r in tab.results.values()} == {("third", "probe")}
    [line] = says("london_005/neutral.jpg (third)", "against london_001/neutral.jpg (probe)")
    assert line.index("london_005") < line.index("london_001") and "Pair tab" in line


# ---------------------------------------------------------------------------------------------- item 15
def test_results_do_not_move_the_method_list_or_the_tiles(qtbot, win):
    """Item 15: the method list keeps its height (and 11+ rows) when a result text arrives; the pictures keep
    their place whatever their captions and titles say."""
    tab = laptop(qtbot, win)
    lst = tab.method_list

    def rows_shown():
        port = lst.viewport().rect()
        return sum(port.contains(lst.visualItemRect(lst.item(i))) for i in range(lst.count()))

    before = (lst.height(), rows_shown())
    assert before[1] >= 11
    compare(qtbot, win, ["gradcam", "xssab"])
    assert (lst.height(), rows_shown()) == before
    grid = tab.grid
    per_row = len(tab.cols) * tab.groups
    tops = [grid.tile_rect_in(i, tab).top() for i in range(per_row)]
    assert len(set(tops)) == 1  # one row, one line of pictures: the same caption room above every picture
    first_compare = tops[0]
    sanity(qtbot, win, ["gradcam", "xssab"])
    assert (lst.height(), rows_shown()) == before  # a long summary scrolls in its own box
    assert len(tab.info.text()) > 150
    assert grid.tile_rect_in(0, tab).top() == first_compare  # another title, the same place
    assert len({t.picture.y() for t in grid.tiles[:8]}) == 1


# ---------------------------------------------------------------------------------------------- item 5
def _inputs(data):
    return {k: (data[k] or {}).get("path") for k in ("image", "other", "non_mate")}


def test_exports_name_and_record_the_images_shown(qtbot, win, tmp_path):
    """Item 5 and the tab's exports: file names by the one naming rule, JSON sidecars with every input path,
    side, pair, parameters, seed, model and target; the sanity export is of the image its maps are of."""
    from famegui.gui.exports import suggested_name

    third, probe, ref = (face(*p) for p in (("london_005", "neutral.jpg"), ("london_001", "neutral.jpg"),
                                            ("london_001", "smiling.jpg")))
    tab = laptop(qtbot, win)
    set_pair_side(win, explain_other=True, third=True)  # london_005 explained, against the probe
    sanity(qtbot, win, ["gradcam"])
    tab.export(str(tmp_path / "sanity.png"))
    data = json.loads((tmp_path / "sanity.json").read_text())
    assert _inputs(data) == {"image": third, "other": probe, "non_mate": None}
    assert data["side"] == "third" and data["pair"] == ["third", "probe"] and data["seed"] == 0
    assert data["model"]["name"] == "dlib-resnet" and "gradcam" in data["params"]
    assert [t["kind"] for t in data["targets"]] == ["similar", "dissimilar"] and len(data["sanity"]) == 2
    name = tab.suggested_name()  # named after the image whose maps it shows, and the other one
    assert name == suggested_name(third, "sanity", "e+ e-", probe)
    assert name == "london_005-neutral_sanity_eplus-eminus_vs_london_001-neutral.png"

    set_pair_side(win, explain_other=False, third=False)  # the probe against the reference
    compare(qtbot, win, ["gradcam", "gweebp"])
    name = tab.suggested_name()
    assert name == "london_001-neutral_compare_eplus-eminus_vs_london_001-smiling.png"
    written = tab.export(str(tmp_path / name))
    sidecar = tmp_path / name.replace(".png", ".json")
    data = json.loads(sidecar.read_text())
    assert sidecar in written and _inputs(data) == {"image": probe, "other": ref, "non_mate": third}
    assert data["side"] == "probe" and data["pair"] == ["probe", "reference"]
    assert set(data["params"]) == {"gradcam", "gweebp"} and len(data["maps"]) == 4
    assert all((tmp_path / m["npy"]).exists() for m in data["maps"])
    gwe = [m for m in data["maps"] if m["method"] == "gweebp" and m["target"]["kind"] == "similar"]
    assert gwe[0]["non_mate"]["path"] == third

    tab.set_checked(["gradcam"])
    tab.run()
    qtbot.waitUntil(lambda: len(tab.results) == 2 and idle(win), timeout=LONG)
    tab.faith_button.click()
    qtbot.waitUntil(lambda: tab.mode == "faithfulness" and idle(win), timeout=LONG)
    name = tab.suggested_name()
    assert name == "london_001-neutral_faithfulness_eplus-eminus_vs_london_001-smiling.png"
    written = tab.export(str(tmp_path / name))
    data = json.loads((tmp_path / name.replace(".png", ".json")).read_text())
    assert _inputs(data) == {"image": probe, "other": ref, "non_mate": third}  # the hiding game's non-mate
    assert data["seed"] == 0 and data["params"].keys() == {"gradcam"} and data["curves"]
    assert len(written) == 2


def test_a_view_not_yet_computed_has_nothing_to_export(qtbot, win, tmp_path):
    tab = laptop(qtbot, win)
    with pytest.raises(ValueError, match="nothing to export"):
        tab.export(str(tmp_path / "x.png"))
    assert tab.suggested_name().startswith("london_001-neutral_compare")
