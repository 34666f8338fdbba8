"""Property tests: invariances and exact identities of FAME, its losses and the baseline methods.

Every test compares the code with an independent oracle (a formula written out here, torchvision, the
pytorch_grad_cam package called directly) or a hand-computed case. Inputs are small so the file stays fast.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torchvision.transforms import Grayscale
from torchvision.transforms.functional import gaussian_blur

# --- every famegui import of this module (one block: the package redesign will move these) ---
from famegui.core.attribution import GRAY_WEIGHTS, blur_maps, gray, normalize_maps, perturbation_map
from famegui.core.fame import Cancelled, FameParams, fame_steps, run_fame
from famegui.methods import get_method, run_method
from famegui.methods.cam import FoldedNetwork, cam_layer
from famegui.methods.fame import explain_fame
from famegui.methods.fggb import fggb
from famegui.methods.rise import corrrise_masks
from famegui.models.wrapper import ModelWrapper
from famegui.targets import Target, build_loss
from famegui.targets.kinds import CosineTarget
from famegui.targets.losses import cell_loss, class_logit_loss, cosine_to, verification_loss

torch.set_num_threads(min(2, torch.get_num_threads()))

HOOK_DICTS = ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks",
              "_forward_hooks_with_kwargs", "_forward_pre_hooks_with_kwargs")


# ============================================================================ helpers
def _rand(*shape, seed=0, lo=0.0, hi=1.0):
    g = torch.Generator().manual_seed(seed)
    return lo + (hi - lo) * torch.rand(*shape, generator=g)


def _leftover_hooks(module: nn.Module) -> dict:
    """{module name: {hook dict: count}} for every module that still holds a hook."""
    out = {}
    for name, m in module.named_modules():
        counts = {d: len(getattr(m, d, {})) for d in HOOK_DICTS}
        counts = {d: c for d, c in counts.items() if c}
        if counts:
            out[name or "<root>"] = counts
    return out


def _hand_gray(x: torch.Tensor) -> torch.Tensor:
    r, g, b = x[:, 0], x[:, 1], x[:, 2]
    return 0.2989 * r + 0.587 * g + 0.114 * b


def _hand_post(x0, xt, kernel, sigma, normalization="minmax"):
    """FAME's post-processing written out WITHOUT the division by max before the blur."""
    d = (_hand_gray(xt) - _hand_gray(x0)).abs()
    d = gaussian_blur(d.unsqueeze(1), [kernel, kernel], [sigma, sigma]).squeeze(1)
    flat = d.flatten(1)
    hi = flat.max(1).values.view(-1, 1, 1)
    if normalization == "max":
        return d / hi
    lo = flat.min(1).values.view(-1, 1, 1)
    return (d - lo) / (hi - lo)


class _MixedSignNet(nn.Module):
    """conv (mixed-sign outputs) -> relu -> pooled scores; ``unused`` is registered but never called."""

    def __init__(self) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(3)
        self.conv = nn.Conv2d(3, 5, 3, padding=1)
        self.conv.weight.data = torch.randn(5, 3, 3, 3, generator=g)
        self.conv.bias.data = torch.randn(5, generator=g)
        self.relu = nn.ReLU()
        self.unused = nn.Conv2d(5, 5, 1)

    def forward(self, z):
        return self.relu(self.conv(z)).mean((2, 3))


@pytest.fixture(scope="module")
def mixed_net():
    return ModelWrapper(name="mixed", module=_MixedSignNet(), input_size=(10, 10), mean=(0.5,) * 3,
                        std=(0.5,) * 3, task="classification")


@pytest.fixture(scope="module")
def face_refs(dlib, pair):
    x, y = pair
    with torch.no_grad():
        return dlib(x), dlib(y)


