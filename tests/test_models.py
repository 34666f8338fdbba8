"""Loaders: torchvision classifiers with weight files, TorchScript, entry points, and their errors."""
import sys
import textwrap

import pytest
import torch
import torchvision

from famegui.models.wrapper import ModelLoadError
from famegui.models.zoo import TORCHVISION_CLASSIFIERS, load_model, torchvision_cache_file

REQUIRED = ["resnet18", "resnet50", "resnet101", "resnet152", "vgg16", "vgg19", "densenet121",
            "convnext_tiny", "mobilenet_v3_large", "efficientnet_b0"]


def test_zoo_lists_the_required_classifiers():
    assert set(REQUIRED) <= set(TORCHVISION_CLASSIFIERS)


@pytest.mark.parametrize("name", REQUIRED)
def test_every_required_classifier_builds_and_lists_layers(name):
    m = load_model(name, "random")
    assert m.task == "classification" and len(m.class_names) == 1000
    assert m.class_names[1] == "goldfish"  # the real ImageNet names, offline
    h, w = m.input_size
    layers = m.layers()
    assert any(layer.is_spatial for layer in layers)
    assert m.default_layer in {layer.name for layer in layers}
    assert m.layer_info(m.default_layer).is_spatial
    out = m(torch.rand(1, 3, h, w))
    assert out.shape == (1, 1000) and torch.isfinite(out).all()


def test_resnet_layer_shapes_from_one_dummy_pass(resnet18_random):
    shapes = {layer.name: layer.shape for layer in resnet18_random.layers()}
    assert shapes["layer1"] == (64, 56, 56)
    assert shapes["layer4"] == (512, 7, 7)
    assert shapes["fc"] == (1000,)


def same_layout(net: torch.nn.Module) -> torch.nn.Module:
    """A torchvision network in the channels-last layout famegui keeps weights in (bit-equal outputs need
    the same convolution kernels)."""
    return net.to(memory_format=torch.channels_last)


@pytest.mark.parametrize("layout", ["state_dict", "checkpoint", "dataparallel"])
def test_weights_round_trip_gives_identical_outputs(tmp_path, layout):
    torch.manual_seed(3)
    net = torchvision.models.resnet18()
    sd = net.state_dict()
    obj = {"state_dict": sd, "epoch": 7} if layout == "checkpoint" else sd
    if layout == "dataparallel":
        obj = {"module." + k: v for k, v in sd.items()}
    f = tmp_path / "w.pth"
    torch.save(obj, f)
    m = load_model("resnet18", str(f))
    x = torch.rand(2, 3, 224, 224)
    expected = same_layout(net).eval()(m.normalize(x))
    assert torch.equal(m(x), expected)
    assert len(m.weights_id) == 64


def test_finetuned_head_with_other_class_count(tmp_path):
    net = torchvision.models.resnet18(num_classes=10)
    torch.save(net.state_dict(), tmp_path / "ten.pth")
    m = load_model("resnet18", str(tmp_path / "ten.pth"))
    assert m(torch.rand(1, 3, 224, 224)).shape == (1, 10)
    assert m.class_names[3] == "class 3"


def test_torchvision_cache_is_used_when_present(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    expected = torchvision_cache_file("resnet18")
    assert str(expected).startswith(str(tmp_path))
    with pytest.raises(ModelLoadError) as e:
        load_model("resnet18")
    msg = str(e.value)
    assert "\n" not in msg and expected.name in msg and "--weights" in msg
    expected.parent.mkdir(parents=True)
    torch.manual_seed(5)
    net = torchvision.models.resnet18()
    torch.save(net.state_dict(), expected)
    m = load_model("resnet18")
    x = torch.rand(1, 3, 224, 224)
    assert torch.equal(m(x), same_layout(net).eval()(m.normalize(x)))


def test_wrong_weights_give_one_line_errors(tmp_path):
    torch.save(torchvision.models.vgg11().state_dict(), tmp_path / "vgg.pth")
    (tmp_path / "notes.txt").write_text("hello")
    torch.save({"a": 1}, tmp_path / "nodict.pth")
    cases = {str(tmp_path / "vgg.pth"): "does not fit resnet18",
             str(tmp_path / "notes.txt"): "not a PyTorch weights file",
             str(tmp_path / "nodict.pth"): "no state dict",
             str(tmp_path / "missing.pth"): "not found"}
    for path, fragment in cases.items():
        with pytest.raises(ModelLoadError) as e:
            load_model("resnet18", path)
        assert fragment in str(e.value) and "\n" not in str(e.value)


def test_torchscript_file_loads(tmp_path):
    torch.manual_seed(4)
    net = torchvision.models.resnet18().eval()
    f = tmp_path / "r18.pt"
    torch.jit.save(torch.jit.trace(net, torch.rand(1, 3, 224, 224)), str(f))
    m = load_model(str(f))
    assert m.task == "classification" and len(m.class_names) == 1000
    x = torch.rand(1, 3, 224, 224)
    assert torch.allclose(m(x), net(m.normalize(x)), atol=1e-5)


def test_entry_point_loads(tmp_path, monkeypatch):
    (tmp_path / "mynets.py").write_text(textwrap.dedent("""
        import torch
        from torch import nn
        def tiny():
            torch.manual_seed(0)
            return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, stride=2),
                                 nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 16))
        def broken():
            raise RuntimeError("boom")
        NOT_A_MODEL = 3
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    m = load_model("mynets:tiny", input_size=32, task="embedding")
    assert m.task == "embedding" and m.input_size == (32, 32)
    assert [layer.name for layer in m.spatial_layers()][:2] == ["0", "1"]
    for spec, frag in [("mynets:broken", "boom"), ("mynets:NOT_A_MODEL", "not a torch.nn.Module"),
                       ("no_such_pkg_xyz:f", "cannot import"), ("mynets:nope", "no attribute")]:
        with pytest.raises(ModelLoadError, match=frag):
            load_model(spec)
    sys.modules.pop("mynets", None)


def test_unknown_model_suggests_a_name():
    with pytest.raises(ModelLoadError, match="did you mean resnet18"):
        load_model("resnet81")


def test_torchscript_cell_target_is_refused_clearly(tmp_path):
    net = torchvision.models.resnet18().eval()
    f = tmp_path / "r18.pt"
    torch.jit.save(torch.jit.trace(net, torch.rand(1, 3, 224, 224)), str(f))
    m = load_model(str(f))
    assert m.layers() == []
    with pytest.raises(ValueError, match="TorchScript"):
        m.activation(torch.rand(1, 3, 224, 224), "layer4")
