"""ArcFace IResNets and AdaFace IR nets: layouts, checkpoint loading, input handling, errors."""
from __future__ import annotations

import hashlib

import pytest
import torch
from torch import nn

from famegui.models.iresnet import (
    DEFAULT_FACE_THRESHOLD,
    FACE_ARCHS,
    AdaFaceIR,
    build_face_network,
    load_face_checkpoint,
    wrap_face_network,
)
from famegui.models.wrapper import ModelLoadError, ModelWrapper

ARCFACE = ("iresnet18", "iresnet34", "iresnet50", "iresnet100")
ADAFACE = ("adaface_ir18", "adaface_ir50", "adaface_ir101")


def _seeded_network(arch: str, seed: int = 0) -> nn.Module:
    """A network with random weights *and* non-trivial BatchNorm statistics/affines and PReLU slopes,
    so that a buffer that fails to load would change the output."""
    torch.manual_seed(seed)
    net = build_face_network(arch)
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.running_mean.copy_(0.1 * torch.randn(m.running_mean.shape, generator=g))
                m.running_var.copy_(0.5 + torch.rand(m.running_var.shape, generator=g))
                if m.affine:
                    m.weight.copy_(0.5 + torch.rand(m.weight.shape, generator=g))
                    m.bias.copy_(0.1 * torch.randn(m.bias.shape, generator=g))
            elif isinstance(m, nn.PReLU):
                m.weight.copy_(0.4 * torch.rand(m.weight.shape, generator=g))
    return net.eval()


def _save_real_layout(arch: str, net: nn.Module, path) -> None:
    """The on-disk layout of the public checkpoints of each family."""
    sd = net.state_dict()
    if arch.startswith("adaface"):
        # PyTorch-Lightning checkpoint: backbone under "model.", the AdaFace head under "head."
        ckpt = {
            "epoch": 25,
            "state_dict": {**{"model." + k: v for k, v in sd.items()},
                           "head.kernel": torch.randn(512, 10),
                           "head.t": torch.zeros(1)},
        }
        torch.save(ckpt, path)
    else:
        torch.save(sd, path)  # arcface_torch's backbone.pth is a plain state dict


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """arch -> (original network, checkpoint path); each network is built and saved at most once."""
    root = tmp_path_factory.mktemp("face_ckpts")
    cache: dict[str, tuple[nn.Module, object]] = {}

    def get(arch: str):
        if arch not in cache:
            net = _seeded_network(arch)
            path = root / f"{arch}.ckpt"
            _save_real_layout(arch, net, path)
            net.to(memory_format=torch.channels_last)  # the layout famegui keeps weights in: the same kernels
            cache[arch] = (net, path)
        return cache[arch]

    yield get
    for _net, path in cache.values():  # these files are up to 260 MB each
        path.unlink(missing_ok=True)


def _x(batch: int, seed: int = 3) -> torch.Tensor:
    return torch.rand(batch, 3, 112, 112, generator=torch.Generator().manual_seed(seed))


# --------------------------------------------------------------------------- loading round trip
@pytest.mark.parametrize("arch", list(FACE_ARCHS))
def test_checkpoint_round_trip_gives_identical_embeddings(arch, saved):
    net, path = saved(arch)
    w = load_face_checkpoint(arch, path)
    assert isinstance(w, ModelWrapper)
    assert (w.name, w.source, w.task, w.alignment) == (arch, arch, "embedding", "arcface112")
    assert w.input_size == (112, 112)
    assert w.mean == (0.5, 0.5, 0.5) and w.std == (0.5, 0.5, 0.5)
    assert w.weights_id == hashlib.sha256(path.read_bytes()).hexdigest()
    assert w.threshold == pytest.approx(DEFAULT_FACE_THRESHOLD) and 0.0 < w.threshold < 1.0

    big = arch in ("iresnet100", "adaface_ir101")
    x = _x(1 if big else 2)
    with torch.no_grad():
        got = w(x)
        if arch in ADAFACE:
            assert w.channel_order == "BGR"
            want = net((x.flip(1) - 0.5) / 0.5)
        else:
            assert w.channel_order == "RGB"
            want = net((x - 0.5) / 0.5)
    assert got.shape == (x.shape[0], 512)
    assert torch.isfinite(got).all()
    torch.testing.assert_close(got, want, rtol=0, atol=1e-6)
    # every saved tensor, buffers included, arrived unchanged
    loaded = w.module.state_dict()
    saved_sd = net.state_dict()
    assert loaded.keys() == saved_sd.keys()
    assert all(torch.equal(loaded[k], saved_sd[k]) for k in saved_sd)


