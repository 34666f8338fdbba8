"""captum's baselines (IG, Saliency, SmoothGrad, Occlusion, Guided Backprop): famegui's raw attribution equals
captum called here on the same network, input and target; the maps through famegui's public path and the
command line; the declarations, parameters, progress, cancellation and goldens."""
from __future__ import annotations

import json

import golden_cases as gc
import numpy as np
import pytest
import torch
from conftest import face
from torch import nn

import famegui
from famegui.cli import main
from famegui.core.fame import Cancelled
from famegui.methods import MethodContext, get_method, methods, run_method
from famegui.methods.captum_methods import CAPTUM_METHODS, attribution_map, captum_attribution, ig_baseline
from famegui.targets import Target

NAMES = ("ig", "saliency", "smoothgrad", "occlusion", "gbp")
TASKS = ("class", "cell", "similar", "dissimilar")
CELL = ("layer2.1.conv1", (3, 4))  # resnet18 at 64 px: 8x8, signed (before BN and ReLU), so |.| matters
# small settings, different from the defaults so that each one is seen to reach captum
FAST = {
    "ig": {"n_steps": 6, "batch_size": 4},
    "saliency": {},
    "smoothgrad": {"samples": 5, "batch_size": 2, "noise": 0.2, "seed": 3},
    "occlusion": {"window": 12, "stride": 10, "batch_size": 7, "fill": 0.3},
    "gbp": {},
}
FAST_FACE = {"occlusion": {"window": 30, "stride": 24, "batch_size": 7, "fill": 0.3}}  # 150 px chips
IG_BASELINE = {"class": "gray", "cell": "white", "similar": "black", "dissimilar": "black"}


# ----------------------------------------------------------------------------- fixtures
@pytest.fixture(autouse=True)
def _one_thread():
    """One torch thread per test: on a machine shared with another CPU-bound process, two OpenMP threads
    fighting it make single forward passes 10x slower at random (docs/architecture.md, Threads)."""
    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(saved)


@pytest.fixture(scope="module")
def photo(resnet18_random):
    """A real photo for the classifier, shrunk to 64 px to keep the tests quick."""
    from famegui.data.pipeline import prepare_for_model

    x = prepare_for_model(resnet18_random, face("barack_obama", "portrait_2012.jpg")).tensor
    return torch.nn.functional.interpolate(x, size=(64, 64), mode="bilinear", align_corners=False)


def _case(task, resnet18_random, photo, dlib, pair):
    """(model, input, target, reference) of one task."""
    if task == "class":
        return resnet18_random, photo, Target("class", class_index=7), None
    if task == "cell":
        return resnet18_random, photo, Target("cell", layer=CELL[0], cell=CELL[1]), None
    return dlib, pair[0], Target(task), pair[1]


def _params(name, task):
    p = dict(FAST_FACE.get(name, FAST[name]) if task in ("similar", "dissimilar") else FAST[name])
    if name == "ig":
        p["baseline"] = IG_BASELINE[task]
    return p


def _context(model, x, target, name, params, reference=None, **kw):
    ref = None
    if reference is not None:
        with torch.no_grad():
            ref = model(reference).detach()
    return MethodContext(model=model, x=x, target=target, params=get_method(name).resolve(params, target.task),
                         reference=reference, reference_embedding=ref, **kw)


# ----------------------------------------------------------------------------- the oracle: captum, called here
class Pixels(nn.Module):
    """The wrapped network on [0,1] RGB, normalised here with the wrapper's declared mean and std."""

    def __init__(self, model):
        super().__init__()
        self.net = model.module
        self.register_buffer("mean", torch.tensor(model.mean, device=model.device).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(model.std, device=model.device).view(1, 3, 1, 1))

    def forward(self, x):
        return self.net((x - self.mean) / self.std)


class Cosine(nn.Module):
    """cos(f(x), r), or 1 - cos: the true cosine, written out."""

    def __init__(self, net, r, dissimilar):
        super().__init__()
        self.net, self.r, self.dissimilar = net, r.reshape(1, -1), dissimilar

    def forward(self, x):
        f = self.net(x)
        c = (f * self.r).sum(1) / (f.norm(dim=1) * self.r.norm())
        return 1 - c if self.dissimilar else c


def _cell_value(net, layer, i, j):
    """Images -> sum_c |a_c[i, j]| of ``layer``, read with a hook of our own."""
    def value(x):
        box = []
        handle = layer.register_forward_hook(lambda _m, _i, out: box.append(out))
        try:
            net(x)
        finally:
            handle.remove()
        return box[0][:, :, i, j].abs().sum(1)
    return value


