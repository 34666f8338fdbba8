"""The window tells the truth at every step (issue 24, items 2 and 9): a run's item opened in the Pair view is
explained as the run explained it, and the demo pairs are what their box says (offscreen Qt, real widgets, the
real model, a real `famegui run`). Every wait is on a condition, never a fixed time."""
from __future__ import annotations

import pytest
from conftest import face

pytest.importorskip("pytestqt")

from famegui.gui.run_browser import open_run  # noqa: E402

LONG = 120000  # ms: an upper bound for a busy machine
GENUINE = (face("london_001", "neutral.jpg"), face("london_001", "smiling.jpg"))
IMPOSTOR = (face("london_001", "neutral.jpg"), face("london_005", "neutral.jpg"))


def idle(w) -> bool:
    return not w.io.busy and not w.compute.busy


@pytest.fixture(scope="module")
def pair_run(tmp_path_factory):
    """`famegui run` on the genuine (item 0) and the impostor (item 1) pair, Grad-CAM only."""
    from famegui.cli import main

    tmp = tmp_path_factory.mktemp("truth-pair-run")
    (tmp / "pairs.csv").write_text(f"{GENUINE[0]},{GENUINE[1]},1\n{IMPOSTOR[0]},{IMPOSTOR[1]},0\n")
    assert main(["run", str(tmp / "pairs.csv"), "--method", "gradcam", "--metric", "deletion", "--quiet",
                 "--out", str(tmp / "run")]) == 0
    return tmp / "run"


# 2 ------------------------------------------------------------------------------------------------------
def test_open_in_pair_view_explains_the_probe_against_the_reference(qtbot, win, pair_run):
    """Before: with the Pair tab left on "compare with: third" and "explain other side", the opened item was
    explained for the third photo against the probe, and the demo box kept naming the demo pair it showed last."""
    pair = win.pair
    win.tabs.setCurrentWidget(pair)
    pair.compare_with.setCurrentText("third")
    pair.side_ref.setChecked(True)
    qtbot.waitUntil(lambda: idle(win), timeout=LONG)
    assert pair.demo_combo.currentText() == "demo: genuine pair"  # the window starts on the genuine demo
    browser = open_run(win, pair_run)
    row = next(i for i, r in enumerate(browser.run.rows) if r.index == 1 and r.target == "e+")
    browser.select(row)
    browser.open_current()
    qtbot.waitUntil(lambda: win.session.images["reference"].path == IMPOSTOR[1] and idle(win)
                    and pair.result is not None, timeout=LONG)
    res = pair.result
    assert (res.slot, res.other, res.target.kind) == ("probe", "reference", "similar")
    assert pair.side_probe.isChecked() and pair.compare_with.currentText() == "reference"
    assert pair.probe_canvas.title.text.startswith("probe (") and ": FAME e+" in pair.probe_canvas.title.text
    assert pair.demo_combo.currentText() == "demo: impostor pair"  # the item is the demo's impostor pair
    browser.close()


# 9 ------------------------------------------------------------------------------------------------------
def test_the_impostor_demo_does_not_repeat_the_reference_as_the_third(qtbot, win):
    """Before: the impostor demo set the reference to the file the third photo already held: two identical
    verdict lines, and triplet methods took the reference as the pair's non-mate."""
    pair = win.pair
    win.tabs.setCurrentWidget(pair)
    qtbot.waitUntil(lambda: idle(win) and bool(pair.scores.text()), timeout=LONG)
    pair.load_demo_pair(1)
    qtbot.waitUntil(lambda: win.session.images["reference"].path == IMPOSTOR[1] and idle(win)
                    and bool(pair.scores.text()), timeout=LONG)
    assert "third" not in win.session.images and not pair.third_canvas.isVisible()
    assert pair.scores.text().count("probe vs") == 1 and "probe vs reference" in pair.scores.text()
    assert "different" in pair.scores.text() and pair.demo_combo.currentText() == "demo: impostor pair"
    assert win.model_dock.image_labels["third"].text() == "-"
    pair.load_demo_pair(0)  # the genuine demo brings its non-mate back as the third: a real triplet
    qtbot.waitUntil(lambda: "third" in win.session.inputs and idle(win)
                    and pair.scores.text().count("probe vs") == 2, timeout=LONG)
    paths = {s: win.session.images[s].path for s in ("probe", "reference", "third")}
    assert paths == {"probe": GENUINE[0], "reference": GENUINE[1], "third": IMPOSTOR[1]}
    assert pair.demo_combo.currentText() == "demo: genuine pair"


# 14 -----------------------------------------------------------------------------------------------------
def menu_entries(menu) -> set[str]:
    """Every entry of ``menu`` and its sub-menus as "Menu > Entry" (accelerator ampersands dropped)."""
    out = set()
    for action in menu.actions():
        if action.menu() is not None:
            out |= menu_entries(action.menu())
        elif action.text():
            out.add(f"{menu.title().replace('&', '')} > {action.text().replace('&', '')}")
    return out


def test_the_window_says_one_word_for_each_thing(qtbot, win):
    """Before: the e- button said "e- (different)" and its maps "e- (dissimilar)"; the error banner sent the user
    to "File > Load weights or model file..." while the menu entry read "Load weights or TorchScript..."."""
    import re

    from famegui.gui.messages import _HINTS
    from famegui.targets import Target

    assert win.pair.sign_minus.text() == Target("dissimilar").label()
    assert win.pair.sign_plus.text() == Target("similar").label()
    entries = set().union(*(menu_entries(a.menu()) for a in win.menuBar().actions() if a.menu() is not None))
    named = {m for _pattern, words in _HINTS for m in re.findall(r"File > [^)]*\.\.\.", words)}
    assert named and named <= entries, named - entries


def test_a_long_error_in_the_status_bar_is_cut_between_words(qtbot, win):
    """Before: the status bar cut a long error at its edge, mid-URL ("https://huggingface.co/da")."""
    url = "https://huggingface.co/datasets/some-owner/some-weights/resolve/main/model.safetensors"
    message = f"cannot download the weights from {url}: connection refused after 3 tries; check the address"
    win.resize(1000, 700)
    win.ctx.show_error(message)
    label = win.status_label
    qtbot.waitUntil(lambda: label.toolTip().endswith(message), timeout=LONG)
    shown = label.text()
    assert label.fontMetrics().horizontalAdvance(shown) <= label.contentsRect().width()
    assert shown.endswith(" ...") and url not in shown and "https" not in shown  # the URL is whole or not there
    assert ("error: " + message).startswith(shown[:-len(" ...")])
    win.resize(2400, 700)  # wide enough: the whole line
    qtbot.waitUntil(lambda: label.text() == label.toolTip(), timeout=LONG)
