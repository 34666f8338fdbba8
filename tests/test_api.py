"""The public Python API (famegui.explain and friends) on a module of our own, cross-checked against the
command line with the same module as an entry point, against separate calls (batches), and the window."""
from __future__ import annotations

import io
import json

import numpy as np
import pytest
import torch
from api_nets import make_classifier, make_embedder
from conftest import GUI_READY_MS, face

import famegui
from famegui.cli import main

SIZE = 64
CLI_NET = ["--model", "api_nets:make_classifier", "--input-size", str(SIZE), "--task", "classification"]


@pytest.fixture
def net():
    return famegui.wrap(make_classifier(), input_size=SIZE, task="classification")


def _corr(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(a.ravel(), b.ravel())[0, 1])


class Forwards:
    """Counts the forward passes of a module and the batch size of each."""

    def __init__(self, module: torch.nn.Module) -> None:
        self.sizes: list[int] = []
        self.handle = module.register_forward_hook(lambda _m, inp, _o: self.sizes.append(int(inp[0].shape[0])))

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.handle.remove()


# ------------------------------------------------------------------------------ equal to the command line
@pytest.mark.parametrize("target,flags,method", [
    (famegui.cell("features.block1", 5, 9), ["--cell", "features.block1:5,9"], "fame"),
    (famegui.class_target(3), ["--class", "3"], "fame"),
    (famegui.class_target(3), ["--class", "3"], "gradcam"),
])
def test_explain_equals_the_command_line_with_the_module_as_entry_point(net, tmp_path, target, flags, method):
    img = face("london_001", "neutral.jpg")
    e = famegui.explain(net, img, target, method, **({"iterations": 12} if method == "fame" else {}))
    npy = tmp_path / "cli.npy"
    args = ["explain", *CLI_NET, "--image", img, *flags, "--method", method, "--out", str(tmp_path / "cli.png"),
            "--save-map", str(npy), "--quiet"]
    if method == "fame":
        args += ["--iterations", "12"]
    assert main(args) == 0
    cli = np.load(npy)
    assert e.map.shape == cli.shape == (SIZE, SIZE)
    assert float(np.ptp(e.map)) > 0.1  # a map with content, not two empty ones
    np.testing.assert_allclose(e.map, cli, atol=1e-6, rtol=0)
    side = json.loads((tmp_path / "cli.json").read_text())  # the entry point's weights hash is famegui.wrap's
    assert side["model"]["weights"] == net.weights_id and side["model"]["module_class"] == "api_nets.TinyNet"
    assert e.record()["model"]["in_memory"] is True and "in_memory" not in side["model"]


# ------------------------------------------------------------------------------ batches
def test_a_batch_of_images_is_one_batch_with_the_maps_of_separate_calls(net):
    images = [face("london_001", "neutral.jpg"), face("london_005", "neutral.jpg"),
              face("joe_biden", "vp_portrait.jpg")]
    target = famegui.class_target(4)
    separate = [famegui.explain(net, im, target, iterations=15) for im in images]
    with Forwards(net.module) as f:
        batch = famegui.explain(net, images, target, iterations=15)
    assert isinstance(batch, list) and len(batch) == 3
    for one, many in zip(separate, batch):
        assert many.info.iterations == one.info.iterations
        assert many.info.batch == 3
        assert _corr(one.map, many.map) >= 0.999
    # one loop: every pass carries the three images, and there are no more passes than one image needs
    assert set(f.sizes) == {3} and len(f.sizes) <= 2 * max(e.info.iterations for e in separate) + 2


def test_a_batch_of_cells_and_a_tensor_batch(net):
    x = famegui.explain(net, face("london_006", "neutral.jpg"), "top1", "gradcam").probe.tensor  # (1,3,64,64)
    cells = [famegui.cell("features.block2", r, c) for r, c in ((0, 0), (3, 5), (7, 7))]
    separate = [famegui.explain(net, x, c, iterations=10) for c in cells]
    with Forwards(net.module.features.stem) as f:  # a cell's loop runs the network up to its layer only
        batch = famegui.explain(net, x, cells, iterations=10)
    assert [e.target for e in batch] == cells
    assert all(_corr(a.map, b.map) >= 0.999 and a.info.iterations == b.info.iterations
               for a, b in zip(separate, batch))
    assert set(f.sizes) == {3}
    # an (N,3,H,W) tensor in [0,1] at the input size is N images, used as they are
    xs = torch.cat([x, x.flip(-1)])
    two = famegui.explain(net, xs, famegui.class_target(1), "gradcam")
    assert len(two) == 2 and two[0].probe.prepared.mode == "as-is"
    np.testing.assert_allclose(two[0].map, famegui.explain(net, x, 1, "gradcam").map, atol=1e-6)