def _captum_itself(name, model, x, target, params, reference):
    """captum's own attribution for the case, built from captum's API and the test's own network."""
    from captum.attr import (
        GuidedBackprop,
        IntegratedGradients,
        NeuronGradient,
        NeuronGuidedBackprop,
        NeuronIntegratedGradients,
        NoiseTunnel,
        Occlusion,
        Saliency,
    )

    net, p = Pixels(model), params
    x = x.clone().requires_grad_(True)
    base = {"black": None, "white": 1.0, "gray": 0.5}.get(p.get("baseline"))
    if target.kind == "cell":
        layer = dict(model.module.named_modules())[target.layer]
        i, j = target.cell

        def select(a):
            return a[:, :, i, j].abs().sum(1)
        runs = {
            "ig": lambda: NeuronIntegratedGradients(net, layer).attribute(
                x, select, baselines=base, n_steps=p["n_steps"], internal_batch_size=p["batch_size"]),
            "saliency": lambda: NeuronGradient(net, layer).attribute(x, select),
            "smoothgrad": lambda: NoiseTunnel(NeuronGradient(net, layer)).attribute(
                x, nt_samples=p["samples"], nt_samples_batch_size=p["batch_size"],
                stdevs=p["noise"] * float(x.detach().max() - x.detach().min()), neuron_selector=select),
            "gbp": lambda: NeuronGuidedBackprop(net, layer).attribute(x, select),
            "occlusion": lambda: Occlusion(_cell_value(net, layer, i, j)).attribute(
                x.detach(), sliding_window_shapes=(3, p["window"], p["window"]),
                strides=(3, p["stride"], p["stride"]), baselines=p["fill"], perturbations_per_eval=p["batch_size"]),
        }
        k = None
    else:
        if target.kind != "class":
            with torch.no_grad():
                net = Cosine(net, net(reference), target.kind == "dissimilar")
        k = target.class_index
        runs = {
            "ig": lambda: IntegratedGradients(net).attribute(x, baselines=base, target=k, n_steps=p["n_steps"],
                                                             internal_batch_size=p["batch_size"]),
            "saliency": lambda: Saliency(net).attribute(x, target=k),
            "smoothgrad": lambda: NoiseTunnel(Saliency(net)).attribute(
                x, nt_samples=p["samples"], nt_samples_batch_size=p["batch_size"],
                stdevs=p["noise"] * float(x.detach().max() - x.detach().min()), target=k, abs=False),
            "gbp": lambda: GuidedBackprop(net).attribute(x, target=k),
            "occlusion": lambda: Occlusion(net).attribute(
                x.detach(), sliding_window_shapes=(3, p["window"], p["window"]),
                strides=(3, p["stride"], p["stride"]), baselines=p["fill"], target=k,
                perturbations_per_eval=p["batch_size"]),
        }
    if name == "smoothgrad":
        torch.manual_seed(p["seed"])
    return runs[name]().detach()


@pytest.mark.filterwarnings("ignore:Setting backward hooks on ReLU")
@pytest.mark.parametrize("task", TASKS)
@pytest.mark.parametrize("name", NAMES)
def test_raw_attribution_equals_captum_itself(name, task, resnet18_random, photo, dlib, pair):
    model, x, target, ref = _case(task, resnet18_random, photo, dlib, pair)
    params = _params(name, task)
    ours = captum_attribution(_context(model, x, target, name, params, ref), name)
    want = _captum_itself(name, model, x, target, params, ref)
    assert ours.shape == want.shape == (1, 3, *x.shape[-2:])
    assert float(want.abs().max()) > 0  # a case with content
    torch.testing.assert_close(ours, want, atol=1e-6, rtol=0)


# ----------------------------------------------------------------------------- the public path
def _check(e, shape):
    m = e.map
    assert m.shape == shape and m.dtype == np.float32 and np.isfinite(m).all()
    lo = -1.0 if e.signed else 0.0
    assert m.min() >= lo and m.max() <= 1.0
    assert float(np.abs(m).max()) == pytest.approx(1.0)  # scaled by its largest magnitude
    return m