# ============================================================================ 1-3: the attribution map
@pytest.mark.parametrize("kernel,sigma,norm", [(49, 7.7, "minmax"), (25, 5.0, "minmax"), (9, 2.0, "max")])
def test_map_is_invariant_to_the_sign_of_the_perturbation(kernel, sigma, norm):
    x0 = _rand(2, 3, 64, 64, seed=1, lo=0.3, hi=0.7)
    d = _rand(2, 3, 64, 64, seed=2, lo=-0.1, hi=0.1)
    plus = perturbation_map(x0, x0 + d, kernel, sigma, norm)
    minus = perturbation_map(x0, x0 - d, kernel, sigma, norm)
    assert plus.shape == (2, 64, 64)
    assert float(plus.max()) == pytest.approx(1.0) and float(plus.min()) >= 0.0
    assert float((plus - minus).abs().max()) < 1e-5
    # not a constant map: another perturbation gives another map
    other = perturbation_map(x0, x0 + _rand(2, 3, 64, 64, seed=5, lo=-0.1, hi=0.1), kernel, sigma, norm)
    assert float((plus - other).abs().max()) > 0.05


@pytest.mark.parametrize("norm", ["minmax", "max"])
def test_map_equals_hand_post_processing_without_max_division(norm):
    """The oracle skips the division by max before the blur and runs in float64.

    Tolerances: float32 cancellation in gray(x0 + d) - gray(x0) puts both float32 computations ~1e-5 away
    from the float64 result (measured 1.1e-5 for minmax); for a rescaled d = c d the floor grows as 1/c
    (1.8e-4 at c = 0.01, 3e-5 at c = 0.1), so c stays >= 0.1 here.
    """
    x0 = _rand(3, 3, 48, 40, seed=7)
    d = _rand(3, 3, 48, 40, seed=8, lo=-0.05, hi=0.05)
    d[1] *= 20.0  # samples of very different magnitude: the per-sample scale must not matter
    ref = _hand_post(x0.double(), (x0 + d).double(), 25, 5.0, norm)
    got = perturbation_map(x0, x0 + d, 25, 5.0, norm)
    assert float((got.double() - ref).abs().max()) < 5e-5
    assert float(ref.amax((1, 2)).min()) == pytest.approx(1.0)
    if norm == "minmax":
        assert float(ref.amin((1, 2)).max()) == pytest.approx(0.0, abs=1e-12)
    # positive rescaling of the perturbation leaves the map unchanged
    for c in (0.1, 0.5, 4.0, 13.0):
        scaled = perturbation_map(x0, x0 + c * d, 25, 5.0, norm)
        assert float((scaled - got).abs().max()) < 1e-4, c
        assert float((scaled.double() - ref).abs().max()) < 1e-4, c
    # the pieces agree with the same hand computation
    raw = (_hand_gray(x0 + d) - _hand_gray(x0)).abs()
    blurred = blur_maps(raw, 25, 5.0)
    np.testing.assert_allclose(normalize_maps(blurred, norm).numpy(), ref.numpy(), atol=5e-5)
    assert torch.equal(blur_maps(raw, 1, 5.0), raw)  # kernel 1: no blur


def test_map_of_a_hand_computed_case():
    """A single changed pixel: the map is the min-max scaled Gaussian blur kernel around it."""
    x0 = torch.full((1, 3, 21, 21), 0.5)
    xt = x0.clone()
    xt[0, :, 10, 10] += torch.tensor([0.1, -0.2, 0.3])  # gray change 0.02989 - 0.1174 + 0.0342 < 0
    m = perturbation_map(x0, xt, 5, 1.0, "max")[0]
    k1 = torch.exp(-(torch.arange(5.0) - 2) ** 2 / 2.0)
    k1 = k1 / k1.sum()
    expect = torch.zeros(21, 21)
    expect[8:13, 8:13] = torch.outer(k1, k1) / (k1[2] * k1[2])
    assert float((m - expect).abs().max()) < 1e-6


