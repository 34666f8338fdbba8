"""What an export is: the sidecar record of a map, the overlay picture, the export set (PNG, .npy, sidecar)
written as one atomic set, and why a map came out empty (:func:`check_map`).

Below :mod:`famegui.explanation` (which owns computing a map) and above the methods: the Session, the CLI,
``reproduce`` and the public :class:`famegui.Explanation` all write exports through :func:`write_outputs`.
"""
from __future__ import annotations

import datetime as _dt
import hashlib
import math
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from .core.render import COLORMAPS, chip_at_scale, draw_box, draw_polygon, overlay
from .export import json_bytes, npy_bytes, package_versions, png_bytes, write_set

SIDECAR_VERSION = 1

def abs_path(p: str | None) -> str | None:
    return str(Path(p).resolve()) if p else None


def _input_record(inp) -> dict | None:
    if inp is None:
        return None
    return {"path": abs_path(inp.image.path), "sha256": inp.image.sha256, "face_index": inp.face_index,
            "preprocessing": inp.prepared.mode, "original_size": list(inp.image.original_size)}


def explain_record(model, weights_path, probe, reference, target, method: str, params, seconds: float | None = None,
                   extra: dict | None = None, non_mate=None) -> dict:
    """Everything needed to recompute a map, as a JSON-able dict."""
    m = model.describe()
    m["weights_path"] = abs_path(weights_path) if weights_path not in (None, "random") else weights_path
    rec = {
        "famegui_sidecar": SIDECAR_VERSION,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "model": m,
        "image": _input_record(probe),
        "reference": _input_record(reference),
        "non_mate": _input_record(non_mate),
        "target": target.to_dict(),
        "method": method,
        "params": params.to_dict() if hasattr(params, "to_dict") else dict(params),
        "versions": package_versions(),
    }
    if seconds is not None:
        rec["seconds"] = round(float(seconds), 3)
    if extra:
        rec.update(extra)
    return rec


def render_overlay(amap: np.ndarray, inp, *, on_photo: bool = False, opacity: float = 0.5, cmap: str = "jet",
                   boxes: list[tuple[tuple[float, float, float, float], tuple[int, int, int]]] | None = None,
                   signed: bool = False, long_side: int | None = None) -> np.ndarray:
    """The picture an export shows: the map over the model input, or over the whole photo; ``boxes`` are
    in model-input pixels. ``long_side``: the picture's long side in pixels when that is larger than the
    model input (or the photo): the input is cut from the photo again at that size (sharp, not blown up) and
    the map upsampled onto it; the map itself (.npy) is never resized.

    A ``signed`` map (values in [-1, 1], as the method declares) is drawn in the diverging
    blue-white-red scale, 0 in the middle.
    """
    if signed:
        amap, cmap = (np.asarray(amap) + 1.0) / 2.0, "bwr"
    if not on_photo:
        h, w = np.shape(amap)
        s = long_side / max(h, w) if long_side else 1.0
        if s > 1.0 and getattr(inp, "prepared", None) is not None and inp.image is not None:
            size = (round(w * s), round(h * s))
            base = chip_at_scale(inp.image.rgb, inp.prepared.to_image, s, size)
            big = cv2.resize(np.asarray(amap, np.float32), size, interpolation=cv2.INTER_LINEAR)
        else:
            s, base, big = 1.0, inp.tensor[0].permute(1, 2, 0).cpu().numpy(), amap
        out = overlay(base, big, opacity, cmap)
        for (x0, y0, x1, y1), color in boxes or []:
            out = draw_box(out, (x0 * s, y0 * s, x1 * s, y1 * s), color, max(2, round(s)))
        return out
    photo = inp.image.rgb
    big = inp.prepared.map_to_image(amap)
    out = overlay(photo, big, opacity, cmap, region=inp.prepared.region_mask())
    m = inp.prepared.to_image
    for box, color in boxes or []:
        x0, y0, x1, y1 = box
        corners = np.array([[x0, y0, 1], [x1, y0, 1], [x1, y1, 1], [x0, y1, 1]], float) - [0.5, 0.5, 0]
        out = draw_polygon(out, corners @ m.T + 0.5, color)
    ph, pw = out.shape[:2]
    if long_side and max(ph, pw) < long_side:  # a small photo: the picture is enlarged as a whole
        s = long_side / max(ph, pw)
        out = cv2.resize(out, (round(pw * s), round(ph * s)), interpolation=cv2.INTER_CUBIC)
    return out


def write_outputs(amap: np.ndarray, inp, record: dict, out: str, save_map: str | None = None, *,
                  on_photo: bool = False, opacity: float = 0.5, cmap: str = "jet", sidecar: bool = True,
                  boxes=None, long_side: int | None = None) -> list[Path]:
    """Write the overlay PNG, optionally the raw map (.npy) and the JSON sidecar (OUT with .json), as one set:
    all new or (killed before the commit) all old, never a new PNG beside an old sidecar."""
    check_display(opacity, cmap)
    amap = np.asarray(amap, dtype=np.float32)
    if long_side is not None and not (isinstance(long_side, int) and 0 < long_side <= 8192):
        raise ValueError(f"the export size must be a whole number of pixels from 1 to 8192, got {long_side!r}")
    picture = render_overlay(amap, inp, on_photo=on_photo, opacity=opacity, cmap=cmap, boxes=boxes,
                             signed=record_is_signed(record), long_side=long_side)
    png = png_bytes(picture)
    files: list[tuple[str | Path, bytes]] = []
    if save_map:
        files.append((save_map, npy_bytes(amap)))
    files.append((out, png))
    if sidecar:
        record = dict(record)
        record["outputs"] = {"overlay": abs_path(out), "map": abs_path(save_map), "on_photo": on_photo,
                             "opacity": opacity, "colormap": cmap, "map_shape": list(amap.shape),
                             "map_sha256": map_sha256(amap), "overlay_sha256": hashlib.sha256(png).hexdigest(),
                             "overlay_size": [int(picture.shape[1]), int(picture.shape[0])]}
        files.append((Path(out).with_suffix(".json"), json_bytes(record)))
    written = write_set(files, anchor=out)
    return [written[i] for i in ([1, 0, 2] if save_map else [0, 1])[:len(written)]]  # PNG, map, sidecar


