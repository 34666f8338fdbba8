"""Export records: what a sidecar holds, writing an export, and reproducing it."""
from __future__ import annotations

import datetime as _dt
import json
from pathlib import Path

import numpy as np

from .core.render import draw_box, draw_polygon, overlay
from .export import package_versions, write_json, write_npy, write_png

SIDECAR_VERSION = 1


def _abs(p: str | None) -> str | None:
    return str(Path(p).resolve()) if p else None


def _input_record(inp) -> dict | None:
    if inp is None:
        return None
    return {"path": _abs(inp.image.path), "sha256": inp.image.sha256, "face_index": inp.face_index,
            "preprocessing": inp.prepared.mode, "original_size": list(inp.image.original_size)}


def explain_record(model, weights_path, probe, reference, target, method: str, params, seconds: float | None = None,
                   extra: dict | None = None, non_mate=None) -> dict:
    """Everything needed to recompute a map, as a JSON-able dict."""
    m = model.describe()
    m["weights_path"] = _abs(weights_path) if weights_path not in (None, "random") else weights_path
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
                   signed: bool = False) -> np.ndarray:
    """The picture an export shows: the map over the model input, or over the whole photo.

    A ``signed`` map (values in [-1, 1], as the method declares) is drawn in the diverging
    blue-white-red scale, 0 in the middle.
    """
    if signed:
        amap, cmap = (np.asarray(amap) + 1.0) / 2.0, "bwr"
    if not on_photo:
        base = inp.tensor[0].permute(1, 2, 0).cpu().numpy()
        out = overlay(base, amap, opacity, cmap)
        for box, color in boxes or []:
            out = draw_box(out, box, color)
        return out
    photo = inp.image.rgb
    big = inp.prepared.map_to_image(amap)
    out = overlay(photo, big, opacity, cmap, region=inp.prepared.region_mask())
    m = inp.prepared.to_image
    for box, color in boxes or []:
        x0, y0, x1, y1 = box
        corners = np.array([[x0, y0, 1], [x1, y0, 1], [x1, y1, 1], [x0, y1, 1]], float) - [0.5, 0.5, 0]
        out = draw_polygon(out, corners @ m.T + 0.5, color)
    return out


def write_outputs(amap: np.ndarray, inp, record: dict, out: str, save_map: str | None = None, *,
                  on_photo: bool = False, opacity: float = 0.5, cmap: str = "jet", sidecar: bool = True,
                  boxes=None) -> list[Path]:
    """Write the overlay PNG, optionally the raw map (.npy) and the JSON sidecar (OUT with .json)."""
    amap = np.asarray(amap, dtype=np.float32)
    written = [write_png(out, render_overlay(amap, inp, on_photo=on_photo, opacity=opacity, cmap=cmap,
                                             boxes=boxes, signed=record_is_signed(record)))]
    if save_map:
        written.append(write_npy(save_map, amap))
    if sidecar:
        record = dict(record)
        record["outputs"] = {"overlay": _abs(out), "map": _abs(save_map), "on_photo": on_photo,
                             "opacity": opacity, "colormap": cmap, "map_shape": list(amap.shape),
                             "map_sha256": _sha(amap)}
        written.append(write_json(Path(out).with_suffix(".json"), record))
    return written


def record_is_signed(record: dict) -> bool:
    """Whether the map of a sidecar record is signed, as its method declares for its target and parameters."""
    from .methods import get_method
    from .targets import Target

    target = Target.from_dict(record["target"])
    return get_method(record.get("method", "fame")).signed(target.task, record.get("params"))


def _sha(a: np.ndarray) -> str:
    import hashlib

    return hashlib.sha256(np.ascontiguousarray(a, dtype=np.float32).tobytes()).hexdigest()


class SidecarError(ValueError):
    pass


def load_sidecar(path: str) -> dict:
    p = Path(path)
    try:
        rec = json.loads(p.read_text())
    except FileNotFoundError:
        raise SidecarError(f"sidecar not found: {p}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise SidecarError(f"{p} is not a famegui sidecar (invalid JSON: {e})") from None
    if not isinstance(rec, dict) or "famegui_sidecar" not in rec:
        raise SidecarError(f"{p} is not a famegui sidecar (no 'famegui_sidecar' field)")
    return rec


def compute_from_record(rec: dict, trust_entry_point: bool = False):
    """Recompute (map, probe input, record) from a sidecar record, checking the inputs are unchanged.

    A sidecar whose model is a Python entry point (``package.module:callable``) is refused unless
    ``trust_entry_point``: opening a file someone sent must never run code.
    """
    from .data.pipeline import prepare_for_model
    from .methods import run_method
    from .models.zoo import load_model, runs_code
    from .targets import Target

    m = rec["model"]
    source = str(m["source"])
    if runs_code(source) and not trust_entry_point:
        raise SidecarError(f"the sidecar's model {source!r} is Python code (package.module:callable): "
                           "reproducing it would import that module and run it; pass --trust-entry-point only if "
                           "you trust that code")
    model = load_model(source, m.get("weights_path"))
    if m.get("weights") not in (None, model.weights_id):
        raise SidecarError(f"weights changed since export: {model.weights_id[:12]} != {str(m['weights'])[:12]}")

    def inp(r):
        if r is None:
            return None
        align = r.get("preprocessing") != "center-crop"
        x = prepare_for_model(model, r["path"], face_index=r.get("face_index") or 0, align=align)
        if x.image.sha256 != r["sha256"]:
            raise SidecarError(f"{r['path']} changed since export (sha256 differs)")
        return x

    probe, ref, non_mate = inp(rec["image"]), inp(rec.get("reference")), inp(rec.get("non_mate"))
    threshold = None
    if ref is not None:
        from .models.thresholds import default_cosine_threshold

        threshold = default_cosine_threshold(model)
    amap = run_method(rec.get("method", "fame"), model, probe.tensor, Target.from_dict(rec["target"]),
                      rec.get("params", {}), reference=None if ref is None else ref.tensor, threshold=threshold,
                      non_mate=None if non_mate is None else non_mate.tensor)
    return amap, probe, model


def reproduce(sidecar: str, out: str | None = None, save_map: str | None = None, trust_entry_point: bool = False):
    rec = load_sidecar(sidecar)
    amap, probe, _model = compute_from_record(rec, trust_entry_point)
    outputs = rec.get("outputs", {})
    sc = Path(sidecar)
    out = out or str(sc.with_name(sc.stem + ".reproduced.png"))
    write_outputs(amap, probe, rec, out, save_map, on_photo=outputs.get("on_photo", False),
                  opacity=outputs.get("opacity", 0.5), cmap=outputs.get("colormap", "jet"), sidecar=False)
    diff = None
    old = outputs.get("map")
    if old and Path(old).exists():
        diff = float(np.abs(np.load(old).astype(np.float32) - amap).max())
    return out, diff
