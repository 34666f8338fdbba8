"""Input limits, number validation, empty-map diagnosis and one-line errors, piece by piece.

(tests/test_fuzz.py throws hundreds of malformed inputs at the command line; these tests check the pieces
with their exact messages and limits.)
"""
from __future__ import annotations

import os
import resource
import threading

import numpy as np
import pytest
import torch
from conftest import face

from famegui.cli import main
from famegui.data.files import InputFileError, read_text_file, regular_file
from famegui.data.images import ImageLoadError, load_image
from famegui.methods.registry import Param
from famegui.targets import Target


def finishes(fn, timeout: float = 20.0):
    """fn() run in a thread: (True, result or exception) if it returns in time; a FIFO opened would block."""
    box = {}

    def run():
        try:
            box["value"] = fn()
        except BaseException as e:  # noqa: BLE001 - returned to the test
            box["value"] = e

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(timeout)
    return not t.is_alive(), box.get("value")


@pytest.fixture
def fifo(tmp_path):
    p = tmp_path / "pipe.png"
    os.mkfifo(p)
    return p


def test_fifos_devices_and_folders_are_refused_without_opening(fifo, tmp_path):
    from famegui.data.pairs import read_pairs
    from famegui.models.weights import read_weights_file
    from famegui.report import load_sidecar

    side = tmp_path / "pipe.json"
    os.mkfifo(side)
    calls = [(lambda: load_image(fifo), "FIFO"), (lambda: read_weights_file(fifo), "FIFO"),
             (lambda: read_pairs(fifo), "FIFO"), (lambda: load_sidecar(str(side)), "FIFO"),
             (lambda: load_image("/dev/zero"), "device"), (lambda: read_weights_file("/dev/zero"), "device"),
             (lambda: load_image(tmp_path), "folder"), (lambda: regular_file(tmp_path / "nope"), "not found"),
             (lambda: load_image(tmp_path / ("x" * 300)), "too long")]
    for call, fragment in calls:
        done, value = finishes(call)
        assert done, f"blocked: {fragment}"
        assert isinstance(value, Exception) and fragment in str(value), value
        assert len(str(value).splitlines()) == 1


def _bomb(width: int, height: int) -> bytes:
    import struct
    import zlib

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    z = zlib.compressobj(9)
    row = b"\0" * (1 + (width + 7) // 8)
    body = b"".join(z.compress(row) for _ in range(height)) + z.flush()
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0))
            + chunk(b"IDAT", body) + chunk(b"IEND", b""))


def test_a_pixel_bomb_is_refused_from_its_header(tmp_path, monkeypatch):
    p = tmp_path / "bomb.png"
    p.write_bytes(_bomb(20000, 20000))  # 400 megapixels in ~50 KB
    assert p.stat().st_size < 100_000
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(ImageLoadError) as e:
        load_image(p)
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert "20000x20000" in str(e.value) and "limit of 50 megapixels" in str(e.value)
    assert grown_mb < 50, f"{grown_mb:.0f} MB: the image was decoded"
    # the limit is a setting
    small = tmp_path / "small.png"
    from PIL import Image

    Image.fromarray(np.zeros((300, 400, 3), np.uint8)).save(small)
    assert load_image(small).shape == (300, 400)
    monkeypatch.setenv("FAMEGUI_MAX_PIXELS", "100000")
    with pytest.raises(ImageLoadError, match="400x300 pixels .* limit of 0 megapixels .*FAMEGUI_MAX_PIXELS"):
        load_image(small)
    monkeypatch.setenv("FAMEGUI_MAX_PIXELS", "nan")
    with pytest.raises(InputFileError, match="FAMEGUI_MAX_PIXELS must be a positive number"):
        load_image(small)


def test_size_limits_for_weights_images_and_text(tmp_path, monkeypatch):
    from famegui.models.weights import read_weights_file

    big = tmp_path / "big.pth"
    with open(big, "wb") as f:
        f.truncate(3 << 30)  # 3 GB, sparse: no disk used, but hashing it would take a while
    monkeypatch.setenv("FAMEGUI_MAX_WEIGHTS_MB", "1024")
    done, value = finishes(lambda: read_weights_file(big), timeout=5)
    assert done and "over the 1.0 GB limit for weights files" in str(value) and "FAMEGUI_MAX_WEIGHTS_MB" in str(value)
    text = tmp_path / "t.json"
    text.write_text("x" * 5000)
    monkeypatch.setenv("FAMEGUI_MAX_TEXT_MB", "0.001")
    with pytest.raises(InputFileError, match="limit for sidecars"):
        read_text_file(text, "sidecar")
    monkeypatch.setenv("FAMEGUI_MAX_IMAGE_MB", "0.001")
    with pytest.raises(ImageLoadError, match="limit for images"):
        load_image(face("london_001", "neutral.jpg"))


