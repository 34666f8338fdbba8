"""Face-verification methods (FGGB, xSSAB, X-Maps, EBP / contrastive EBP / gweEBP) on real networks."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import face
from torch import nn

from famegui.methods import get_method, run_method
from famegui.methods.ebp_engine import ebp_layer_map, gweebp_maps
from famegui.methods.face_common import resolve_threshold
from famegui.methods.fggb import fggb
from famegui.methods.xmaps import xmaps
from famegui.methods.xssab import xssab
from famegui.models.wrapper import ModelWrapper
from famegui.targets import Target

torch.set_num_threads(min(2, torch.get_num_threads()))


# --------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def pair(dlib):
    """The genuine sample pair as aligned 150x150 chips, and the reference embedding."""
    from famegui.data.pipeline import prepare_for_model

    x = prepare_for_model(dlib, face("london_001", "neutral.jpg")).tensor
    y = prepare_for_model(dlib, face("london_001", "smiling.jpg")).tensor
    with torch.no_grad():
        ref = dlib(y)
    return x, y, ref


@pytest.fixture(scope="module")
def fggb_real(dlib, pair):
    x, _, ref = pair
    return fggb(dlib, x, ref, resolve_threshold(dlib))


def _linear_embedder(d: int = 6, size: int = 8, seed: int = 0, mask: torch.Tensor | None = None) -> ModelWrapper:
    """phi(x) = normalise(A x): d phi / dx is known in closed form."""
    g = torch.Generator().manual_seed(seed)
    lin = nn.Linear(3 * size * size, d, bias=False)
    a = torch.randn(d, 3 * size * size, generator=g)
    if mask is not None:
        a = a * mask.reshape(1, -1)
    lin.weight.data = a
    return ModelWrapper(name="linear-embedder", module=nn.Sequential(nn.Flatten(), lin), input_size=(size, size),
                        task="embedding", threshold=0.25)


def _closed_form_jacobian(model: ModelWrapper, x: torch.Tensor) -> torch.Tensor:
    """d phi / dx = (I - phi phi^T) A / |A x| as (D, 3, H, W)."""
    a = model.module[1].weight.detach()
    e = a @ x.flatten()
    phi = e / e.norm()
    jac = (torch.eye(len(e)) - torch.outer(phi, phi)) @ a / e.norm()
    return jac.reshape(len(e), *x.shape[1:])



# --------------------------------------------------------------------------- registry
def test_registered_declarations():
    expect = {"fggb": "pair", "xssab": "pair", "xmaps": "signed", "ebp": "pair", "cebp": "pair", "gweebp": "pair"}
    for name, output in expect.items():
        spec = get_method(name)
        assert spec.output == output
        assert "verification" in spec.tasks
    assert "classification" in get_method("ebp").tasks
    assert get_method("xmaps").gradient_based is False
    assert get_method("fggb").defaults()["blur_kernel"] == 25


def test_threshold_resolution(dlib):
    assert resolve_threshold(dlib) == pytest.approx(0.913, abs=0.01)
    assert resolve_threshold(dlib, 0.5) == 0.5
    assert resolve_threshold(_linear_embedder()) == 0.25


# --------------------------------------------------------------------------- the dlib network, genuine pair
@pytest.mark.parametrize("name", ["ebp", "cebp", "gweebp", "xssab"])
def test_pair_maps_on_dlib(dlib, pair, name):
    x, y, _ = pair
    plus = run_method(name, dlib, x, Target("similar"), reference=y)
    minus = run_method(name, dlib, x, Target("dissimilar"), reference=y)
    for m in (plus, minus):
        assert m.shape == (150, 150)
        assert np.isfinite(m).all()
        assert m.min() >= 0.0 and m.max() == pytest.approx(1.0)
    assert np.abs(plus - minus).max() > 1e-2


def test_fggb_on_dlib(dlib, pair, fggb_real):
    res = fggb_real
    assert res.maps.shape == (128, 150, 150)
    for m in (res.e_plus, res.e_minus):
        m = m.numpy()
        assert m.shape == (150, 150) and np.isfinite(m).all()
        assert m.min() >= 0.0 and m.max() == pytest.approx(1.0)
    assert (res.e_plus - res.e_minus).abs().max() > 0.1
    # the registry path (fewer dimensions to stay quick)
    x, y, _ = pair
    m = run_method("fggb", dlib, x, Target("dissimilar"), {"max_dims": 8}, reference=y)
    assert m.shape == (150, 150) and np.isfinite(m).all() and 0.0 <= m.min() and m.max() == pytest.approx(1.0)


def test_xmaps_on_dlib(dlib, pair):
    x, y, _ = pair
    params = {"stride": 30}
    plus = run_method("xmaps", dlib, x, Target("similar"), params, reference=y)
    minus = run_method("xmaps", dlib, x, Target("dissimilar"), params, reference=y)
    assert plus.shape == (150, 150) and np.isfinite(plus).all()
    assert plus.min() >= -1.0 and plus.max() <= 1.0 and np.abs(plus).max() == pytest.approx(1.0)
    np.testing.assert_allclose(minus, -plus, atol=1e-6)  # signed, oriented towards the target
    part = run_method("xmaps", dlib, x, Target("similar"), {**params, "signed": False}, reference=y)
    assert part.min() >= 0.0 and part.max() == pytest.approx(1.0)
    np.testing.assert_allclose(part, np.clip(plus, 0, None) / np.clip(plus, 0, None).max(), atol=1e-6)


def test_xmaps_is_local():
    """A model that sees only the left half: occluding the right half changes nothing."""
    mask = torch.zeros(3, 32, 32)
    mask[:, :, :16] = 1
    model = _linear_embedder(d=8, size=32, seed=3, mask=mask)
    g = torch.Generator().manual_seed(4)
    x = torch.rand(1, 3, 32, 32, generator=g)
    ref = model(torch.rand(1, 3, 32, 32, generator=g)).detach()
    m = xmaps(model, x, ref, patch_sizes=(4, 8), stride=2).numpy()
    assert np.abs(m[:, :14]).max() == pytest.approx(1.0)
    # patches there never touch the left half (blur reaches 2 px): float rounding only (1.4e-6 seen on AMX)
    assert np.abs(m[:, 24:]).max() < 1e-5


# --------------------------------------------------------------------------- analytic cases
def _analytic_case(seed: int):
    """The linear embedder with a random 8x8 probe and a random reference embedding."""
    g = torch.Generator().manual_seed(seed)
    return _linear_embedder(), torch.rand(1, 3, 8, 8, generator=g), torch.randn(1, 6, generator=g)


def test_fggb_weights_and_maps_closed_form():
    model, x, ref = _analytic_case(1)
    theta = 0.3
    res = fggb(model, x, ref, theta, blur_kernel=0)
    phi_x = F.normalize(model.module[1].weight.detach() @ x.flatten(), dim=0)
    phi_y = F.normalize(ref[0], dim=0)
    np.testing.assert_allclose(res.weights.numpy(), (phi_x * phi_y - theta / 6).numpy(), atol=1e-6)
    assert float(res.weights.sum()) == pytest.approx(float(phi_x @ phi_y) - theta, abs=1e-6)
    want = _closed_form_jacobian(model, x).abs().mean(1)
    want = want / want.flatten(1).norm(dim=1).view(-1, 1, 1)
    np.testing.assert_allclose(res.maps.numpy(), want.numpy(), rtol=1e-4, atol=1e-6)
    s = torch.einsum("k,khw->hw", res.weights, want)
    np.testing.assert_allclose(res.saliency.numpy(), s.numpy(), rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(res.e_plus.numpy(), (s.clamp(min=0) / s.clamp(min=0).max()).numpy(), atol=1e-5)
    np.testing.assert_allclose(res.e_minus.numpy(), ((-s).clamp(min=0) / (-s).clamp(min=0).max()).numpy(),
                               atol=1e-5)
    # max_dims: the most positive and the most negative weights
    top = fggb(model, x, ref, theta, blur_kernel=0, max_dims=2)
    assert set(top.dims.tolist()) == {int(res.weights.argmax()), int(res.weights.argmin())}
    np.testing.assert_allclose(top.maps.numpy(), want[top.dims].numpy(), rtol=1e-4, atol=1e-6)


def test_xssab_partition_and_gradients_closed_form():
    model, x, ref = _analytic_case(2)
    theta = 0.2
    res = xssab(model, x, ref, theta)
    r_hat = F.normalize(ref[0], dim=0)
    phi = F.normalize(model.module[1].weight.detach() @ x.flatten(), dim=0)
    assert res.bound == pytest.approx(theta / 6)
    assert not (res.pos_mask & res.neg_mask).any() and (res.pos_mask | res.neg_mask).all()
    assert res.pos_mask.any() and res.neg_mask.any()
    np.testing.assert_array_equal(res.pos_mask.numpy(), (phi * r_hat >= theta / 6).numpy())
    np.testing.assert_allclose((res.pos_weights + res.neg_weights).numpy(), r_hat.numpy(), atol=1e-7)
    assert res.out_pos + res.out_neg == pytest.approx(float(phi @ r_hat), abs=1e-6)
    assert res.cosine == pytest.approx(float(phi @ r_hat), abs=1e-6)
    jac = _closed_form_jacobian(model, x)
    want_pos = torch.einsum("k,kchw->chw", res.pos_weights, jac).abs().mean(0)
    want_neg = torch.einsum("k,kchw->chw", res.neg_weights, jac).abs().mean(0)
    np.testing.assert_allclose(res.pos_map.numpy(), want_pos.numpy(), rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(res.neg_map.numpy(), want_neg.numpy(), rtol=1e-4, atol=1e-7)
    c = res.combined.numpy()
    assert np.abs(c).max() == pytest.approx(1.0) and c.min() < 0 < c.max()


# --------------------------------------------------------------------------- EBP internals
def _tiny_conv_net(nonneg: bool, seed: int = 0) -> ModelWrapper:
    torch.manual_seed(seed)
    net = nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1, bias=False), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(4, 5, 3, stride=1, padding=1, bias=False), nn.ReLU(), nn.AvgPool2d(2),
        nn.Flatten(), nn.Linear(5 * 4 * 4, 6, bias=False),
    )
    if nonneg:
        for p in net.parameters():
            p.data.abs_()
    return ModelWrapper(name="tiny", module=net, input_size=(16, 16), task="embedding")


@pytest.mark.parametrize("nonneg", [True, False])
def test_ebp_conserves_probability(nonneg):
    model = _tiny_conv_net(nonneg)
    g = torch.Generator().manual_seed(5)
    x = torch.rand(1, 3, 16, 16, generator=g)
    ref = torch.rand(1, 6, generator=g) + (0.1 if nonneg else -0.5)
    for layer in ("3", "1", "input"):  # after conv 2, after the first ReLU, the pixels
        res = ebp_layer_map(model, x, reference_embedding=ref, layer=layer)
        assert res.maps.min() >= 0
        assert float(res.maps.sum()) == pytest.approx(1.0, abs=1e-5), layer
    if nonneg:  # the dual unit (-r) has no excitatory input at all: nothing flows down
        assert float(ebp_layer_map(model, x, reference_embedding=ref, layer="1", dual=True).maps.sum()) == 0.0


def test_ebp_rule_on_a_single_layer():
    """One linear layer by hand: P(a_j) = (w_j a_j)^+ / sum (w a)^+ for a positive response."""
    lin2 = nn.Linear(12, 1, bias=False)
    w = torch.zeros(1, 12)
    w[0, :4] = torch.tensor([1.0, -2.0, 0.5, 3.0])
    lin2.weight.data = w
    model = ModelWrapper(name="one", module=nn.Sequential(nn.Flatten(), lin2), input_size=(2, 2), task="embedding")
    x = torch.zeros(1, 3, 2, 2)
    x[0, 0] = torch.tensor([[0.5, 0.25], [-0.5, 0.1]])  # only the first colour is seen
    res = ebp_layer_map(model, x, reference_embedding=torch.ones(1, 1), layer="input")
    contrib = torch.tensor([1.0 * 0.5, -2.0 * 0.25, 0.5 * -0.5, 3.0 * 0.1]).clamp(min=0)
    np.testing.assert_allclose(res.maps[0].flatten().numpy(), (contrib / contrib.sum()).numpy(), atol=1e-6)


def _mwp_linear(p_top: torch.Tensor, w: torch.Tensor, a: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
    """Extended EBP through e = w a by hand: each unit k hands P_k to its same-signed contributions."""
    out = torch.zeros_like(a)
    for k in range(len(e)):
        c = w[k] * a
        c = c.clamp(min=0) if e[k] >= 0 else c.clamp(max=0)
        if c.sum() != 0:
            out += p_top[k] * c / c.sum()
    return out


@pytest.mark.parametrize("target", ["similar", "dissimilar"])
def test_gweebp_weighting_by_hand(target):
    """Seed 004 eq. 6 on a one-layer embedder with signed inputs, against a hand computation."""
    g = torch.Generator().manual_seed(9)
    lin = nn.Linear(12, 6, bias=False)
    lin.weight.data = torch.randn(6, 12, generator=g)
    model = ModelWrapper(name="one", module=nn.Sequential(nn.Flatten(), lin), input_size=(2, 2),
                         mean=(0.5, 0.5, 0.5), task="embedding")
    x = torch.rand(1, 3, 2, 2, generator=g)
    ref = torch.randn(1, 6, generator=g)
    w = lin.weight.detach()
    z = (x - 0.5).flatten().requires_grad_(True)
    e = w @ z
    r_hat = F.normalize(ref[0], dim=0)
    gain = F.cosine_similarity(e, r_hat, dim=0)
    if target == "dissimilar":
        gain = 1 - gain
    ge, gz = torch.autograd.grad(gain, [e, z])

    def weigh(a, grad):
        return torch.where(a >= 0, a * grad.clamp(min=0), a * (-grad).clamp(min=0))

    e, z = e.detach(), z.detach()
    top_w = r_hat if target == "similar" else -r_hat
    c = (top_w * weigh(e, ge)).clamp(min=0)
    assert c.sum() > 0
    want = _mwp_linear(c / c.sum(), w, weigh(z, gz), e).reshape(3, 2, 2).sum(0)
    got = gweebp_maps(model, x, ref, layer="input", targets=(target,)).maps[0]
    np.testing.assert_allclose(got.numpy(), want.numpy(), atol=1e-6)
    plain = ebp_layer_map(model, x, reference_embedding=ref, layer="input", dual=target == "dissimilar").maps[0]
    assert (plain - got).abs().max() > 1e-3  # the weighting changes the map


def test_ebp_on_dlib_conserves_and_reads_stage2(dlib, pair):
    x, _, ref = pair
    res = ebp_layer_map(dlib, x, reference_embedding=ref)
    assert res.layer == "stage2" and res.maps.shape == (1, 17, 17)
    assert float(res.maps.sum()) == pytest.approx(1.0, abs=1e-4)
    with pytest.raises(ValueError, match="no EBP layer"):
        ebp_layer_map(dlib, x, reference_embedding=ref, layer="nope")


def test_gweebp_triplet_gain_with_a_non_mate(dlib, pair):
    """Seed 004's triplet gain when a non-mate is given; the registry passes it only to gweEBP."""
    from famegui.data.pipeline import prepare_for_model

    x, y, ref = pair
    z = prepare_for_model(dlib, face("london_005", "neutral.jpg")).tensor  # another person
    info_t, info_p = {}, {}
    triplet = run_method("gweebp", dlib, x, Target("similar"), reference=y, non_mate=z, info=info_t)
    plain = run_method("gweebp", dlib, x, Target("similar"), reference=y, info=info_p)
    assert info_t["gain"].startswith("triplet") and info_p["gain"] == "cos(a, p)"
    assert np.isfinite(triplet).all() and triplet.max() == pytest.approx(1.0)
    assert np.abs(triplet - plain).max() > 0.05
    # the same computation as gweebp_maps with the non-mate's embedding
    with torch.no_grad():
        n_emb = dlib(z)
    direct = gweebp_maps(dlib, x, ref, negative_embedding=n_emb, targets=("similar",)).maps[0]
    want = F.interpolate(direct.clamp(min=0)[None, None], size=(150, 150), mode="bilinear", align_corners=False)[0, 0]
    want = (want / want.max()).numpy()
    np.testing.assert_allclose(triplet, want, atol=1e-5)
    # e- keeps the pair gain; methods without a triplet gain ignore the non-mate
    info_m = {}
    run_method("gweebp", dlib, x, Target("dissimilar"), reference=y, non_mate=z, info=info_m)
    assert info_m["gain"] == "1 - cos(a, p)"
    assert info_t["triplet_gain"] > 0 and not info_t.get("empty")
    # a "non-mate" as close as the mate: the triplet gain is 0 and the empty map says why
    info_0 = {}
    empty = run_method("gweebp", dlib, x, Target("similar"), reference=y, non_mate=y, info=info_0)
    assert info_0["empty"] and abs(info_0["triplet_gain"]) < 1e-6 and "not farther" in info_0["note"]
    assert empty.max() == 0.0
    e1 = run_method("ebp", dlib, x, Target("similar"), reference=y, non_mate=z)
    e2 = run_method("ebp", dlib, x, Target("similar"), reference=y)
    np.testing.assert_array_equal(e1, e2)