def test_gray_equals_torchvision_grayscale():
    x = _rand(4, 3, 17, 23, seed=11)
    ours = gray(x)
    theirs = Grayscale(num_output_channels=1)(x)
    assert ours.shape == (4, 17, 23) and theirs.shape == (4, 1, 17, 23)
    assert float((ours - theirs[:, 0]).abs().max()) <= 1e-6
    assert GRAY_WEIGHTS == (0.2989, 0.587, 0.114)
    # and it is not a plain channel mean
    assert float((ours - x.mean(1)).abs().max()) > 1e-2


# ============================================================================ 4: verification loss
def test_verification_loss_keeps_norms_differentiable(resnet_embedder, small_images):
    model = resnet_embedder
    x = small_images[:2]
    with torch.no_grad():
        ref = model(small_images[2:3])
    r = ref[0]

    def grad_of(fn):
        xr = x.clone().requires_grad_(True)
        val = fn(xr)
        (g,) = torch.autograd.grad(val.sum(), xr)
        return val.detach(), g

    lp, gp = grad_of(verification_loss(model, ref, "similar"))
    lm, gm = grad_of(verification_loss(model, ref, "dissimilar"))

    def hand(xr):  # cos with both norms differentiable
        e = model(xr)
        return (e * r).sum(1) / (e.norm(dim=1) * r.norm())

    def detached(xr):  # the CAM baselines' variant: the probe's norm detached
        e = model(xr)
        return (e * r).sum(1) / (e.norm(dim=1).detach() * r.norm())

    lh, gh = grad_of(hand)
    ld, gd = grad_of(detached)
    np.testing.assert_allclose(lp.numpy(), lh.numpy(), atol=1e-6)
    np.testing.assert_allclose(lp.numpy(), ld.numpy(), atol=1e-6)  # same value ...
    def rel(a, b):
        return float((a - b).norm() / b.norm())
    assert rel(gp, gh) < 1e-4  # ... the gradient of the differentiable-norm cosine
    assert rel(gp, gd) > 0.05, rel(gp, gd)  # ... which is not that of the detached-norm cosine
    # cosine_to is the same quantity
    with torch.no_grad():
        np.testing.assert_allclose(cosine_to(model, x, ref).numpy(), lp.numpy(), atol=1e-6)
    # L- = 1 - L+: values and gradients exactly
    assert torch.equal(lm, 1.0 - lp)
    assert torch.equal(gm, -gp)
    assert float(gp.abs().max()) > 0


# ============================================================================ 5: FAME depends on side and class
def test_fame_map_changes_when_the_pair_is_swapped(dlib, pair):
    x, y = pair
    params = {"iterations": 8}
    a = run_method("fame", dlib, x, Target("similar"), params, reference=y)
    b = run_method("fame", dlib, y, Target("similar"), params, reference=x)
    for m in (a, b):
        assert m.shape == (150, 150) and m.max() == pytest.approx(1.0) and m.min() == 0.0
    assert float(np.abs(a - b).max()) > 0.1
    # the registry explains the probe: it equals FAME run directly on x against y
    direct = explain_fame(dlib, x, Target("similar"), FameParams(iterations=8, blur_kernel=25, blur_sigma=5.0),
                          reference=y).maps[0]
    assert float(np.abs(a - direct).max()) < 1e-5


def test_fame_map_changes_with_the_class(resnet18_random, small_images):
    x = small_images[:1]
    params = {"iterations": 5}
    a = run_method("fame", resnet18_random, x, Target("class", class_index=3), params)
    b = run_method("fame", resnet18_random, x, Target("class", class_index=700), params)
    for m in (a, b):
        assert m.shape == (64, 64) and m.max() == pytest.approx(1.0)
    assert float(np.abs(a - b).max()) > 0.05