def test_adaface_wrapper_feeds_bgr(saved):
    net, path = saved("adaface_ir18")
    w = load_face_checkpoint("adaface_ir18", path)
    x = _x(2, seed=11)
    with torch.no_grad():
        e_rgb = w(x)
        e_flipped = w(x.flip(1))
        as_bgr = net((x.flip(1) - 0.5) / 0.5)
        as_rgb = net((x - 0.5) / 0.5)
    # a channel swap changes the embedding, so channel order is observable ...
    assert not torch.allclose(e_rgb, e_flipped, atol=1e-3)
    # ... and the wrapper feeds the network BGR, as the original AdaFace does
    torch.testing.assert_close(e_rgb, as_bgr, rtol=0, atol=1e-6)
    assert not torch.allclose(e_rgb, as_rgb, atol=1e-3)
    torch.testing.assert_close(e_flipped, as_rgb, rtol=0, atol=1e-6)
    # AdaFace's first output is unit length; forward_with_norm also gives the norm
    torch.testing.assert_close(e_rgb.norm(dim=1), torch.ones(2), rtol=0, atol=1e-5)
    with torch.no_grad():
        emb, norm = net.forward_with_norm((x.flip(1) - 0.5) / 0.5)
    assert norm.shape == (2, 1) and (norm > 0).all()
    torch.testing.assert_close(emb, e_rgb, rtol=0, atol=1e-6)


def test_arcface_wrapper_feeds_rgb(saved):
    net, path = saved("iresnet18")
    w = load_face_checkpoint("iresnet18", path)
    x = _x(1, seed=5)
    with torch.no_grad():
        assert not torch.allclose(w(x), w(x.flip(1)), atol=1e-3)
        torch.testing.assert_close(w(x.flip(1)), net((x.flip(1) - 0.5) / 0.5), rtol=0, atol=1e-6)


def test_prefixed_and_training_checkpoints_load(saved, tmp_path):
    net, _ = saved("iresnet18")
    sd = net.state_dict()
    ddp = tmp_path / "ddp.pth"
    torch.save({"module." + k: v for k, v in sd.items()}, ddp)
    train = tmp_path / "checkpoint_gpu_0.pt"  # arcface_torch's resumable training checkpoint
    torch.save({"epoch": 3, "global_step": 10, "state_dict_backbone": sd,
                "state_dict_softmax_fc": {"weight": torch.zeros(4, 512)}}, train)
    x = _x(1)
    with torch.no_grad():
        want = net(x * 2 - 1)
        for p in (ddp, train):
            torch.testing.assert_close(load_face_checkpoint("iresnet18", p)(x), want, rtol=0, atol=1e-6)
    # half-precision files without BatchNorm's num_batches_tracked counters load as float32
    half = {k: (v.half() if v.is_floating_point() else v) for k, v in sd.items() if "num_batches" not in k}
    fp16 = tmp_path / "fp16.pth"
    torch.save(half, fp16)
    loaded = load_face_checkpoint("iresnet18", fp16).module.state_dict()
    assert all(loaded[k].dtype == torch.float32 and torch.equal(loaded[k], v.float()) for k, v in half.items())


# --------------------------------------------------------------------------- layouts
def test_arcface_iresnet50_uses_insightface_key_names():
    sd = build_face_network("iresnet50").state_dict()
    # names and shapes from insightface recognition/arcface_torch/backbones/iresnet.py
    known = {
        "conv1.weight": (64, 3, 3, 3),
        "bn1.running_var": (64,),
        "prelu.weight": (64,),
        "layer1.0.bn1.weight": (64,),
        "layer1.0.conv1.weight": (64, 64, 3, 3),
        "layer1.0.bn2.running_mean": (64,),
        "layer1.0.prelu.weight": (64,),
        "layer1.0.conv2.weight": (64, 64, 3, 3),
        "layer1.0.bn3.bias": (64,),
        "layer1.0.downsample.0.weight": (64, 64, 1, 1),  # stride 2 even at equal width
        "layer1.0.downsample.1.running_var": (64,),
        "layer2.0.downsample.0.weight": (128, 64, 1, 1),
        "layer3.13.conv2.weight": (256, 256, 3, 3),
        "layer4.2.bn3.weight": (512,),
        "bn2.weight": (512,),
        "fc.weight": (512, 512 * 7 * 7),
        "fc.bias": (512,),
        "features.weight": (512,),
        "features.bias": (512,),
        "features.running_mean": (512,),
    }
    for key, shape in known.items():
        assert key in sd, key
        assert tuple(sd[key].shape) == shape, key
    for absent in ("layer3.14.conv1.weight", "layer4.3.bn1.weight", "layer1.1.downsample.0.weight"):
        assert absent not in sd