def test_methods_honour_cancel():
    from famegui.core.fame import Cancelled

    model = _linear_embedder(size=32)
    x, y = torch.rand(1, 3, 32, 32), torch.rand(1, 3, 32, 32)
    for name in ("xmaps", "fggb", "ebp"):
        with pytest.raises(Cancelled):
            run_method(name, model, x, Target("similar"), reference=y, cancel=lambda: True)
    seen = []
    run_method("xmaps", model, x, Target("similar"), {"stride": 8}, reference=y,
               progress=lambda f, m: seen.append((f, m)))
    assert seen and seen[-1][0] == pytest.approx(1.0)
    assert any(m is not None and m.shape == (32, 32) for _, m in seen)


def test_ebp_rejects_unknown_architectures():
    class Odd(nn.Module):
        def forward(self, z):
            return z.flatten(1)[:, :4] * 2

    model = ModelWrapper(name="odd", module=Odd(), input_size=(4, 4), task="embedding")
    with pytest.raises(ValueError, match="does not support"):
        ebp_layer_map(model, torch.rand(1, 3, 4, 4), reference_embedding=torch.ones(1, 4))


# --------------------------------------------------------------------------- other networks
@pytest.fixture(scope="module")
def iresnet():
    from famegui.models.zoo import load_model

    return load_model("iresnet18", "random")