@pytest.mark.parametrize("name", NAMES)
def test_maps_through_famegui_explain(name, resnet18_random, dlib, pair):
    """Every method x task through famegui.explain (the one explain path), at the models' input sizes."""
    from famegui.data.pipeline import prepare_for_model

    x = prepare_for_model(resnet18_random, face("joe_biden", "vp_portrait.jpg")).tensor  # 224 px
    p = {"ig": {"n_steps": 4}, "smoothgrad": {"samples": 3}, "occlusion": {"window": 56, "stride": 56}}.get(name, {})
    spec = get_method(name)
    cls = famegui.explain(resnet18_random, x, famegui.class_target(3), name, **p)
    cell = famegui.explain(resnet18_random, x, famegui.cell("layer3", 5, 6), name, **p)
    ep, em = famegui.explain(dlib, pair[0], [famegui.similar(pair[1]), famegui.dissimilar(pair[1])], name, **p)
    for e in (cls, cell):
        assert e.output == spec.output_for(e.target.task)
        _check(e, (224, 224))
    assert cls.signed == (name in ("ig", "occlusion")) and cls.params == spec.resolve(p, "classification")
    for e in (ep, em):
        assert e.output == {"saliency": "single", "smoothgrad": "single"}.get(name, "pair") and not e.signed
        _check(e, (150, 150))
    assert cls.record()["method"] == name  # the sidecar


def test_signed_and_pair_maps_are_the_two_signs(dlib, pair):
    """IG on a pair: the attribution of 1 - cos is minus that of cos, so the signed e- map is -e+, and the
    unsigned e+ / e- (the default) are its positive and negative parts."""
    x, y = pair
    signed = [run_method("ig", dlib, x, Target(k), {"n_steps": 8, "signed": True}, reference=y)
              for k in ("similar", "dissimilar")]
    np.testing.assert_allclose(signed[1], -signed[0], atol=1e-5)
    assert signed[0].min() < -0.1 and signed[0].max() > 0.1
    ep, em = (run_method("ig", dlib, x, Target(k), {"n_steps": 8}, reference=y) for k in ("similar", "dissimilar"))
    pos, neg = np.maximum(signed[0], 0), np.maximum(-signed[0], 0)
    np.testing.assert_allclose(ep, pos / pos.max(), atol=1e-5)
    np.testing.assert_allclose(em, neg / neg.max(), atol=1e-5)
    spec = get_method("ig")
    assert not spec.signed("verification") and spec.signed("verification", {"signed": True})
    assert spec.signed("classification") and spec.signed("cell")


def test_one_map_for_both_signs_where_the_method_takes_magnitudes(dlib, pair):
    """Saliency and SmoothGrad take |gradient|: e+ = e- (declared "single"); Guided Backprop's ReLU rule is
    not linear, so its e+ and e- differ (declared "pair")."""
    x, y = pair
    for name in ("saliency", "smoothgrad", "gbp"):
        ep, em = (run_method(name, dlib, x, Target(k), {"samples": 4} if name == "smoothgrad" else {}, reference=y)
                  for k in ("similar", "dissimilar"))
        if name == "gbp":
            assert np.abs(ep - em).max() > 1e-2
        else:
            np.testing.assert_array_equal(ep, em)


def test_map_post_processing(resnet18_random, photo):
    """Signed: sum over colour / max |.|; unsigned: max over colour of |.| / max. SmoothGrad without noise is
    Saliency (the same gradient, averaged over identical copies)."""
    raw = torch.tensor([[[[1.0, -2.0]], [[0.5, -1.0]], [[-0.5, 0.0]]]])  # (1, 3, 1, 2)
    np.testing.assert_allclose(attribution_map(raw, "ig"), [[1 / 3, -1.0]])
    np.testing.assert_allclose(attribution_map(raw, "ig", signed=False), [[1.0, 0.0]])
    np.testing.assert_allclose(attribution_map(raw, "saliency"), [[0.5, 1.0]])
    assert not attribution_map(torch.zeros(1, 3, 4, 4), "occlusion").any()
    t = Target("class", class_index=2)
    sal = run_method("saliency", resnet18_random, photo, t)
    sg = run_method("smoothgrad", resnet18_random, photo, t, {"noise": 0.0, "samples": 3})
    np.testing.assert_allclose(sg, sal, atol=1e-5)  # a batch of three copies: float rounding only


def test_integrated_gradients_explain_the_true_cosine(dlib, pair):
    """Completeness: IG's attributions add up to cos(x, r) - cos(baseline, r) (the norm of f(x) is not
    detached, as it is in the CAM baselines)."""
    x, y = pair
    raw = captum_attribution(_context(dlib, x, Target("similar"), "ig", {"n_steps": 32, "baseline": "gray"}, y), "ig")
    with torch.no_grad():
        r = dlib(y)
        gap = float(torch.cosine_similarity(dlib(x), r) - torch.cosine_similarity(dlib(torch.full_like(x, 0.5)), r))
    assert abs(gap) > 0.05
    assert float(raw.sum()) == pytest.approx(gap, rel=0.03)