def test_arcface_sizes_match_published_onnx_exports():
    # FastDeploy lists the ONNX exports of insightface's ms1mv3_arcface_r18/r34/r50/r100 as
    # 92/131/167/249 MB; those files hold the float32 weights of exactly these backbones.
    published_mib = {"iresnet18": 92, "iresnet34": 131, "iresnet50": 167, "iresnet100": 249}
    for arch, mib in published_mib.items():
        net = build_face_network(arch)
        n = sum(p.numel() for p in net.parameters())
        n += sum(b.numel() for b in net.buffers() if b.is_floating_point())
        assert abs(n * 4 / 2**20 - mib) < 1.5, (arch, n)


def test_adaface_ir50_uses_adaface_key_names():
    sd = build_face_network("adaface_ir50").state_dict()
    # names and shapes from mk-minchul/AdaFace net.py (Backbone, BasicBlockIR, get_blocks(50))
    known = {
        "input_layer.0.weight": (64, 3, 3, 3),
        "input_layer.1.running_mean": (64,),
        "input_layer.2.weight": (64,),
        "body.0.res_layer.0.weight": (64,),
        "body.0.res_layer.1.weight": (64, 64, 3, 3),
        "body.0.res_layer.2.running_var": (64,),
        "body.0.res_layer.3.weight": (64,),
        "body.0.res_layer.4.weight": (64, 64, 3, 3),
        "body.0.res_layer.5.bias": (64,),
        "body.3.shortcut_layer.0.weight": (128, 64, 1, 1),
        "body.3.shortcut_layer.1.running_mean": (128,),
        "body.7.shortcut_layer.0.weight": (256, 128, 1, 1),
        "body.21.shortcut_layer.0.weight": (512, 256, 1, 1),
        "body.23.res_layer.4.weight": (512, 512, 3, 3),
        "output_layer.0.weight": (512,),
        "output_layer.3.weight": (512, 512 * 7 * 7),
        "output_layer.3.bias": (512,),
        "output_layer.4.running_mean": (512,),
        "output_layer.4.running_var": (512,),
    }
    for key, shape in known.items():
        assert key in sd, key
        assert tuple(sd[key].shape) == shape, key
    # first block keeps 64 channels: its shortcut is a parameter-free MaxPool2d(1, 2);
    # the final BatchNorm1d has affine=False; IR-50 has 3+4+14+3 = 24 blocks
    for absent in ("body.0.shortcut_layer.0.weight", "body.1.shortcut_layer.0.weight",
                   "output_layer.4.weight", "output_layer.4.bias", "body.24.res_layer.0.weight"):
        assert absent not in sd, absent


@pytest.mark.parametrize("arch,blocks", [("adaface_ir18", 8), ("adaface_ir50", 24), ("adaface_ir101", 49)])
def test_adaface_block_counts(arch, blocks):
    net = build_face_network(arch)
    assert isinstance(net, AdaFaceIR)
    assert len(net.body) == blocks


def test_layers_and_output_shapes_arcface():
    w = wrap_face_network("iresnet18")
    assert w.default_layer == "layer4"
    assert w.extras["stages"] == {"stage1": "layer1", "stage2": "layer2", "stage3": "layer3", "stage4": "layer4"}
    shapes = {layer.name: layer.shape for layer in w.layers()}
    assert shapes["layer1"] == (64, 56, 56)
    assert shapes["layer2"] == (128, 28, 28)
    assert shapes["layer3"] == (256, 14, 14)
    assert shapes["layer4"] == (512, 7, 7)
    assert shapes["layer4.1.conv2"] == (512, 7, 7)
    assert shapes["fc"] == (512,) and shapes["features"] == (512,)
    x = _x(3)
    with torch.no_grad():
        assert w(x).shape == (3, 512)
        assert w.activation(x[:1], "layer4").shape == (1, 512, 7, 7)