def check_display(opacity, cmap) -> None:
    """ValueError for an opacity outside [0, 1] (or not a number) or an unknown colormap."""
    if isinstance(opacity, bool) or not isinstance(opacity, (int, float)) or not 0.0 <= opacity <= 1.0:
        raise ValueError(f"opacity must be a number from 0 to 1, got {opacity!r}")
    if not isinstance(cmap, str) or cmap not in COLORMAPS:
        choices = ", ".join(COLORMAPS)
        raise ValueError(f"colormap must be one of {choices}, got {cmap!r}")


def record_is_signed(record: dict) -> bool:
    """Whether the map of a sidecar record is signed, as its method declares for its target and parameters."""
    from .methods import get_method
    from .targets import Target

    target = Target.from_dict(record["target"])
    return get_method(record.get("method", "fame")).signed(target.task, record.get("params"))


def map_sha256(a: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(a, dtype=np.float32).tobytes()).hexdigest()


# --------------------------------------------------------------------------- empty maps
class EmptyMapError(ValueError):
    """The map is empty or not finite for a reason that makes it meaningless (NaN input, weights, output)."""


@dataclass
class MapProblem:
    text: str  # one line: what is wrong and why
    fatal: bool  # True: the map means nothing (NaN input or weights); False: empty for a stated reason


def check_map(amap: np.ndarray, model, x, target, info: dict | None = None, params: dict | None = None,
              reference=None, method: str | None = None) -> MapProblem | None:
    """None for a map with content; otherwise why it is empty (all one value) or held non-finite values.

    Checked in order: NaN/inf in the input or the reference, in the network's weights, in its output on the
    input; values the method itself made non-finite; FAME's loss already below epsilon at the start; a
    similarity or class probability that is saturated; else "no evidence". Cheap: the causes are looked
    for only when the map is empty or the method reported non-finite values.
    """
    info = info or {}
    a = np.asarray(amap)
    nonfinite = int(info.get("non_finite_values") or 0) + int(a.size - np.isfinite(a).sum())
    empty = a.size == 0 or not np.isfinite(a).any() or float(np.nanmax(a)) == float(np.nanmin(a))
    if not (empty or nonfinite):
        return None
    fatal = _fatal_cause(model, x, reference)
    if fatal:
        return MapProblem(f"the map is meaningless: {fatal}", True)
    if nonfinite and not empty:
        return MapProblem(f"{nonfinite} values of the map were NaN or infinite (set to 0)", False)
    return MapProblem(f"the map is empty: {_empty_cause(model, x, target, info, params or {}, reference)}", False)


def _fatal_cause(model, x, reference) -> str | None:
    import torch

    for name, t in (("the input image", x), ("the reference image", reference)):
        if t is not None and not bool(torch.isfinite(t).all()):
            return f"{name} holds NaN or infinite values"
    bad = [n for n, p in list(model.module.named_parameters()) + list(model.module.named_buffers())
           if p.is_floating_point() and not bool(torch.isfinite(p).all())]
    if bad:
        return f"the network's weights hold NaN or infinite values ({len(bad)} tensors, e.g. {bad[0]})"
    with torch.no_grad():
        out = model(x.to(model.device))
    if not bool(torch.isfinite(out).all()):
        return "the network's output on this image is NaN or infinite"
    return None


def _empty_cause(model, x, target, info: dict, params: dict, reference) -> str:
    import torch

    if info.get("note"):
        return str(info["note"])
    if info.get("non_finite_values"):
        return f"the method produced {info['non_finite_values']} NaN or infinite values"
    eps = params.get("epsilon")
    start = info.get("initial_loss")
    if start is not None and (info.get("iterations") == 0 or (eps is not None and start <= eps)):
        return (f"the loss was already {start:.4g} at the start"
                + (f", below epsilon {eps:g}" if eps is not None else "") + ": nothing to suppress")
    if start is not None and math.isfinite(start) and abs(start) < 1e-12:
        return "the target's output is zero at the start (e.g. a cell whose activation is 0): nothing to suppress"
    with torch.no_grad():
        out = model(x.to(model.device))
        if reference is not None and target.needs_reference:
            cos = float(torch.nn.functional.cosine_similarity(out.flatten(1), model(reference.to(model.device))
                                                              .flatten(1))[0])
            if cos > 1 - 1e-6:
                return f"the similarity is saturated (cosine {cos:.6f}): the two images give the same embedding"
        if target.kind == "class" and out.ndim == 2 and out.shape[1] > target.class_index:
            p = float(torch.softmax(out.double(), 1)[0, target.class_index])
            if p > 1 - 1e-9 or p < 1e-12:
                return f"the class probability is saturated ({p:.3g}): its gradient vanishes"
    return "the method found no evidence for this target (every pixel got the same value)"
