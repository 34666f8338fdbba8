"""The headless CLI: real files in, real files out, one-line errors for bad input."""
import json
import subprocess
import sys

import numpy as np
import pytest
import torch
import torchvision
from conftest import face
from PIL import Image

from famegui.cli import main
from famegui.evaluation import curves
from famegui.evaluation.metrics import Metric


def run(capsys, *args):
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def test_explain_cell_writes_png_map_and_sidecar(tmp_path, capsys, r18_weights):
    out, npy = tmp_path / "o.png", tmp_path / "m.npy"
    code, stdout, err = run(capsys, "explain", "--model", "resnet18", "--weights", r18_weights,
                            "--image", face("joe_biden", "vp_portrait.jpg"), "--cell", "layer4:3,3",
                            "--iterations", "12", "--out", out, "--save-map", npy)
    assert code == 0, err
    m = np.load(npy)
    assert m.shape == (224, 224) and m.dtype == np.float32 and m.min() >= 0 and m.max() == 1
    png = Image.open(out)
    assert png.format == "PNG" and png.size == (800, 800)  # the default --size: a figure, cut again from the photo
    side = json.loads((tmp_path / "o.json").read_text())
    assert side["target"] == {"kind": "cell", "layer": "layer4", "cell": [3, 3], "class_index": None}
    assert side["params"]["iterations"] == 12 and side["model"]["weights_path"] == r18_weights
    assert "layer4[3,3]" in stdout


def test_reproduce_gives_the_same_map(tmp_path, capsys, r18_weights):
    out, npy = tmp_path / "o.png", tmp_path / "m.npy"
    code, _, err = run(capsys, "explain", "--model", "resnet18", "--weights", r18_weights, "--image",
                       face("london_001", "neutral.jpg"), "--class", "top1", "--iterations", "6",
                       "--blur", "9,2", "--out", out, "--save-map", npy, "--on-photo")
    assert code == 0, err
    photo = Image.open(face("london_001", "neutral.jpg")).size  # drawn on the photo, enlarged to --size 800
    assert Image.open(out).size == tuple(round(v * 800 / max(photo)) for v in photo)
    code, stdout, err = run(capsys, "reproduce", tmp_path / "o.json", "--save-map", tmp_path / "again.npy")
    assert code == 0, err
    assert np.array_equal(np.load(npy), np.load(tmp_path / "again.npy"))
    assert "difference" in stdout


def test_layers_and_models(capsys, r18_weights):
    code, out, _ = run(capsys, "layers", "--model", "resnet18", "--weights", r18_weights)
    assert code == 0
    line = next(ln for ln in out.splitlines() if ln.startswith("layer4 "))
    assert "512x7x7" in line
    code, out, _ = run(capsys, "models")
    assert code == 0 and "resnet50" in out and "dlib-resnet" in out


def test_bench_prints_one_json_line(capsys, r18_weights):
    code, out, _ = run(capsys, "bench", "--model", "resnet18", "--weights", r18_weights, "--iterations", "2",
                       "--batch", "2")
    assert code == 0
    lines = out.strip().splitlines()
    assert len(lines) == 1
    d = json.loads(lines[0])
    for k in ("ms_per_iter_cell", "ms_per_iter_per_sample_batch", "ms_per_iter_full_network"):
        assert d[k] > 0
    assert d["layer"] == "layer1"


