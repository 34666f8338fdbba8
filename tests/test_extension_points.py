"""A new target kind is a one-place change: registered through famegui.targets.register_kind only, it runs
end to end through the Session (FAME, a black-box method, a CAM method) and the evaluation experiment, and
what it declares gives it a command-line flag, a choice in the window's view of its task and a protocol-run
target, with no edit anywhere else."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import GUI_READY_MS, face

from famegui.cli import main
from famegui.evaluation import rundir, runfiles
from famegui.evaluation.experiment import evaluate
from famegui.evaluation.metrics import Sample
from famegui.evaluation.protocol import read_protocol
from famegui.evaluation.runner import run_protocol
from famegui.session import Session
from famegui.targets import (
    CliFlag,
    GuiChoice,
    RunTarget,
    Target,
    TargetKind,
    register_kind,
    target_kinds,
    unregister_kind,
)
from famegui.targets.kinds import class_from_label, class_from_text, top_rank


class Margin(TargetKind):
    """Toy kind: the margin of one class's logit over the best other class."""

    name = "toy-margin"
    task = "classification"
    model_task = "classification"
    cli = CliFlag("--toy-margin", metavar="K|top1", help="the margin of class K's logit over the best other class")
    gui = GuiChoice("logit margin", "the class's logit minus the best other class's")
    run = RunTarget("margin")

    def check_cli(self, text):
        top_rank(text, self.cli.flag)

    def from_cli(self, text, model, x):
        return Target(self.name, class_index=class_from_text(model, text, x, self.cli.flag))

    def from_item(self, model, label):
        return Target(self.name, class_index=class_from_label(model, label))

    def validate(self, target):
        if target.class_index is None:
            raise ValueError("a margin target needs a class index")

    def label(self, target):
        return f"margin of class {target.class_index}"

    @staticmethod
    def margin(logits: torch.Tensor, k: int) -> torch.Tensor:
        others = torch.cat([logits[:, :k], logits[:, k + 1:]], dim=1)
        return logits[:, k] - others.max(dim=1).values

    def loss(self, model, targets, reference=None):
        ks = [t.class_index for t in targets]
        return lambda x: torch.stack([self.margin(model(x[i:i + 1]), k)[0] for i, k in enumerate(ks)])

    def cam_target(self, model, target, reference, params):
        k = target.class_index
        return lambda out: self.margin(out.reshape(1, -1), k)[0]

    def probe_score(self, model, target, reference=None):
        return lambda xb: torch.sigmoid(self.margin(model(xb), target.class_index))

    def explained_score(self, model, target, reference=None):
        return (lambda xs: self.margin(model(xs), target.class_index)), "logit margin"


@pytest.fixture
def margin_kind():
    register_kind(Margin())
    yield
    unregister_kind("toy-margin")


def test_a_new_target_kind_runs_end_to_end(margin_kind, resnet18_random):
    assert "toy-margin" in target_kinds()
    s = Session()
    s.set_model(resnet18_random, "resnet18", "random")
    s.set_image("probe", face("london_001", "neutral.jpg"))
    x = s.input("probe").tensor
    with torch.no_grad():
        logits = resnet18_random(x)
    k = int(logits.argmax())
    target = Target("toy-margin", class_index=k)
    assert target.task == "classification" and target.label() == f"margin of class {k}"

    fame = s.explain("fame", target, {"iterations": 4})
    plain = s.explain("fame", Target("class", class_index=k), {"iterations": 4})
    assert fame.map.shape == (224, 224) and float(np.ptp(fame.map)) > 0
    assert float(np.abs(fame.map - plain.map).max()) > 1e-3  # the margin loss is not the logit loss
    assert s.cached("fame", target, {"iterations": 4}) is fame  # cached under the new kind

    cam = s.explain("gradcam", target, {})  # the kind's CAM target
    rise = s.explain("rise", target, {"masks": 16, "batch_size": 16})  # the kind's black-box score
    assert float(np.ptp(cam.map)) > 0 and float(np.ptp(rise.map)) > 0

    # the metrics follow the kind's explained score: at 0 % removed it is the clean margin
    [curve] = evaluate([Sample(resnet18_random, x, target, amap=fame.map, method="fame")], ["deletion"])
    clean = float(Margin.margin(logits, k)[0])
    assert curve.score_name == "logit margin" and curve.scores[0] == pytest.approx(clean, rel=1e-5, abs=1e-5)
    assert curve.extra["target"] == f"margin of class {k}"


def test_an_unknown_kind_is_a_clear_error():
    with pytest.raises(ValueError, match="target kind must be one of"):
        Target("toy-margin", class_index=1)


