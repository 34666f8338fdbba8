"""A new target kind is a one-place change: registered through famegui.targets.register_kind only, it runs
end to end through the Session (FAME, a black-box method, a CAM method) and the evaluation experiment."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import face

from famegui.evaluation.experiment import evaluate
from famegui.evaluation.metrics import Sample
from famegui.session import Session
from famegui.targets import Target, TargetKind, register_kind, target_kinds, unregister_kind


class Margin(TargetKind):
    """Toy kind: the margin of one class's logit over the best other class."""

    name = "toy-margin"
    task = "classification"
    model_task = "classification"

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
