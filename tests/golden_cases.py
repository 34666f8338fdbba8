"""Golden maps: every registered method x target on the demo pair (dlib) and on resnet18 (seeded random
weights), with few iterations / masks so the whole set runs in a minute.

``scripts/make_goldens.py`` writes them to ``tests/golden/``; ``tests/test_golden_maps.py`` recomputes
each and compares (max abs difference within :func:`tolerance`). The goldens were written before the redesign of the
package layout, so they pin the behaviour the redesign had to keep. Regenerate only for an intended
change of a method's numbers (and say so in the commit). Methods added later may keep a golden file of their
own (:data:`OWN_GROUP`: the captum baselines in ``captum.npz``, checked by ``tests/test_methods_captum.py``), so
that adding them leaves the older files as they were.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

GOLDEN_DIR = Path(__file__).parent / "golden"
# Max abs difference of a [0, 1] map from its golden. torch's float kernels differ with the CPU (oneDNN picks
# AVX2, AVX-512 or AMX code) and with the thread count: one-pass maps then differ in the 5th-6th digit
# (measured: up to 1.1e-5 on an AMX CPU against goldens written on another), and FAME's normalised steps
# amplify the last bits (one thread vs two, or another CPU: 1-2e-3 after 8 steps). A real change of a
# method moves its map by far more (1e-2 and up). Goldens are written and checked with two threads.
TOLERANCE = 5e-5
TOLERANCE_ITERATIVE = 5e-3  # FAME
# Occlusion's map is the difference of two nearly equal outputs (the score with and without one small patch)
# divided by the largest such difference: the cancellation scales the kernels' last-bit differences up
# (measured: 7.7e-5 on e- of the dlib pair on an AMD EPYC against goldens written on another CPU)
TOLERANCE_DIFFERENCE = 2e-4
THREADS = 2


def tolerance(key: str) -> float:
    method = key.split("/")[1]
    if method == "fame":
        return TOLERANCE_ITERATIVE
    return TOLERANCE_DIFFERENCE if method == "occlusion" else TOLERANCE

# cheap settings: the maps need not be good, only reproducible
FAST = {
    "fame": {"iterations": 8},
    "rise": {"masks": 48, "batch_size": 16},
    "srise": {"masks": 24},
    "corrrise": {"masks": 24},
    "xmaps": {"stride": 23},
    "fggb": {"max_dims": 16},
}
FAST_CLASSIFIER = {"scorecam": {"layer": "layer3", "batch_size": 64}}
# methods pinned in a golden file of their own (tests/golden/<group>.npz), checked by their own test file
# (tests/test_methods_captum.py); the groups above leave them out
OWN_GROUP = {**{name: "captum" for name in ("ig", "saliency", "smoothgrad", "occlusion", "gbp")},
             **{name: "cams" for name in ("eigengradcam", "ablationcam", "kpcacam", "shapleycam", "finercam")}}
FAST_CAPTUM = {"ig": {"n_steps": 8}, "smoothgrad": {"samples": 6}, "occlusion": {"window": 40, "stride": 37}}


def _load(load_model, *args):
    """The model in PyTorch's default memory layout, the one the goldens were written in (famegui keeps
    weights channels-last for speed; that changes float rounding only: test_fame_speed.py checks it)."""
    model = load_model(*args)
    model.set_layout(channels_last=False)
    return model


def _api():
    # the only famegui names the goldens depend on (public API)
    from famegui.data.pipeline import prepare_for_model
    from famegui.methods import methods, run_method
    from famegui.models.zoo import load_model
    from famegui.targets import Target

    return methods, run_method, load_model, prepare_for_model, Target


def _face(*parts: str) -> str:
    from famegui.paths import resource_path

    return str(resource_path("faces", *parts))


def face_cases():
    """(key, run) for the dlib model: every verification method x (e+, e-), gweEBP's triplet, FAME cells."""
    methods, run_method, load_model, prepare_for_model, Target = _api()
    model = _load(load_model, "dlib-resnet")
    probe = prepare_for_model(model, _face("london_001", "neutral.jpg")).tensor
    mate = prepare_for_model(model, _face("london_001", "smiling.jpg")).tensor
    other = prepare_for_model(model, _face("london_005", "neutral.jpg")).tensor
    cases = []
    for spec in methods("verification"):
        if spec.name in OWN_GROUP:
            continue
        for kind in ("similar", "dissimilar"):
            def run(spec=spec, kind=kind):
                return run_method(spec.name, model, probe, Target(kind), FAST.get(spec.name, {}), reference=mate)
            cases.append((f"dlib/{spec.name}/{kind}", run))
    cases.append(("dlib/gweebp/triplet", lambda: run_method("gweebp", model, probe, Target("similar"), {},
                                                               reference=mate, non_mate=other)))
    for layer, cell in (("stage1", (17, 17)), ("stage4", (2, 1))):
        cases.append((f"dlib/fame/cell-{layer}", lambda layer=layer, cell=cell: run_method(
            "fame", model, probe, Target("cell", layer=layer, cell=cell), FAST["fame"])))
    return cases