# ============================================================================ 6: cell loss = L1
def test_cell_loss_is_l1_on_a_hand_built_conv(mixed_net):
    model = mixed_net
    x = _rand(2, 3, 10, 10, seed=4)
    cells = [(2, 3), (7, 1)]
    got = cell_loss(model, "conv", cells)(x)
    conv = model.module.conv
    a = F.conv2d(model.normalize(x), conv.weight, conv.bias, padding=1)  # oracle: the conv by hand
    vals = torch.stack([a[0, :, 2, 3], a[1, :, 7, 1]])  # (B, C)
    assert (vals < 0).any() and (vals > 0).any(), "the cells must have mixed signs"
    l1, signed = vals.abs().sum(1), vals.sum(1)
    np.testing.assert_allclose(got.detach().numpy(), l1.numpy(), rtol=1e-5)
    assert float((got - signed).abs().min()) > 1e-2
    # via the public target path too
    via_target = build_loss(model, [Target("cell", layer="conv", cell=c) for c in cells])(x)
    np.testing.assert_allclose(via_target.detach().numpy(), l1.numpy(), rtol=1e-5)


def test_cell_loss_is_l1_on_resnet_conv1(resnet18_random, small_images):
    model = resnet18_random
    x = small_images[:1]
    got = cell_loss(model, "conv1", (5, 9))(x)
    a = F.conv2d(model.normalize(x), model.module.conv1.weight, None, stride=2, padding=3)
    v = a[0, :, 5, 9]
    assert (v < 0).sum() > 5 and (v > 0).sum() > 5
    np.testing.assert_allclose(float(got[0]), float(v.abs().sum()), rtol=1e-5)
    assert abs(float(got[0]) - float(v.sum())) > 1e-2


# ============================================================================ 7: loss calls of run_fame
@pytest.mark.parametrize("iterations,every", [(1, 10), (6, 4), (9, 3)])
def test_run_fame_calls_the_loss_t_times_in_the_loop(iterations, every):
    """Asserted count: T calls inside the loop (with gradients) + exactly 1 final call (no gradients) = T + 1."""
    w = _rand(1, 3, 8, 8, seed=9, lo=-1, hi=1)
    calls = []

    def loss(x):
        calls.append(torch.is_grad_enabled() and x.requires_grad)
        return (x * w).sum((1, 2, 3))

    res = run_fame(_rand(2, 3, 8, 8, seed=10), loss, FameParams(iterations=iterations, blur_kernel=3,
                                                                blur_sigma=1.0), every=every)
    assert len(calls) == iterations + 1
    assert calls[:iterations] == [True] * iterations and calls[-1] is False
    assert res.iterations.tolist() == [iterations, iterations]
    # the generator alone (no final evaluation) calls it exactly T times
    calls.clear()
    steps = list(fame_steps(_rand(2, 3, 8, 8, seed=10), loss, FameParams(iterations=iterations), every=every))
    assert len(calls) == iterations
    assert steps[-1].done and steps[-1].iteration == iterations
    # a linear loss descends by exactly step * sum|w| / max|w| per iteration (per sample)
    drop = res.initial_loss - res.final_loss
    np.testing.assert_allclose(drop, iterations * (1 / 255) * float((w * w).sum() / w.abs().max()), rtol=1e-4)


def test_run_fame_loss_calls_with_a_model_loss(mixed_net):
    """Same count (T in the loop + 1 final) with a real model loss; the loss is the raw logit."""
    x = _rand(1, 3, 10, 10, seed=12)
    inner = class_logit_loss(mixed_net, 2)
    with torch.no_grad():
        conv = mixed_net.module.conv
        logit = F.relu(F.conv2d(mixed_net.normalize(x), conv.weight, conv.bias, padding=1)).mean((2, 3))[:, 2]
        np.testing.assert_allclose(inner(x).numpy(), logit.numpy(), rtol=1e-6)
    n = [0]

    def counted(z):
        n[0] += 1
        return inner(z)

    res = run_fame(x, counted, FameParams(iterations=7, blur_kernel=3, blur_sigma=1.0), every=2)
    assert n[0] == 7 + 1
    assert len(res.loss_history) == 4  # progress at 2, 4, 6 and 7
    np.testing.assert_allclose(res.initial_loss, logit.numpy(), rtol=1e-6)
    assert float(res.final_loss[0]) < float(res.initial_loss[0])