def test_a_batch_of_pairs_runs_e_plus_and_e_minus_together():
    model = famegui.wrap(make_embedder(), input_size=SIZE, task="embedding")
    probes = [face("london_001", "neutral.jpg"), face("london_005", "neutral.jpg")]
    refs = [face("london_001", "smiling.jpg"), face("london_005", "smiling.jpg")]
    separate = [famegui.explain(model, p, [famegui.similar(r), famegui.dissimilar(r)], iterations=10)
                for p, r in zip(probes, refs)]
    with Forwards(model.module) as f:
        batch = famegui.explain(model, probes, ["e+", "e-"], reference=refs, iterations=10)
    assert [[e.target.kind for e in row] for row in batch] == [["similar", "dissimilar"]] * 2
    for one, many in zip(separate, batch):
        for a, b in zip(one, many):
            assert a.info.iterations == b.info.iterations and _corr(a.map, b.map) >= 0.999
    assert max(f.sizes) == 4  # the four rows in one pass (the references' embeddings are computed once)


# ------------------------------------------------------------------------------ pictures, files, reproduce
def test_repr_png_and_save_reproduce_exactly(tmp_path, capsys):
    from PIL import Image

    e = famegui.explain("dlib-resnet", famegui.sample_image("london_001"), famegui.cell("stage4", 2, 3), iterations=6)
    png = e._repr_png_()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    picture = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))
    assert picture.shape == (300, 300, 3) and picture.std() > 10  # the overlay, not a blank
    written = e.save(tmp_path / "cell.png")
    assert [p.name for p in written] == ["cell.png", "cell.npy", "cell.json"]
    assert main(["reproduce", str(tmp_path / "cell.json"), "--save-map", str(tmp_path / "again.npy")]) == 0
    assert "max |difference| to the exported map: 0.00e+00" in capsys.readouterr().out
    np.testing.assert_array_equal(np.load(tmp_path / "again.npy"), e.map)


def test_a_module_in_memory_says_so_and_an_entry_point_reproduces(tmp_path, capsys):
    img = face("london_001", "neutral.jpg")
    memory = famegui.explain(famegui.wrap(make_classifier(), SIZE), img, 2, iterations=5)
    memory.save(tmp_path / "m.png")
    side = json.loads((tmp_path / "m.json").read_text())["model"]
    assert side["source"] == "memory:api_nets.TinyNet" and side["in_memory"] is True
    assert side["weights"].startswith("module-sha256:")
    assert main(["reproduce", str(tmp_path / "m.json")]) == 1
    assert "was a module in memory (api_nets.TinyNet)" in capsys.readouterr().err

    named = famegui.wrap(make_classifier(), SIZE, entry_point="api_nets:make_classifier")
    e = famegui.explain(named, img, 2, iterations=5)
    np.testing.assert_array_equal(e.map, memory.map)
    e.save(tmp_path / "e.png")
    assert main(["reproduce", str(tmp_path / "e.json")]) == 1  # code: only when trusted
    assert "--trust-entry-point" in capsys.readouterr().err
    assert main(["reproduce", str(tmp_path / "e.json"), "--trust-entry-point"]) == 0
    assert "difference| to the exported map: 0.00e+00" in capsys.readouterr().out

    other = make_classifier()
    with torch.no_grad():
        other.head.bias += 1
    changed = famegui.wrap(other, SIZE, entry_point="api_nets:make_classifier")
    famegui.explain(changed, img, 2, iterations=5).save(tmp_path / "c.png")
    assert main(["reproduce", str(tmp_path / "c.json"), "--trust-entry-point"]) == 1
    assert "weights changed since export" in capsys.readouterr().err


# ------------------------------------------------------------------------------ inputs and errors
def test_images_as_arrays_pil_and_tensors_agree(net):
    from PIL import Image

    path = face("london_021", "neutral.jpg")
    pil = Image.open(path)
    by_path = famegui.explain(net, path, 0, "gradcam").map
    for given in (pil, np.asarray(pil.convert("RGB")), np.asarray(pil.convert("RGB")).astype(np.float32) / 255):
        np.testing.assert_allclose(famegui.explain(net, given, 0, "gradcam").map, by_path, atol=1e-5)