def test_layers_and_output_shapes_adaface():
    w = wrap_face_network("adaface_ir18")
    assert w.channel_order == "BGR"
    assert w.default_layer == "body.7"
    assert w.extras["stages"] == {"stage1": "body.1", "stage2": "body.3", "stage3": "body.5", "stage4": "body.7"}
    shapes = {layer.name: layer.shape for layer in w.layers()}
    assert [n for n in shapes if n.count(".") == 1 and n.startswith("body.")] == [f"body.{i}" for i in range(8)]
    assert shapes["body.1"] == (64, 56, 56)
    assert shapes["body.3"] == (128, 28, 28)
    assert shapes["body.5"] == (256, 14, 14)
    assert shapes["body.7"] == (512, 7, 7)
    assert shapes["output_layer"] == (512,)
    with torch.no_grad():
        assert w(_x(2)).shape == (2, 512)
        assert w.activation(_x(1), "body.7").shape == (1, 512, 7, 7)


def test_activations_are_not_modified_in_place():
    # a hook that keeps a block's inner output must still see it unchanged after the forward pass
    net = build_face_network("iresnet18").eval()
    kept = {}

    def keep(_m, _i, out):
        kept["bn3"] = (out, out.clone())

    net.layer1[0].bn3.register_forward_hook(keep)
    with torch.no_grad():
        net(_x(1) * 2 - 1)
    out, copy = kept["bn3"]
    assert torch.equal(out, copy)
    assert not any(getattr(m, "inplace", False) for m in net.modules())


# --------------------------------------------------------------------------- bad files
def _load_error(arch, path) -> str:
    with pytest.raises(ModelLoadError) as info:
        load_face_checkpoint(arch, path)
    msg = str(info.value)
    assert msg and "\n" not in msg
    return msg


def test_missing_file(tmp_path):
    msg = _load_error("iresnet50", tmp_path / "nope" / "backbone.pth")
    assert "backbone.pth" in msg and "not found" in msg and "insightface" in msg
    msg = _load_error("adaface_ir101", tmp_path / "adaface_ir101_webface12m.ckpt")
    assert "adaface_ir101_webface12m.ckpt" in msg and "AdaFace" in msg


def test_text_file(tmp_path):
    p = tmp_path / "backbone.pth"
    p.write_text("this is not a checkpoint\n")
    msg = _load_error("iresnet50", p)
    assert "not a PyTorch checkpoint" in msg and "IResNet-50" in msg


def test_arcface_file_given_as_adaface(saved):
    _net, path = saved("iresnet18")
    msg = _load_error("adaface_ir18", path)
    assert "adaface_ir18" in msg and "arcface_torch" in msg and "use iresnet18" in msg


def test_adaface_file_given_as_arcface(saved):
    _net, path = saved("adaface_ir18")
    msg = _load_error("iresnet18", path)
    assert "iresnet18" in msg and "AdaFace" in msg and "use adaface_ir18" in msg


def test_wrong_depth(saved):
    _net, path = saved("iresnet18")
    msg = _load_error("iresnet50", path)
    assert "IResNet-50" in msg and "use iresnet18" in msg
    _net, path = saved("adaface_ir18")
    assert "use adaface_ir18" in _load_error("adaface_ir50", path)


def test_torchvision_resnet18_state_dict(tmp_path):
    from torchvision.models import resnet18

    p = tmp_path / "resnet18.pth"
    torch.save(resnet18(weights=None).state_dict(), p)
    msg = _load_error("iresnet18", p)
    assert "torchvision" in msg and "ResNet-18" in msg and "iresnet18" in msg


def test_wrong_shapes(saved, tmp_path):
    net, _ = saved("iresnet18")
    sd = dict(net.state_dict())
    sd["fc.weight"] = torch.zeros(512, 100)
    p = tmp_path / "bad_fc.pth"
    torch.save(sd, p)
    msg = _load_error("iresnet18", p)
    assert "fc.weight" in msg and "(512, 100)" in msg


def test_pickled_module_and_empty_dict(tmp_path):
    p = tmp_path / "whole_model.pth"
    torch.save(nn.Linear(2, 2), p)  # a pickled module, not a state dict
    assert "state_dict" in _load_error("iresnet18", p)
    q = tmp_path / "empty.pth"
    torch.save({"epoch": 1}, q)
    assert "no weight tensors" in _load_error("adaface_ir50", q)


def test_unknown_arch(saved):
    _net, path = saved("iresnet18")
    msg = _load_error("resnet18", path)
    assert "iresnet18" in msg and "adaface_ir101" in msg
    with pytest.raises(ModelLoadError):
        build_face_network("iresnet200")