def classifier_cases():
    """(key, run) for resnet18 with seeded random weights: every classification method, FAME cells."""
    methods, run_method, load_model, prepare_for_model, Target = _api()
    model = _load(load_model, "resnet18", "random")
    x = prepare_for_model(model, _face("london_001", "neutral.jpg")).tensor
    with torch.no_grad():
        top = int(model(x).argmax())
    cases = []
    for spec in methods("classification"):
        if spec.name in OWN_GROUP:
            continue
        params = {**FAST.get(spec.name, {}), **FAST_CLASSIFIER.get(spec.name, {})}
        cases.append((f"r18/{spec.name}/class", lambda spec=spec, params=params: run_method(
            spec.name, model, x, Target("class", class_index=top), params)))
    cases.append(("r18/fame/cell-layer1", lambda: run_method(
        "fame", model, x, Target("cell", layer="layer1", cell=(20, 30)), FAST["fame"])))
    return cases


def _own_group_inputs():
    """(face model, probe, mate, resnet18 with seeded random weights, its input, its top class) of the groups
    added after the redesign: the demo pair on dlib, and london_001 on resnet18."""
    _methods, _run, load_model, prepare_for_model, _target = _api()
    face = _load(load_model, "dlib-resnet")
    probe = prepare_for_model(face, _face("london_001", "neutral.jpg")).tensor
    mate = prepare_for_model(face, _face("london_001", "smiling.jpg")).tensor
    net = _load(load_model, "resnet18", "random")
    x = prepare_for_model(net, _face("london_001", "neutral.jpg")).tensor
    with torch.no_grad():
        top = int(net(x).argmax())
    return face, probe, mate, net, x, top


def captum_cases():
    """(key, run) of the captum baselines: e+ and e- on the demo pair (dlib), a class and a cell of resnet18
    (seeded random weights), with few steps, samples and windows."""
    methods, run_method, _load_model, _prepare, Target = _api()
    face, probe, mate, net, x, top = _own_group_inputs()
    cases = []
    for name in sorted(n for n, group in OWN_GROUP.items() if group == "captum"):
        params = FAST_CAPTUM.get(name, {})
        for kind in ("similar", "dissimilar"):
            cases.append((f"dlib/{name}/{kind}", lambda name=name, params=params, kind=kind: run_method(
                name, face, probe, Target(kind), params, reference=mate)))
        cases.append((f"r18/{name}/class", lambda name=name, params=params: run_method(
            name, net, x, Target("class", class_index=top), params)))
        cases.append((f"r18/{name}/cell-layer2", lambda name=name, params=params: run_method(
            name, net, x, Target("cell", layer="layer2", cell=(10, 17)), params)))
    return cases


def cam_cases():
    """(key, run) of the CAM methods added after the redesign: e+ and e- on the demo pair where they explain
    pairs, a class of resnet18 (seeded random weights) for all."""
    methods, run_method, _load_model, _prepare, Target = _api()
    face, probe, mate, net, x, top = _own_group_inputs()
    fast = {"ablationcam": {"layer": "layer3", "batch_size": 64}}
    cases = []
    for spec in sorted((m for m in methods() if OWN_GROUP.get(m.name) == "cams"), key=lambda m: m.name):
        if "verification" in spec.tasks:
            for kind in ("similar", "dissimilar"):
                cases.append((f"dlib/{spec.name}/{kind}", lambda spec=spec, kind=kind: run_method(
                    spec.name, face, probe, Target(kind), {}, reference=mate)))
        cases.append((f"r18/{spec.name}/class", lambda spec=spec: run_method(
            spec.name, net, x, Target("class", class_index=top), fast.get(spec.name, {}))))
    return cases


GROUPS = {"dlib": face_cases, "r18": classifier_cases, "captum": captum_cases, "cams": cam_cases}


def golden_path(group: str) -> Path:
    return GOLDEN_DIR / f"{group}.npz"


class pinned_threads:
    """torch with :data:`THREADS` threads inside the block (the caller's setting restored after)."""

    def __enter__(self):
        self.saved = torch.get_num_threads()
        torch.set_num_threads(THREADS)

    def __exit__(self, *exc):
        torch.set_num_threads(self.saved)


def compute(group: str) -> dict[str, np.ndarray]:
    cases = GROUPS[group]()
    with pinned_threads():
        return {key: np.asarray(run(), dtype=np.float32) for key, run in cases}