@pytest.mark.parametrize("call,message", [
    (lambda m: famegui.explain(m, torch.full((1, 3, SIZE, SIZE), 2.0), 0), "RGB image in \\[0, 1\\]"),
    (lambda m: famegui.explain(m, torch.rand(2, 3), 0), "tensor must be"),
    (lambda m: famegui.explain(m, face("london_001", "neutral.jpg"), "e+"), "give famegui.similar"),
    (lambda m: famegui.explain(m, face("london_001", "neutral.jpg"), 0, iterations=0), "iterations"),
    (lambda m: famegui.explain(m, face("london_001", "neutral.jpg"), 0, nonsense=1), "no parameter 'nonsense'"),
    (lambda m: famegui.explain(m, face("london_001", "neutral.jpg"), "top99"), "has only 10 classes"),
    (lambda m: famegui.explain(m, face("london_001", "neutral.jpg"), famegui.cell("nope", 0, 0)), "no layer"),
    (lambda m: famegui.explain(object(), face("london_001", "neutral.jpg"), 0), "torch.nn.Module"),
    (lambda m: famegui.wrap(make_classifier(), input_size=3), "input size"),
    (lambda m: famegui.wrap(make_classifier(), std=(1, 0, 1)), "std must be positive"),
    (lambda m: famegui.sample_image("../etc"), "no sample person"),
])
def test_mistakes_are_one_line_errors(net, call, message):
    with pytest.raises((ValueError, TypeError, KeyError, RuntimeError)) as err:
        call(net)
    text = str(err.value)
    assert len(text.strip().splitlines()) == 1
    import re

    assert re.search(message, text), text


# ------------------------------------------------------------------------------ compare, evaluate
def test_compare_grid_and_evaluate(net):
    img = face("london_001", "neutral.jpg")
    fig = famegui.compare(net, img, [0, 1], ["gradcam", "fame"], iterations=6)
    assert len(fig.axes) == 4 and [e.method for e in fig.explanations[0]] == ["gradcam", "fame"]
    assert fig.explanations[1][1].target == famegui.class_target(1)
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    assert buf.getvalue()[:4] == b"\x89PNG"
    curves = famegui.evaluate(fig.explanations[0], ["deletion", "insertion"], fractions=[0, 0.25, 0.5, 1])
    assert [(c.method, c.metric) for c in curves] == [("gradcam", "deletion"), ("gradcam", "insertion"),
                                                      ("fame", "deletion"), ("fame", "insertion")]
    assert all(len(c.scores) == 4 and np.isfinite(c.auc) for c in curves)
    # the first point is the unperturbed image: the class probability the model gives
    assert curves[0].score_name == "class probability"
    with torch.no_grad():
        p = float(torch.softmax(net(fig.explanations[0][0].probe.tensor), 1)[0, 0])
    assert curves[0].scores[0] == pytest.approx(p, rel=1e-4, abs=1e-5)



def test_compare_leaves_a_method_out_where_it_does_not_apply(net):
    """Grad-CAM has no cell targets: its panel in the cell row is empty, and FAME's is the map that
    famegui.explain gives for that cell."""
    img = face("london_001", "neutral.jpg")
    fig = famegui.compare(net, img, [famegui.class_target(0), famegui.cell("features.block1", 3, 4)],
                          ["fame", "gradcam"], iterations=4)
    assert fig.explanations[1][1] is None and fig.explanations[0][1].method == "gradcam"
    alone = famegui.explain(net, img, famegui.cell("features.block1", 3, 4), iterations=4)
    np.testing.assert_allclose(fig.explanations[1][0].map, alone.map, atol=1e-6)
    assert "not for cell" in " ".join(t.get_text() for t in fig.axes[3].texts)

# ------------------------------------------------------------------------------ the window
def test_open_your_module_in_the_window_and_click_a_cell(net, qtbot):
    from test_gui import click_cell

    img = face("london_001", "neutral.jpg")
    w = famegui.open(net, images=img, layer="features.block1", block=False)
    qtbot.addWidget(w)
    qtbot.waitUntil(lambda: w.session.model is net and "probe" in w.session.inputs
                    and w.feature_map.fmap_canvas.image_shape() is not None, timeout=GUI_READY_MS)
    assert w.feature_map.layer == "features.block1"
    listed = set()
    stack = [w.layer_tree.topLevelItem(i) for i in range(w.layer_tree.topLevelItemCount())]
    while stack:
        item = stack.pop()
        listed.add(item.text(0))
        stack += [item.child(i) for i in range(item.childCount())]
    assert any("block1" in t for t in listed) and any("block2" in t for t in listed), listed
    w.param_form.set_value("iterations", 8)
    with qtbot.waitSignal(w.result_shown, timeout=GUI_READY_MS) as sig:
        click_cell(qtbot, w, (10, 20))
    res = sig.args[0]
    assert res.method == "fame" and res.target == famegui.cell("features.block1", 10, 20)
    same = famegui.explain(net, img, res.target, iterations=8, **{k: v for k, v in res.params.items()
                                                                   if k != "iterations"})
    np.testing.assert_allclose(res.map, same.map, atol=1e-5)
    assert res.explanation.record()["model"]["source"] == "memory:api_nets.TinyNet"
    w.close()


def test_wrap_defaults_to_the_outermost_last_block_and_prints_in_one_line():
    import torchvision

    m = famegui.wrap(torchvision.models.resnet18(), task="classification")
    assert m.default_layer == "layer4"  # the block's output, not its last leaf (layer4.1.bn2)
    text = repr(m)
    assert "\n" not in text and "1000 classes" in text and "tench" not in text and len(text) < 200
