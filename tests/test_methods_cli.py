"""Every registered method runs through `famegui explain --method NAME` and writes a valid map."""
import json

import numpy as np
import pytest
from conftest import face

from famegui.cli import main
from famegui.methods import methods

# small settings so the whole registry runs in seconds (flags exist only where a method declares them)
FAST = {"masks": "16", "iterations": "5", "stride": "30", "window": "40", "max_dims": "8", "batch_size": "16",
        "patches": "10"}
PAIR = [face("london_001", "neutral.jpg"), face("london_001", "smiling.jpg")]


# Score-CAM runs one forward pass per channel of its layer: pick a narrow layer in tests
NARROW_LAYER = {"dlib-resnet": "stage2", "resnet18": "layer1"}


def _fast_flags(spec, model):
    names = {p.name for p in spec.params}
    out = ["--layer", NARROW_LAYER[model]] if spec.name == "scorecam" else []
    for k, v in FAST.items():
        if k in names:
            out += ["--" + k.replace("_", "-"), v]
    return out


def test_methods_command_lists_the_registry(capsys):
    assert main(["methods"]) == 0
    out = capsys.readouterr().out
    for spec in methods():
        assert spec.name in out


@pytest.mark.parametrize("name", [m.name for m in methods("verification")])
def test_every_verification_method_via_cli(name, tmp_path, capsys):
    spec = next(m for m in methods() if m.name == name)
    npy = tmp_path / "m.npy"
    # Ablation-CAM's e- of this genuine pair is empty: sum_c w_c A_c <= 0 everywhere (the package's ablation
    # weights for the small score 1 - cos), and the package ReLUs it; its e+ is checked instead
    target = "similar" if name == "ablationcam" else "dissimilar"
    code = main(["explain", "--model", "dlib-resnet", "--image", PAIR[0], "--reference", PAIR[1], "--target",
                 target, "--method", name, *_fast_flags(spec, "dlib-resnet"), "--out", str(tmp_path / "o.png"),
                 "--save-map", str(npy)])
    err = capsys.readouterr().err
    assert code == 0, err
    m = np.load(npy)
    assert m.shape == (150, 150) and np.isfinite(m).all()
    lo = -1.0 if spec.output == "signed" else 0.0
    assert m.min() >= lo - 1e-6 and m.max() <= 1 + 1e-6 and np.abs(m).max() > 0
    assert json.loads((tmp_path / "o.json").read_text())["method"] == name


@pytest.mark.parametrize("name", [m.name for m in methods("classification")])
def test_every_classification_method_via_cli(name, tmp_path, capsys, r18_weights):
    spec = next(m for m in methods() if m.name == name)
    npy = tmp_path / "m.npy"
    code = main(["explain", "--model", "resnet18", "--weights", r18_weights,
                 "--image", face("joe_biden", "vp_portrait.jpg"),
                 "--class", "top1", "--method", name, *_fast_flags(spec, "resnet18"), "--out", str(tmp_path / "o.png"),
                 "--save-map", str(npy)])
    err = capsys.readouterr().err
    assert code == 0, err
    m = np.load(npy)
    assert m.shape == (224, 224) and np.isfinite(m).all() and m.min() >= -1 - 1e-6 and m.max() <= 1 + 1e-6


def test_unknown_method_and_wrong_task_are_one_line_errors(tmp_path, capsys):
    code = main(["explain", "--model", "dlib-resnet", "--image", PAIR[0], "--reference", PAIR[1], "--target",
                 "similar", "--method", "nosuch", "--out", str(tmp_path / "o.png")])
    err = capsys.readouterr().err.strip()
    assert code == 1 and "unknown method" in err and len(err.splitlines()) == 1
    code = main(["explain", "--model", "dlib-resnet", "--image", PAIR[0], "--cell", "stage4:0,0", "--method",
                 "corrrise", "--out", str(tmp_path / "o.png")])
    err = capsys.readouterr().err.strip()
    assert code == 1 and "does not support cell" in err


def test_gweebp_non_mate_via_cli_and_reproduce(tmp_path, capsys):
    out, npy = tmp_path / "g.png", tmp_path / "g.npy"
    third = face("london_005", "neutral.jpg")
    assert main(["explain", "--image", PAIR[0], "--reference", PAIR[1], "--target", "similar", "--method",
                 "gweebp", "--non-mate", third, "--out", str(out), "--save-map", str(npy), "--quiet"]) == 0
    assert "gain triplet" in capsys.readouterr().out
    rec = json.loads(out.with_suffix(".json").read_text())
    assert rec["non_mate"]["path"].endswith("neutral.jpg") and rec["info"]["gain"].startswith("triplet")
    assert main(["reproduce", str(out.with_suffix(".json")), "--out", str(tmp_path / "r.png")]) == 0
    diff = float(capsys.readouterr().out.rsplit(":", 1)[1])
    assert diff < 1e-5  # the reproduced map used the non-mate again
    # a method without a triplet gain: a clear error, before any work
    assert main(["explain", "--image", PAIR[0], "--reference", PAIR[1], "--target", "similar", "--method",
                 "gradcam", "--non-mate", third, "--out", str(tmp_path / "x.png")]) == 1
    assert "--non-mate is for" in capsys.readouterr().err
