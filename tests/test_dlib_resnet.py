"""dlib face ResNet port: parser, network layout, cache, and dlib itself as the oracle."""
from __future__ import annotations

import time
from pathlib import Path

import face_recognition_models as frm
import numpy as np
import pytest
import torch
from torch import nn

from famegui.models.dlib_resnet import (
    DlibModelFormatError,
    DlibResNet,
    load_dlib_resnet,
    parse_dlib_resnet,
)
from famegui.models.wrapper import ModelLoadError, ModelWrapper
from famegui.paths import file_sha256, resource_path

MODEL = Path(frm.face_recognition_model_location())
SAMPLES = [
    ("london_001", "neutral.jpg"),
    ("london_001", "smiling.jpg"),
    ("lisa_debruine", "lisa_lisa1.jpg"),
    ("barack_obama", "portrait_2012.jpg"),
    ("joe_biden", "vp_portrait.jpg"),
    ("london_005", "neutral.jpg"),
    ("hard_cases", "obama_lowres_320x240.jpg"),
]
STAGES = [
    ("stem", (32, 72, 72)),
    ("pool", (32, 35, 35)),
    ("stage1", (32, 35, 35)),
    ("stage2", (64, 17, 17)),
    ("stage3", (128, 8, 8)),
    ("stage4", (256, 4, 4)),
    ("stage5", (256, 2, 2)),
    ("fc", (128,)),
]


@pytest.fixture(scope="module")
def wrapper() -> ModelWrapper:
    return load_dlib_resnet(use_cache=False)  # keeps the user's cache out of the tests


@pytest.fixture(scope="module")
def chips() -> list[tuple[str, np.ndarray]]:
    dlib = pytest.importorskip("dlib")
    detector = dlib.get_frontal_face_detector()
    predictor = dlib.shape_predictor(frm.pose_predictor_five_point_model_location())
    out = []
    for person, name in SAMPLES:
        img = dlib.load_rgb_image(str(resource_path("faces", person, name)))
        dets = detector(img, 1)
        assert len(dets) >= 1, f"no face found in {person}/{name}"
        shape = predictor(img, dets[0])
        out.append((f"{person}/{name}", dlib.get_face_chip(img, shape, size=150, padding=0.25)))
    return out


def _to_input(chip: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(chip)).permute(2, 0, 1)[None].float() / 255.0


def _probe() -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    return torch.rand(2, 3, 150, 150, generator=g)


# --------------------------------------------------------------------------- oracle
def test_matches_dlib_descriptor(wrapper: ModelWrapper, chips) -> None:
    dlib = pytest.importorskip("dlib")
    reference = dlib.face_recognition_model_v1(str(MODEL))
    worst_cos, worst_abs = 1.0, 0.0
    for name, chip in chips:
        ref = np.array(reference.compute_face_descriptor(chip), dtype=np.float64)
        with torch.no_grad():
            ours = wrapper(_to_input(chip))[0].double().numpy()
        assert ours.shape == (128,)
        cos = float(ours @ ref / (np.linalg.norm(ours) * np.linalg.norm(ref)))
        mad = float(np.abs(ours - ref).max())
        assert cos >= 0.99999, f"{name}: cosine {cos}"
        assert mad < 1e-4, f"{name}: max abs diff {mad}"
        worst_cos, worst_abs = min(worst_cos, cos), max(worst_abs, mad)
        # raw descriptor, not unit length (dlib's are ~1.2-1.6 long)
        assert 1.0 < np.linalg.norm(ours) < 2.0
    print(f"\ndlib oracle: worst cosine {worst_cos:.9f}, worst max abs diff {worst_abs:.2e}")


def test_batch_equals_single(wrapper: ModelWrapper, chips) -> None:
    x = torch.cat([_to_input(c) for _, c in chips[:3]])
    with torch.no_grad():
        batch = wrapper(x)
        single = torch.cat([wrapper(x[i : i + 1]) for i in range(3)])
    torch.testing.assert_close(batch, single, rtol=1e-4, atol=1e-5)


