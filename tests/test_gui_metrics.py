"""The Compare tab runs the registry's GUI metrics (``Metric.gui``), not a list of names of its own."""
import ast
import inspect
import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from famegui.evaluation import curves as C
from famegui.evaluation.metrics import Metric, get_metric, metric_names, register_metric, unregister_metric

LONG = 180000  # ms: an upper bound for a busy machine; every wait is for a condition


class _Toy(Metric):
    """A metric without network work: the map's values at the top fractions (records whom it scored)."""

    calls: list[str] = []

    def __call__(self, sample):
        type(self).calls.append(sample.method)
        amap = np.asarray(sample.amap, dtype=np.float64)
        scores = [float(np.quantile(amap, 1.0 - f)) for f in self.fractions]
        return C.Curve(self.name, list(self.fractions), scores, "map value", sample.method, {})


class ToyGui(_Toy):
    name, label, gui = "toy-gui", "toy curve for the GUI", True
    calls: list[str] = []


class ToyOff(_Toy):
    name, label, gui = "toy-off", "toy curve kept out of the GUI", False
    calls: list[str] = []


@pytest.fixture
def toys():
    """Both toy metrics registered through the public registry only, and forgotten afterwards."""
    for cls in (ToyGui, ToyOff):
        cls.calls.clear()
        register_metric(cls)
    yield ToyGui, ToyOff
    for cls in (ToyGui, ToyOff):
        unregister_metric(cls.name)
    assert not {ToyGui.name, ToyOff.name} & set(metric_names())


def _registered_classes() -> dict[str, type[Metric]]:
    return {n: type(get_metric(n)) for n in metric_names()}


def test_gui_metrics_are_the_registry_metrics_that_declare_gui(toys):
    classes = _registered_classes()
    assert set(metric_names(gui=True)) == {n for n, cls in classes.items() if cls.gui}
    assert set(metric_names(gui=False)) == {n for n, cls in classes.items() if not cls.gui}
    assert metric_names(gui=True) == [n for n in metric_names() if n in metric_names(gui=True)]  # registry order
    # the built-ins' decisions (see their comments): cheap curves the tab draws in, the rest out
    assert {"deletion", "insertion", "hiding", "toy-gui"} <= set(metric_names(gui=True))
    assert {"sanity", "road", "sdd-deletion", "sdd-retention", "accuracy-deletion", "accuracy-insertion",
            "toy-off"} <= set(metric_names(gui=False))
    assert set(metric_names(gui=True)) <= set(metric_names(curves_only=True))


def test_every_registered_metric_declares_whether_it_fits_the_gui():
    """``gui`` is a decision of each metric (or its family's base), never just Metric's opt-in default."""
    undeclared = [n for n, cls in _registered_classes().items()
                  if not any("gui" in vars(k) for k in cls.__mro__ if k is not Metric)]
    assert undeclared == []


def test_a_gui_metric_must_give_a_curve():
    class NotACurve(Metric):
        name, gui, gives_curve = "toy-not-a-curve", True, False

    with pytest.raises(ValueError, match="gives_curve"):
        register_metric(NotACurve)
    assert "toy-not-a-curve" not in metric_names()


def test_compare_eval_names_no_metric():
    """The tab's evaluation code holds no metric name of its own: every name comes from the registry."""
    from famegui.gui.tabs import compare_eval

    literals = {n.value for n in ast.walk(ast.parse(inspect.getsource(compare_eval)))
                if isinstance(n, ast.Constant) and isinstance(n.value, str)}
    assert literals & set(metric_names()) == set()


def _plan(model, verification=False):
    """A FaithfulnessPlan of one class map on a stand-in session (the plan reads model, inputs, input())."""
    from famegui.gui.tabs.compare_eval import FaithfulnessPlan
    from famegui.session import MapResult
    from famegui.targets import Target

    g = torch.Generator().manual_seed(0)
    inp = SimpleNamespace(tensor=torch.rand(1, 3, *model.input_size, generator=g))
    session = SimpleNamespace(model=model, inputs={"probe": inp}, input=lambda slot: inp)
    amap = torch.rand(*model.input_size, generator=g).numpy()
    res = MapResult(amap, "gradcam", Target("class", class_index=3), {}, "probe", None, 0.0)
    return FaithfulnessPlan(session, [res], verification=verification)


def test_the_plan_runs_a_registered_gui_metric_and_not_a_gui_false_one(toys, resnet18_random):
    plan = _plan(resnet18_random)
    assert plan.metrics == metric_names(gui=True)
    curves = plan.run()
    got = {(c.metric, c.method) for c in curves}
    # hiding needs a non-mate and a pair: it does not apply to a class map, so the experiment skips it
    assert got == {(m, meth) for m in ("deletion", "insertion", "toy-gui") for meth in ("random", "gradcam")}
    assert sorted(ToyGui.calls) == ["gradcam", "gradcam", "random", "random"]  # each map and its reverse
    assert ToyOff.calls == []
    toy = next(c for c in curves if c.metric == "toy-gui" and c.method == "gradcam")
    assert np.isfinite(toy.extra["gain"]) and toy.extra["target"]  # the experiment's own bookkeeping


def test_the_plan_without_the_toy_runs_only_the_builtins(resnet18_random):
    """Unregistered again, the toy is gone from what the tab runs (nothing is cached)."""
    assert "toy-gui" not in _plan(resnet18_random).metrics


def test_compare_tab_runs_a_newly_registered_gui_metric(qtbot, win, tmp_path, toys):
    """The real window: a metric registered with gui=True comes back from the Faithfulness button, one with
    gui=False does not; drawing and export take the new curve in their stride."""
    import pyqtgraph as pg

    tab = win.compare_tab
    win.tabs.setCurrentWidget(tab)
    tab.set_checked(["gradcam"])
    tab.run()
    qtbot.waitUntil(lambda: len(tab.results) == 2 and not win.compute.busy, timeout=LONG)
    tab.faith_button.click()
    qtbot.waitUntil(lambda: tab.mode == "faithfulness" and not win.compute.busy, timeout=LONG)
    got = {(c.metric, c.method, c.extra["target"].split(" ")[0]) for c in tab.faith_curves}
    both = {(m, meth, t) for m in ("deletion", "insertion", "toy-gui") for meth in ("random", "gradcam")
            for t in ("e+", "e-")}
    assert got == both | {("hiding", meth, "e+") for meth in ("random", "gradcam")}  # the demo's third photo
    assert ToyOff.calls == [] and "toy-off" not in {c.metric for c in tab.faith_curves}
    assert tab.right.currentWidget() is tab.plots
    assert len([i for i in tab.plots.ci.items if isinstance(i, pg.PlotItem)]) >= 5  # the built-ins' panels
    assert "lowest deletion AUC" in tab.info.text()
    tab.export(str(tmp_path / "faith.png"))
    saved = json.loads((tmp_path / "faith.json").read_text())["curves"]
    assert sum(c["mode"] == "toy-gui" for c in saved) == 4  # to_dict has no "metric"; the toy's mode is its name
