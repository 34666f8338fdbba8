"""CAM family through pytorch_grad_cam: registry declarations, maps on real models, hooks, sanity checks."""
import numpy as np
import pytest
import torch
from conftest import face
from torch import nn

from famegui.core.fame import Cancelled
from famegui.methods import get_method, run_method
from famegui.targets import Target

CAMS = ("gradcam", "gradcam-pp", "gradcam-ew", "hirescam", "fullgrad", "layercam", "xgradcam", "scorecam",
        "eigencam", "sddcam")
VERIFICATION = ("gradcam", "gradcam-pp", "gradcam-ew", "hirescam", "layercam", "xgradcam", "scorecam")
GRADIENT = ("gradcam", "gradcam-pp", "gradcam-ew", "hirescam", "fullgrad", "layercam", "xgradcam", "sddcam")


# ----------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def photo(resnet18_random):
    """A real photo for the classifier, shrunk to 128 px to keep the tests quick (layer4 is then 4x4)."""
    from famegui.data.pipeline import prepare_for_model

    x = prepare_for_model(resnet18_random, face("barack_obama", "portrait_2012.jpg")).tensor
    return torch.nn.functional.interpolate(x, size=(128, 128), mode="bilinear", align_corners=False)


def _check_map(a, shape):
    assert a.shape == tuple(shape)
    assert a.dtype == np.float32
    assert np.isfinite(a).all()
    assert a.min() >= 0.0 and a.max() <= 1.0
    assert a.max() > 0.0  # not an empty map


def _hook_count(module: nn.Module) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks)
               for m in module.modules())


# ----------------------------------------------------------------------------- declarations
def test_declarations():
    for name in CAMS:
        spec = get_method(name)
        assert "classification" in spec.tasks
        assert "cell" not in spec.tasks
        assert spec.gradient_based == (name in GRADIENT)
        if name in VERIFICATION:
            assert "verification" in spec.tasks and spec.output == "pair"
            assert spec.defaults()["detach_norms"] is True
        else:
            assert "verification" not in spec.tasks and spec.output == "single"
    assert get_method("scorecam").cost == "sampling"
    assert "batch_size" in get_method("scorecam").defaults()
    assert "layer" not in get_method("fullgrad").defaults()  # FullGrad uses every bias layer


def test_default_cam_layer(dlib, resnet18_random):
    from famegui.methods.cam import cam_layer

    assert cam_layer(dlib) == "stage3"
    assert cam_layer(resnet18_random) == "layer4"


# ----------------------------------------------------------------------------- maps on real models
@pytest.mark.parametrize("name", VERIFICATION)
def test_face_pair_maps(name, dlib, pair):
    x, y = pair
    params = {"batch_size": 64} if name == "scorecam" else {}
    ep = run_method(name, dlib, x, Target("similar"), params, reference=y)
    em = run_method(name, dlib, x, Target("dissimilar"), params, reference=y)
    _check_map(ep, x.shape[-2:])
    _check_map(em, x.shape[-2:])
    assert np.abs(ep - em).max() > 1e-3


def test_scorecam_pair_scores_are_scaled_cosines(dlib, pair):
    """Score-CAM's softmax over plain cosines is nearly uniform (e+ = e-); as logits s * cos they differ,
    and the e+ map becomes more faithful (its top pixels, deleted, lower the similarity faster)."""
    from famegui.evaluation.curves import curve

    x, y = pair
    maps = {}
    for scale in (1.0, None):  # None: the default (64, ArcFace's scale)
        params = {"batch_size": 64} if scale is None else {"batch_size": 64, "cos_scale": scale}
        maps[scale] = [run_method("scorecam", dlib, x, Target(k), params, reference=y)
                       for k in ("similar", "dissimilar")]
    corr = {s: float(np.corrcoef(a.ravel(), b.ravel())[0, 1]) for s, (a, b) in maps.items()}
    auc = {s: curve(dlib, x, m[0], Target("similar"), "deletion", reference=y).auc for s, m in maps.items()}
    print(f"Score-CAM e+/e- correlation {corr}; e+ deletion AUC {auc}")
    assert corr[1.0] > 0.99 and corr[None] < 0.5
    assert auc[None] < auc[1.0]


@pytest.mark.parametrize("name", CAMS)
def test_classification_maps(name, resnet18_random, photo):
    x, params = photo, {}
    if name == "scorecam":  # one forward pass per channel: a layer with fewer channels keeps it quick
        params = {"layer": "layer2", "batch_size": 64}
    a = run_method(name, resnet18_random, x, Target("class", class_index=7), params)
    _check_map(a, x.shape[-2:])
    if name == "gradcam":
        b = run_method(name, resnet18_random, x, Target("class", class_index=7), params)
        np.testing.assert_array_equal(a, b)  # deterministic