def test_same_person_closer_than_others(wrapper: ModelWrapper, chips) -> None:
    emb = dict(chips)
    with torch.no_grad():
        e = {k: wrapper(_to_input(v))[0] for k, v in emb.items()}
    same = (e["london_001/neutral.jpg"] - e["london_001/smiling.jpg"]).norm().item()
    other = (e["london_001/neutral.jpg"] - e["barack_obama/portrait_2012.jpg"]).norm().item()
    assert same < wrapper.distance_threshold < other


# --------------------------------------------------------------------------- layout
def test_wrapper_fields(wrapper: ModelWrapper) -> None:
    assert wrapper.name == "dlib-resnet"
    assert wrapper.task == "embedding"
    assert wrapper.input_size == (150, 150)
    assert wrapper.alignment == "dlib150"
    assert wrapper.default_layer == "stage4"
    assert wrapper.threshold is None
    assert wrapper.distance_threshold == pytest.approx(0.6)
    assert wrapper.weights_id == file_sha256(MODEL)
    assert wrapper.std == pytest.approx((256 / 255,) * 3)
    assert np.allclose(np.array(wrapper.mean) * 255, [122.782, 117.001, 104.298], atol=1e-3)
    # [0,1] input maps to dlib's (x255 - mean) / 256
    x = _probe()[:1]
    expected = (x * 255 - torch.tensor([122.782, 117.001, 104.298]).view(1, 3, 1, 1)) / 256
    torch.testing.assert_close(wrapper.normalize(x), expected, rtol=0, atol=1e-5)


def test_parse_result() -> None:
    p = parse_dlib_resnet(MODEL)
    assert p["input_size"] == (150, 150)
    assert p["distance_threshold"] == pytest.approx(0.6)
    assert p["stem"]["weight"].shape == (32, 3, 7, 7)
    assert tuple(p["stem"]["stride"]) == (2, 2) and tuple(p["stem"]["pad"]) == (0, 0)
    assert [len(s) for s in p["stages"]] == [3, 4, 3, 3, 1]
    for stage in p["stages"]:
        for k, unit in enumerate(stage):
            down = unit["shortcut"] is not None
            assert down == (k == 0 and stage is not p["stages"][0])
            # stride-2 convs are unpadded, stride-1 convs keep the size
            assert tuple(unit["conv1"]["pad"]) == ((0, 0) if down else (1, 1))
            assert tuple(unit["conv2"]["pad"]) == (1, 1)
    assert p["fc"]["weight"].shape == (128, 256) and p["fc"]["bias"] is None
    n = sum(t.numel() for t in _tensors(p))
    assert 5_000_000 < n < 6_000_000


def _tensors(obj):
    if isinstance(obj, torch.Tensor):
        yield obj
    elif isinstance(obj, dict):
        for v in obj.values():
            yield from _tensors(v)
    elif isinstance(obj, (list, tuple)):
        for v in obj:
            yield from _tensors(v)


def test_layer_names_and_shapes(wrapper: ModelWrapper) -> None:
    top = [name for name, _ in wrapper.module.named_children()]
    assert top == [n for n, _ in STAGES]
    infos = {info.name: info for info in wrapper.layers()}
    for name, shape in STAGES:
        assert infos[name].shape == shape, name
    assert wrapper.layer_info("stage4").shape == (256, 4, 4)
    assert wrapper.layer_info("stage2.0").shape == (64, 17, 17)
    assert wrapper.layer_info("stage2.3").shape == (64, 17, 17)
    assert wrapper.layer_info("stage5.0.conv1").shape == (256, 1, 1)
    with pytest.raises(KeyError):
        wrapper.layer_info("stage6")
    # activation() stops at the layer and agrees with the full pass
    x = _probe()
    with torch.no_grad():
        act = wrapper.activation(x, "stage4")
    assert act.shape == (2, 256, 4, 4)


