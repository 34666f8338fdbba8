"""The window tells the truth at every step: what a new user met at 1366x768 (offscreen Qt, real widgets, the
real model). Each test names the defect it holds fixed; every wait is on a condition, never a fixed time."""
from __future__ import annotations

import pytest
from conftest import face
from PySide6.QtCore import Qt

pytest.importorskip("pytestqt")

LONG = 120000  # ms


def idle(w) -> bool:
    return not w.io.busy and not w.compute.busy


def pick_layer(w, name: str) -> None:
    """The layer table's row ``name``, as a click picks it."""
    item = w.layer_tree.findItems(name, Qt.MatchExactly | Qt.MatchRecursive, 0)[0]
    w.layer_tree.setCurrentItem(item)


def click_cell(w, cell) -> None:
    fm = w.feature_map
    h, wd = fm.fmap_canvas.image_shape()
    _, fh, fw = w.session.model.layer_info(fm.layer).shape
    fm.fmap_canvas.click_at_image((cell[1] + 0.5) * wd / fw, (cell[0] + 0.5) * h / fh)


def settle(qtbot, w) -> None:
    """No job left, and every queued signal of the ended ones delivered."""
    qtbot.waitUntil(lambda: idle(w), timeout=LONG)
    qtbot.wait(50)


# 1 ------------------------------------------------------------------------------------------------------
def test_a_layer_switch_while_a_cell_computes_leaves_no_stale_partial_map(qtbot, win):
    """Before: the stage3 job ran on and its progress kept drawing "FAME stage3[1,3] - 19%" (with "mass inside
    footprint so far: nan%") over the stage2 view; the status bar then said "done"."""
    fm = win.feature_map
    win.param_form.set_value("iterations", 3000)
    pick_layer(win, "stage3")
    qtbot.waitUntil(lambda: fm.layer == "stage3" and fm.fmap_canvas.image_shape() is not None, timeout=LONG)
    click_cell(win, (1, 3))
    qtbot.waitUntil(lambda: "%" in fm.fame_canvas.title.text, timeout=LONG)  # a partial map is on screen
    pick_layer(win, "stage2")
    qtbot.waitUntil(lambda: fm.layer == "stage2", timeout=LONG)
    settle(qtbot, win)  # the stage3 job ends at its next check: it is not the request on screen any more
    assert fm.fame_canvas.title.text == "FAME" and fm.fame_canvas.image_shape() is None
    assert "stage3" not in fm.cell_info.text() and "computing" not in fm.cell_info.text()
    assert fm.current_result() is None and "done" not in win.status_label.text()


# 10 -----------------------------------------------------------------------------------------------------
def test_the_hover_box_goes_with_its_layer(qtbot, win):
    fm = win.feature_map
    h, w = fm.fmap_canvas.image_shape()
    fm.fmap_canvas.hover_at_image(w * 0.3, h * 0.3)  # the canvas's hover signal, as a mouse move sends it
    assert fm.fmap_canvas.hover_rect() is not None
    pick_layer(win, "stage3")
    qtbot.waitUntil(lambda: fm.layer == "stage3", timeout=LONG)
    assert fm.fmap_canvas.hover_rect() is None and fm.hover_cell is None


def test_a_new_probe_clears_the_cancelled_map_and_its_cell(qtbot, win):
    fm = win.feature_map
    win.param_form.set_value("iterations", 3000)
    click_cell(win, (0, 1))
    qtbot.waitUntil(lambda: "%" in fm.fame_canvas.title.text, timeout=LONG)
    win.cancel_jobs()
    qtbot.waitUntil(lambda: "cancelled" in fm.fame_canvas.title.text, timeout=LONG)
    assert fm.fmap_canvas.box_rect("selected") is not None
    win.load_image("probe", face("london_005", "neutral.jpg"))
    qtbot.waitUntil(lambda: "probe" in win.session.inputs
                    and win.session.inputs["probe"].image.path == face("london_005", "neutral.jpg"), timeout=LONG)
    settle(qtbot, win)
    assert "cancelled" not in fm.fame_canvas.title.text and fm.fmap_canvas.box_rect("selected") is None
    assert fm.cell is None and fm.current_result() is None


# 3 and 4 ------------------------------------------------------------------------------------------------
def test_export_names_spell_out_e_plus_and_e_minus_and_name_the_other_image():
    """Before: e+ was suggested as "..._fame_e-similar.png" (reads as e-) and the other image was not named."""
    from famegui.gui.exports import suggested_name

    probe, ref = "/x/london_005/neutral.jpg", "/x/london_001/neutral.jpg"
    assert suggested_name(probe, "fame", "e+ (similar)", ref) == \
        "london_005-neutral_fame_eplus_vs_london_001-neutral.png"
    assert suggested_name(probe, "fame", "e- (dissimilar)", ref) == \
        "london_005-neutral_fame_eminus_vs_london_001-neutral.png"
    assert suggested_name(probe, "fame", "stage4[1,2]") == "london_005-neutral_fame_stage4-1-2.png"


def test_ctrl_e_on_the_compare_tab_exports_what_that_tab_shows(win):
    """Before: Ctrl+E on Compare methods suggested (and wrote) the last Pair-view map."""
    win.tabs.setCurrentWidget(win.compare_tab)
    assert win.suggested_export_path("view").endswith(win.compare_tab.suggested_name())
    assert any(a.shortcut().toString() == "Ctrl+Alt+E" and "comparison" in a.text().lower()
               for a in win.findChildren(type(win.menuBar().actions()[0])))