def test_layer_param_and_errors(resnet18_random, photo, dlib, pair):
    a4 = run_method("gradcam", resnet18_random, photo, Target("class", class_index=1))
    a3 = run_method("gradcam", resnet18_random, photo, Target("class", class_index=1), {"layer": "layer3"})
    assert np.abs(a4 - a3).max() > 0.05
    with pytest.raises(KeyError, match="no layer"):
        run_method("gradcam", resnet18_random, photo, Target("class", class_index=1), {"layer": "nope"})
    with pytest.raises(ValueError, match="does not support verification"):
        run_method("eigencam", dlib, pair[0], Target("similar"), reference=pair[1])


def test_input_is_not_touched(resnet18_random, photo):
    x = photo.clone()
    run_method("fullgrad", resnet18_random, x, Target("class", class_index=3))
    assert not x.requires_grad and x.grad is None
    assert torch.equal(x, photo)


# ----------------------------------------------------------------------------- cross-check with the package
def test_gradcam_equals_package_classification(resnet18_random, photo):
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    ours = run_method("gradcam", resnet18_random, photo, Target("class", class_index=42))
    z = resnet18_random.normalize(photo).clone().requires_grad_(True)  # the package on normalised input
    with GradCAM(model=resnet18_random.module, target_layers=[resnet18_random.module.layer4]) as cam:
        ref = cam(input_tensor=z, targets=[ClassifierOutputTarget(42)])[0]
    assert np.abs(ours - ref).max() < 1e-5


@pytest.mark.parametrize("kind", ["similar", "dissimilar"])
def test_gradcam_equals_package_verification(kind, dlib, pair):
    from pytorch_grad_cam import GradCAM

    x, y = pair
    ours = run_method("gradcam", dlib, x, Target(kind), reference=y)
    with torch.no_grad():
        r = dlib(y)[0]

    def target(o):  # cosine with the probe's norm detached, as the FAME authors did
        c = (o * r).sum() / (o.norm().detach() * r.norm())
        return c if kind == "similar" else 1 - c

    z = dlib.normalize(x).clone().requires_grad_(True)
    with GradCAM(model=dlib.module, target_layers=[dlib.get_layer("stage3")]) as cam:
        ref = cam(input_tensor=z, targets=[target])[0]
    assert np.abs(ours - ref).max() < 1e-5


def test_detach_norms_changes_the_target(dlib, pair):
    x, y = pair
    a = run_method("hirescam", dlib, x, Target("similar"), {"detach_norms": True}, reference=y)
    b = run_method("hirescam", dlib, x, Target("similar"), {"detach_norms": False}, reference=y)
    assert np.abs(a - b).max() > 1e-3


# ----------------------------------------------------------------------------- hooks, progress, cancel
def test_repeated_runs_do_not_leak_hooks(dlib, pair, identity_classifier):
    x, y = pair
    clf = identity_classifier
    layer = dlib.get_layer("stage3")
    before_layer, before_all = len(layer._forward_hooks), _hook_count(dlib.module)
    for _ in range(2):
        run_method("gradcam", dlib, x, Target("similar"), reference=y)
        run_method("fullgrad", clf, y, Target("class", class_index=0))  # hooks on every conv
        run_method("scorecam", dlib, x, Target("dissimilar"), {"layer": "stage1", "batch_size": 32},
                   reference=y)
    assert len(layer._forward_hooks) == before_layer
    assert _hook_count(dlib.module) == before_all
    assert _hook_count(clf.module) == before_all
    # a run that fails inside the package releases its hooks too
    calls = []

    def cancel():
        calls.append(1)
        return len(calls) > 2

    with pytest.raises(Cancelled):
        run_method("scorecam", dlib, x, Target("similar"), {"layer": "stage3", "batch_size": 16},
                   reference=y, cancel=cancel)
    assert len(layer._forward_hooks) == before_layer
    assert _hook_count(dlib.module) == before_all


def test_scorecam_progress_and_cancel(dlib, pair):
    x, y = pair
    seen = []
    run_method("scorecam", dlib, x, Target("similar"), {"layer": "stage1", "batch_size": 8}, reference=y,
               progress=lambda f, m: seen.append(f))
    assert seen[0] == 0.0 and seen[-1] == 1.0
    assert len(seen) >= 32 // 8 + 1  # one report per batch of the 32 channels
    assert all(b >= a for a, b in zip(seen, seen[1:]))
    with pytest.raises(Cancelled):
        run_method("scorecam", dlib, x, Target("similar"), reference=y, cancel=lambda: True)


