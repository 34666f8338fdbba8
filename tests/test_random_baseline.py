"""The random ranking is a baseline, not a winner: its expected curves equal their analytic values.

The networks here are linear up to the score (a class logit, a cell's L1 activation, a mean-pooled embedding
read through a cosine), so the expected perturbed input of a uniformly random ranking is known exactly:
removing k of N pixels at random replaces each pixel with probability k/N. Every registered curve metric is
run through :func:`famegui.evaluation.experiment.evaluate` on the real random baseline
(:func:`~famegui.evaluation.experiment.baseline`) over many seeds, and its mean is compared with the value
computed by hand from that expectation. The gain (curve vs the reversed ranking) must average to 0.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from famegui.evaluation.curves import DEFAULT_FRACTIONS, area
from famegui.evaluation.experiment import baseline, evaluate
from famegui.evaluation.metrics import Sample, metric_names
from famegui.models.wrapper import ModelWrapper
from famegui.targets import Target

SIDE = 40  # 1600 pixels: every fraction of 0.1 and 0.01 is a whole number of pixels
FR = np.asarray(DEFAULT_FRACTIONS)


def _image(seed: int, means) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    base = torch.tensor(means, dtype=torch.float32).view(1, 3, 1, 1)
    return (base + 0.08 * torch.randn(1, 3, SIDE, SIDE, generator=g)).clamp(0, 1)


def _stats(values) -> tuple[float, float]:
    v = np.asarray(values, dtype=np.float64)
    return float(v.mean()), float(v.std(ddof=1) / np.sqrt(len(v)))


def _run(sample: Sample, metrics, seeds, fill):
    out: dict[str, list] = {}
    for s in seeds:
        for c in evaluate([baseline(sample, seed=s)], metrics, fill=fill):
            out.setdefault(c.metric, []).append(c)
    return out


def _close_in_expectation(values, expected: float, what: str) -> None:
    mean, se = _stats(values)
    assert abs(mean - expected) <= 4 * se + 1e-6, f"{what}: mean {mean:.5f} +- {se:.5f}, analytic {expected:.5f}"


# --------------------------------------------------------------------------- exact: linear scores
def test_random_curves_of_a_linear_class_score_average_to_the_analytic_area():
    torch.manual_seed(0)
    lin = nn.Linear(3 * SIDE * SIDE, 5)
    model = ModelWrapper(name="linear-classifier", module=nn.Sequential(nn.Flatten(), lin),
                         input_size=(SIDE, SIDE), extras={"scores": "cosine"})  # the raw class score is the curve
    x = _image(1, (0.6, 0.4, 0.3))
    sample = Sample(model, x, Target("class", class_index=2))
    with torch.no_grad():
        s_x = float(model(x)[0, 2])
        s_fill = float(model(x.mean(dim=(2, 3), keepdim=True).expand_as(x))[0, 2])
    got = _run(sample, ["deletion", "insertion"], range(120), "mean")
    # E score(P) = (1-P) s(x) + P s(fill) under deletion, P s(x) + (1-P) s(fill) under insertion: both areas
    # are the midpoint, and the reversed ranking is just another random ranking (gain 0)
    for metric in ("deletion", "insertion"):
        _close_in_expectation([c.auc for c in got[metric]], (s_x + s_fill) / 2, f"{metric} AUC")
        _close_in_expectation([c.gain for c in got[metric]], 0.0, f"{metric} gain")
        assert np.std([c.auc for c in got[metric]]) > 0  # the seeds do differ


def _linear_classifier(seed: int, side: int = SIDE) -> ModelWrapper:
    torch.manual_seed(seed)
    lin = nn.Linear(3 * side * side, 3)
    with torch.no_grad():
        lin.weight.abs_()  # a positive clean score, so the SDD ratios are defined
        lin.bias.fill_(0.1)
    return ModelWrapper(name="linear-classifier", module=nn.Sequential(nn.Flatten(), lin), input_size=(side, side),
                        extras={"scores": "cosine"})


def test_random_sdd_deletion_and_retention_equal_their_analytic_ratio():
    model = _linear_classifier(5)
    x = _image(8, (0.6, 0.5, 0.4))
    sample = Sample(model, x, Target("class", class_index=0))
    with torch.no_grad():
        s_x, s_0 = float(model(x)[0, 0]), float(model(torch.zeros_like(x))[0, 0])
    got = _run(sample, ["sdd-deletion", "sdd-retention"], range(60), "zero")
    # the top 20 % of a random map is a uniformly random 20 % of the pixels, set to zero (deletion) or kept
    deleted, kept = (0.8 * s_x + 0.2 * s_0) / s_x, (0.2 * s_x + 0.8 * s_0) / s_x
    _close_in_expectation([c.scores[-1] for c in got["sdd-deletion"]], deleted, "SDD deletion")
    _close_in_expectation([c.scores[-1] for c in got["sdd-retention"]], kept, "SDD retention")
    _close_in_expectation([c.auc for c in got["sdd-deletion"]], (1 + deleted) / 2, "SDD deletion area")


def test_random_road_of_a_flat_image_stays_at_the_clean_score():
    """Linear imputation of a flat image gives the image back (plus pytorch-grad-cam's small zero-mean noise):
    whatever the ranking, the expected ROAD curve is the clean score."""
    side = 16
    model = _linear_classifier(6, side)
    x = torch.full((1, 3, side, side), 0.5)
    sample = Sample(model, x, Target("class", class_index=1))
    s_x = float(model(x)[0, 1])
    got = _run(sample, ["road"], range(12), "mean")["road"]
    assert len(got[0].fractions) == 10 and got[0].fractions[-1] == pytest.approx(0.9)
    noise = 0.01 * float(model.module[1].weight[1].abs().sum()) / side  # the imputer's noise through the score
    mean, se = _stats([c.auc for c in got])
    assert abs(mean - s_x) <= 4 * se + noise, (mean, s_x, se, noise)
    gmean, gse = _stats([c.gain for c in got])
    assert abs(gmean) <= 4 * gse + noise


def test_random_curves_of_a_cell_average_to_the_analytic_area():
    torch.manual_seed(1)
    net = nn.Sequential(nn.Conv2d(3, 4, 1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    model = ModelWrapper(name="one-by-one", module=net, input_size=(SIDE, SIDE))
    x = _image(2, (0.7, 0.2, 0.5))
    cell = (13, 27)
    sample = Sample(model, x, Target("cell", layer="0", cell=cell))
    with torch.no_grad():
        fill = x.mean(dim=(2, 3), keepdim=True).expand_as(x)
        s_x = float(net[0](x)[0, :, cell[0], cell[1]].abs().sum())
        s_fill = float(net[0](fill)[0, :, cell[0], cell[1]].abs().sum())
    assert abs(s_x - s_fill) > 1e-3
    got = _run(sample, ["deletion", "insertion"], range(200), "mean")
    # the cell sees one pixel, replaced with probability P: E score(P) is linear in P again
    for metric in ("deletion", "insertion"):
        _close_in_expectation([c.auc for c in got[metric]], (s_x + s_fill) / 2, f"cell {metric} AUC")
        _close_in_expectation([c.gain for c in got[metric]], 0.0, f"cell {metric} gain")


# --------------------------------------------------------------------------- pairs and triplets
class _Pair:
    """A mean-pooled linear embedding f(x) = A m(x) + b (m: the channel means) and a genuine triplet."""

    def __init__(self):
        torch.manual_seed(3)
        conv = nn.Conv2d(3, 6, 1)
        self.net = nn.Sequential(conv, nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.A, self.b = conv.weight[:, :, 0, 0].detach().double(), conv.bias.detach().double()
        self.x = _image(4, (0.65, 0.45, 0.35))
        self.mate = _image(5, (0.6, 0.5, 0.3))
        self.non_mate = _image(6, (0.2, 0.7, 0.6))
        self.r = self.emb_of(self.mate.double().mean(dim=(2, 3))[0])
        self.n = self.emb_of(self.non_mate.double().mean(dim=(2, 3))[0])
        self.mx = self.x.double().mean(dim=(2, 3))[0]
        self.mn = self.non_mate.double().mean(dim=(2, 3))[0]
        self.thr = self.cos_deleted(0.45)  # the decision flips between 0.4 and 0.5 removed
        self.model = ModelWrapper(name="pooled-linear", module=self.net, input_size=(SIDE, SIDE),
                                  task="embedding", threshold=self.thr)

    def emb_of(self, means: torch.Tensor) -> torch.Tensor:
        return self.A @ means + self.b

    def cos(self, e: torch.Tensor, r: torch.Tensor) -> float:
        return float(F.cosine_similarity(e.view(1, -1), r.view(1, -1)))

    def cos_deleted(self, p: float) -> float:  # zero fill: the expected channel means shrink to (1-P) m(x)
        return self.cos(self.emb_of((1 - p) * self.mx), self.r)

    def cos_inserted(self, p: float) -> float:
        return self.cos(self.emb_of(p * self.mx), self.r)

    def sample(self, kind: str) -> Sample:
        return Sample(self.model, self.x, Target(kind), reference=self.mate, non_mate=self.non_mate,
                      threshold=self.thr, same=True)


@pytest.fixture(scope="module")
def pair():
    return _Pair()


@pytest.fixture(scope="module")
def pair_runs(pair):
    names = ["deletion", "insertion", "hiding", "accuracy-deletion", "accuracy-insertion"]
    return {kind: _run(pair.sample(kind), names, range(30), "zero") for kind in ("similar", "dissimilar")}


def _analytic(pair: _Pair, kind: str, metric: str) -> float:
    sign = (lambda c: c) if kind == "similar" else (lambda c: 1.0 - c)
    if metric == "deletion":
        return area(FR, [sign(pair.cos_deleted(p)) for p in FR])
    if metric == "insertion":
        return area(FR, [sign(pair.cos_inserted(p)) for p in FR])
    if metric == "hiding":  # least important first replaced by the non-mate: a random order mixes the means
        margin = []
        for p in FR:
            e = pair.emb_of((1 - p) * pair.mx + p * pair.mn)
            margin.append(pair.cos(e, pair.r) - pair.cos(e, pair.n))
        return area(FR, margin)
    curve = pair.cos_deleted if metric == "accuracy-deletion" else pair.cos_inserted
    return area(FR, [float(curve(p) >= pair.thr) for p in FR])  # a genuine pair: correct while matched


@pytest.mark.parametrize("kind", ["similar", "dissimilar"])
@pytest.mark.parametrize("metric", ["deletion", "insertion", "hiding", "accuracy-deletion", "accuracy-insertion"])
def test_random_pair_curves_equal_their_analytic_value(pair, pair_runs, kind, metric):
    got = pair_runs[kind].get(metric, [])
    if metric == "hiding" and kind == "dissimilar":
        assert not got  # the hiding game explains the match only
        return
    expected = _analytic(pair, kind, metric)
    mean, se = _stats([c.auc for c in got])
    # concentration: 1600 pixels make the cosine of the perturbed embedding within ~1e-3 of its value at the
    # expected embedding
    assert abs(mean - expected) <= 4 * se + 3e-3, f"{kind} {metric}: {mean:.4f} +- {se:.4f} vs {expected:.4f}"
    gmean, gse = _stats([c.gain for c in got])
    assert abs(gmean) <= 4 * gse + 3e-3, f"{kind} {metric} gain {gmean:.4f} +- {gse:.4f}"


@pytest.mark.parametrize("metric", ["deletion", "insertion"])
def test_random_decision_flip_share_equals_its_analytic_value(pair, pair_runs, metric):
    grid = [i / 100 for i in range(101)]
    if metric == "deletion":  # the first share removed at which the pair is no longer matched
        expected = next(p for p in grid if pair.cos_deleted(p) < pair.thr)
    else:  # the first share put back at which it is matched again
        expected = next(p for p in grid if pair.cos_inserted(p) >= pair.thr)
    flips = [c.extra["flip"] for c in pair_runs["similar"][metric]]
    assert all(f is not None for f in flips)
    mean, se = _stats(flips)
    assert abs(mean - expected) <= 4 * se + 0.011, f"flip {metric}: {mean:.3f} vs {expected:.3f}"


def test_every_curve_metric_is_covered():
    """A new curve metric must get its analytic random-ranking case here."""
    covered = {"deletion", "insertion", "hiding", "accuracy-deletion", "accuracy-insertion", "road", "sdd-deletion",
               "sdd-retention"}
    assert set(metric_names(curves_only=True)) <= covered


def test_an_exact_map_has_a_positive_gain_and_its_reversal_the_opposite():
    """Cross-check of the sign: for a linear class score, removing pixel p changes the score by exactly
    -w_p (x_p - fill_p); the map of those contributions is the best ranking there is, and beats random."""
    torch.manual_seed(4)
    lin = nn.Linear(3 * SIDE * SIDE, 3)
    model = ModelWrapper(name="linear-classifier", module=nn.Sequential(nn.Flatten(), lin),
                         input_size=(SIDE, SIDE), extras={"scores": "cosine"})
    x = _image(7, (0.5, 0.5, 0.5))
    w = lin.weight[1].detach().view(3, SIDE, SIDE)
    exact = (w * (x[0] - x.mean(dim=(2, 3))[0].view(3, 1, 1))).sum(0).numpy()
    target = Target("class", class_index=1)
    fwd, ins = evaluate([Sample(model, x, target, amap=exact, method="oracle")], ["deletion", "insertion"])
    rev = evaluate([Sample(model, x, target, amap=-exact, method="oracle")], ["deletion"])[0]
    rnd = evaluate([baseline(Sample(model, x, target), seed=s) for s in range(10)], ["deletion"])
    assert fwd.gain > 0 and ins.gain > 0
    assert rev.gain == pytest.approx(-fwd.gain, abs=1e-6)
    assert fwd.gain > max(c.gain for c in rnd)