def test_a_new_kind_gets_its_command_line_flag(margin_kind, tmp_path, capsys):
    img = face("london_001", "neutral.jpg")
    base = ["--model", "resnet18", "--weights", "random", "--image", img]
    out = tmp_path / "o.png"
    assert main(["explain", *base, "--toy-margin", "top1", "--iterations", "2", "--out", str(out)]) == 0
    assert "FAME margin of class" in capsys.readouterr().out
    side = json.loads(out.with_suffix(".json").read_text())
    assert side["target"]["kind"] == "toy-margin" and side["target"]["class_index"] is not None

    # the kind's own check, before any model is loaded; one target flag at a time
    assert main(["explain", *base, "--toy-margin", "top0", "--out", str(tmp_path / "b.png")]) == 1
    assert "--toy-margin top0: topK needs K >= 1" in capsys.readouterr().err
    assert main(["explain", *base, "--toy-margin", "3", "--class", "3", "--out", str(tmp_path / "b.png")]) == 1
    assert "give exactly one of" in (err := capsys.readouterr().err) and "--toy-margin K|top1" in err

    # sanity and faithfulness read it too
    assert main(["faithfulness", *base, "--toy-margin", "2", "--method", "gradcam", "--mode", "deletion",
                 "--steps", "2"]) == 0
    printed = capsys.readouterr().out
    assert "margin of class 2" in printed and "logit margin" in printed


def test_a_new_kind_gets_a_choice_in_the_view_of_its_task(margin_kind, qtbot, tmp_path):
    pytest.importorskip("pytestqt")
    from PySide6.QtCore import QSettings, Qt

    from famegui.gui.main_window import MainWindow

    w = MainWindow(model="resnet18", weights="random", images=[face("joe_biden", "vp_portrait.jpg")],
                   settings=QSettings(str(tmp_path / "s.ini"), QSettings.IniFormat))
    qtbot.addWidget(w)
    w.show()
    classes = w.classes
    qtbot.waitUntil(lambda: classes.class_list.count() == 5, timeout=GUI_READY_MS)
    assert list(classes.kinds.buttons) == ["class", "toy-margin"] and classes.kinds.isVisibleTo(classes)
    assert classes.kinds.label("toy-margin") == "logit margin"
    assert not w.pair.kinds.offers("toy-margin")  # a classification kind: not a choice of the Pair view
    w.param_form.set_value("iterations", 4)
    w.tabs.setCurrentWidget(classes)
    item = classes.class_list.item(0)
    k = int(item.data(Qt.UserRole))
    with qtbot.waitSignal(w.result_shown, timeout=GUI_READY_MS) as sig:
        classes.class_list.itemClicked.emit(item)
    assert sig.args[0].target == Target("class", class_index=k)
    logit = sig.args[0].map
    with qtbot.waitSignal(w.result_shown, timeout=GUI_READY_MS) as sig:
        classes.kinds.buttons["toy-margin"].click()  # the user picks the new kind: the class shown, explained so
    res = sig.args[0]
    assert res.target == Target("toy-margin", class_index=k) and res.method == "fame"
    assert res.map.shape == (224, 224) and float(np.abs(res.map - logit).max()) > 1e-3
    assert classes.result is res and classes.canvas.title.text.endswith("(logit margin)")
    w.close()


def test_a_new_kind_gets_a_protocol_run_target(margin_kind, tmp_path):
    (tmp_path / "images.csv").write_text(f"path,class\n{face('london_001', 'neutral.jpg')},3\n")
    protocol = read_protocol(tmp_path / "images.csv")
    with pytest.raises(ValueError, match="targets of an images protocol are class, margin, got nope"):
        run_protocol(protocol, "resnet18", "random", methods=["gradcam"], targets=["nope"], out_dir=tmp_path / "x")
    out = tmp_path / "run"
    s = run_protocol(protocol, "resnet18", "random", methods=["gradcam"], targets=["class", "margin"],
                     metrics=["deletion"], out_dir=out)  # in a worker process, where the kind was not registered
    assert (s.done, s.errors) == (1, 0)
    rows = rundir.read_results(out).to_pylist()
    assert sorted((r["method"], r["target"]) for r in rows) == [("gradcam", "class"), ("gradcam", "margin"),
                                                               ("random", "class"), ("random", "margin")]
    margin = [r for r in rows if r["target"] == "margin"]
    assert all(r["error"] is None and r["score"] == "logit margin" for r in margin)
    assert runfiles.read_map(out, "maps/0/gradcam_margin.npy") is not None
    assert json.loads((out / "run.json").read_text())["targets"] == ["class", "margin"]


def test_a_kind_cannot_take_a_flag_or_run_target_that_another_has():
    class Clash(Margin):
        name = "toy-clash"
        cli = CliFlag("--class", metavar="K")

    with pytest.raises(ValueError, match="the flag --class is already 'class'"):
        register_kind(Clash())

    class SameRun(Margin):
        name = "toy-clash"
        cli = None
        run = RunTarget("class")

    with pytest.raises(ValueError, match="the run target class is already 'class'"):
        register_kind(SameRun())
    assert "toy-clash" not in target_kinds()