# ----------------------------------------------------------------------------- SDD-CAM
def test_sdd_combine_localises_the_target_only_region():
    from famegui.methods.cam import sdd_combine

    yy, xx = np.mgrid[0:32, 0:32]
    def blob(cy, cx):
        return np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / 20.0)
    shared = blob(24, 24)
    target = np.clip(0.8 * blob(8, 8) + shared, 0, 1)  # the target's own region plus a shared one
    others = [shared * s for s in (1.0, 0.9, 0.8, 0.7)]
    sdd, info = sdd_combine(np.stack([target] + others))
    assert sdd.shape == (32, 32) and sdd.min() == 0.0 and sdd.max() == pytest.approx(1.0)
    assert target[24, 24] > target[8, 8]  # the plain CAM peaks on the region shared with other classes
    assert np.unravel_index(sdd.argmax(), sdd.shape) == (8, 8)  # SDD on the target's own region
    assert sdd[24, 24] < 0.5 * sdd[8, 8]
    assert 5 <= info["factor"] <= 50 and 0.2 <= info["alpha"] <= 0.4


def test_sddcam_differs_from_gradcam(identity_classifier, pair):
    trained = identity_classifier
    y = pair[1]
    sdd = run_method("sddcam", trained, y, Target("class", class_index=0))
    gc = run_method("gradcam", trained, y, Target("class", class_index=0))
    _check_map(sdd, y.shape[-2:])
    assert np.abs(sdd - gc).max() > 0.1
    assert (sdd > 0.5).mean() < (gc > 0.5).mean()  # narrower than the plain CAM


# ----------------------------------------------------------------------------- the rest of pytorch-grad-cam
@pytest.mark.parametrize("name, cls, tasks", [
    ("eigengradcam", "EigenGradCAM", {"classification"}),
    ("ablationcam", "AblationCAM", {"classification", "verification"}),
    ("kpcacam", "KPCA_CAM", {"classification"}),
    ("finercam", "FinerCAM", {"classification"}),
])
def test_more_cams_equal_the_package(name, cls, tasks, resnet18_random, photo):
    """Each new entry is the package's own class on the same network, input and target."""
    import pytorch_grad_cam
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    spec = get_method(name)
    assert set(spec.tasks) == tasks and spec.gradient_based == (name in ("eigengradcam", "finercam"))
    ours = run_method(name, resnet18_random, photo, Target("class", class_index=42))
    _check_map(ours, photo.shape[-2:])
    z = resnet18_random.normalize(photo).clone().requires_grad_(True)
    with getattr(pytorch_grad_cam, cls)(model=resnet18_random.module,
                                        target_layers=[resnet18_random.module.layer4]) as cam:
        if cls == "FinerCAM":  # the package's own choice of look-alike classes (the 3 nearest logits)
            ref = cam(input_tensor=z, targets=None, target_idx=42, alpha=1.0)[0]
        else:
            ref = cam(input_tensor=z, targets=[ClassifierOutputTarget(42)])[0]
    assert np.abs(ours - ref).max() < 1e-5


@pytest.mark.parametrize("flags", [{"aug_smooth": True}, {"eigen_smooth": True}])
def test_smoothing_flags_are_the_packages(flags, resnet18_random, photo):
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    from famegui.methods.cam import FoldedNetwork

    plain = run_method("gradcam", resnet18_random, photo, Target("class", class_index=7))
    ours = run_method("gradcam", resnet18_random, photo, Target("class", class_index=7), flags)
    # on [0,1] pixels, normalised inside the network, as famegui feeds every method: the augmentation's
    # brightness factors then scale pixels, not normalised values
    net = FoldedNetwork(resnet18_random)
    with GradCAM(model=net, target_layers=[resnet18_random.module.layer4]) as cam:
        ref = cam(input_tensor=photo.clone().requires_grad_(True), targets=[ClassifierOutputTarget(7)], **flags)[0]
    assert np.abs(ours - ref).max() < 1e-5 and np.abs(ours - plain).max() > 1e-3


def test_shapleycam_on_a_face_pair_and_where_its_hessian_term_vanishes(dlib, pair, resnet18_random, photo):
    """On a face pair (a cosine: not linear in the activations) ShapleyCAM is the package's; on a ResNet's
    last stage under a linear head the Hessian term is zero and the map is Grad-CAM's, said in the info."""
    from pytorch_grad_cam import ShapleyCAM

    from famegui.methods import MethodContext

    x, y = pair
    ours = run_method("shapleycam", dlib, x, Target("similar"), reference=y)
    with torch.no_grad():
        r = dlib(y)[0]

    def target(o):
        return (o * r).sum() / (o.norm().detach() * r.norm())

    z = dlib.normalize(x).clone().requires_grad_(True)
    with ShapleyCAM(model=dlib.module, target_layers=[dlib.get_layer("stage3")]) as cam:
        ref = cam(input_tensor=z, targets=[target])[0]
    assert np.abs(ours - ref).max() < 1e-5 and ours.max() > 0
    spec = get_method("shapleycam")
    ctx = MethodContext(model=resnet18_random, x=photo, target=Target("class", class_index=42),
                        params=spec.resolve({}, "classification"))
    linear = spec.fn(ctx)
    assert "Grad-CAM" in ctx.info["note"]
    np.testing.assert_allclose(linear, run_method("gradcam", resnet18_random, photo,
                                                  Target("class", class_index=42)), atol=1e-6)