@pytest.mark.parametrize("param,value,ok", [
    (Param("n", int, 1, min=0, max=10), "3", 3), (Param("n", int, 1, min=0, max=10), 3.0, 3),
    (Param("n", int, 1, min=0, max=10), 1.5, None), (Param("n", int, 1, min=0, max=10), "1.5", None),
    (Param("n", int, 1, min=0, max=10), "nan", None), (Param("n", int, 1), 10 ** 30, None),
    (Param("n", int, 1), True, None), (Param("n", int, 1), [1], None), (Param("n", int, 1, min=0, max=10), 11, None),
    (Param("x", float, 1.0, min=0.0), "nan", None), (Param("x", float, 1.0), "inf", None),
    (Param("x", float, 1.0), float("-inf"), None), (Param("x", float, 1.0, min=0.0), "-1", None),
    (Param("x", float, 1.0), "2.5", 2.5), (Param("b", bool, True), "yes", True), (Param("b", bool, True), "off", False),
    (Param("b", bool, True), "banana", None), (Param("s", str, "a", choices=("a", "b")), "b", "b"),
    (Param("s", str, "a"), {}, None),
])
def test_parameters_are_finite_whole_and_in_range(param, value, ok):
    if ok is None:
        with pytest.raises(ValueError, match=param.name):
            param.coerce(value)
    else:
        v = param.coerce(value)
        assert v == ok and type(v) is param.type


@pytest.mark.parametrize("d,fragment", [
    ({"kind": "cell", "layer": "layer4", "cell": [1.5, 1.0]}, "whole number"),
    ({"kind": "cell", "layer": "layer4", "cell": [10 ** 20, 0]}, "below"),
    ({"kind": "cell", "layer": "layer4", "cell": [-1, 0]}, ">= 0"),
    ({"kind": "cell", "layer": "layer4", "cell": "0,0"}, "[row, col]"),
    ({"kind": "class", "class_index": "3"}, "class_index"), ({"kind": "class", "class_index": True}, "class_index"),
    ({"kind": 3}, "target.kind"), ({"kind": "cell", "layer": 4, "cell": [0, 0]}, "target.layer"),
])
def test_a_target_from_json_is_checked(d, fragment):
    with pytest.raises(ValueError, match=fragment.replace("[", r"\[").replace("]", r"\]")):
        Target.from_dict(d)
    assert Target.from_dict({"kind": "cell", "layer": "layer4", "cell": [2.0, 3]}).cell == (2, 3)


def test_a_blur_the_map_cannot_take_is_refused_before_the_work(dlib, pair):
    from famegui.core.attribution import check_blur
    from famegui.methods import run_method

    check_blur(299, 50.0, (150, 150))
    for k, s, frag in ((301, 50.0, "at most 299"), (24, 5.0, "odd"), (25, float("nan"), "finite")):
        with pytest.raises(ValueError, match=frag):
            check_blur(k, s, (150, 150))
    calls = []
    with pytest.raises(ValueError, match="too large for a 150x150 map"):
        run_method("fame", dlib, pair[0], Target("similar"), {"blur_kernel": 301, "blur_sigma": 50.0,
                                                              "iterations": 50},
                   reference=pair[1], progress=lambda f, m: calls.append(f))
    assert calls == []  # refused before the first iteration


