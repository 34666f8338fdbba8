"""Model formats: ONNX (onnx2torch), insightface packs on disk, timm with local checkpoints, safetensors, and
the refusal of pickles that would run code. Every file is built here; nothing is downloaded."""
from __future__ import annotations

import argparse
import os
import shutil
import warnings
from pathlib import Path

import numpy as np
import onnx  # noqa: E402  (declared dependencies: a missing one is a failure, not a skip)
import onnx2torch  # noqa: E402,F401
import pytest
import torch
import torchvision
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from famegui.methods import run_method  # noqa: E402
from famegui.models.discovery import find_insightface, hf_cached_file, insightface_models  # noqa: E402
from famegui.models.iresnet import build_face_network, wrap_face_network  # noqa: E402
from famegui.models.onnx_models import OnnxGraph  # noqa: E402
from famegui.models.weights import UnsafeWeightsError, looks_like_safetensors, save_safetensors  # noqa: E402
from famegui.models.wrapper import ModelLoadError  # noqa: E402
from famegui.models.zoo import load_model, model_catalogue, zoo_names  # noqa: E402
from famegui.paths import file_sha256  # noqa: E402
from famegui.targets import Target  # noqa: E402

IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))


def _error(*args, **kwargs) -> str:
    with pytest.raises(ModelLoadError) as info:
        load_model(*args, **kwargs)
    msg = str(info.value)
    assert msg and "\n" not in msg, msg
    return msg


def _export(module: torch.nn.Module, size: int, path: Path) -> Path:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module.eval(), torch.zeros(1, 3, size, size), str(path), opset_version=17, dynamo=False,
                          input_names=["input.1"], output_names=["output"],
                          dynamic_axes={"input.1": {0: "batch"}, "output": {0: "batch"}})
    return path


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(a.ravel(), b.ravel())[0, 1])


