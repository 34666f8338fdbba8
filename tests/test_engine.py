"""Properties of the FAME loop, losses and attribution (famegui.core)."""
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from famegui.core.attribution import gray, perturbation_map
from famegui.core.fame import Cancelled, FameParams, fame_steps, run_fame
from famegui.methods.fame import explain_fame
from famegui.targets import Target
from famegui.targets.losses import cell_loss, class_logit_loss, cosine_to, verification_loss

CORE = Path(__file__).resolve().parents[1] / "famegui" / "core"


def test_core_imports_no_qt():
    # static: no Qt import statement anywhere under core
    for f in CORE.rglob("*.py"):
        for line in f.read_text().splitlines():
            s = line.strip()
            qt = any(q in s for q in ("PySide", "PyQt", "pyqtgraph", "superqt"))
            assert not (s.startswith(("import ", "from ")) and qt), f"{f}: {s}"
    # dynamic: importing every core module pulls in no Qt
    code = ("import sys, pkgutil, importlib, famegui.core as c\n"
            "for m in pkgutil.iter_modules(c.__path__): importlib.import_module('famegui.core.'+m.name)\n"
            "bad=[k for k in sys.modules if k.startswith(('PySide6','PyQt','pyqtgraph','superqt'))]\n"
            "print(bad); sys.exit(1 if bad else 0)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def test_cell_loss_descends_and_steps_are_bounded(resnet18_random, small_images):
    model = resnet18_random
    x = small_images[:1]
    loss = cell_loss(model, "layer2", (3, 4))
    p = FameParams(iterations=20, blur_kernel=0)
    res = run_fame(x, loss, p)
    assert res.final_loss[0] < 0.8 * res.initial_loss[0]
    # no pixel moves further than iterations * eta; some pixel moves exactly eta per step at least once
    moved = (res.x_final - x).abs().max().item()
    assert moved <= 20 * p.step + 1e-6
    assert moved >= p.step - 1e-6
    assert res.maps.min() >= 0 and res.maps.max() <= 1 and res.maps.dtype == np.float32


def test_each_step_moves_the_peak_pixel_by_exactly_eta(resnet18_random, small_images):
    x = small_images[:2]
    loss = cell_loss(resnet18_random, "layer1", [(2, 2), (10, 5)])
    steps = list(fame_steps(x, loss, FameParams(iterations=1)))
    delta = (steps[-1].x - x).abs().flatten(1).amax(1)
    assert torch.allclose(delta, torch.full((2,), 1 / 255), atol=1e-7)  # max per sample, not per batch


def test_batched_equals_one_by_one_and_is_deterministic(resnet18_random, small_images):
    model = resnet18_random
    cells = [Target("cell", layer="layer3", cell=c) for c in [(0, 0), (1, 2), (3, 3)]]
    p = FameParams(iterations=8, blur_kernel=9, blur_sigma=2.0)
    x = small_images[:1]
    batched = explain_fame(model, x, cells, p).maps
    single = np.stack([explain_fame(model, x, t, p).maps[0] for t in cells])
    again = explain_fame(model, x, cells, p).maps
    # equal up to float32 rounding of batched vs single convolutions
    assert np.abs(batched - single).max() < 1e-3
    assert np.array_equal(batched, again)
    # and the three cells really give three different maps
    assert np.abs(batched[0] - batched[1]).max() > 0.1


def test_cell_loss_depends_only_on_its_cell(resnet18_random, small_images):
    model = resnet18_random
    layer = model.get_layer("layer2")
    model.layers()  # the layer table (found with a forward pass at the input size) before the hook below
    shape = model.activation(small_images[:1], "layer2").shape
    delta = torch.zeros(shape, requires_grad=True)
    h = layer.register_forward_hook(lambda m, i, o: o + delta)
    try:
        value = cell_loss(model, "layer2", (4, 5))(small_images[:1])
    finally:
        h.remove()
    (g,) = torch.autograd.grad(value.sum(), delta)
    nz = g[0].abs().sum(0).nonzero().tolist()
    assert nz == [[4, 5]]
    a = model.activation(small_images[:1], "layer2")
    assert torch.allclose(value, a[:, :, 4, 5].abs().sum(1))  # L1 over channels, not a plain sum


def test_cell_loss_stops_forward_at_layer(resnet18_random, small_images):
    model = resnet18_random
    model.layers()  # found once with a full forward pass: not part of what is counted here
    seen = []
    hooks = [model.get_layer(n).register_forward_hook(lambda *a, n=n: seen.append(n))
             for n in ("layer2", "layer3", "fc")]
    try:
        cell_loss(model, "layer2", (0, 0))(small_images[:1])
    finally:
        for h in hooks:
            h.remove()
    assert seen == ["layer2"]


def test_cell_outside_feature_map_is_rejected(resnet18_random):
    with pytest.raises(ValueError, match="outside"):
        cell_loss(resnet18_random, "layer4", (7, 0))


def test_class_logit_loss_is_the_raw_logit_and_descends(resnet18_random, small_images):
    model = resnet18_random
    x = small_images[:1]
    with torch.no_grad():
        logits = model(x)
    k = int(logits.argmax())
    loss = class_logit_loss(model, k)
    assert torch.allclose(loss(x), logits[:, k])
    res = run_fame(x, loss, FameParams(iterations=10, blur_kernel=0))
    assert res.final_loss[0] < res.initial_loss[0]


def test_verification_losses_move_similarity_the_right_way(resnet_embedder, small_images):
    model = resnet_embedder
    probe, ref_img = small_images[:1], small_images[1:2]
    ref = model(ref_img).detach()
    s0 = cosine_to(model, probe, ref).item()
    p = FameParams(iterations=15, blur_kernel=0)
    up = run_fame(probe, verification_loss(model, ref, "similar"), p)  # e+: suppress similarity
    down = run_fame(probe, verification_loss(model, ref, "dissimilar"), p)  # e-: suppress dissimilarity
    s_plus = cosine_to(model, up.x_final, ref).item()
    s_minus = cosine_to(model, down.x_final, ref).item()
    assert s_plus < s0 < s_minus
    assert np.abs(up.maps - down.maps).max() > 0.05


def test_gray_is_taken_before_subtracting():
    x0 = torch.full((1, 3, 4, 4), 0.5)
    xt = x0.clone()
    xt[0, 0, 1, 1] += 0.1  # pixel A: R up, G down -> luma barely changes
    xt[0, 1, 1, 1] -= 0.05
    xt[0, 0, 2, 2] += 0.1  # pixel B: only R up
    m = perturbation_map(x0, xt, blur_kernel=0, normalization="max")[0]
    assert m[2, 2] == pytest.approx(1.0)
    assert m[1, 1] == pytest.approx((0.2989 * 0.1 - 0.587 * 0.05) / (0.2989 * 0.1), rel=1e-3)
    # the other order (|x_T - x| then gray) would rank A above B
    wrong = gray((xt - x0).abs())[0]
    assert wrong[1, 1] > wrong[2, 2]


def test_minmax_and_max_normalisation():
    x0 = torch.zeros(2, 3, 8, 8)
    xt = x0.clone()
    xt[0, :, 2:6, 2:6] = 0.2
    xt[1] = 0.1  # constant change everywhere
    xt[1, :, 0, 0] = 0.3
    mm = perturbation_map(x0, xt, blur_kernel=0, normalization="minmax")
    mx = perturbation_map(x0, xt, blur_kernel=0, normalization="max")
    assert mm[1].min() == 0 and mm[1].max() == 1
    assert mx[1].min() == pytest.approx(1 / 3, rel=1e-4)
    assert (mm >= 0).all() and (mm <= 1).all()
    blank = perturbation_map(x0, x0.clone(), blur_kernel=5, blur_sigma=1.0)
    assert torch.count_nonzero(blank) == 0  # an unchanged image gives an empty map, not NaN


def test_progress_steps_and_cancel(resnet18_random, small_images):
    loss = cell_loss(resnet18_random, "layer1", (1, 1))
    seen = []
    run_fame(small_images[:1], loss, FameParams(iterations=25), every=10, callback=lambda s: seen.append(s.iteration))
    assert seen == [10, 20, 25]
    calls = [0]

    def cancel():
        calls[0] += 1
        return calls[0] > 3

    with pytest.raises(Cancelled):
        run_fame(small_images[:1], loss, FameParams(iterations=50), cancel=cancel)
    assert calls[0] == 4  # polled once per iteration, stopped at once


def test_early_stop_epsilon_and_empty_map(resnet_embedder, small_images):
    model = resnet_embedder
    ref = model(small_images[1:2]).detach()
    loss = verification_loss(model, ref, "dissimilar")
    res = run_fame(small_images[:1], loss, FameParams(iterations=30, epsilon=5.0))  # 1-cos < 5 always
    assert res.iterations[0] == 0 and res.empty[0]
    assert np.count_nonzero(res.maps) == 0


def test_normalized_space_and_clamp(resnet18_random, small_images):
    model = resnet18_random
    x = small_images[:1]
    loss = cell_loss(model, "layer1", (3, 3))
    p = FameParams(iterations=5, space="normalized", clamp=True, blur_kernel=0)
    res = run_fame(x, loss, p, normalize=model.normalize, denormalize=model.denormalize)
    d = (res.x_final - x).abs().amax(dim=(0, 2, 3))
    std = torch.tensor(model.std)
    assert (d <= 5 * p.step * std + 1e-6).all()  # a step of eta in normalised space is eta*std in pixels
    assert d.max() > 5 * p.step * std.min() * 0.5
    assert res.x_final.min() >= 0 and res.x_final.max() <= 1
    with pytest.raises(ValueError, match="normalisation"):
        run_fame(x, loss, p)


def test_receptive_field_matches_hand_computed_resnet18(resnet18_random):
    from famegui.models.receptive import footprint, receptive_field

    # conv1 7x7/2 -> maxpool 3x3/2 -> layer1 (4 convs 3x3, jump 4): 7 + 2*2 + 4*2*4 = 43
    # layer2: stride-2 conv (+2*4) then 3 convs at jump 8: 43 + 8 + 3*2*8 = 99
    for layer, centre, size in [("layer1", (28, 28), 43), ("layer2", (14, 14), 99)]:
        rf = receptive_field(resnet18_random, layer, centre)
        assert (rf.width, rf.height) == (size, size)
        fp = footprint((224, 224), resnet18_random.layer_info(layer).shape[1:], centre)
        assert rf.x0 <= fp.x0 and rf.x1 >= fp.x1  # the receptive field contains the footprint
    corner = receptive_field(resnet18_random, "layer4", (0, 0))
    assert corner.x0 == 0 and corner.y0 == 0 and corner.width > 224 / 2  # deep cells see far beyond their patch


def test_mass_inside_footprint():
    from famegui.models.receptive import Box, mass_inside

    m = np.zeros((10, 10), np.float32)
    m[2:4, 2:4] = 1.0
    m[8, 8] = 4.0
    assert mass_inside(m, Box(2, 2, 4, 4)) == pytest.approx(0.5)
    assert mass_inside(np.zeros((4, 4)), Box(0, 0, 2, 2)) == 0.0