# ============================================================================ 8: hooks and bad layers
def test_no_hooks_left_after_cell_fame_and_cam(resnet18_random, small_images):
    model = resnet18_random
    x = small_images[:1]
    assert _leftover_hooks(model.module) == {}
    cell = Target("cell", layer="layer2", cell=(1, 1))
    res = explain_fame(model, x, cell, FameParams(iterations=3, blur_kernel=9, blur_sigma=2.0))
    assert res.maps.shape == (1, 64, 64) and float(res.initial_loss[0]) > 0
    assert _leftover_hooks(model.module) == {}
    m = run_method("fame", model, x, cell, {"iterations": 3})
    assert m.max() == pytest.approx(1.0)
    assert _leftover_hooks(model.module) == {}
    m = run_method("gradcam", model, x, Target("class", class_index=5))
    assert m.shape == (64, 64) and m.max() > 0
    assert _leftover_hooks(model.module) == {}
    # a run ended by an exception between iterations releases the activation hook too
    n = [0]

    def cancel():
        n[0] += 1
        return n[0] > 2

    with pytest.raises(Cancelled):
        explain_fame(model, x, cell, FameParams(iterations=10), cancel=cancel)
    assert _leftover_hooks(model.module) == {}


def test_activation_stops_the_forward_and_removes_its_hook(mixed_net):
    model = mixed_net
    seen = []
    h = model.module.relu.register_forward_hook(lambda *a: seen.append(1))
    try:
        a = model.activation(_rand(1, 3, 10, 10), "conv")
    finally:
        h.remove()
    assert a.shape == (1, 5, 10, 10)
    assert seen == []  # nothing after the layer ran
    assert _leftover_hooks(model.module) == {}


def test_bad_layers_raise_with_a_message(resnet18_random, small_images, mixed_net):
    x = small_images[:1]
    with pytest.raises(KeyError, match="no layer 'nope'"):
        run_method("fame", resnet18_random, x, Target("cell", layer="nope", cell=(0, 0)), {"iterations": 2})
    with pytest.raises(KeyError, match="no layer"):
        run_method("hirescam", resnet18_random, x, Target("class", class_index=1), {"layer": "layer9"})
    with pytest.raises(ValueError, match="outside layer"):
        cell_loss(resnet18_random, "layer4", (7, 0))  # layer4 is 7x7 at 224 px
    # registered but never reached in the forward pass
    with pytest.raises(KeyError, match="unused"):
        run_method("fame", mixed_net, _rand(1, 3, 10, 10), Target("cell", layer="unused", cell=(0, 0)),
                   {"iterations": 2})
    assert _leftover_hooks(resnet18_random.module) == {}
    assert _leftover_hooks(mixed_net.module) == {}


# ============================================================================ 9: FGGB's theta / D
@pytest.fixture(scope="module")
def fggb_pair(dlib, pair, face_refs):
    x, _ = pair
    return fggb(dlib, x, face_refs[1], 0.9)