def test_blur_baseline(dlib, pair):
    from torchvision.transforms.functional import gaussian_blur

    x = pair[0]
    b = ig_baseline(x, "blur", 2.0)
    torch.testing.assert_close(b, gaussian_blur(x, [13, 13], [2.0, 2.0]))  # kernel to 3 sigma each side
    assert float((b - x).abs().mean()) > 0.01
    m = run_method("ig", dlib, x, Target("similar"), {"n_steps": 4, "baseline": "blur"}, reference=pair[1])
    assert np.isfinite(m).all() and m.max() == pytest.approx(1.0)


def test_smoothgrad_is_seeded_and_leaves_the_global_generator_alone(resnet18_random, photo):
    t = Target("class", class_index=5)
    state = torch.get_rng_state()
    a = run_method("smoothgrad", resnet18_random, photo, t, {"samples": 3})
    assert torch.equal(torch.get_rng_state(), state)
    b = run_method("smoothgrad", resnet18_random, photo, t, {"samples": 3})
    c = run_method("smoothgrad", resnet18_random, photo, t, {"samples": 3}, seed=1)
    d = run_method("smoothgrad", resnet18_random, photo, t, {"samples": 3, "seed": 1})
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(c, d)
    assert np.abs(a - c).max() > 1e-3


# ----------------------------------------------------------------------------- declarations and parameters
def test_declarations():
    expected = {  # name: (label, output by task, cost, gradient based, paper)
        "ig": ("Integrated Gradients", ("signed", "pair", "signed"), "iterative", True, "Sundararajan et al. 2017"),
        "saliency": ("Saliency", ("single", "single", "single"), "cheap", True, "Simonyan et al. 2014"),
        "smoothgrad": ("SmoothGrad", ("single", "single", "single"), "sampling", True, "Smilkov et al. 2017"),
        "occlusion": ("Occlusion", ("signed", "pair", "signed"), "sampling", False, "Zeiler & Fergus 2014"),
        "gbp": ("Guided Backprop", ("single", "pair", "single"), "cheap", True, "Springenberg et al. 2015"),
    }
    assert set(CAPTUM_METHODS) == set(expected) == {n for n, g in gc.OWN_GROUP.items() if g == "captum"}
    for name, (label, outputs, cost, grad, paper) in expected.items():
        spec = get_method(name)
        assert spec.label == label and paper in spec.description and "captum" in spec.description
        assert set(spec.tasks) == {"classification", "verification", "cell"}
        assert tuple(spec.output_for(t) for t in ("classification", "verification", "cell")) == outputs
        assert spec.cost == cost and spec.gradient_based == grad
        assert name in [m.name for m in methods("cell")]
    d = get_method("ig").defaults("classification")
    assert (d["n_steps"], d["baseline"], d["signed"]) == (50, "black", True)
    for name in ("ig", "occlusion"):  # left unset (the window's form, the CLI): signed, but e+/e- for pairs
        spec = get_method(name)
        assert spec.defaults()["signed"] is None and spec.defaults("cell")["signed"] is True
        assert spec.resolve({"signed": None}, "verification")["signed"] is False
        assert not spec.signed("verification", {"signed": None}) and spec.signed("verification", {"signed": True})
    assert get_method("smoothgrad").defaults()["noise"] == 0.15
    assert get_method("occlusion").defaults()["fill"] == 0.5


@pytest.mark.parametrize("name,param,value,message", [
    ("ig", "n_steps", 0, "n_steps must be >= 1"),
    ("ig", "n_steps", 2.5, "n_steps must be a whole number"),
    ("ig", "baseline", "purple", "baseline must be one of black, white, gray, blur"),
    ("ig", "batch_size", 0, "batch_size must be >= 1"),
    ("smoothgrad", "noise", -0.1, "noise must be >= 0"),
    ("smoothgrad", "noise", float("nan"), "noise must be a finite number"),
    ("smoothgrad", "samples", "many", "samples must be a whole number"),
    ("occlusion", "window", 0, "window must be >= 1"),
    ("occlusion", "fill", 2, "fill must be <= 1"),
    ("occlusion", "signed", "maybe", "signed must be true or false"),
    ("saliency", "n_steps", 5, "saliency has no parameter 'n_steps'"),
])
def test_bad_parameters_are_one_line_errors(name, param, value, message):
    with pytest.raises(ValueError) as err:
        get_method(name).resolve({param: value}, "classification")
    assert message in str(err.value) and len(str(err.value).splitlines()) == 1


