"""FAME's own counterfactual: the perturbed image x_T kept with the map, and the explained output before and
after it, checked against the network run again by hand."""
import numpy as np
import torch
import torch.nn.functional as F
from conftest import face

import famegui

PROBE, MATE = face("london_001", "neutral.jpg"), face("london_001", "smiling.jpg")


def test_e_plus_keeps_x_t_and_the_cosine_before_and_after():
    e = famegui.explain("dlib-resnet", PROBE, "e+", reference=MATE, iterations=20)
    model, x = e.model, e.probe.tensor
    xt = torch.from_numpy(e.counterfactual).permute(2, 0, 1)[None]
    with torch.no_grad():
        r = model(e.reference.tensor)
        before = F.cosine_similarity(model(x), r).item()
        after = F.cosine_similarity(model(xt), r).item()
    assert e.scores["score"] == "cosine"
    assert abs(e.scores["before"] - before) < 1e-5 and abs(e.scores["after"] - after) < 1e-5
    assert after < before  # the change lowers what e+ explains
    step = e.params["step"]
    change = np.abs(e.counterfactual - x[0].permute(1, 2, 0).numpy())
    assert 0 < change.max() <= e.info.iterations * step + 1e-5  # at most one step per iteration per pixel


def test_batched_cells_and_classes_keep_theirs_and_other_methods_have_none(resnet18_random):
    x = torch.rand(1, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    cells = famegui.explain(resnet18_random, x, [famegui.cell("layer4", 1, 1), famegui.cell("layer4", 5, 2)],
                            iterations=4)
    assert all(c.counterfactual.shape == (224, 224, 3) and c.scores["after"] < c.scores["before"] for c in cells)
    assert not np.array_equal(cells[0].counterfactual, cells[1].counterfactual)
    cls = famegui.explain(resnet18_random, x, famegui.class_target(3), iterations=4)
    with torch.no_grad():
        logit = resnet18_random(x)[0, 3].item()
    assert cls.scores["score"] == "logit" and abs(cls.scores["before"] - logit) < 1e-4
    assert cls.scores["after"] < cls.scores["before"]
    g = famegui.explain(resnet18_random, x, famegui.class_target(3), "gradcam")
    assert g.counterfactual is None and g.scores is None


def test_the_pair_tab_shows_x_t_on_request(win, qtbot):
    """FAME e+ in the Pair tab: the line under the photos gives the cosine before and after x_T, and the
    checkbox shows x_T in place of the map (and the map again when unticked)."""
    from PySide6.QtCore import Qt

    tab = win.pair
    win.tabs.setCurrentWidget(tab)
    with qtbot.waitSignal(win.result_shown, timeout=180000):
        tab.request()
    res = tab.result
    assert res.method == "fame" and res.counterfactual is not None and tab.show_xt.isEnabled()
    assert f"{res.scores['before']:.4f}" in tab.info.text() and "cosine" in tab.info.text()
    shown_map = tab.probe_canvas.image_item.image.copy()
    qtbot.mouseClick(tab.show_xt, Qt.LeftButton)
    assert tab.show_xt.isChecked() and "x_T" in tab.probe_canvas.title.text
    shown_xt = tab.probe_canvas.image_item.image
    assert not np.array_equal(shown_map, shown_xt)
    assert np.abs(shown_xt.astype(int) - np.round(255 * res.counterfactual).astype(int)).max() <= 1
    qtbot.mouseClick(tab.show_xt, Qt.LeftButton)
    assert "x_T" not in tab.probe_canvas.title.text
    assert np.array_equal(tab.probe_canvas.image_item.image, shown_map)