def test_plain_torch_modules(wrapper: ModelWrapper) -> None:
    net = wrapper.module
    assert isinstance(net, DlibResNet)
    for stage in ("stage1", "stage2", "stage3", "stage4", "stage5"):
        assert isinstance(getattr(net, stage), nn.Sequential)
    convs = [m for m in net.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 29 and all(type(m) is nn.Conv2d for m in convs)
    relus = [m for m in net.modules() if isinstance(m, nn.ReLU)]
    assert relus and not any(m.inplace for m in relus)
    assert type(net.fc) is nn.Linear and type(net.pool) is nn.MaxPool2d
    assert all(p.device.type == "cpu" and p.dtype == torch.float32 for p in net.parameters())


def test_gradients_reach_input_and_gradcam(wrapper: ModelWrapper, chips) -> None:
    x = _to_input(chips[0][1]).requires_grad_(True)
    wrapper(x).square().sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0

    gradcam = pytest.importorskip("pytorch_grad_cam")
    with torch.no_grad():
        ref = wrapper(_to_input(chips[1][1]))[0]
    # the wrapper freezes the weights, so the graph has to start at the input
    z = wrapper.normalize(_to_input(chips[0][1])).requires_grad_(True)
    with gradcam.GradCAM(model=wrapper.module, target_layers=[wrapper.module.stage5]) as cam:
        heat = cam(input_tensor=z, targets=[lambda e: (e * ref).sum()])
    assert heat.shape == (1, 150, 150) and np.isfinite(heat).all() and heat.max() > 0


# --------------------------------------------------------------------------- bad files
def _assert_one_line(err: pytest.ExceptionInfo) -> str:
    msg = str(err.value)
    assert msg and "\n" not in msg
    return msg


def test_truncated_file(tmp_path: Path) -> None:
    data = MODEL.read_bytes()
    bad = tmp_path / "half.dat"
    bad.write_bytes(data[: len(data) // 2])
    t0 = time.perf_counter()
    with pytest.raises(DlibModelFormatError) as err:
        parse_dlib_resnet(bad)
    assert "truncated" in _assert_one_line(err)
    with pytest.raises(ModelLoadError):  # the base class the GUI catches
        load_dlib_resnet(bad, use_cache=False)
    for cut in (0, 1, 20, 700, 5000, len(data) - 1):
        bad.write_bytes(data[:cut])
        with pytest.raises(DlibModelFormatError):
            parse_dlib_resnet(bad)
    assert time.perf_counter() - t0 < 10


def test_trailing_bytes(tmp_path: Path) -> None:
    bad = tmp_path / "long.dat"
    bad.write_bytes(MODEL.read_bytes() + b"\x00\x01")
    with pytest.raises(DlibModelFormatError) as err:
        parse_dlib_resnet(bad)
    assert "trailing" in _assert_one_line(err)


@pytest.mark.parametrize(
    "blob",
    [
        b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x10\x00\x00\x00\x10\x08\x02\x00\x00\x00",
        bytes(range(7, 250, 3)),
        b"\x01\x01\x01\x05hello",
    ],
    ids=["png", "bytes", "other-loss"],
)
def test_foreign_bytes(tmp_path: Path, blob: bytes) -> None:
    bad = tmp_path / "foreign.dat"
    bad.write_bytes(blob)
    with pytest.raises(DlibModelFormatError) as err:
        parse_dlib_resnet(bad)
    assert "not a dlib face-recognition ResNet" in _assert_one_line(err)


def test_foreign_real_files() -> None:
    others = [
        resource_path("faces", "london_001", "neutral.jpg"),
        Path(frm.cnn_face_detector_model_location()),  # a different dlib network
        Path(frm.pose_predictor_five_point_model_location()),  # not a network at all
    ]
    for path in others:
        with pytest.raises(DlibModelFormatError) as err:
            parse_dlib_resnet(path)
        assert "not a dlib face-recognition ResNet" in _assert_one_line(err), path


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError):
        load_dlib_resnet(tmp_path / "nope.dat")


# --------------------------------------------------------------------------- cache
def _cache_file(root: Path) -> Path:
    return root / "dlib" / f"{file_sha256(MODEL)}.pt"


def test_cache_written_and_used(tmp_path: Path, monkeypatch, wrapper: ModelWrapper) -> None:
    monkeypatch.setenv("FAMEGUI_CACHE_DIR", str(tmp_path))
    x = _probe()
    with torch.no_grad():
        expected = wrapper(x)

    first = load_dlib_resnet()
    cached = _cache_file(tmp_path)
    assert cached.is_file()
    assert not [p for p in cached.parent.iterdir() if p != cached]  # no temp files left
    stamp = cached.stat().st_mtime_ns

    second = load_dlib_resnet()
    assert cached.stat().st_mtime_ns == stamp  # read, not rewritten
    with torch.no_grad():
        assert torch.equal(first(x), expected)
        assert torch.equal(second(x), expected)
    assert second.weights_id == wrapper.weights_id
    assert second.distance_threshold == wrapper.distance_threshold

    # the cache really is what the second load reads: doctor it and watch the output follow
    params = torch.load(cached, weights_only=True)
    params["fc"]["weight"] = params["fc"]["weight"] * 2
    torch.save(params, cached)
    with torch.no_grad():
        torch.testing.assert_close(load_dlib_resnet()(x), 2 * expected)
        assert torch.equal(load_dlib_resnet(use_cache=False)(x), expected)


@pytest.mark.parametrize("junk", [b"", b"not a torch file", b"PK\x03\x04" + bytes(100)], ids=["empty", "text", "zip"])
def test_corrupt_cache_is_replaced(tmp_path: Path, monkeypatch, wrapper: ModelWrapper, junk: bytes) -> None:
    monkeypatch.setenv("FAMEGUI_CACHE_DIR", str(tmp_path))
    cached = _cache_file(tmp_path)
    cached.parent.mkdir(parents=True)
    cached.write_bytes(junk)
    x = _probe()
    with torch.no_grad():
        assert torch.equal(load_dlib_resnet()(x), wrapper(x))
    assert cached.stat().st_size > 1_000_000  # re-parsed and written again
    torch.load(cached, weights_only=True)


def test_wrong_cache_content_is_ignored(tmp_path: Path, monkeypatch, wrapper: ModelWrapper) -> None:
    monkeypatch.setenv("FAMEGUI_CACHE_DIR", str(tmp_path))
    cached = _cache_file(tmp_path)
    cached.parent.mkdir(parents=True)
    params = parse_dlib_resnet(MODEL)
    params["stages"][1][0]["conv1"]["weight"] = params["stages"][1][0]["conv1"]["weight"][:, :16]
    torch.save(params, cached)  # valid torch file, inconsistent network
    x = _probe()
    with torch.no_grad():
        assert torch.equal(load_dlib_resnet()(x), wrapper(x))
    torch.save({"schema": -1}, cached)  # foreign schema
    with torch.no_grad():
        assert torch.equal(load_dlib_resnet()(x), wrapper(x))


def test_unwritable_cache_does_not_break_loading(tmp_path: Path, monkeypatch, wrapper: ModelWrapper) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_bytes(b"x")
    monkeypatch.setenv("FAMEGUI_CACHE_DIR", str(blocker))  # cache_dir() cannot be created
    x = _probe()
    with torch.no_grad():
        assert torch.equal(load_dlib_resnet()(x), wrapper(x))


def test_module_from_parse_does_not_mutate_params() -> None:
    params = parse_dlib_resnet(MODEL)
    before = params["stages"][0][0]["conv1"]["weight"].clone()
    DlibResNet(params)
    assert torch.equal(params["stages"][0][0]["conv1"]["weight"], before)
