"""RISE, S-RISE and CorrRISE: declarations, maps on real models, known-region models, mask sets, cancel."""

import numpy as np
import pytest
import torch
from torch import nn

from famegui.core.fame import Cancelled
from famegui.methods import get_method, run_method
from famegui.methods.rise import mask_set, spearman_map
from famegui.models.wrapper import ModelWrapper
from famegui.targets import Target

FEW = 64  # masks per run in these tests (the defaults are 500 / 4000)


def _check_map(a, shape):
    assert a.shape == tuple(shape)
    assert a.dtype == np.float32
    assert np.isfinite(a).all()
    assert a.min() >= 0.0 and a.max() <= 1.0
    assert a.max() > 0.0


# ----------------------------------------------------------------------------- hand-built models
class RegionMean(nn.Module):
    """Embedding = [mean colour of a fixed region, constant vector]: only that region matters."""

    def __init__(self, rows, cols):
        super().__init__()
        self.rows, self.cols = rows, cols
        self.register_buffer("const", torch.ones(5))
        self.calls = 0

    def forward(self, z):
        self.calls += z.shape[0]
        colour = z[:, :, self.rows[0]:self.rows[1], self.cols[0]:self.cols[1]].mean(dim=(2, 3))
        return torch.cat([4.0 * colour, self.const.expand(z.shape[0], -1)], dim=1)


class RegionBrightness(nn.Module):
    """Two logits: 30 (mean brightness of one region - 0.3), and 0: class 0 needs that region visible."""

    def __init__(self, rows, cols):
        super().__init__()
        self.rows, self.cols = rows, cols
        self.register_buffer("zero", torch.zeros(1))

    def forward(self, z):
        b = z[:, :, self.rows[0]:self.rows[1], self.cols[0]:self.cols[1]].mean(dim=(1, 2, 3))
        return torch.stack([30.0 * (b - 0.3), self.zero.expand(z.shape[0])], dim=1)


def _embedder(rows, cols, size=96):
    return ModelWrapper(name="region-mean", module=RegionMean(rows, cols), input_size=(size, size),
                        task="embedding")


def _image(size=96, seed=0):
    g = torch.Generator().manual_seed(seed)
    return 0.3 + 0.6 * torch.rand(1, 3, size, size, generator=g)


# ----------------------------------------------------------------------------- declarations
def test_declarations():
    for name, tasks, output in (("rise", {"classification"}, "single"), ("srise", {"verification"}, "pair"),
                                ("corrrise", {"verification"}, "pair")):
        spec = get_method(name)
        assert set(spec.tasks) == tasks and spec.output == output
        assert spec.gradient_based is False and spec.cost == "sampling"
        d = spec.defaults()
        assert "batch_size" in d and d["seed"] is None
    d = get_method("srise").defaults()
    assert (d["masks"], d["patches"], d["patch_kernel"], d["patch_sigma"]) == (500, 100, 40, 7.0)
    d = get_method("corrrise").defaults()
    assert (d["masks"], d["patch_size"], d["patches"]) == (500, 30, 3)
    assert get_method("rise").defaults()["keep_prob"] == 0.5


# ----------------------------------------------------------------------------- maps on real models
@pytest.mark.parametrize("name,params", [("srise", {}), ("srise", {"score_baseline": "none"}), ("corrrise", {})])
def test_face_pair_maps(name, params, dlib, pair):
    x, y = pair
    p = {"masks": FEW, **params}
    ep = run_method(name, dlib, x, Target("similar"), p, reference=y)
    em = run_method(name, dlib, x, Target("dissimilar"), p, reference=y)
    _check_map(ep, x.shape[-2:])
    _check_map(em, x.shape[-2:])
    assert np.abs(ep - em).max() > 1e-3
    if name == "corrrise" or params.get("score_baseline", "mean") == "mean":
        assert not np.any((ep > 0) & (em > 0))  # the two signs of one map


def test_rise_on_resnet(resnet18_random):
    x = _image(112)
    a = run_method("rise", resnet18_random, x, Target("class", class_index=5), {"masks": FEW})
    _check_map(a, x.shape[-2:])


def test_srise_paper_weights_follow_the_mask_density(dlib, pair):
    """The paper's H = sum s_i M_i is dominated by sum_i M_i; the default (mean baseline) is not."""
    from famegui.methods.rise import srise_masks

    x, y = pair
    dens = srise_masks(FEW, x.shape[-2:], 0).sum(0).numpy().ravel()
    none = run_method("srise", dlib, x, Target("similar"), {"masks": FEW, "score_baseline": "none"}, reference=y)
    mean = run_method("srise", dlib, x, Target("similar"), {"masks": FEW}, reference=y)
    assert np.corrcoef(none.ravel(), dens)[0, 1] > 0.95
    assert np.corrcoef(mean.ravel(), dens)[0, 1] < 0.5


# ----------------------------------------------------------------------------- known-region models
def test_corrrise_finds_the_region_that_matters():
    rows, cols = (10, 50), (46, 86)
    model = _embedder(rows, cols)
    x = _image()
    y = _image(seed=1)
    ep = run_method("corrrise", model, x, Target("similar"), {"masks": 200}, reference=y)
    inside = np.zeros(ep.shape, bool)
    inside[rows[0]:rows[1], cols[0]:cols[1]] = True
    r, c = np.unravel_index(ep.argmax(), ep.shape)
    assert inside[r, c]
    assert ep[inside].mean() > 5 * ep[~inside].mean()
    # far from the region (more than a patch away) occlusion cannot matter
    far = np.ones(ep.shape, bool)
    far[max(0, rows[0] - 30):rows[1] + 30, max(0, cols[0] - 30):cols[1] + 30] = False
    assert np.abs(ep[far]).max() < 0.25