def test_an_empty_or_nan_map_names_its_cause(resnet18_random, dlib, pair):
    from famegui.methods import run_method
    from famegui.report import check_map

    model = resnet18_random
    x = torch.rand(1, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    t = Target("class", class_index=3)
    good = run_method("gradcam", model, x, t)
    assert check_map(good, model, x, t) is None or not check_map(good, model, x, t).fatal
    zero = np.zeros((224, 224), np.float32)
    nan_x = x.clone()
    nan_x[0, 0, 0, 0] = float("nan")
    p = check_map(zero, model, nan_x, t)
    assert p.fatal and "input image holds NaN" in p.text
    broken = model.clone()
    with torch.no_grad():
        broken.module.fc.weight[0, 0] = float("nan")
    p = check_map(zero, broken, x, t)
    assert p.fatal and "weights hold NaN" in p.text and "fc.weight" in p.text
    # FAME whose loss is below epsilon from the start: empty, and that is the reason given (not NaN)
    info: dict = {}
    m = run_method("fame", dlib, pair[0], Target("similar"), {"iterations": 5, "epsilon": 10.0},
                   reference=pair[1], info=info)
    p = check_map(m, dlib, pair[0], Target("similar"), info, {"epsilon": 10.0}, pair[1])
    assert p is not None and not p.fatal and "below epsilon 10" in p.text
    # an empty map of a pair of identical faces: the similarity is saturated
    p = check_map(np.zeros((150, 150), np.float32), dlib, pair[0], Target("similar"), {}, {}, pair[0])
    assert "saturated" in p.text


def test_the_session_refuses_a_map_of_nan_weights(resnet18_random):
    from famegui.report import EmptyMapError
    from famegui.session import Session

    broken = resnet18_random.clone()
    with torch.no_grad():
        for prm in broken.module.parameters():
            prm.fill_(float("nan"))
    s = Session()
    s.set_model(broken)
    s.set_image("probe", face("london_001", "neutral.jpg"))
    with pytest.raises(EmptyMapError, match="weights hold NaN"):
        s.explain("gradcam", Target("class", class_index=3))
    assert len(s.cache) == 0


def test_library_errors_are_cut_at_a_sentence_or_a_word():
    from famegui.models.weights import short_reason

    long = RuntimeError("PytorchStreamReader failed reading zip archive: failed finding central directory. "
                        + "This is an internal miniz error that goes on " * 10)
    assert short_reason(long) == "PytorchStreamReader failed reading zip archive: failed finding central directory."
    words = RuntimeError("word " * 100)
    assert short_reason(words).endswith("word ...") and len(short_reason(words)) <= 204
    assert short_reason(RuntimeError("")) == "RuntimeError"


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, [ln for ln in err.splitlines() if ln.strip()]


def test_usage_errors_are_one_line_with_exit_2(capsys, tmp_path):
    img = face("london_001", "neutral.jpg")
    for flag, value, fragment in (("--opacity", "nan", "finite"), ("--opacity", "5", "from 0 to 1"),
                                  ("--face", "1.5", "whole number"), ("--device", "bogus", "cpu, cuda"),
                                  ("--colormap", "nosuch", "invalid choice")):
        code, out, err = run(capsys, "explain", "--image", img, "--cell", "x:0,0", "--out", tmp_path / "o.png",
                             flag, value)
        assert code == 2 and len(err) == 1 and err[0].startswith("famegui explain: error: argument " + flag), err
        assert fragment in err[0]
    if not torch.cuda.is_available():
        code, _, err = run(capsys, "layers", "--device", "cuda")
        assert code == 2 and len(err) == 1 and "CUDA GPU" in err[0]


def test_library_warnings_never_come_before_the_error(capsys, tmp_path):
    """A TorchScript model: torch.jit.load warns that it is deprecated; the user sees only famegui's line."""
    from torch import nn

    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 10))
    with pytest.warns(FutureWarning):
        torch.jit.save(torch.jit.script(net), tmp_path / "net.pt")
    code, _, err = run(capsys, "explain", "--model", tmp_path / "net.pt", "--image", face("london_001", "neutral.jpg"),
                       "--cell", "nosuch:0,0", "--out", tmp_path / "o.png")
    assert code == 1 and len(err) == 1 and err[0].startswith("famegui: error:") and "Warning" not in err[0], err
    code, out, err = run(capsys, "layers", "--model", tmp_path / "net.pt")
    assert code == 0 and not err, err  # the deprecation is known noise: not shown after a success either


def test_an_empty_map_is_a_warning_that_says_why(capsys, tmp_path):
    img, ref = face("london_001", "neutral.jpg"), face("london_001", "smiling.jpg")
    code, out, err = run(capsys, "explain", "--image", img, "--reference", ref, "--target", "similar",
                         "--iterations", "3", "--epsilon", "10", "--out", tmp_path / "o.png")
    assert code == 0 and (tmp_path / "o.png").exists()
    assert any(ln.startswith("famegui: warning: FAME: the map is empty") and "below epsilon 10" in ln for ln in err)


def test_an_entry_point_that_exits_is_an_error(tmp_path, monkeypatch):
    from famegui.models.wrapper import ModelLoadError
    from famegui.models.zoo import load_model

    (tmp_path / "quitter.py").write_text("import sys\ndef build():\n    sys.exit(0)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ModelLoadError, match="exited"):
        load_model("quitter:build")
