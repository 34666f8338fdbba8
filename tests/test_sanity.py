"""Adebayo's model-parameter randomisation test, as the product runs it (famegui.evaluation.sanity, `famegui
sanity`)."""
import json

import numpy as np
import pytest
import torch
from conftest import face
from torch import nn

from famegui.cli import EXIT_CHECK_FAILED, EXIT_OK
from famegui.evaluation.sanity import (
    compare_maps,
    default_region,
    randomise_weights,
    sanity_check,
    sanity_suite,
    trainable_layers,
)
from famegui.methods import methods
from famegui.targets import Target

torch.set_num_threads(min(2, torch.get_num_threads()))

FAST = {"fame": {"iterations": 100}}  # FAME maps are stable from ~75 iterations (paper supplement)


# --------------------------------------------------------------------------- building blocks
def test_face_box_is_the_alignment_template_square(dlib):
    from famegui.data.faces import dlib_template_points, face_box

    box = face_box("dlib150", (150, 150))
    assert box == (25, 125, 25, 125)  # dlib pads the unit face square by 25 % per side: 150 / 1.5 = 100
    t, b, le, ri = box
    pts = dlib_template_points(150)
    assert ((pts[:, 0] > le) & (pts[:, 0] < ri) & (pts[:, 1] > t) & (pts[:, 1] < b)).all()
    assert face_box("arcface112", (112, 112)) is None and face_box(None, (224, 224)) is None
    assert default_region(dlib) == box


def test_compare_maps_on_hand_built_cases():
    g = np.random.default_rng(0)
    a = g.random((20, 20))
    same = compare_maps(a, a)
    assert same.spearman == pytest.approx(1.0) and same.pearson == pytest.approx(1.0)
    mono = compare_maps(a, a ** 3)  # a monotone transform keeps the ranking, not the linear relation
    assert mono.spearman == pytest.approx(1.0) and mono.pearson < 0.99
    signed = a - 0.5
    flipped = compare_maps(signed, -signed)
    assert flipped.spearman == pytest.approx(-1.0) and flipped.spearman_abs == pytest.approx(1.0)
    assert flipped.worst == pytest.approx(1.0)  # the sign flip does not hide that |map| is unchanged
    empty = compare_maps(a, np.zeros_like(a))  # an empty map ranks nothing: undefined, never a pass
    assert not empty.defined and np.isnan(empty.worst) and empty.to_dict()["spearman"] is None
    # only the region counts: identical inside, unrelated outside
    b = g.random((20, 20))
    b[5:15, 5:15] = a[5:15, 5:15]
    assert compare_maps(a, b, (5, 15, 5, 15)).spearman == pytest.approx(1.0)
    assert compare_maps(a, b).spearman < 0.6
    with pytest.raises(ValueError, match="shape"):
        compare_maps(a, a[:10])


def test_a_constant_map_is_undefined_never_a_pass():
    """An empty (or constant) map ranks nothing: the verdict is "undefined", not a pass with correlation 0."""
    from famegui.evaluation.sanity import SanityResult

    a = np.random.default_rng(1).random((30, 30))
    empty = np.zeros_like(a)
    r = SanityResult("toy", Target("similar"), None, compare_maps(a, empty), compare_maps(a, empty), a, empty)
    assert r.verdict == "undefined" and not r.passed and r.to_dict()["verdict"] == "undefined"
    ok = SanityResult("toy", Target("similar"), None, compare_maps(a, a.T), compare_maps(a, a.T), a, a.T)
    assert ok.verdict == "pass" and ok.passed