def test_fggb_weights_use_theta_over_d(fggb_pair):
    res = fggb_pair
    theta = 0.9
    d = res.phi_x.numel()
    assert d == 128 and res.maps.shape == (128, 150, 150)
    prod = res.phi_x * res.phi_y
    cos = float(prod.sum())
    assert cos > theta  # a genuine pair
    # the correct weights: phi_x phi_y - theta / D, summing to cos - theta
    np.testing.assert_allclose(res.weights.numpy(), (prod - theta / d).numpy(), atol=1e-7)
    assert float(res.weights.sum()) == pytest.approx(cos - theta, abs=1e-5)
    s = torch.einsum("k,khw->hw", res.weights, res.maps)
    assert float((s - res.saliency).abs().max()) < 1e-5
    assert (res.weights > 0).sum() > 0
    assert float(res.e_plus.max()) == pytest.approx(1.0) and float((res.e_plus > 0).float().mean()) > 0.01
    # the wrong weights phi_x phi_y - theta are all negative: S <= 0 everywhere and e+ is empty
    wrong = prod - theta
    assert float(wrong.max()) < 0, float(wrong.max())
    assert float(res.maps.min()) >= 0
    s_wrong = torch.einsum("k,khw->hw", wrong, res.maps)
    assert float(s_wrong.max()) <= 0
    e_plus_wrong = blur_maps(s_wrong.clamp(min=0)[None], 25, 5.0)[0]
    assert float(e_plus_wrong.max()) == 0.0


# ============================================================================ 10: CorrRISE masks
@pytest.mark.parametrize("p,size", [(1, (9, 9)), (7, (40, 50)), (30, (30, 45))])
def test_corrrise_one_patch_has_patch_squared_zeros(p, size):
    m = corrrise_masks(25, size, seed=4, patch=p, patches=1)
    assert m.shape == (25, *size) and m.dtype == torch.float32
    assert set(torch.unique(m).tolist()) <= {0.0, 1.0}
    zeros = (m == 0).flatten(1).sum(1)
    assert zeros.tolist() == [p * p] * 25
    for mi in m:  # one p x p square
        ys, xs = torch.nonzero(mi == 0, as_tuple=True)
        assert int(ys.max() - ys.min()) + 1 == p and int(xs.max() - xs.min()) + 1 == p
    # patch covering the whole image: every pixel black
    assert int((corrrise_masks(3, (6, 6), seed=1, patch=6, patches=1) == 0).sum()) == 3 * 36


# ============================================================================ 11: CAM registry = package
def _package_cam(cls_name, model, x, targets, layer):
    import pytorch_grad_cam

    folded = FoldedNetwork(model)
    xr = x.detach().clone().requires_grad_(True)
    cam_class = getattr(pytorch_grad_cam, cls_name)
    with torch.enable_grad(), cam_class(model=folded, target_layers=[model.get_layer(layer)]) as cam:
        return cam(input_tensor=xr, targets=targets)[0]


@pytest.mark.parametrize("name,cls_name", [("gradcam-ew", "GradCAMElementWise"), ("hirescam", "HiResCAM")])
def test_cam_registry_equals_package_on_classifier(name, cls_name, resnet18_random, small_images):
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    model = resnet18_random
    x = F.interpolate(small_images[1:2], size=(96, 96), mode="bilinear", align_corners=False)
    ours = run_method(name, model, x, Target("class", class_index=17))
    ref = _package_cam(cls_name, model, x, [ClassifierOutputTarget(17)], cam_layer(model))
    assert ours.shape == ref.shape == (96, 96)
    assert ref.max() > 0
    assert float(np.abs(ours - ref).max()) <= 1e-5


@pytest.mark.parametrize("name,cls_name,kind", [("gradcam-ew", "GradCAMElementWise", "similar"),
                                                 ("hirescam", "HiResCAM", "dissimilar")])
def test_cam_registry_equals_package_on_face_pair(name, cls_name, kind, dlib, pair, face_refs):
    x, y = pair
    ours = run_method(name, dlib, x, Target(kind), reference=y)
    ref = _package_cam(cls_name, dlib, x, [CosineTarget(face_refs[1], dissimilar=kind == "dissimilar")],
                       cam_layer(dlib))
    assert ours.shape == ref.shape == (150, 150)
    assert ref.max() > 0
    assert float(np.abs(ours - ref).max()) <= 1e-5
    assert get_method(name).defaults()["detach_norms"] is True  # the registry's target = CosineTarget default