def _tiny_onnx(path: Path, size: int = 112, outputs: int = 1, prefix_nodes=(), layout: str = "NCHW") -> Path:
    """A small valid graph: [prefix ops] -> 1x1 conv -> global average pool -> flatten (x ``outputs``)."""
    rng = np.random.default_rng(0)
    shape = [1, 3, size, size] if layout == "NCHW" else [1, size, size, 3]
    inits = [numpy_helper.from_array(rng.standard_normal((4, 3, 1, 1)).astype(np.float32), "w"),
             numpy_helper.from_array(np.full((1, 3, 1, 1), 0.5, np.float32), "c")]
    nodes, x = [], "x"
    for i, (op, name) in enumerate(prefix_nodes):
        nodes.append(helper.make_node(op, [x, "c"], [f"p{i}"], name=name))
        x = f"p{i}"
    nodes += [helper.make_node("Conv", [x, "w"], ["f"], name="conv"),
              helper.make_node("GlobalAveragePool", ["f"], ["g"], name="gap"),
              helper.make_node("Flatten", ["g"], ["y0"], name="flat")]
    outs = ["y0"]
    for i in range(1, outputs):
        nodes.append(helper.make_node("Identity", ["y0"], [f"y{i}"], name=f"id{i}"))
        outs.append(f"y{i}")
    graph = helper.make_graph(nodes, "tiny", [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
                              [helper.make_tensor_value_info(o, TensorProto.FLOAT, [1, 4]) for o in outs], inits)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


# --------------------------------------------------------------------------- fixtures: real exported networks
@pytest.fixture(scope="module")
def ir50(tmp_path_factory):
    """(native IResNet-50 wrapper, its ONNX export, the converted wrapper)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        native = wrap_face_network("iresnet50")
    path = _export(native.module, 112, tmp_path_factory.mktemp("onnx") / "iresnet50.onnx")
    return native, path, load_model(str(path))


@pytest.fixture(scope="module")
def r18(tmp_path_factory):
    """(native torchvision resnet18, its ONNX export)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        net = torchvision.models.resnet18().eval()
    return net, _export(net, 224, tmp_path_factory.mktemp("onnx") / "resnet18.onnx")


def _pair(size: int, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(1, 3, size, size, generator=g), torch.rand(1, 3, size, size, generator=g)


# --------------------------------------------------------------------------- ONNX: IResNet-50
def test_onnx_face_model_follows_insightface_conventions(ir50):
    _native, path, m = ir50
    assert isinstance(m.module, OnnxGraph)
    assert m.input_size == (112, 112) and m.task == "embedding" and m.channel_order == "RGB"
    assert m.mean == (0.5, 0.5, 0.5) and m.std == (0.5, 0.5, 0.5)  # (pixel - 127.5) / 127.5
    assert m.alignment == "arcface112" and m.threshold is not None
    assert m.weights_id == file_sha256(path) and m.source == str(path)
    assert m.extras["format"] == "onnx" and m.extras["batch"] is None


def test_onnx_embeddings_equal_the_torch_original(ir50):
    native, _path, m = ir50
    x = torch.rand(2, 3, 112, 112, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        diff = (m(x) - native(x)).abs().max().item()
    assert diff <= 1e-4


def test_onnx_layers_list_the_stages_with_their_shapes(ir50):
    native, _path, m = ir50
    stages = m.extras["stages"]
    shapes = {k: m.layer_info(v).shape for k, v in stages.items()}
    assert shapes == {"stage1": (64, 56, 56), "stage2": (128, 28, 28), "stage3": (256, 14, 14),
                      "stage4": (512, 7, 7)}
    assert [v.split("/")[0] for v in stages.values()] == ["layer1", "layer2", "layer3", "layer4"]
    assert m.default_layer == stages["stage4"]
    names = [layer.name for layer in m.layers()]
    assert names[0] == "conv1/Conv" and len(names) > 100 and all("." not in n for n in names)
    x = torch.rand(1, 3, 112, 112, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():  # the stage end is exactly the native stage output
        a, b = m.activation(x, stages["stage4"]), native.activation(x, "layer4")
    assert (a - b).abs().max().item() <= 1e-4


def test_fame_on_the_converted_graph_matches_native(ir50):
    native, _path, m = ir50
    x, y = _pair(112)
    params = {"iterations": 10}
    a = run_method("fame", native, x, Target("similar"), params, reference=y)
    b = run_method("fame", m, x, Target("similar"), params, reference=y)
    assert a.shape == b.shape == (112, 112)
    assert _pearson(a, b) >= 0.999


def test_converted_graph_clones_and_ebp_refuses_it_clearly(ir50):
    _native, _path, m = ir50
    c = m.clone()
    assert isinstance(c.module, OnnxGraph) and type(c.module).__name__ == "OnnxGraph"
    x, y = _pair(112)
    with torch.no_grad():
        assert torch.equal(c(x), m(x))
    with pytest.raises(ValueError, match="OnnxGraph"):
        run_method("ebp", m, x, Target("similar"), reference=y)


# --------------------------------------------------------------------------- ONNX: a torchvision classifier
def test_onnx_classifier_logits_layers_and_gradcam(r18, resnet18_random):
    net, path = r18
    m = load_model(str(path))
    assert (m.task, m.input_size, (m.mean, m.std), m.alignment) == ("classification", (224, 224), IMAGENET, None)
    assert m.class_names[1] == "goldfish"
    x = torch.rand(2, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert (m(x) - net(m.normalize(x))).abs().max().item() <= 1e-4
    shapes = [m.layer_info(v).shape for v in m.extras["stages"].values()]
    assert shapes == [(64, 56, 56), (128, 28, 28), (256, 14, 14), (512, 7, 7)]
    assert m.default_layer.startswith("layer4/") and m.default_layer.endswith("Relu")
    native = load_model("resnet18", "random")
    native.module.load_state_dict(net.state_dict())
    t = Target("class", class_index=3)
    a = run_method("gradcam", native, x[:1], t)
    b = run_method("gradcam", m, x[:1], t)
    assert _pearson(a, b) >= 0.999
    cell = Target.parse_cell(f"{m.default_layer}:3,4")  # a feature-map cell of the converted graph
    a = run_method("fame", native, x[:1], Target.parse_cell("layer4:3,4"), {"iterations": 3})
    b = run_method("fame", m, x[:1], cell, {"iterations": 3})
    assert b.shape == (224, 224) and _pearson(a, b) >= 0.999


def test_onnx_options_override_the_conventions(r18):
    net, path = r18
    m = load_model(str(path), mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25), channel_order="BGR",
                   task="embedding", input_size=160)
    assert (m.mean, m.std, m.channel_order, m.task, m.input_size) == ((0.5,) * 3, (0.25,) * 3, "BGR",
                                                                        "embedding", (160, 160))
    assert m.alignment is None  # an embedder, but not at ArcFace's 112x112
    x = torch.rand(1, 3, 160, 160)
    with torch.no_grad():
        assert (m(x) - net(m.normalize(x))).abs().max().item() <= 1e-4
    assert m.normalize(x)[0, 0].allclose((x[0, 2] - 0.5) / 0.25)  # BGR: blue first


def test_onnx_graph_that_normalises_itself_gets_raw_pixels(tmp_path):
    path = _tiny_onnx(tmp_path / "mx.onnx", prefix_nodes=[("Sub", "_minusscalar0"), ("Mul", "_mulscalar0")])
    m = load_model(str(path))
    assert m.mean == (0.0,) * 3 and m.std == pytest.approx((1 / 255,) * 3)


def test_unsupported_op_is_named_in_one_line(tmp_path):
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 8, 8])
    nodes = [helper.make_node("Relu", ["x"], ["r"]), helper.make_node("Hardmax", ["r"], ["y"], axis=1)]
    model = helper.make_model(helper.make_graph(nodes, "g", [x], [y]),
                              opset_imports=[helper.make_opsetid("", 17)])
    onnx.save(model, str(tmp_path / "hardmax.onnx"))
    msg = _error(str(tmp_path / "hardmax.onnx"))
    assert "Hardmax" in msg and "Relu" not in msg and "onnx2torch" in msg


def test_onnx_files_famegui_cannot_explain_give_one_line_errors(tmp_path):
    assert "outputs" in _error(str(_tiny_onnx(tmp_path / "det.onnx", size=64, outputs=5)))
    assert "channels last" in _error(str(_tiny_onnx(tmp_path / "nhwc.onnx", layout="NHWC")))
    (tmp_path / "junk.onnx").write_bytes(b"\x00not a protobuf at all" * 10)
    assert "not an ONNX model" in _error(str(tmp_path / "junk.onnx"))
    assert "--weights" in _error(str(_tiny_onnx(tmp_path / "t.onnx")), weights="w.pth")


# --------------------------------------------------------------------------- insightface packs on disk
def _place(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        dst.symlink_to(src)
    except OSError:
        shutil.copy(src, dst)


def test_insightface_packs_are_discovered_and_open_by_name(ir50, tmp_path, monkeypatch, capsys):
    native, path, _m = ir50
    monkeypatch.setenv("HOME", str(tmp_path))
    pack = tmp_path / ".insightface" / "models" / "buffalo_l"
    _place(path, pack / "w600k_r50.onnx")
    _tiny_onnx(pack / "det_10g.onnx", size=640, outputs=5)  # a detector: listed, not explained
    _tiny_onnx(pack / "2d106det.onnx", size=192)
    _tiny_onnx(pack / "genderage.onnx", size=96)
    _tiny_onnx(tmp_path / ".insightface" / "models" / "mine" / "custom.onnx", size=112)  # routed by its graph
    roles = {(m.pack, m.name): m.role for m in insightface_models()}
    assert roles == {("buffalo_l", "w600k_r50"): "recognition", ("buffalo_l", "det_10g"): "detection",
                     ("buffalo_l", "2d106det"): "landmarks", ("buffalo_l", "genderage"): "attributes",
                     ("mine", "custom"): "recognition"}
    names = zoo_names()
    assert "insightface:buffalo_l" in names and "insightface:mine" in names
    assert not any("det_10g" in n for n in names)
    rows = {r.name: r for r in model_catalogue()}
    assert rows["insightface:buffalo_l"].ready and not rows["insightface:buffalo_l/det_10g"].explainable
    assert find_insightface("buffalo_l/w600k_r50").path == pack / "w600k_r50.onnx"
    from famegui.cli import main

    assert main(["models"]) == 0  # `famegui models` lists the pack: ready, the detector marked unexplainable
    listed = {line.split()[0]: line for line in capsys.readouterr().out.splitlines() if line.strip()}
    assert "ready" in listed["insightface:buffalo_l"] and "w600k_r50.onnx" in listed["insightface:buffalo_l"]
    assert listed["insightface:buffalo_l/det_10g"].split()[2] == "-"
    m = load_model("insightface:buffalo_l")
    assert m.source == "insightface:buffalo_l" and m.alignment == "arcface112"
    x = torch.rand(1, 3, 112, 112)
    with torch.no_grad():
        assert (m(x) - native(x)).abs().max().item() <= 1e-4
    assert load_model("mine/custom").name == "mine/custom"
    assert "not a face-recognition model (face detector)" in _error("insightface:buffalo_l/det_10g")
    assert "famegui fetch insightface:antelopev2" in _error("insightface:antelopev2")  # only when asked


# --------------------------------------------------------------------------- timm
@pytest.fixture(scope="module")
def convnext(tmp_path_factory):
    import timm
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        net = timm.create_model("convnext_tiny", pretrained=False).eval()
    f = save_safetensors(net.state_dict(), tmp_path_factory.mktemp("timm") / "convnext_tiny.safetensors")
    return timm, net, f


def test_timm_with_a_safetensors_checkpoint_loads_and_explains(convnext):
    timm, net, f = convnext
    m = load_model("timm:convnext_tiny", str(f))
    cfg = timm.data.resolve_data_config({}, model=net)
    assert m.mean == tuple(cfg["mean"]) and m.std == tuple(cfg["std"])
    assert m.input_size == tuple(cfg["input_size"][1:]) and m.extras["crop_ratio"] == cfg["crop_pct"]
    assert m.task == "classification" and m.class_names[1] == "goldfish" and m.default_layer == "stages.3"
    assert m.weights_id == file_sha256(f)
    x = torch.rand(1, 3, *m.input_size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.allclose(m(x), net(m.normalize(x)), atol=1e-5)
    amap = run_method("gradcam", m, x, Target("class", class_index=1))
    assert amap.shape == m.input_size and np.isfinite(amap).all() and amap.std() > 0


def test_timm_weights_come_from_the_hugging_face_cache_or_nowhere(convnext, tmp_path, monkeypatch):
    _timm, net, _f = convnext
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    msg = _error("timm:convnext_tiny")
    assert "famegui fetch timm:convnext_tiny" in msg and "--weights" in msg  # loading never downloads
    snap = tmp_path / "hub" / "models--timm--convnext_tiny.in12k_ft_in1k" / "snapshots" / "0123abc"
    snap.mkdir(parents=True)
    torch.save(net.state_dict(), snap / "pytorch_model.bin")  # a torch file this time, read weights-only
    assert hf_cached_file("timm/convnext_tiny.in12k_ft_in1k") == snap / "pytorch_model.bin"
    assert "timm:convnext_tiny.in12k_ft_in1k" in zoo_names()
    m = load_model("timm:convnext_tiny")
    assert m.weights_id == file_sha256(snap / "pytorch_model.bin")
    assert "did you mean timm:convnext_tiny" in _error("timm:convnext_tinny", "random")


# --------------------------------------------------------------------------- safetensors everywhere
def test_safetensors_for_torchvision_and_face_architectures(tmp_path):
    torch.manual_seed(3)
    net = torchvision.models.resnet18().eval()
    f = save_safetensors(net.state_dict(), tmp_path / "r18.safetensors")
    m = load_model("resnet18", str(f))
    x = torch.rand(1, 3, 224, 224)
    net.to(memory_format=torch.channels_last)  # the layout famegui keeps weights in: the same kernels run
    assert torch.equal(m(x), net(m.normalize(x))) and m.weights_id == file_sha256(f)
    sniffed = tmp_path / "r18_saved_as.pth"  # a safetensors file whatever its name
    shutil.copy(f, sniffed)
    assert looks_like_safetensors(sniffed) and torch.equal(load_model("resnet18", str(sniffed))(x), m(x))
    face = build_face_network("iresnet18").eval()
    g = save_safetensors({"module." + k: v for k, v in face.state_dict().items()}, tmp_path / "backbone.safetensors")
    fm = load_model("iresnet18", str(g))
    y = torch.rand(1, 3, 112, 112)
    with torch.no_grad():
        assert torch.allclose(fm(y), face(fm.normalize(y)), atol=1e-6)
    (tmp_path / "broken.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    assert "not a valid .safetensors" in _error("resnet18", str(tmp_path / "broken.safetensors"))


# --------------------------------------------------------------------------- pickles that would run code
class _RunsCode:
    """Unpickling this runs ``exec``: it writes the marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (exec, (f"open({str(self.marker)!r}, 'w').write('code ran')",))


def test_a_pickle_that_would_run_code_is_refused(tmp_path):
    marker = tmp_path / "marker.txt"
    evil = tmp_path / "weights.pth"
    torch.save({"state_dict": {"w": torch.zeros(1)}, "payload": _RunsCode(marker)}, evil)
    for spec in ("resnet18", "iresnet50", "timm:resnet18"):
        msg = _error(spec, str(evil))
        assert "arbitrary code" in msg and "builtins.exec" in msg, msg
        assert "state_dict" in msg and "safetensors" in msg, msg
    assert "TorchScript" in _error(str(evil))  # as a model file: recognised as not TorchScript, never unpickled
    assert not marker.exists()
    torch.load(evil, weights_only=False)  # the file really is booby-trapped: a full unpickle runs the code
    assert marker.read_text() == "code ran"
    os.remove(marker)


def test_a_training_checkpoint_with_python_objects_says_how_to_convert(tmp_path):
    ckpt = tmp_path / "ckpt.pth"
    sd = torchvision.models.resnet18().state_dict()
    torch.save({"state_dict": sd, "args": argparse.Namespace(lr=0.1)}, ckpt)
    with pytest.raises(UnsafeWeightsError) as info:
        load_model("resnet18", str(ckpt))
    msg = str(info.value)
    assert "argparse.Namespace" in msg and "save_file" in msg and "\n" not in msg


def test_cli_normalisation_flags_reach_the_onnx_loader(tmp_path, capsys):
    """--mean/--std/--channel-order override the insightface conventions; a bad value is one line, before loading."""
    from famegui.cli import build_parser, main
    from famegui.cli.common import load_model as load_from_args

    path = _tiny_onnx(tmp_path / "tiny.onnx")
    args = build_parser().parse_args(["layers", "--model", str(path), "--mean", "0.25", "--std", "0.5,0.4,0.3",
                                      "--channel-order", "BGR"])
    m = load_from_args(args)
    assert m.mean == (0.25, 0.25, 0.25) and m.std == (0.5, 0.4, 0.3) and m.channel_order == "BGR"
    for flag, value in (("--mean", "a,b"), ("--mean", "0.1,0.2"), ("--std", "0"), ("--std", "nan")):
        assert main(["layers", "--model", str(path), flag, value]) == 1
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and flag in err[0]


def test_a_file_that_is_no_pickle_is_not_called_unsafe(tmp_path):
    """Text saved as .pth is "not a PyTorch weights file", not a pickle of Python objects."""
    bad = tmp_path / "w.pth"
    for junk in (b"not weights", b"these are not weights", bytes(range(256))):
        bad.write_bytes(junk)
        msg = _error("resnet18", str(bad))
        assert "not a PyTorch weights file" in msg and "arbitrary code" not in msg, (junk[:12], msg)