def test_iresnet_ebp_and_fggb(iresnet):
    g = torch.Generator().manual_seed(7)
    x = torch.rand(1, 3, 112, 112, generator=g)
    y = torch.rand(1, 3, 112, 112, generator=g)
    for name, params in (("ebp", {}), ("gweebp", {}), ("cebp", {}), ("fggb", {"max_dims": 8})):
        m = run_method(name, iresnet, x, Target("similar"), params, reference=y)
        assert m.shape == (112, 112) and np.isfinite(m).all(), name
        assert m.min() >= 0 and m.max() == pytest.approx(1.0), name
    with torch.no_grad():
        ref = iresnet(y)
    res = ebp_layer_map(iresnet, x, reference_embedding=ref)
    assert res.layer == "layer3" and res.maps.shape == (1, 14, 14)
    assert ebp_layer_map(iresnet, x, reference_embedding=ref, layer="stage2").layer == "layer2"
    assert 0.0 < float(res.maps.sum()) <= 1.0 + 1e-4


def test_classification_ebp_on_resnet18(resnet18_random):
    x = torch.rand(1, 3, 224, 224, generator=torch.Generator().manual_seed(8))
    maps = {}
    for name in ("ebp", "cebp"):
        m = run_method(name, resnet18_random, x, Target("class", class_index=3))
        assert m.shape == (224, 224) and np.isfinite(m).all() and m.max() == pytest.approx(1.0)
        maps[name] = m
    assert np.abs(maps["ebp"] - maps["cebp"]).max() > 1e-2