def test_randomise_weights(dlib, resnet18_random):
    before = {k: v.clone() for k, v in dlib.module.state_dict().items()}
    r0, r0b, r1 = (randomise_weights(dlib, seed=s) for s in (0, 0, 1))
    assert all(torch.equal(v, dlib.module.state_dict()[k]) for k, v in before.items())  # original untouched
    sd0, sd1 = r0.module.state_dict(), r1.module.state_dict()
    assert all(torch.equal(v, r0b.module.state_dict()[k]) for k, v in sd0.items())  # deterministic
    for name, m in trainable_layers(r0.module):
        orig = dict(dlib.module.named_modules())[name]
        assert not torch.equal(m.weight, orig.weight), name
        assert not torch.equal(m.weight, dict(r1.module.named_modules())[name].weight), name
        assert m.bias is None or not m.bias.any(), name  # biases (dlib: the folded affine shift) reset to 0
        fan_in = m.weight[0].numel()
        assert m.weight.std().item() == pytest.approx((2.0 / fan_in) ** 0.5, rel=0.25), name  # He normal
    assert not torch.equal(sd0["fc.weight"], sd1["fc.weight"])
    with torch.no_grad():
        out = r0(torch.rand(1, 3, 150, 150))
    assert out.shape == (1, 128) and torch.isfinite(out).all()
    # cascading: only the top layers
    top1 = randomise_weights(dlib, seed=0, depth=1)
    layers = trainable_layers(top1.module)
    assert layers[-1][0] == "fc"
    changed = [n for n, m in layers if not torch.equal(m.weight, dict(dlib.module.named_modules())[n].weight)]
    assert changed == ["fc"]
    top5 = randomise_weights(dlib, seed=0, depth=5)
    changed = [n for n, m in trainable_layers(top5.module)
               if not torch.equal(m.weight, dict(dlib.module.named_modules())[n].weight)]
    assert changed == [n for n, _ in layers[-5:]]
    with pytest.raises(ValueError, match="depth"):
        randomise_weights(dlib, depth=0)
    # batch norm goes back to its identity initialisation
    rn = randomise_weights(resnet18_random, seed=0)
    bn = rn.module.bn1
    assert torch.all(bn.weight == 1) and torch.all(bn.bias == 0)
    assert torch.all(bn.running_mean == 0) and torch.all(bn.running_var == 1)
    with pytest.raises(ValueError, match="no conv"):
        from famegui.models.wrapper import ModelWrapper

        randomise_weights(ModelWrapper(name="relu", module=nn.ReLU(), input_size=(4, 4), task="embedding"))


# --------------------------------------------------------------------------- the test on the face model
FACE_METHODS = [m.name for m in methods("verification") if m.gradient_based]
KINDS = ("similar", "dissimilar")
# Grad-CAM-EW and LayerCAM give the same map here (A >= 0, so ReLU(g A) = ReLU(g) A). Their e- of the
# randomised network keeps the trained one's layout inside the face square: correlation ~0.50 (Pearson)
# on this pair, 0.26-0.55 over two pairs and three weight seeds. They fail Adebayo's bound at 0.5.
KNOWN_FAILURES = {("gradcam-ew", "dissimilar"), ("layercam", "dissimilar")}
# Grad-CAM, HiResCAM and XGradCAM: the e- map of the randomised network is empty (the package ReLUs a
# negative sum to zero), so the comparison is undefined. Counting it as a pass (correlation 0) was wrong.
EMPTY_WHEN_RANDOM = {("gradcam", "dissimilar"), ("hirescam", "dissimilar"), ("xgradcam", "dissimilar"),
                     ("shapleycam", "dissimilar")}  # the package's ReLU of a negative weighted sum


@pytest.fixture(scope="module")
def face_results(dlib, pair):
    x, y = pair
    rs = sanity_suite(FACE_METHODS, dlib, x, [Target(k) for k in KINDS], FAST, reference=y, seed=0)
    return {(r.method, r.target.kind): r for r in rs}


def _param(name, kind):
    if (name, kind) in KNOWN_FAILURES:
        return pytest.param(name, kind, marks=pytest.mark.xfail(
            strict=True, reason="the map of the randomised network keeps the trained layout (about 0.5)"))
    return pytest.param(name, kind)


@pytest.mark.parametrize("name,kind", [_param(n, k) for n in FACE_METHODS for k in KINDS])
def test_randomised_weights_change_the_face_map(face_results, name, kind):
    r = face_results[(name, kind)]
    print(f"{name} {kind}: inside {r.inside}; whole chip {r.full}; random vs random {r.prior}")
    assert np.ptp(r.trained) > 0  # the trained network gives a real map
    assert r.region == (25, 125, 25, 125)
    if (name, kind) in EMPTY_WHEN_RANDOM:
        assert np.ptp(r.randomised) == 0 and r.verdict == "undefined" and not r.passed
        return
    assert r.inside.worst < 0.5 and r.verdict == "pass"


def test_every_gradient_method_is_covered(face_results):
    assert set(FACE_METHODS) >= {"fame", "gradcam", "gradcam-ew", "fggb", "xssab", "ebp", "cebp", "gweebp"}
    assert {k for k in face_results} == {(n, k) for n in FACE_METHODS for k in KINDS}


def test_the_whole_chip_shares_a_dark_frame(face_results):
    """Why the default region is the face square: random networks' maps fade towards the chip border.

    Over the whole chip, smooth maps of the trained and of the random network correlate through that
    frame alone (FAME e+ about 0.6-0.8), while inside the face square they do not.
    """
    for name in ("fame", "fggb", "gweebp"):
        r = face_results[(name, "similar")]
        t, b, le, ri = r.region
        inner = np.zeros(r.randomised.shape, bool)
        inner[t:b, le:ri] = True
        band = np.zeros_like(inner)
        band[:10], band[-10:], band[:, :10], band[:, -10:] = True, True, True, True
        for m in (r.trained, r.randomised):
            assert m[band].mean() < 0.6 * m[inner].mean(), name
        assert r.full.worst > r.inside.worst + 0.2, name
        assert r.prior_full.worst > r.full.worst, name  # two random networks share the frame even more