def test_a_window_larger_than_the_image_is_refused(dlib, pair):
    with pytest.raises(ValueError, match="occlusion window 200 does not fit a 150x150 image"):
        run_method("occlusion", dlib, pair[0], Target("similar"), {"window": 200}, reference=pair[1])


def test_guided_backprop_refuses_a_network_without_relu_modules():
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.GELU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3))
    model = famegui.wrap(net, input_size=16, task="classification")
    with pytest.raises(ValueError, match="nn.ReLU modules, and .* has none"):
        run_method("gbp", model, torch.rand(1, 3, 16, 16), Target("class", class_index=0))
    assert np.isfinite(run_method("saliency", model, torch.rand(1, 3, 16, 16), Target("class", class_index=0))).all()


# ----------------------------------------------------------------------------- progress, cancel, hooks
def _hooks(module: nn.Module) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks)
               + len(m._backward_pre_hooks) for m in module.modules())


def test_progress_from_every_forward_pass(resnet18_random, photo, dlib, pair):
    seen = []
    run_method("ig", resnet18_random, photo, Target("class", class_index=1), {"n_steps": 8, "batch_size": 2},
               progress=lambda f, m: seen.append((f, m)))
    fractions = [f for f, _ in seen]
    assert fractions[0] == 0.0 and fractions[-1] == 1.0 and seen[-1][1] is not None
    assert {0.25, 0.5, 0.75} <= set(fractions)  # one report per internal batch of two path images
    assert all(b >= a for a, b in zip(fractions, fractions[1:]))
    seen.clear()
    run_method("occlusion", dlib, pair[0], Target("dissimilar"), {"window": 50, "stride": 50, "batch_size": 3},
               reference=pair[1], progress=lambda f, m: seen.append(f))
    assert len(seen) >= 1 + 10 // 3 and seen[-1] == 1.0  # the input, then 9 windows 3 at a time
    assert all(b >= a for a, b in zip(seen, seen[1:]))


@pytest.mark.parametrize("name,task", [("gbp", "similar"), ("gbp", "cell"), ("ig", "cell"), ("smoothgrad", "class"),
                                       ("occlusion", "cell")])
def test_cancel_stops_the_run_and_leaves_no_hooks(name, task, resnet18_random, photo, dlib, pair):
    model, x, target, ref = _case(task, resnet18_random, photo, dlib, pair)
    before = _hooks(model.module)
    calls = []

    def cancel():
        calls.append(1)
        return len(calls) > 2  # inside the library, after its first forward pass

    with pytest.raises(Cancelled):
        run_method(name, model, x, target, _params(name, task), reference=ref, cancel=cancel)
    assert _hooks(model.module) == before
    run_method(name, model, x, target, _params(name, task), reference=ref)
    assert _hooks(model.module) == before


# ----------------------------------------------------------------------------- the command line
def test_methods_command_lists_them_with_tasks_and_parameters(capsys):
    assert main(["methods"]) == 0
    lines = {ln.split()[0]: ln for ln in capsys.readouterr().out.splitlines() if ln.strip()}
    for name in NAMES:
        assert "tasks: cell,classification,verification" in lines[name]
    assert "n_steps=50" in lines["ig"] and "baseline=black" in lines["ig"] and "output: signed" in lines["ig"]
    assert "samples=50" in lines["smoothgrad"] and "noise=0.15" in lines["smoothgrad"]
    assert "window=16" in lines["occlusion"] and "stride=8" in lines["occlusion"] and "fill=0.5" in lines["occlusion"]


PAIR = ["--image", face("london_001", "neutral.jpg"), "--reference", face("london_001", "smiling.jpg")]


