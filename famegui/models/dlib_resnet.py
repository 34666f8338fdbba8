"""dlib's ResNet face descriptor in plain PyTorch.

Reads ``dlib_face_recognition_resnet_model_v1.dat`` with our own parser
(:mod:`.dlib_format`, no dlib at run time) and rebuilds the network as
ordinary torch modules. The top-level children are the stages a user can pick
as feature-map layers: ``stem``, ``pool``, ``stage1`` ... ``stage5``, ``fc``.
"""
from __future__ import annotations

import logging
import os
import tempfile
from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from famegui.core.structure import Network, NonNegative, ResidualBlock, children, register_block, register_network
from famegui.models.dlib_format import SCHEMA, DlibModelFormatError, default_model_path, parse_dlib_resnet
from famegui.models.wrapper import ModelLoadError, ModelWrapper
from famegui.paths import cache_dir, file_sha256

__all__ = [
    "DlibModelFormatError",
    "DlibResNet",
    "ResidualUnit",
    "default_model_path",
    "parse_dlib_resnet",
    "load_dlib_resnet",
]

log = logging.getLogger(__name__)


def _folded_conv(spec: Mapping[str, Any], copy: bool) -> nn.Conv2d:
    """Conv2d with dlib's following per-channel affine folded into weight and bias.

    ``copy=False`` folds into the given float32 tensors in place and adopts them.
    """
    w, b = spec["weight"], spec["bias"]
    o, i, kh, kw = w.shape
    # built on "meta": no random init and no allocation; the real tensors are set below
    conv = nn.Conv2d(
        i, o, (kh, kw), stride=tuple(spec["stride"]), padding=tuple(spec["pad"]), bias=True, device="meta"
    )
    # folding runs in numpy: single-threaded, so it stays quick on a busy machine
    gamma = _np32(spec["gamma"])
    beta = _np32(spec["beta"])
    in_place = not copy and all(t.dtype == torch.float32 and t.device.type == "cpu" for t in (w, b))
    if in_place:
        wn, bn = w.detach().numpy(), b.detach().numpy()
        wn *= gamma[:, None, None, None]
        bn *= gamma
        bn += beta
    else:
        w = torch.from_numpy(_np32(w) * gamma[:, None, None, None])
        b = torch.from_numpy(_np32(b) * gamma + beta)
    conv.weight = nn.Parameter(w)
    conv.bias = nn.Parameter(b)
    return conv


def _np32(t: torch.Tensor) -> np.ndarray:
    return t.detach().cpu().float().numpy()