def test_black_box_s_rise_changes_too(dlib, pair):
    """Not gradient based, but the randomisation test applies as well (S-RISE, Lu & Ebrahimi, runs it)."""
    x, y = pair
    r = sanity_check("srise", dlib, x, Target("similar"), {"masks": 96}, reference=y)
    assert np.ptp(r.trained) > 0 and r.passed, r.inside


@pytest.mark.xfail(strict=True, reason="CorrRISE's occlusion correlation follows the image: the random network's "
                                       "e+ map correlates 0.65 (96 masks) to 0.82 (500 masks) with the trained one")
def test_black_box_corrrise_changes_too(dlib, pair):
    x, y = pair
    r = sanity_check("corrrise", dlib, x, Target("similar"), {"masks": 96}, reference=y)
    assert np.ptp(r.trained) > 0 and r.passed, r.inside


# --------------------------------------------------------------------------- a trained classifier
CLASS_METHODS = [m.name for m in methods("classification") if m.gradient_based]


@pytest.fixture(scope="module")
def class_results(identity_classifier, pair):
    y = pair[1]
    rs = sanity_suite(CLASS_METHODS, identity_classifier, y, [Target("class", class_index=0)], FAST, prior=False)
    return {r.method: r for r in rs}


@pytest.mark.parametrize("name", CLASS_METHODS)
def test_randomised_weights_change_the_class_map(class_results, name):
    r = class_results[name]
    print(f"{name}: inside {r.inside}; whole chip {r.full}")
    assert np.ptp(r.trained) > 0
    assert r.inside.worst < 0.5


# --------------------------------------------------------------------------- the command
def test_cli_sanity(tmp_path, capsys):
    from famegui.cli import main

    sheet, js = tmp_path / "s.png", tmp_path / "s.json"
    a, b = face("london_001", "neutral.jpg"), face("london_001", "smiling.jpg")
    rc = main(["sanity", "--image", a, "--reference", b, "--method", "gradcam,xssab", "--sheet", str(sheet),
               "--json", str(js)])
    out = capsys.readouterr().out
    assert rc == EXIT_CHECK_FAILED, out  # Grad-CAM's e- map of the random network is empty: undefined is not a pass
    rows = [ln for ln in out.splitlines() if ln.startswith(("gradcam ", "xssab "))]
    assert [ln.split()[-2] for ln in rows] == ["pass", "undefined", "pass", "pass"]
    data = json.loads(js.read_text())
    assert [(r["method"], r["target"].split()[0]) for r in data["results"]] == [
        ("gradcam", "e+"), ("gradcam", "e-"), ("xssab", "e+"), ("xssab", "e-")]
    assert [r["verdict"] for r in data["results"]] == ["pass", "undefined", "pass", "pass"]
    assert data["results"][1]["inside"]["spearman"] is None and not data["results"][1]["passed"]
    assert all(r["passed"] and r["inside"]["spearman"] < 0.5 for r in data["results"] if r["verdict"] == "pass")
    assert data["results"][0]["region"] == [25, 125, 25, 125]
    from PIL import Image

    w, h = Image.open(sheet).size
    assert (w, h) == (4 * 150 + 3 * 4, 2 * (150 + 22) + 4)  # methods x (trained | random) per target
    # a failing bound is the exit code, not an exception
    rc = main(["sanity", "--image", a, "--reference", b, "--method", "xssab", "--target", "similar",
               "--threshold", "-1", "--no-prior"])
    out = capsys.readouterr().out
    assert rc == EXIT_CHECK_FAILED and "FAIL" in out and "prior" not in out.splitlines()[1]
    # without alignment there is no face square: the whole input is compared
    assert main(["sanity", "--image", a, "--reference", b, "--method", "xssab", "--target", "similar",
                 "--no-align", "--no-prior", "--json", str(js)]) in (EXIT_OK, EXIT_CHECK_FAILED)
    capsys.readouterr()
    r = json.loads(js.read_text())["results"][0]
    assert r["region"] is None and r["inside"] == r["full"]
    # bad input: one line, exit 1
    assert main(["sanity", "--image", a, "--reference", b, "--method", "rise"]) == 1
    assert "does not support" in capsys.readouterr().err
    assert main(["sanity", "--image", a, "--reference", b, "--method", "gradcam", "--depth", "0"]) == 1
    assert "depth" in capsys.readouterr().err
