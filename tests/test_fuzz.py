"""Fuzz the command line with malformed and hostile inputs, all generated here from code.

Truncated, garbage and decompression-bomb images (a 20000x20000 1-bit PNG of ~50 KB among them), FIFOs,
device files, folders, wrong and poisoned weights (pickles whose ``__reduce__`` would write a marker file),
broken sidecars, entry-point sidecars, and bad flag values. Each one goes through ``famegui.cli.main`` in a
child process under a hard memory cap (``RLIMIT_AS``), its stdout and stderr captured at the file
descriptor level, and must end with exit code 1 or 2 and exactly one stderr line, from famegui, with no
traceback and no library warning; no output file may be left, no input changed, no marker written, and
the child's peak memory stays low. The cases are split into chunks (one child process each, so that the
imports are paid once per chunk); a few cases also run through ``python -m famegui`` itself (slow).

Run the child by hand: ``python tests/test_fuzz.py CASES.json RESULTS.jsonl``.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import pickle
import struct
import subprocess
import sys
import zlib
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pytest

CHUNKS = 4
SAMPLE = 9  # the quick test runs every 9th case
MEM_CAP = 6 << 30  # RLIMIT_AS of a child: torch alone maps ~3.5 GB of address space
RSS_CAP_KB = 2_500_000  # peak resident memory of a child after all its cases (a decoded bomb is >= 4.8 GB)
CASE_TIMEOUT = 90  # seconds per case (a FIFO opened for reading would block forever)
FACE = Path(__file__).resolve().parent.parent / "resources" / "faces" / "london_001" / "neutral.jpg"


@dataclass
class Case:
    name: str
    argv: list  # "{OUT}" is replaced by the child's (empty) output folder
    expect: str = ""  # a fragment the error line must hold (lower case), "" for any
    env: dict = field(default_factory=dict)  # environment variables set for this case only


class Marker:
    """A pickle that, if ever unpickled, writes the marker file."""

    def __init__(self, path: str, how: str = "write") -> None:
        self.path, self.how = path, how

    def __reduce__(self):
        if self.how == "system":
            return os.system, (f"echo ran > {self.path}",)
        return Path.write_text, (Path(self.path), "ran")


# --------------------------------------------------------------------------- the corpus
def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def bomb_png(width: int, height: int, bit_depth: int = 1, color: int = 0, rows: int | None = None) -> bytes:
    """A real PNG of width x height zero pixels (``rows`` of them actually stored, None: all), compressed."""
    bpp = {0: 1, 2: 3}[color] * bit_depth
    row = b"\0" * (1 + (width * bpp + 7) // 8)
    z = zlib.compressobj(9)
    body = b"".join(z.compress(row) for _ in range(height if rows is None else rows)) + z.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, color, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", body) + _png_chunk(b"IEND", b"")


def _patched_jpeg(data: bytes, width: int, height: int) -> bytes:
    """``data`` (a baseline JPEG) with its SOF0 frame size replaced."""
    i = data.index(b"\xff\xc0")
    return data[:i + 5] + struct.pack(">HH", height, width) + data[i + 9:]


def _patched_gif(data: bytes, width: int, height: int) -> bytes:
    return data[:6] + struct.pack("<HH", width, height) + data[10:]


def _patched_bmp(data: bytes, width: int, height: int) -> bytes:
    return data[:18] + struct.pack("<ii", width, height) + data[26:]


def _decodes(data: bytes) -> bool:
    import warnings

    from PIL import Image

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            with Image.open(io.BytesIO(data)) as im:
                im.load()
                return im.size[0] >= 2 and im.size[1] >= 2
        except Exception:  # noqa: BLE001 - anything Pillow raises means: malformed
            return False


def make_corpus(d: Path) -> dict:
    """Write every malformed file into ``d``; returns the paths by name (and the good ones)."""
    from PIL import Image

    rng = np.random.default_rng(0)
    files: dict[str, str] = {}

    def put(name: str, data: bytes) -> str:
        (d / name).write_bytes(data)
        files[name] = str(d / name)
        return files[name]

    good = (rng.random((48, 64, 3)) * 255).astype(np.uint8)
    encoded = {}
    for fmt, ext in (("PNG", "png"), ("JPEG", "jpg"), ("BMP", "bmp"), ("TIFF", "tif"), ("WEBP", "webp"),
                     ("GIF", "gif")):
        buf = io.BytesIO()
        Image.fromarray(good).save(buf, format=fmt)
        encoded[ext] = buf.getvalue()
    encoded["face.jpg"] = FACE.read_bytes()
    files["good"] = put("good.png", encoded["png"])
    for ext, data in encoded.items():  # truncated at 12 points; only cuts Pillow really cannot decode
        suffix = ext.split(".")[-1]
        for frac in (0.0, 0.002, 0.01, 0.03, 0.06, 0.1, 0.2, 0.35, 0.5, 0.65, 0.8, 0.9):
            cut = data[:max(0, int(len(data) * frac))]
            if cut and _decodes(cut):
                continue
            put(f"trunc_{ext.replace('.', '_')}_{int(frac * 1000):03d}.{suffix}", cut)
    magics = {"png": b"\x89PNG\r\n\x1a\n", "jpg": b"\xff\xd8\xff\xe0", "gif": b"GIF89a", "bmp": b"BM",
              "tif": b"II*\x00", "webp": b"RIFF\x00\x10\x00\x00WEBPVP8 ", "ico": b"\x00\x00\x01\x00"}
    for ext, magic in magics.items():  # the right magic number, then garbage
        for seed in range(4):
            data = magic + np.random.default_rng(seed).integers(0, 256, 200 + 500 * seed, np.uint8).tobytes()
            if not _decodes(data):
                put(f"garbage_{ext}_{seed}.{ext}", data)
    for seed in range(4):  # no magic at all
        put(f"noise_{seed}.png", np.random.default_rng(10 + seed).integers(0, 256, 4096, np.uint8).tobytes())
    put("text.jpg", b"this is a text file, not a photo\n" * 20)
    put("json.png", b'{"famegui_sidecar": 1}')
    put("empty.png", b"")
    put("zip.png", b"PK\x03\x04" + b"\0" * 200)
    put("pickle.jpg", pickle.dumps(Marker(str(d / "MARKER"))))
    # decompression bombs: a real 20000x20000 1-bit PNG (~50 KB), and headers that claim huge sizes
    put("bomb_20000_1bit.png", bomb_png(20000, 20000))
    put("bomb_8000_rgb_header.png", bomb_png(8000, 8000, 8, 2, rows=4))
    put("bomb_65535_gray_header.png", bomb_png(65535, 65535, 8, 0, rows=1))
    put("bomb_wide.png", bomb_png(2 ** 31 - 1, 1, 1, 0, rows=0))
    for w, h in ((8000, 8000), (20000, 20000), (65500, 65500)):
        put(f"bomb_{w}.jpg", _patched_jpeg(encoded["jpg"], w, h))
        put(f"bomb_{w}.gif", _patched_gif(encoded["gif"], w, h))
        put(f"bomb_{w}.bmp", _patched_bmp(encoded["bmp"], w, h))
    nan = np.full((32, 32), np.nan, np.float32)
    nan[::2] = 0.5
    Image.fromarray(nan, mode="F").save(d / "nan_float.tif")
    files["nan_float.tif"] = str(d / "nan_float.tif")
    inf = np.full((32, 32), np.inf, np.float32)
    Image.fromarray(inf, mode="F").save(d / "inf_float.tif")
    files["inf_float.tif"] = str(d / "inf_float.tif")
    # special files
    os.mkfifo(d / "fifo.png")
    files["fifo"] = str(d / "fifo.png")
    os.mkfifo(d / "fifo.pth")
    files["fifo.pth"] = str(d / "fifo.pth")
    os.mkfifo(d / "fifo.json")
    files["fifo.json"] = str(d / "fifo.json")
    (d / "folder.png").mkdir()
    files["folder"] = str(d / "folder.png")
    (d / "link_to_fifo.png").symlink_to(d / "fifo.png")
    files["link_to_fifo"] = str(d / "link_to_fifo.png")
    (d / "loop.png").symlink_to(d / "loop.png")
    files["loop"] = str(d / "loop.png")
    files["long"] = str(d / ("x" * 300 + ".png"))
    with open(d / "sparse.png", "wb") as f:  # a 2 GB file that takes no disk space (over the image limit)
        f.truncate(2 << 30)
    files["sparse"] = str(d / "sparse.png")
    _weights(d, files)
    (d / "marker_mod.py").write_text("from pathlib import Path\nPath('MARKER').write_text('ran')\n"
                                     "def build():\n    raise SystemExit(0)\n")
    return files


def _weights(d: Path, files: dict) -> None:
    import torch
    import torchvision

    def put(name: str, data: bytes) -> None:
        (d / name).write_bytes(data)
        files[name] = str(d / name)

    marker = str(d / "MARKER")
    torch.manual_seed(0)
    state = torchvision.models.resnet18().state_dict()
    buf = io.BytesIO()
    torch.save(state, buf)
    real = buf.getvalue()
    for frac in (0.0005, 0.01, 0.1, 0.3, 0.5, 0.7, 0.9, 0.999):
        put(f"trunc_w_{int(frac * 1000):03d}.pth", real[:int(len(real) * frac)])
    for seed in range(6):
        put(f"garbage_w_{seed}.pth", np.random.default_rng(seed).integers(0, 256, 1000 * (seed + 1), np.uint8)
            .tobytes())
    put("zip_garbage.pth", b"PK\x03\x04" + np.random.default_rng(9).integers(0, 256, 3000, np.uint8).tobytes())
    put("text.pth", b"hello, not weights\n")
    put("empty.pth", b"")
    for i, how in enumerate(("write", "system")):
        put(f"evil_pickle_{i}.pth", pickle.dumps(Marker(marker, how)))
        put(f"evil_pickle_{i}.bin", pickle.dumps({"state_dict": Marker(marker, how)}, protocol=2))
        b = io.BytesIO()
        torch.save({"weights": Marker(marker, how)}, b)
        put(f"evil_torch_{i}.pth", b.getvalue())
        b = io.BytesIO()
        torch.save({"weights": Marker(marker, how)}, b, _use_new_zipfile_serialization=False)
        put(f"evil_legacy_{i}.pt", b.getvalue())
        put(f"evil_pickle_{i}.safetensors", pickle.dumps(Marker(marker, how)))
    b = io.BytesIO()
    torch.save(torchvision.models.squeezenet1_1().state_dict(), b)  # another architecture's weights
    put("squeezenet.pth", b.getvalue())
    b = io.BytesIO()
    torch.save({"not": "tensors", "n": 3}, b)
    put("no_tensors.pth", b.getvalue())
    nan_state = {k: torch.full_like(v, float("nan")) if v.is_floating_point() else v for k, v in state.items()}
    b = io.BytesIO()
    torch.save(nan_state, b)
    put("nan_weights.pth", b.getvalue())
    header = json.dumps({"w": {"dtype": "F32", "shape": [10 ** 6, 10 ** 6], "data_offsets": [0, 4]}}).encode()
    put("lying.safetensors", struct.pack("<Q", len(header)) + header + b"\0" * 4)
    put("huge_header.safetensors", struct.pack("<Q", 2 ** 60) + b"{}")
    put("bad_json.safetensors", struct.pack("<Q", 10) + b"{not json}")
    with open(d / "sparse.pth", "wb") as f:  # over a (lowered) weights limit, without using disk space
        f.truncate(64 << 20)
    files["sparse.pth"] = str(d / "sparse.pth")
    put("garbage.onnx", b"\x08\x07" + np.random.default_rng(3).integers(0, 256, 500, np.uint8).tobytes())
    put("garbage_ts.pt", b"PK\x03\x04" + b"archive/code/__torch__.py" + b"\0" * 100)


def sidecar_base() -> dict:
    sha = hashlib.sha256(FACE.read_bytes()).hexdigest()
    return {"famegui_sidecar": 1, "model": {"source": "resnet18", "weights_path": None, "weights": "random"},
            "image": {"path": str(FACE), "sha256": sha, "face_index": 0, "preprocessing": "resize-crop"},
            "reference": None, "target": {"kind": "class", "layer": None, "cell": None, "class_index": 3},
            "method": "gradcam", "params": {},
            "outputs": {"overlay": None, "map": None, "on_photo": False, "opacity": 0.5, "colormap": "jet"}}


# (path of keys, value, the fragment the message must hold); "DEL" deletes the key
SIDECAR_MUTATIONS = [
    (("famegui_sidecar",), "1", "famegui_sidecar"), (("famegui_sidecar",), 99, "newer"),
    (("famegui_sidecar",), 1.5, "famegui_sidecar"), (("famegui_sidecar",), True, "famegui_sidecar"),
    (("model",), "DEL", "model"), (("model",), [], "model"), (("model", "source"), "DEL", "source"),
    (("model", "source"), 5, "source"), (("model", "source"), "", "source"), (("model", "source"), None, "source"),
    (("model", "weights_path"), 5, "weights_path"), (("model", "weights_path"), ["a"], "weights_path"),
    (("model", "weights"), {}, "weights"), (("image",), "DEL", "image"), (("image",), None, "image"),
    (("image",), "x.jpg", "image"), (("image", "path"), "DEL", "path"), (("image", "path"), 5, "path"),
    (("image", "path"), None, "path"), (("image", "sha256"), "DEL", "sha256"), (("image", "sha256"), 5, "sha256"),
    (("image", "face_index"), -1, "face_index"), (("image", "face_index"), 1.5, "face_index"),
    (("image", "face_index"), "0", "face_index"), (("image", "face_index"), 10 ** 30, "face_index"),
    (("image", "preprocessing"), 7, "preprocessing"), (("reference",), 5, "reference"),
    (("reference",), {"path": 5}, "path"), (("reference",), {"sha256": "0"}, "path"),
    (("target",), "DEL", "target"), (("target",), "class 3", "target"), (("target", "kind"), "DEL", "kind"),
    (("target", "kind"), 5, "kind"), (("target", "kind"), "nosuch", "nosuch"),
    (("target", "class_index"), 1.5, "class_index"), (("target", "class_index"), -1, "class_index"),
    (("target", "class_index"), "3", "class_index"), (("target", "class_index"), True, "class_index"),
    (("target", "class_index"), 10 ** 30, "class_index"), (("target", "class_index"), None, "class"),
    (("target",), {"kind": "cell", "layer": "layer4", "cell": [1.5, 1.0]}, "cell"),
    (("target",), {"kind": "cell", "layer": "layer4", "cell": [-1, 0]}, "cell"),
    (("target",), {"kind": "cell", "layer": "layer4", "cell": [10 ** 20, 0]}, "cell"),
    (("target",), {"kind": "cell", "layer": "layer4", "cell": ["a", 0]}, "cell"),
    (("target",), {"kind": "cell", "layer": "layer4", "cell": [0]}, "cell"),
    (("target",), {"kind": "cell", "layer": "layer4", "cell": "0,0"}, "cell"),
    (("target",), {"kind": "cell", "layer": 4, "cell": [0, 0]}, "layer"),
    (("target",), {"kind": "cell", "cell": [0, 0]}, "layer"),
    (("method",), "nosuch", "nosuch"), (("method",), 5, "method"), (("method",), ["fame"], "method"),
    (("params",), [], "params"), (("params",), "iterations=3", "params"),
    (("params",), {"nosuch": 1}, "nosuch"), (("params",), {"layer": {}}, "layer"),
    (("outputs",), [], "outputs"), (("outputs", "opacity"), 5, "opacity"), (("outputs", "opacity"), -1, "opacity"),
    (("outputs", "opacity"), "nan", "opacity"), (("outputs", "opacity"), float("nan"), "opacity"),
    (("outputs", "colormap"), "nosuch", "colormap"), (("outputs", "colormap"), 5, "colormap"),
    (("outputs", "on_photo"), "yes", "on_photo"), (("outputs", "map"), 5, "map"),
]
FAME_PARAM_MUTATIONS = [  # method fame: the sidecar's parameters go through the registry's checks
    ({"blur_sigma": "nan"}, "blur_sigma"), ({"blur_sigma": float("inf")}, "blur_sigma"),
    ({"blur_sigma": -1}, "blur_sigma"), ({"blur_kernel": 1.5}, "blur_kernel"), ({"blur_kernel": 999}, "blur_kernel"),
    ({"blur_kernel": "x"}, "blur_kernel"), ({"iterations": 1.5}, "iterations"), ({"iterations": -1}, "iterations"),
    ({"iterations": "many"}, "iterations"), ({"iterations": 10 ** 30}, "iterations"),
    ({"iterations": [3]}, "iterations"), ({"iterations": None, "epsilon": "nan"}, "epsilon"),
    ({"epsilon": -1}, "epsilon"), ({"step": 0}, "step"), ({"step": "inf"}, "step"), ({"clamp": "maybe"}, "clamp"),
    ({"space": "nowhere"}, "space"), ({"normalization": 3}, "normalization"),
]


def _mutated(base: dict, keys: tuple, value) -> dict:
    rec = json.loads(json.dumps(base))
    node = rec
    for k in keys[:-1]:
        node = node[k]
    if value == "DEL":
        node.pop(keys[-1], None)
    else:
        node[keys[-1]] = value
    return rec


def sidecar_cases(d: Path, files: dict) -> list[Case]:
    cases = []
    base = sidecar_base()

    def put(name: str, rec, expect: str, extra=()) -> None:
        text = rec if isinstance(rec, (str, bytes)) else json.dumps(rec)
        (d / name).write_bytes(text if isinstance(text, bytes) else text.encode())
        cases.append(Case(f"sidecar:{name}", ["reproduce", str(d / name), "--out", "{OUT}/r.png", *extra],
                          expect.lower()))

    for i, (keys, value, frag) in enumerate(SIDECAR_MUTATIONS):
        put(f"side_{i:02d}.json", _mutated(base, keys, value), frag)
    for i, (params, frag) in enumerate(FAME_PARAM_MUTATIONS):
        rec = _mutated(_mutated(base, ("method",), "fame"), ("params",), params)
        put(f"side_fame_{i:02d}.json", rec, frag)
    for source in ("os:abort", "sys:exit", "marker_mod:build", "os:system", "builtins:exit"):
        rec = _mutated(base, ("model", "source"), source)
        put(f"side_ep_{source.replace(':', '_')}.json", rec, "--trust-entry-point")
    put("side_ep_trusted.json", _mutated(base, ("model", "source"), "marker_mod:build"), "cannot import",
        extra=("--trust-entry-point",))
    put("side_truncated.json", json.dumps(base)[:50], "invalid json")
    put("side_not_utf8.json", b"\xff\xfe\x00{" + b"\x80" * 20, "not a text file")
    put("side_deep.json", "[" * 100000 + "]" * 100000, "sidecar")
    put("side_list.json", [1, 2, 3], "not a famegui sidecar")
    put("side_string.json", '"famegui_sidecar"', "not a famegui sidecar")
    put("side_empty.json", "", "invalid json")
    put("side_nan_tokens.json", json.dumps(base).replace('"opacity": 0.5', '"opacity": NaN'), "opacity")
    cases.append(Case("sidecar:fifo", ["reproduce", files["fifo.json"], "--out", "{OUT}/r.png"], "fifo"))
    cases.append(Case("sidecar:folder", ["reproduce", str(d), "--out", "{OUT}/r.png"], "sidecar"))
    cases.append(Case("sidecar:missing", ["reproduce", str(d / "nope.json"), "--out", "{OUT}/r.png"], "not found"))
    cases.append(Case("sidecar:devnull", ["reproduce", "/dev/null", "--out", "{OUT}/r.png"], "sidecar"))
    cases.append(Case("sidecar:over-limit", ["reproduce", str(d / "side_00.json"), "--out", "{OUT}/r.png"],
                      "limit", env={"FAMEGUI_MAX_TEXT_MB": "0.000001"}))
    good = d / "side_good.json"
    good.write_text(json.dumps(base))
    cases.append(Case("sidecar:out-is-sidecar", ["reproduce", str(good), "--out", str(good)], "input"))
    cases.append(Case("sidecar:out-is-image", ["reproduce", str(good), "--out", str(FACE)], "input"))
    cases.append(Case("sidecar:out-empty", ["reproduce", str(good), "--out", ""], "empty"))
    cases.append(Case("sidecar:map-is-out", ["reproduce", str(good), "--out", "{OUT}/r.png", "--save-map",
                                             "{OUT}/r.png"], "same file"))
    # a PNG beside its sidecar that is not the one the sidecar records
    rec = _mutated(base, ("outputs", "overlay_sha256"), "0" * 64)
    (d / "mismatch.json").write_text(json.dumps(rec))
    (d / "mismatch.png").write_bytes((d / "good.png").read_bytes())
    cases.append(Case("sidecar:png-not-its-own", ["reproduce", str(d / "mismatch.png"), "--out", "{OUT}/r.png"],
                      "does not belong"))
    cases.append(Case("sidecar:png-without-sidecar", ["reproduce", files["good"], "--out", "{OUT}/r.png"],
                      "no sidecar"))
    return cases


def image_cases(d: Path, files: dict) -> list[Case]:
    base = ["explain", "--model", "resnet18", "--weights", "random", "--cell", "layer4:0,0", "--iterations", "2",
            "--out", "{OUT}/o.png"]
    expect = {"bomb": "pixels", "fifo": "fifo", "folder": "folder", "link_to_fifo": "fifo", "sparse": "limit",
              "long": "too long", "empty": "empty", "nan_": "nan", "inf_": "nan"}
    cases = []
    for name, path in files.items():
        if not name.startswith(("trunc_", "garbage_", "noise_", "bomb", "nan_", "inf_")) and name not in (
                "text.jpg", "json.png", "empty.png", "zip.png", "pickle.jpg", "fifo", "folder", "link_to_fifo",
                "loop", "long", "sparse"):
            continue
        if name.startswith(("trunc_w", "garbage_w")):
            continue
        frag = next((v for k, v in expect.items() if name.startswith(k)), "")
        cases.append(Case(f"image:{name}", [*base, "--image", path], frag))
        if name.startswith("bomb_20000") or name in ("fifo", "trunc_png_500.png"):
            # the same file as the reference of a pair and through sanity / faithfulness
            cases.append(Case(f"reference:{name}", ["explain", "--image", str(FACE), "--reference", path,
                                                    "--target", "similar", "--out", "{OUT}/o.png"], frag))
            cases.append(Case(f"sanity:{name}", ["sanity", "--image", path, "--class", "top1", "--model",
                                                 "resnet18", "--weights", "random"], frag))
            cases.append(Case(f"faithfulness:{name}", ["faithfulness", "--image", path, "--class", "top1",
                                                       "--model", "resnet18", "--weights", "random"], frag))
    for dev in ("/dev/zero", "/dev/null", "/dev/urandom"):
        cases.append(Case(f"image:{dev}", [*base, "--image", dev], "device"))
    cases.append(Case("image:missing", [*base, "--image", str(d / "nope.png")], "not found"))
    cases.append(Case("image:pixel-limit", [*base, "--image", files["good"]], "famegui_max_pixels",
                      env={"FAMEGUI_MAX_PIXELS": "1000"}))
    return cases


def weights_cases(d: Path, files: dict) -> list[Case]:
    base = ["explain", "--image", str(FACE), "--cell", "layer4:0,0", "--iterations", "2", "--out", "{OUT}/o.png",
            "--model", "resnet18"]
    cases = []
    for name, path in files.items():
        if name.startswith(("trunc_w", "garbage_w", "evil_")) or name in (
                "zip_garbage.pth", "text.pth", "empty.pth", "squeezenet.pth", "no_tensors.pth", "lying.safetensors",
                "huge_header.safetensors", "bad_json.safetensors"):
            frag = "safetensors" if name.endswith(".safetensors") else "code" if name.startswith("evil_") else ""
            cases.append(Case(f"weights:{name}", [*base, "--weights", path], frag))
    nan = ["explain", "--image", str(FACE), "--class", "3", "--iterations", "2", "--out", "{OUT}/o.png",
           "--model", "resnet18", "--weights", files["nan_weights.pth"]]
    cases.append(Case("weights:nan", [*nan[:5], *nan[7:], "--method", "gradcam"], "nan"))
    cases.append(Case("weights:nan-fame", nan, "nan"))
    for name, frag in (("fifo.pth", "fifo"), ("folder", "folder"), ("loop", "")):
        cases.append(Case(f"weights:{name}", [*base, "--weights", files[name]], frag))
    for dev in ("/dev/zero", "/dev/null"):
        cases.append(Case(f"weights:{dev}", [*base, "--weights", dev], "device"))
        cases.append(Case(f"model:{dev}", [*base[:-1], dev], "device"))
    cases.append(Case("weights:over-limit", [*base, "--weights", files["sparse.pth"]], "limit",
                      env={"FAMEGUI_MAX_WEIGHTS_MB": "16"}))
    cases.append(Case("weights:missing", [*base, "--weights", str(d / "nope.pth")], "not found"))
    for name in ("fifo.pth", "garbage.onnx", "garbage_ts.pt", "text.pth"):
        cases.append(Case(f"model:{name}", [*base[:-1], files[name]], "fifo" if "fifo" in name else ""))
    cases.append(Case("model:folder", [*base[:-1], str(d)], "folder"))
    cases.append(Case("model:long", [*base[:-1], "m" * 300], "unknown model"))
    cases.append(Case("model:face-weights", ["verify", "--model", "dlib-resnet", "--weights", files["fifo.pth"],
                                            str(FACE), str(FACE)], "fifo"))
    return cases


def flag_cases(d: Path, files: dict) -> list[Case]:
    import torch

    img = str(FACE)
    base = ["explain", "--model", "resnet18", "--weights", "random", "--image", img, "--out", "{OUT}/o.png"]
    cell = [*base, "--cell", "layer4:0,0"]
    values = {
        "--blur": ["25,nan", "nan,5", "25", "25,5,1", "24,5", "-1,5", "25,-1", "25,inf", "a,b", "", "1e9,5",
                   "25.5,5", ",", "25,1e400"],
        "--blur-sigma": ["nan", "inf", "-1", "1e9", "x", ""], "--blur-kernel": ["2", "-3", "1.5", "302", "nan", "1e99"],
        "--epsilon": ["nan", "-1", "inf", "x"], "--iterations": ["0", "-1", "1.5", "nan", "1e12", "x", "99999999999"],
        "--step": ["0", "nan", "2", "-0.1"], "--opacity": ["nan", "-1", "5", "x", "", "inf"],
        "--colormap": ["nosuch", ""], "--face": ["-1", "1.5", "x", "1e9"], "--input-size": ["0", "-1", "1e9", "x"],
        "--device": ["bogus", "", "cuda:99", "cpu:0", "gpu"], "--method": ["nosuch", "", ","],
        "--masks": ["100"], "--space": ["nowhere"], "--normalization": ["none"], "--clamp": ["maybe"],
        "--mean": ["nan", "1,2", "x"], "--std": ["0", "-1", "nan"],
    }
    if not torch.cuda.is_available():
        values["--device"] += ["cuda", "cuda:0"]
    if not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        values["--device"].append("mps")
    frag = {"--blur": "blur", "--opacity": "opacity", "--device": "device", "--colormap": "colormap",
            "--method": "method", "--masks": "masks"}
    cases = []
    for flag, vals in values.items():
        for v in vals:
            expect = frag.get(flag, "")
            if v in ("nan", "inf", "25,nan", "nan,5", "25,inf") and flag not in ("--colormap",):
                expect = expect or ""
            cases.append(Case(f"flag:{flag}={v!r}", [*cell, flag, v], expect))
    for target in ("top0", "top-1", "topx", "top 1", "top1001", "-1", "1000", "99999999999999999999", "nosuch"):
        cases.append(Case(f"flag:--class={target}", [*base, "--class", target], "class"))
    for c in ("x", "layer4:1.5,1", "layer4:-1,0", "layer4:99999999999999999999,0", "layer4:0", "layer4:7,0",
              "nosuch:0,0", ":0,0", "layer4:0,0,0"):
        cases.append(Case(f"flag:--cell={c}", [*base, "--cell", c], ""))
    out = "{OUT}"
    collisions = [
        ("out-is-sidecar", ["--out", f"{out}/o.json"], "same file"),
        ("save-map-is-out", ["--save-map", f"{out}/o.png"], "same file"),
        ("save-map-is-sidecar", ["--save-map", f"{out}/o.json"], "same file"),
        ("out-empty", ["--out", ""], "empty"), ("out-blank", ["--out", "  "], "empty"),
        ("out-is-image", ["--out", img], "input"), ("save-map-is-image", ["--save-map", img], "input"),
        ("out-no-folder", ["--out", f"{out}/no/such/o.png"], "does not exist"),
        ("out-long", ["--out", f"{out}/{'y' * 300}.png"], "too long"),
        ("out-is-folder", ["--out", out], "folder"), ("out-devnull", ["--out", "/dev/null"], "not a regular"),
        ("out-fifo", ["--out", files["fifo"]], "not a regular"),
        ("save-map-empty", ["--save-map", ""], "empty"),
    ]
    for name, extra, expect in collisions:
        argv = list(cell)
        if extra[0] == "--out":
            argv[argv.index("--out") + 1] = extra[1]
        else:
            argv += extra
        cases.append(Case(f"output:{name}", argv, expect))
    face = ["--image", img, "--class", "top1", "--model", "resnet18", "--weights", "random"]
    for cmd, flag, v in (("sanity", "--threshold", "nan"), ("sanity", "--depth", "0"),
                         ("sanity", "--weights-seed", "-1"), ("sanity", "--method", "nosuch"),
                         ("faithfulness", "--steps", "0"), ("faithfulness", "--steps", "1e9"),
                         ("faithfulness", "--mode", "nosuch"), ("faithfulness", "--method", ","),
                         ("faithfulness", "--pairs", files["fifo"]), ("faithfulness", "--fill-with", "nan"),
                         ("sanity", "--sheet", ""), ("faithfulness", "--plot", img),
                         ("faithfulness", "--json", "/dev/null"), ("sanity", "--json", img)):
        argv = [cmd, *face, flag, v]
        if flag == "--pairs":
            argv = [cmd, "--pairs", v, "--model", "dlib-resnet"]
        cases.append(Case(f"{cmd}:{flag}={v!r}", argv, ""))
    dlib = ["explain", "--image", img, "--reference", img, "--target", "similar", "--out", "{OUT}/o.png"]
    cases.append(Case("flag:blur-301-dlib", [*dlib, "--blur", "301,50", "--iterations", "1"], "too large"))
    cases.append(Case("flag:cos-scale-nan", [*dlib, "--method", "scorecam", "--cos-scale", "nan"], "cos_scale"))
    cases.append(Case("flag:reference-face", [*dlib, "--reference-face", "-2"], "reference-face"))
    return cases


def all_cases(d: Path, files: dict) -> list[Case]:
    return image_cases(d, files) + weights_cases(d, files) + sidecar_cases(d, files) + flag_cases(d, files)


# --------------------------------------------------------------------------- the child
def _child(cases_file: str, results_file: str) -> None:
    """Run each case through famegui.cli.main, stdout and stderr captured at the file descriptor level."""
    import resource
    import signal
    import tempfile
    import traceback
    import warnings

    from famegui.cli import main

    spec = json.loads(Path(cases_file).read_text())
    out_dir = Path(spec["out"])

    def alarm(_sig, _frame):
        raise TimeoutError("case timed out")

    signal.signal(signal.SIGALRM, alarm)
    filters = list(warnings.filters)
    with open(results_file, "w") as results:
        for case in spec["cases"]:
            argv = [a.replace("{OUT}", str(out_dir)) for a in case["argv"]]
            saved_env = {k: os.environ.get(k) for k in case["env"]}
            os.environ.update(case["env"])
            warnings.resetwarnings()  # a fresh process's filters (and no memory of warnings already shown)
            warnings.filters[:] = filters
            err, out = tempfile.TemporaryFile(), tempfile.TemporaryFile()
            sys.stdout.flush(), sys.stderr.flush()
            keep_out, keep_err = os.dup(1), os.dup(2)
            os.dup2(out.fileno(), 1), os.dup2(err.fileno(), 2)
            signal.alarm(CASE_TIMEOUT)
            try:
                rc = main(argv)
            except SystemExit as e:
                rc = e.code
            except BaseException:  # noqa: BLE001 - reported as the traceback it is
                traceback.print_exc()
                rc = "exception"
            finally:
                signal.alarm(0)
                sys.stdout.flush(), sys.stderr.flush()
                os.dup2(keep_out, 1), os.dup2(keep_err, 2)
                os.close(keep_out), os.close(keep_err)
            for k, v in saved_env.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
            err.seek(0), out.seek(0)
            left = sorted(str(p) for p in out_dir.rglob("*"))
            for p in sorted(out_dir.rglob("*"), reverse=True):
                p.rmdir() if p.is_dir() and not p.is_symlink() else p.unlink()
            results.write(json.dumps({"name": case["name"], "rc": rc,
                                      "stderr": err.read().decode(errors="replace"),
                                      "stdout": out.read().decode(errors="replace"), "left": left,
                                      "maxrss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}) + "\n")
            results.flush()


# --------------------------------------------------------------------------- the tests
@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    d = tmp_path_factory.mktemp("fuzz")
    files = make_corpus(d)
    return d, files, all_cases(d, files)


def _digest(d: Path) -> dict:
    """sha256 of every regular file under ``d`` (inputs must not change)."""
    out = {}
    for p in sorted(d.rglob("*")):
        if p.is_file() and not p.is_symlink() and p.stat().st_size < (256 << 20):
            out[str(p)] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def _limit_memory():  # in the child, before exec
    import resource

    resource.setrlimit(resource.RLIMIT_AS, (MEM_CAP, MEM_CAP))


def _clean_env() -> dict:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH" and not k.startswith("FAMEGUI_MAX")}
    env.update(OMP_NUM_THREADS="1", PYTHONWARNINGS="")
    return env


def check_result(case: Case, r: dict, corpus_dir: Path) -> list[str]:
    """What is wrong with one result (empty: nothing)."""
    problems = []
    lines = [ln for ln in r["stderr"].splitlines() if ln.strip()]
    if r["rc"] not in (1, 2):
        problems.append(f"exit code {r['rc']!r}")
    if len(lines) != 1 or not lines[0].startswith("famegui"):
        problems.append(f"stderr is not one famegui line: {lines[:4]}")
    text = r["stderr"]
    if "Traceback" in text or "Warning" in text:
        problems.append("a traceback or a library warning on stderr")
    if "internal error" in text:
        problems.append("an internal error")
    if case.expect and case.expect not in text.lower():
        problems.append(f"the message does not mention {case.expect!r}")
    if r["left"]:
        problems.append(f"files left: {r['left']}")
    if (corpus_dir / "MARKER").exists():
        problems.append("the marker file was written: code ran")
    if list(corpus_dir.glob("**/.*.part")):
        problems.append("temporary files left in the corpus folder")
    return problems


def run_chunk(cases: list[Case], work: Path, corpus_dir: Path) -> list[tuple[Case, dict]]:
    out = work / "out"
    out.mkdir(parents=True)
    spec = work / "cases.json"
    spec.write_text(json.dumps({"out": str(out), "cases": [asdict(c) for c in cases]}))
    results = work / "results.jsonl"
    proc = subprocess.run([sys.executable, __file__, str(spec), str(results)], cwd=corpus_dir, env=_clean_env(),
                          preexec_fn=_limit_memory, capture_output=True, text=True,
                          timeout=CASE_TIMEOUT * len(cases) + 300)
    got = [json.loads(line) for line in results.read_text().splitlines()] if results.exists() else []
    assert proc.returncode == 0 and len(got) == len(cases), \
        f"the child died after {len(got)} of {len(cases)} cases (rc {proc.returncode}): {proc.stderr[-2000:]}"
    return list(zip(cases, got))


def test_the_corpus_is_large_and_generated(corpus):
    _, files, cases = corpus
    assert len(cases) >= 300, len(cases)
    assert len({c.name for c in cases}) == len(cases)  # each case once
    bomb = Path(files["bomb_20000_1bit.png"])
    assert bomb.stat().st_size < 100_000  # 400 megapixels in a tiny file
    kinds = {c.name.split(":")[0] for c in cases}
    assert {"image", "weights", "model", "sidecar", "flag", "output", "sanity", "faithfulness"} <= kinds


def _run_and_check(cases: list[Case], d: Path, work: Path) -> None:
    before = _digest(d)
    results = run_chunk(cases, work, d)
    failures = [f"{c.name}: {'; '.join(p)} | {r['stderr'].strip()[:300]}"
                for c, r in results for p in [check_result(c, r, d)] if p]
    assert not failures, f"{len(failures)} of {len(cases)} cases failed:\n" + "\n".join(failures)
    peak = max(r["maxrss_kb"] for _, r in results)
    assert peak < RSS_CAP_KB, f"peak memory {peak / 1e6:.1f} GB"
    assert _digest(d) == before, "an input file changed"


def test_a_sample_of_malformed_inputs(corpus, tmp_path):
    """Every SAMPLE-th case (all kinds), in one child: the quick version of the test below."""
    d, _, cases = corpus
    _run_and_check(cases[::SAMPLE], d, tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("chunk", range(CHUNKS))
def test_every_malformed_input_is_one_clear_line(chunk, corpus, tmp_path):
    """All the cases, in CHUNKS children (~40 s of cases plus the imports of each child)."""
    d, _, cases = corpus
    _run_and_check(cases[chunk::CHUNKS], d, tmp_path)


ENTRY_CASES = ("image:fifo", "image:/dev/zero", "image:bomb_20000_1bit.png", "weights:evil_torch_0.pth",
               "sidecar:side_ep_os_abort.json", "flag:--device='bogus'", "flag:--opacity='nan'",
               "output:out-is-sidecar", "weights:nan")


@pytest.mark.slow
@pytest.mark.parametrize("name", ENTRY_CASES)
def test_the_real_entry_point(name, corpus, tmp_path):
    """A few cases through ``python -m famegui`` itself: a fresh interpreter, import-time warnings included."""
    d, _, cases = corpus
    case = next(c for c in cases if c.name == name)
    out = tmp_path / "out"
    out.mkdir()
    env = _clean_env()
    env.update(case.env)
    r = subprocess.run([sys.executable, "-m", "famegui", *[a.replace("{OUT}", str(out)) for a in case.argv]],
                       cwd=d, env=env, preexec_fn=_limit_memory, capture_output=True, text=True, timeout=600)
    result = {"rc": r.returncode, "stderr": r.stderr, "left": sorted(str(p) for p in out.rglob("*"))}
    assert not check_result(case, result, d), (check_result(case, result, d), r.stderr[-1000:])


if __name__ == "__main__":
    _child(sys.argv[1], sys.argv[2])