@pytest.fixture(scope="module")
def bad_files(tmp_path_factory):
    d = tmp_path_factory.mktemp("bad")
    (d / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not really a jpeg")
    (d / "notweights.pth").write_text("hello")
    torch.save(torchvision.models.vgg11().state_dict(), d / "vgg11.pth")
    return d


@pytest.mark.parametrize("case", [
    "missing_image", "corrupt_image", "wrong_weights", "not_weights", "unknown_model", "bad_cell",
    "cell_out_of_range", "unknown_layer", "two_targets", "no_torchvision_weights", "reference_without_target",
    "unknown_class_name", "unwritable_out",
])
def test_bad_input_gives_one_line_and_nonzero_exit(case, tmp_path, capsys, r18_weights, bad_files):
    img = face("london_005", "neutral.jpg")
    base = ["explain", "--model", "resnet18", "--weights", r18_weights, "--image", img, "--iterations", "2",
            "--out", tmp_path / "o.png"]
    args = {
        "missing_image": ["--image", tmp_path / "nope.jpg", "--cell", "layer4:0,0"],
        "corrupt_image": ["--image", bad_files / "corrupt.jpg", "--cell", "layer4:0,0"],
        "wrong_weights": ["--weights", bad_files / "vgg11.pth", "--cell", "layer4:0,0"],
        "not_weights": ["--weights", bad_files / "notweights.pth", "--cell", "layer4:0,0"],
        "unknown_model": ["--model", "resnet81", "--cell", "layer4:0,0"],
        "bad_cell": ["--cell", "layer4-3-3"],
        "cell_out_of_range": ["--cell", "layer4:9,0"],
        "unknown_layer": ["--cell", "layer9:0,0"],
        "two_targets": ["--cell", "layer4:0,0", "--class", "3"],
        "no_torchvision_weights": ["--weights", None, "--cell", "layer4:0,0"],
        "reference_without_target": ["--reference", img],
        "unknown_class_name": ["--class", "no_such_class_name"],
        "unwritable_out": ["--cell", "layer4:0,0", "--out", tmp_path / "no_dir" / "o.png"],
    }[case]
    argv = list(base)
    for flag, value in zip(args[::2], args[1::2]):
        if flag in argv:
            i = argv.index(flag)
            if value is None:
                del argv[i:i + 2]
            else:
                argv[i + 1] = value
        else:
            argv += [flag, value]
    code, out, err = run(capsys, *argv)
    assert code != 0
    lines = [ln for ln in err.strip().splitlines() if ln]
    assert len(lines) == 1 and lines[0].startswith("famegui: error:"), err
    assert "Traceback" not in err
    assert not (tmp_path / "o.png").exists()


def test_console_script_and_module_entry_points(tmp_path):
    exe = [sys.executable, "-m", "famegui"]
    r = subprocess.run(exe + ["explain", "--model", "resnet18", "--weights", "random", "--image",
                              str(tmp_path / "missing.jpg"), "--cell", "layer4:0,0", "--out", str(tmp_path / "o.png")],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 1 and r.stderr.strip().startswith("famegui: error: image not found")
    r = subprocess.run(exe + ["--help"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "explain" in r.stdout


def test_gui_without_a_display_is_a_clear_error():
    import os

    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY", "QT_QPA_PLATFORM")}
    r = subprocess.run([sys.executable, "-m", "famegui"], capture_output=True, text=True, timeout=120, env=env)
    assert r.returncode == 1 and "no display" in r.stderr and "Traceback" not in r.stderr


def test_signed_map_export_uses_a_diverging_scale(tmp_path):
    from famegui.core.render import colorize
    from famegui.data.pipeline import prepare_for_model
    from famegui.models.zoo import load_model
    from famegui.report import render_overlay

    model = load_model("resnet18", "random")
    inp = prepare_for_model(model, face("london_001", "neutral.jpg"))
    signed = np.zeros((224, 224), np.float32)
    signed[:, :112] = -1.0  # left half negative, right half positive
    signed[:, 112:] = 1.0
    out = render_overlay(signed, inp, opacity=1.0, signed=True)
    assert np.array_equal(out[5, 5], colorize(np.zeros((1, 1)), "bwr")[0, 0])  # -1 -> blue end
    assert np.array_equal(out[5, 200], colorize(np.ones((1, 1)), "bwr")[0, 0])  # +1 -> red end
    assert out[5, 5, 2] > out[5, 5, 0] and out[5, 200, 0] > out[5, 200, 2]


def test_reproduce_bad_sidecars_are_one_line_errors(tmp_path, capsys, r18_weights):
    (tmp_path / "junk.json").write_text("{not json")
    (tmp_path / "other.json").write_text('{"hello": 1}')
    for name, frag in [("junk.json", "invalid JSON"), ("other.json", "not a famegui sidecar"),
                       ("missing.json", "not found")]:
        code, _, err = run(capsys, "reproduce", tmp_path / name)
        assert code == 1 and frag in err and len(err.strip().splitlines()) == 1
    # an input image that changed since the export is refused, not silently recomputed
    img = tmp_path / "photo.jpg"
    img.write_bytes(open(face("london_021", "neutral.jpg"), "rb").read())
    code, _, err = run(capsys, "explain", "--model", "resnet18", "--weights", r18_weights, "--image", img,
                       "--class", "top1", "--iterations", "2", "--out", tmp_path / "o.png")
    assert code == 0, err
    img.write_bytes(open(face("london_021", "smiling.jpg"), "rb").read())
    code, _, err = run(capsys, "reproduce", tmp_path / "o.json")
    assert code == 1 and "changed since export" in err


class ToyMeanScore(Metric):
    """Toy metric: the running mean of the explained score as the top pixels go to the fill (deletion order)."""

    name, label = "toy-mean-score", "running mean of the deletion score"

    def __call__(self, sample):
        fn, score_name = curves.score_fn(sample.model, sample.target, sample.reference)
        xs = curves.perturbed(sample.x.to(sample.model.device), sample.amap, self.fractions, "deletion", self.fill)
        with torch.no_grad():
            s = fn(xs).float().cpu().numpy()
        running = np.cumsum(s) / np.arange(1, len(s) + 1)
        return curves.Curve(self.name, list(self.fractions), [float(v) for v in running],
                            f"running mean of the {score_name}", sample.method, {"fill": self.fill})


@pytest.fixture
def toy_metric():
    from famegui.evaluation.metrics import metric_names, register_metric, unregister_metric

    register_metric(ToyMeanScore)
    yield
    unregister_metric(ToyMeanScore.name)
    assert ToyMeanScore.name not in metric_names()


def test_a_registered_metric_runs_through_faithfulness(toy_metric, tmp_path, capsys, r18_weights):
    """A new metric is a one-place change: registered only, it is a --mode of `famegui faithfulness`."""
    from famegui.data.pipeline import prepare_for_model
    from famegui.methods import get_method, run_method
    from famegui.models.zoo import load_model
    from famegui.targets import Target

    img, out = face("london_001", "neutral.jpg"), tmp_path / "curves.json"
    code, stdout, err = run(capsys, "faithfulness", "--model", "resnet18", "--weights", r18_weights, "--image", img,
                            "--class", "top1", "--method", "gradcam", "--mode", "deletion,toy-mean-score",
                            "--json", out)
    assert code == 0, err

    # the expected numbers, from the model and plain torch: top-k % pixels (ties in a fixed random order, numpy
    # default_rng(0).permutation) set to
    # each channel's mean colour, the softmax probability of the top-1 class, then its running mean
    model = load_model("resnet18", r18_weights)
    x = prepare_for_model(model, img).tensor
    with torch.no_grad():
        k = int(model(x)[0].argmax())
    target = Target("class", class_index=k)
    maps = {"gradcam": run_method("gradcam", model, x, target, get_method("gradcam").resolve({}, "classification")),
            "random": np.random.default_rng(0).random((224, 224)).astype(np.float32)}  # the baseline, seed 0
    fractions = [i / 10 for i in range(11)]  # the default --steps 10
    fill = x.mean(dim=(2, 3), keepdim=True).expand_as(x)
    expected = {}
    for method, amap in maps.items():
        order = np.lexsort((np.random.default_rng(0).permutation(224 * 224), -amap.astype(np.float64).ravel()))
        probs = []
        for f in fractions:
            top = torch.zeros(224 * 224, dtype=torch.bool)
            top[torch.from_numpy(order[:int(round(f * 224 * 224))])] = True
            with torch.no_grad():
                logits = model(torch.where(top.view(1, 1, 224, 224), fill, x))
            probs.append(float(torch.softmax(logits, dim=1)[0, k]))
        running = np.cumsum(probs) / np.arange(1, len(probs) + 1)
        expected[method] = (probs, running, float(np.sum((running[1:] + running[:-1]) * np.diff(fractions)) / 2))

    rows = {(ln.split()[0], ln.split()[2]): ln.split() for ln in stdout.splitlines()
            if ln and not ln.startswith("#") and len(ln.split()) > 3}
    data = json.loads(out.read_text())["curves"]
    for method, (probs, running, auc) in expected.items():
        assert float(rows[(method, "toy-mean-score")][3]) == pytest.approx(auc, abs=6e-5)  # the printed AUC
        assert (method, "deletion") in rows
        toy = [c for c in data if c["method"] == method and c["mode"] == "toy-mean-score"]
        deletion = [c for c in data if c["method"] == method and c["mode"] == "deletion"]
        assert len(toy) == 1 and len(deletion) == 1
        assert toy[0]["fractions"] == fractions and toy[0]["score"] == "running mean of the class probability"
        assert toy[0]["scores"] == pytest.approx(list(running), abs=1e-5)
        assert toy[0]["auc"] == pytest.approx(auc, abs=1e-5)
        assert deletion[0]["scores"] == pytest.approx(probs, abs=1e-5)  # same scores, not yet averaged
    assert expected["gradcam"][0] != pytest.approx(expected["random"][0], abs=1e-4)  # the maps do differ


@pytest.mark.slow  # several child processes
def test_reproduce_never_runs_code_a_sidecar_names(tmp_path):
    """A sidecar naming a Python entry point is refused with one line (no import, no abort); a module in the
    current folder that would write a marker file never runs, even when trusted (the folder is not searched)."""
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    famegui = Path(sys.executable).parent / "famegui"  # the console script: what a user runs
    (tmp_path / "marker_mod.py").write_text("from pathlib import Path\nPath('MARKER').write_text('ran')\n"
                                            "def build():\n    raise SystemExit(0)\n")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    for source in ("os:abort", "sys:exit", "marker_mod:build", "identify:marker_mod:build:" + str(tmp_path)):
        side = tmp_path / "evil.json"
        side.write_text(json.dumps({"famegui_sidecar": 1, "model": {"source": source, "weights_path": None},
                                    "image": {"path": "x.jpg", "sha256": "0"}, "target": {"kind": "similar"},
                                    "method": "gradcam"}))
        r = subprocess.run([str(famegui), "reproduce", str(side)], cwd=tmp_path, capture_output=True, text=True,
                           timeout=120, env=env)
        lines = r.stderr.strip().splitlines()
        assert r.returncode == 1 and len(lines) == 1 and "--trust-entry-point" in lines[0], (source, r.stderr)
        assert "Traceback" not in r.stderr and not (tmp_path / "MARKER").exists()
    # trusted: the current folder is still not on the path, so the module is not found (and does not run)
    r = subprocess.run([str(famegui), "reproduce", str(side), "--trust-entry-point"], cwd=tmp_path,
                       capture_output=True, text=True, timeout=120, env=env)
    assert r.returncode == 1 and "cannot import 'marker_mod'" in r.stderr and not (tmp_path / "MARKER").exists()


def test_faithfulness_modes_are_the_curve_metrics(capsys):
    """--mode takes the registry's curve metrics; the sanity check (not a curve) has its own command."""
    from famegui.cli import main

    rc = main(["faithfulness", "--image", face("london_001", "neutral.jpg"), "--mode", "deletion,sanity"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 1 and len(err) == 1 and "sanity" not in err[0].split("of ")[1].split(" (")[0] and "hiding" in err[0]


def test_cell_overlay_is_figure_sized_with_its_boxes_and_reproduces(tmp_path, capsys):
    """A cell's overlay: --size sets the long side (the map stays as computed), the footprint (white) and the
    receptive field (cyan) are drawn, and reproduce redraws it at the recorded size."""
    import json

    from PIL import Image

    from famegui.core.render import RF_COLOR
    from famegui.models.receptive import footprint
    from famegui.models.zoo import load_model

    img = face("london_001", "neutral.jpg")
    small, big = tmp_path / "small.png", tmp_path / "big.png"
    for out, size in ((small, "0"), (big, "600")):
        code, _, err = run(capsys, "explain", "--model", "dlib-resnet", "--image", img, "--cell", "stage2:3,4",
                           "--iterations", "2", "--size", size, "--out", out, "--save-map", out.with_suffix(".npy"),
                           "--quiet")
        assert code == 0, err
    assert Image.open(small).size == (150, 150) and Image.open(big).size == (600, 600)
    np.testing.assert_array_equal(np.load(small.with_suffix(".npy")), np.load(big.with_suffix(".npy")))
    assert json.loads(big.with_suffix(".json").read_text())["outputs"]["overlay_size"] == [600, 600]
    pic = np.asarray(Image.open(big).convert("RGB")).astype(int)
    x0, y0, x1, y1 = footprint((150, 150), (17, 17), (3, 4)).as_tuple()
    top = pic[int(round(y0 * 4)), int(x0 * 4) + 6:int(x1 * 4) - 6]
    assert (top == 255).all()  # the footprint's top edge, white, at 4x
    assert (np.abs(pic - np.array(RF_COLOR)).sum(-1) < 30).sum() > 600  # the cyan receptive field box
    code, _, err = run(capsys, "reproduce", big.with_suffix(".json"), "--out", tmp_path / "again.png")
    assert code == 0, err
    assert Image.open(tmp_path / "again.png").size == (600, 600)
    assert load_model("dlib-resnet").layer_info("stage2").shape[1:] == (17, 17)