def _add_padded(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """dlib's add_prev: the smaller input is zero-padded at the END of C, H and W."""
    if a.shape == b.shape:
        return a + b
    c, h, w = (max(a.shape[d], b.shape[d]) for d in (1, 2, 3))

    def grow(t: torch.Tensor) -> torch.Tensor:
        return F.pad(t, (0, w - t.shape[3], 0, h - t.shape[2], 0, c - t.shape[1]))

    return grow(a) + grow(b)


class ResidualUnit(nn.Module):
    """conv-relu-conv plus a shortcut (identity, or 2x2 average pool when downsampling), then relu."""

    def __init__(self, spec: Mapping[str, Any], copy: bool = True) -> None:
        super().__init__()
        self.conv1 = _folded_conv(spec["conv1"], copy)
        self.relu1 = nn.ReLU()
        self.conv2 = _folded_conv(spec["conv2"], copy)
        sc = spec["shortcut"]
        self.downsample: nn.Module | None = (
            nn.AvgPool2d(tuple(sc["kernel"]), tuple(sc["stride"]), tuple(sc["pad"]), count_include_pad=False)
            if sc is not None
            else None
        )
        self.relu2 = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv2(self.relu1(self.conv1(x)))
        s = self.downsample(x) if self.downsample is not None else x
        return self.relu2(_add_padded(y, s))


class DlibResNet(nn.Module):
    """dlib's face ResNet; input ``(x255 - mean) / 256`` RGB (B,3,150,150), output the raw 128-D descriptor.

    ``params`` is a :func:`parse_dlib_resnet` dict. With ``copy=False`` the
    module takes over its tensors (conv weights are folded in place), which
    saves a copy of 22 MB; the dict must not be used afterwards.
    """

    def __init__(self, params: Mapping[str, Any], copy: bool = True) -> None:
        super().__init__()
        self.stem = nn.Sequential(OrderedDict(conv=_folded_conv(params["stem"], copy), relu=nn.ReLU()))
        p = params["pool"]
        self.pool = nn.MaxPool2d(tuple(p["kernel"]), tuple(p["stride"]), tuple(p["pad"]))
        self.stage_names: list[str] = []
        for k, units in enumerate(params["stages"], start=1):
            name = f"stage{k}"
            self.add_module(name, nn.Sequential(*(ResidualUnit(u, copy) for u in units)))
            self.stage_names.append(name)
        fc = params["fc"]
        n_out, n_in = fc["weight"].shape
        self.fc = nn.Linear(n_in, n_out, bias=fc["bias"] is not None, device="meta")
        take = (lambda t: t.float().clone()) if copy else (lambda t: t.float())
        self.fc.weight = nn.Parameter(take(fc["weight"]))
        if fc["bias"] is not None:
            self.fc.bias = nn.Parameter(take(fc["bias"]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.stem(x))
        for name in self.stage_names:
            x = getattr(self, name)(x)
        return self.fc(x.mean(dim=(2, 3)))


# --------------------------------------------------------------------------- loading
def _check_chain(net: DlibResNet) -> None:
    """Raise ValueError unless every conv/fc gets as many channels as the layer before gives."""
    channels = 3
    convs = [net.stem.conv] + [
        c for name in net.stage_names for unit in getattr(net, name) for c in (unit.conv1, unit.conv2)
    ]
    for conv in convs:
        if conv.weight.shape[1] != channels or conv.bias.shape != (conv.weight.shape[0],):
            raise ValueError("inconsistent conv shapes")
        channels = conv.weight.shape[0]
    if net.fc.weight.shape[1] != channels:
        raise ValueError("inconsistent fc shape")


def _cache_file(sha: str) -> Path:
    return cache_dir() / "dlib" / f"{sha}.pt"


def _read_cache(sha: str) -> tuple[dict[str, Any], DlibResNet] | None:
    try:
        f = _cache_file(sha)
        if not f.is_file():
            return None
        params = torch.load(f, map_location="cpu", weights_only=True)
        if not isinstance(params, dict) or params.get("schema") != SCHEMA:
            raise ValueError("stale or foreign cache content")
        module = DlibResNet(params, copy=False)
        _check_chain(module)
        return params, module
    except Exception as e:  # any broken cache means: parse the .dat again
        log.warning("ignoring unusable dlib cache for %s: %s", sha[:12], e)
        return None


def _write_cache(sha: str, params: dict[str, Any]) -> None:
    tmp: str | None = None
    try:
        target = _cache_file(sha)
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{sha[:16]}.", suffix=".tmp", dir=target.parent)
        with os.fdopen(fd, "wb") as fh:
            torch.save(params, fh)
        os.replace(tmp, target)
        tmp = None
    except Exception as e:  # a cache is a convenience; never fail the load for it, nor print a line before the
        log.info("could not write dlib cache: %s", e)  # command's own result or error (e.g. on a full disk)
    finally:
        if tmp is not None:
            try:
                os.unlink(tmp)
            except OSError:
                pass


def load_dlib_resnet(path: str | os.PathLike | None = None, use_cache: bool = True) -> ModelWrapper:
    """dlib's face ResNet behind a :class:`ModelWrapper` (input [0,1] RGB 150x150, aligned ``dlib150``)."""
    path = Path(path) if path is not None else default_model_path()
    try:
        sha = file_sha256(path)
    except OSError as e:
        raise ModelLoadError(f"cannot read dlib model {path}: {e.strerror or e}") from None

    loaded = _read_cache(sha) if use_cache else None
    if loaded is None:
        params = parse_dlib_resnet(path)
        if use_cache:
            _write_cache(sha, params)  # before the module takes over (and folds) the tensors
        module = DlibResNet(params, copy=False)
    else:
        params, module = loaded

    return ModelWrapper(
        name="dlib-resnet",
        module=module,
        input_size=tuple(int(v) for v in params["input_size"]),
        mean=tuple(float(m) / 255.0 for m in params["mean"]),
        std=(256.0 / 255.0,) * 3,
        task="embedding",
        weights_id=sha,
        threshold=None,
        distance_threshold=float(params["distance_threshold"]),
        alignment="dlib150",
        default_layer="stage4",
        source="dlib-resnet",
        # CAM methods: stage4 (4x4) and stage5 (2x2) give coarse blobs whose top 20% of pixels, deleted,
        # lowered a genuine pair's similarity LESS than deleting random pixels (8 london_* pairs: Grad-CAM
        # 0.007 vs random 0.014); stage3 (8x8, about ResNet layer4 at 224 px) beat random (0.019 vs 0.011).
        extras={"cam_layer": "stage3"},
    )


# ----------------------------------------------------------------------------- structure for rule-based methods
@register_block(ResidualUnit)
def _residual_unit_structure(m: ResidualUnit) -> ResidualBlock:
    """relu2(add_padded(conv2(relu1(conv1(a))), downsample(a))); the downsample is a strided pick (non-negative)."""
    shortcut = [] if m.downsample is None else [("", NonNegative(m.downsample))]
    return ResidualBlock(children(m, ("conv1", "relu1", "conv2")), shortcut, _add_padded, [("", m.relu2)])


@register_network(DlibResNet)
def _dlib_structure(m: DlibResNet) -> Network:
    parts = [("stem", m.stem), ("pool", m.pool)] + [(n, getattr(m, n)) for n in m.stage_names]
    return Network(parts + [("", NonNegative(lambda t: t.mean(dim=(2, 3)))), ("fc", m.fc)])