def test_rise_finds_the_bright_region():
    rows, cols = (8, 24), (36, 56)
    model = ModelWrapper(name="region-bright", module=RegionBrightness(rows, cols), input_size=(64, 64))
    x = _image(64)
    a = run_method("rise", model, x, Target("class", class_index=0), {"masks": 500, "grid_size": 8})
    r, c = np.unravel_index(a.argmax(), a.shape)
    assert rows[0] <= r < rows[1] and cols[0] <= c < cols[1]


# ----------------------------------------------------------------------------- mask sets
def test_mask_set_is_reused_and_seeded():
    a = mask_set("corrrise", FEW, (150, 150), 3, patch=30, patches=3)
    b = mask_set("corrrise", FEW, (150, 150), 3, patch=30, patches=3)
    c = mask_set("corrrise", FEW, (150, 150), 4, patch=30, patches=3)
    assert a is b
    assert not torch.equal(a, c)
    # every mask: ones with three 30x30 black squares fully inside (overlaps allowed)
    zeros = (a == 0).sum(dim=(1, 2))
    assert set(torch.unique(a).tolist()) == {0.0, 1.0}
    assert int(zeros.max()) <= 3 * 900 and int(zeros.min()) >= 900
    # runs: the same seed (as a parameter or the run's seed) gives the same map, another seed another one
    model = _embedder((10, 50), (46, 86))
    x, y = _image(), _image(seed=1)
    m1 = run_method("corrrise", model, x, Target("similar"), {"masks": FEW, "seed": 3}, reference=y)
    m2 = run_method("corrrise", model, x, Target("similar"), {"masks": FEW}, reference=y, seed=3)
    m3 = run_method("corrrise", model, x, Target("similar"), {"masks": FEW}, reference=y, seed=4)
    np.testing.assert_array_equal(m1, m2)
    assert np.abs(m1 - m3).max() > 0.05


def test_masks_do_not_depend_on_batch_size():
    model = _embedder((10, 50), (46, 86))
    x, y = _image(), _image(seed=1)
    a = run_method("srise", model, x, Target("similar"), {"masks": 40, "batch_size": 7}, reference=y)
    b = run_method("srise", model, x, Target("similar"), {"masks": 40, "batch_size": 40}, reference=y)
    np.testing.assert_allclose(a, b, atol=1e-6)


def test_srise_masks_are_gaussian_patches():
    from famegui.methods.rise import gaussian_patch, srise_masks

    g = gaussian_patch(40, 7.0)
    assert g.shape == (40, 40) and g.max() == pytest.approx(1.0)
    m = srise_masks(4, (150, 150), seed=0, patches=1)
    assert m.shape == (4, 150, 150) and 0 <= float(m.min()) and float(m.max()) <= 1.0
    assert all(float(mi.max()) > 0.9 for mi in m)  # one patch each (its peak may sit between pixels)
    assert int((m[0] > 0).sum()) <= 40 * 40


# ----------------------------------------------------------------------------- Spearman
def test_spearman_map_matches_scipy():
    stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(0)
    masks = torch.from_numpy((rng.random((50, 6, 7)) < 0.7).astype(np.float32))
    masks[:, 0, 0] = 1.0  # never occluded: NaN -> 0
    scores = np.round(rng.normal(size=50), 1)  # with ties
    ours = spearman_map(masks, scores)
    assert ours[0, 0] == 0.0
    for i, j in ((1, 1), (3, 5), (5, 6)):
        ref = stats.spearmanr(masks[:, i, j].numpy(), scores)[0]
        assert ours[i, j] == pytest.approx(ref, abs=1e-5)


# ----------------------------------------------------------------------------- progress and cancel
def test_corrrise_cancel_stops_between_batches():
    model = _embedder((10, 50), (46, 86))
    x, y = _image(), _image(seed=1)
    module = model.module
    before = module.calls
    with pytest.raises(Cancelled):
        run_method("corrrise", model, x, Target("similar"), {"masks": 500, "batch_size": 10}, reference=y,
                   cancel=lambda: True)
    assert module.calls - before <= 1  # only the reference embedding
    calls = []

    def cancel():
        calls.append(1)
        return len(calls) > 3

    before = module.calls
    with pytest.raises(Cancelled):
        run_method("corrrise", model, x, Target("similar"), {"masks": 500, "batch_size": 10}, reference=y,
                   cancel=cancel)
    assert module.calls - before == 1 + 3 * 10  # reference + three batches, not 500 masks


def test_progress_reports_partial_maps():
    model = _embedder((10, 50), (46, 86))
    x, y = _image(), _image(seed=1)
    seen = []
    final = run_method("corrrise", model, x, Target("similar"), {"masks": 60, "batch_size": 20}, reference=y,
                       progress=lambda f, m: seen.append((f, m)))
    fractions = [f for f, _ in seen]
    assert fractions[0] == 0.0 and fractions[-1] == 1.0 and fractions == sorted(fractions)
    assert len(seen) == 4
    np.testing.assert_allclose(seen[-1][1], final)