@pytest.mark.parametrize("name,flags", [
    ("ig", ["--target", "dissimilar", "--n-steps", "4", "--baseline", "white"]),
    ("saliency", ["--cell", "stage3:4,4"]),
    ("smoothgrad", ["--target", "similar", "--samples", "3", "--noise", "0.1"]),
    ("occlusion", ["--cell", "stage2:10,10", "--window", "30", "--stride", "30", "--no-signed"]),
    ("gbp", ["--target", "dissimilar"]),
])
def test_famegui_explain_on_the_command_line(name, flags, tmp_path, capsys):
    npy, out = tmp_path / "m.npy", tmp_path / "m.png"
    image = PAIR if "--target" in flags else PAIR[:2]
    code = main(["explain", "--model", "dlib-resnet", *image, "--method", name, *flags, "--out", str(out),
                 "--save-map", str(npy)])
    err = capsys.readouterr().err
    assert code == 0, err
    assert "famegui: note" not in err  # no library chatter (Guided Backprop's hooks note)
    m = np.load(npy)
    assert m.shape == (150, 150) and np.isfinite(m).all() and m.min() >= 0 and m.max() == pytest.approx(1.0)
    side = json.loads(out.with_suffix(".json").read_text())
    assert side["method"] == name


def test_classification_on_the_command_line_and_reproduce(r18_weights, tmp_path, capsys):
    out, npy = tmp_path / "c.png", tmp_path / "c.npy"
    args = ["explain", "--model", "resnet18", "--weights", r18_weights, "--image", face("joe_biden", "vp_portrait.jpg"),
            "--class", "top1", "--method", "ig", "--n-steps", "3", "--out", str(out), "--save-map", str(npy)]
    assert main(args) == 0, capsys.readouterr().err
    m = np.load(npy)
    assert m.shape == (224, 224) and m.min() < 0 and np.abs(m).max() == pytest.approx(1.0)  # signed
    assert main(["reproduce", str(out.with_suffix(".json")), "--out", str(tmp_path / "r.png")]) == 0
    assert "to the exported map: 0.00e+00" in capsys.readouterr().out


@pytest.mark.parametrize("flags,message", [
    (["--method", "ig", "--n-steps", "0"], "n_steps must be >= 1"),
    (["--method", "ig", "--baseline", "purple"], "baseline must be one of"),
    (["--method", "smoothgrad", "--noise", "inf"], "noise must be a finite number"),
    (["--method", "saliency", "--n-steps", "3"], "--n-steps is not a parameter of Saliency"),
    (["--method", "occlusion", "--window", "151"], "occlusion window 151 does not fit a 150x150 image"),
])
def test_command_line_mistakes_are_one_line(flags, message, tmp_path, capsys):
    code = main(["explain", "--model", "dlib-resnet", *PAIR, "--target", "similar", *flags,
                 "--out", str(tmp_path / "x.png")])
    err = capsys.readouterr().err.strip()
    assert code == 1 and message in err and len(err.splitlines()) == 1, err


# ----------------------------------------------------------------------------- goldens
def test_maps_equal_their_goldens():
    """The captum group of tests/golden_cases.py (tests/golden/captum.npz): every captum method on e+, e-, a
    class and a cell, within the goldens' tolerance. Written with two threads (gc.pinned_threads), checked with
    this module's one: these one-pass maps then differ by < 1e-5 (measured 7.7e-6), and two threads next to
    another busy process take five times as long."""
    stored = np.load(gc.golden_path("captum"))
    cases = dict(gc.captum_cases())
    assert sorted(cases) == sorted(stored.files)
    assert {key.split("/")[1] for key in cases} == set(CAPTUM_METHODS)
    worst = {}
    for key, run in cases.items():
        got = np.asarray(run(), dtype=np.float32)
        assert got.shape == stored[key].shape, key
        worst[key] = float(np.abs(got - stored[key]).max())
    bad = {k: v for k, v in worst.items() if v > gc.tolerance(k)}
    assert not bad, f"maps differ from their goldens: {bad}"
    assert all(float(np.ptp(stored[k])) > 0 for k in stored.files)


def test_the_compare_tab_offers_and_runs_the_new_methods(win, qtbot):
    """The window's Compare tab lists captum's baselines and the added CAMs for a face pair (from the registry)
    and computes their e+ / e- tiles."""
    from PySide6.QtCore import Qt

    tab = win.compare_tab
    win.tabs.setCurrentWidget(tab)
    qtbot.waitUntil(lambda: tab.method_list.count() > 0, timeout=60000)
    names = {tab.method_list.item(i).data(Qt.UserRole) for i in range(tab.method_list.count())}
    assert {"ig", "saliency", "smoothgrad", "occlusion", "gbp", "ablationcam", "shapleycam"} <= names
    assert "eigengradcam" not in names  # its e+ and e- are the same map: classification only
    tab.set_checked(["ig", "shapleycam"])
    tab.run()
    qtbot.waitUntil(lambda: len(tab.results) == 4 and not win.compute.busy, timeout=180000)
    assert all(np.isfinite(r.map).all() for r in tab.results.values())
