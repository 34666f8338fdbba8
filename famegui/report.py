"""Export records: what a sidecar holds, writing an export (one atomic set), reproducing it, and why a map
came out empty.

A sidecar is validated field by field when it is read (:func:`validate_sidecar`): a wrong type, a
non-finite number or a missing key is one line naming the key and the file. An export's PNG, .npy and
sidecar are written with :func:`famegui.export.write_set`, and the sidecar records the sha256 of the PNG
and of the map, which :func:`reproduce` checks. :func:`check_map` says why a map came out empty.
"""
from __future__ import annotations

import contextlib
import datetime as _dt
import hashlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from .core.render import COLORMAPS, chip_at_scale, draw_box, draw_polygon, overlay
from .export import json_bytes, npy_bytes, package_versions, png_bytes, recover_set, write_set

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
        record["outputs"] = {"overlay": _abs(out), "map": _abs(save_map), "on_photo": on_photo,
                             "opacity": opacity, "colormap": cmap, "map_shape": list(amap.shape),
                             "map_sha256": _sha(amap), "overlay_sha256": hashlib.sha256(png).hexdigest(),
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


def _sha(a: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(a, dtype=np.float32).tobytes()).hexdigest()


def _file_sha(path: Path) -> str:
    from .paths import file_sha256

    return file_sha256(path)


# --------------------------------------------------------------------------- reading a sidecar
class SidecarError(ValueError):
    pass


def load_sidecar(path: str) -> dict:
    """A validated sidecar record (one-line :class:`SidecarError` naming the file and the key otherwise).

    An export of this sidecar that was interrupted after its commit is finished first (see
    :func:`famegui.export.write_set`)."""
    from .data.files import read_text_file

    p = Path(path)
    if p.suffix.lower() != ".json":
        raise SidecarError(f"{p} is not a sidecar: famegui sidecars are .json files next to the overlay")
    recover_set(p)
    text = read_text_file(p, "sidecar", SidecarError)
    try:
        rec = json.loads(text)
    except json.JSONDecodeError as e:
        raise SidecarError(f"{p} is not a famegui sidecar (invalid JSON: {e})") from None
    except RecursionError:
        raise SidecarError(f"{p} is not a famegui sidecar (nested too deeply)") from None
    if not isinstance(rec, dict) or "famegui_sidecar" not in rec:
        raise SidecarError(f"{p} is not a famegui sidecar (no 'famegui_sidecar' field)")
    validate_sidecar(rec, str(p))
    return rec


def _need(rec: dict, key: str, types, where: str, what: str, optional: bool = False):
    if key not in rec:
        if optional:
            return None
        raise SidecarError(f"{where}: the sidecar has no {key!r} field ({what})")
    v = rec[key]
    if v is None and optional:
        return None
    if isinstance(v, bool) and bool not in (types if isinstance(types, tuple) else (types,)):
        raise SidecarError(f"{where}: {key!r} must be {what}, got {v!r}")
    if not isinstance(v, types):
        raise SidecarError(f"{where}: {key!r} must be {what}, got {_show(v)}")
    return v


def _show(v) -> str:
    text = json.dumps(v) if isinstance(v, (dict, list, str, int, float, bool, type(None))) else repr(v)
    return text if len(text) <= 60 else text[:57] + "..."


def _check_input(rec: dict, key: str, where: str, optional: bool) -> None:
    r = _need(rec, key, dict, where, "an object with the image's path and sha256", optional)
    if r is None:
        return
    _need(r, "path", str, f"{where}: {key}", "the image's path (text)")
    _need(r, "sha256", str, f"{where}: {key}", "the image's sha256 (text)")
    face = _need(r, "face_index", int, f"{where}: {key}", "a whole number >= 0", optional=True)
    if face is not None and not 0 <= face < 10_000:
        raise SidecarError(f"{where}: {key}.face_index must be a whole number from 0 to 9999, got {face}")
    _need(r, "preprocessing", str, f"{where}: {key}", "text", optional=True)


def validate_sidecar(rec: dict, where: str = "sidecar") -> None:
    """Check every field reproduce uses: types, finite numbers in range, a known method with valid
    parameters, a valid target. Raises :class:`SidecarError` naming the file (``where``) and the key."""
    from .methods import get_method
    from .targets import Target

    version = _need(rec, "famegui_sidecar", int, where, "the sidecar version (a whole number)")
    if version > SIDECAR_VERSION:
        raise SidecarError(f"{where} was written by a newer famegui (sidecar version {version})")
    model = _need(rec, "model", dict, where, "an object describing the model")
    source = _need(model, "source", str, f"{where}: model", "the model's name or file (text)")
    if not source.strip():
        raise SidecarError(f"{where}: model.source is empty")
    _need(model, "weights_path", str, f"{where}: model", "a path (text) or null", optional=True)
    _need(model, "weights", str, f"{where}: model", "the weights' sha256 (text) or null", optional=True)
    _check_input(rec, "image", where, optional=False)
    _check_input(rec, "reference", where, optional=True)
    _check_input(rec, "non_mate", where, optional=True)
    try:
        target = Target.from_dict(_need(rec, "target", dict, where, "an object with the target's kind"))
    except ValueError as e:
        raise SidecarError(f"{where}: {e}") from None
    method = _need(rec, "method", str, where, "a method name (text)", optional=True) or "fame"
    params = _need(rec, "params", dict, where, "an object of method parameters", optional=True) or {}
    try:
        get_method(method).resolve(params, target.task)
    except ValueError as e:
        raise SidecarError(f"{where}: {e}") from None
    outputs = _need(rec, "outputs", dict, where, "an object describing the written files", optional=True) or {}
    try:
        check_display(outputs.get("opacity", 0.5), outputs.get("colormap", "jet"))
    except ValueError as e:
        raise SidecarError(f"{where}: outputs.{e}") from None
    for key in ("on_photo",):
        _need(outputs, key, bool, f"{where}: outputs", "true or false", optional=True)
    for key in ("overlay", "map", "map_sha256", "overlay_sha256"):
        _need(outputs, key, str, f"{where}: outputs", "text or null", optional=True)
    size = outputs.get("overlay_size")
    if size is not None and not (isinstance(size, list) and len(size) == 2
                                 and all(isinstance(v, int) and not isinstance(v, bool) and 0 < v <= 8192
                                         for v in size)):
        raise SidecarError(f"{where}: outputs.overlay_size must be [width, height] in pixels, got {size!r}")


@contextlib.contextmanager
def recorded_threads(rec: dict, model):
    """torch with the thread count the map was made with (FAME records it on the CPU), restored after: float
    sums depend on it, and FAME's normalised steps carry a last-bit difference into the map."""
    import torch

    from .core.threads import usable_cpus

    n = (rec.get("info") or {}).get("threads")
    if not (isinstance(n, int) and not isinstance(n, bool) and n >= 1) or model.device.type != "cpu":
        yield
        return
    n = min(n, usable_cpus())  # a count this machine cannot give (or a hostile one) stops at its CPUs
    saved = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(saved)


def compute_from_record(rec: dict, trust_entry_point: bool = False):
    """Recompute (map, probe input, model) from a sidecar record, checking the inputs are unchanged.

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
    target = Target.from_dict(rec["target"])
    info: dict = {}
    with recorded_threads(rec, model):
        amap = run_method(rec.get("method", "fame"), model, probe.tensor, target,
                          rec.get("params", {}), reference=None if ref is None else ref.tensor, threshold=threshold,
                          non_mate=None if non_mate is None else non_mate.tensor, info=info)
    problem = check_map(amap, model, probe.tensor, target, info, rec.get("params"),
                        reference=None if ref is None else ref.tensor)
    return amap, probe, model, problem


@dataclass
class Reproduction:
    """What ``reproduce`` did: the overlay written, the largest difference to the exported map (None when
    there was no map to compare with), and notes (an overlay or map that does not belong to the sidecar,
    an empty map)."""

    out: str
    diff: float | None
    notes: list[str] = field(default_factory=list)


def sidecar_of(path: str) -> tuple[Path, Path | None]:
    """(sidecar, overlay given) for ``reproduce PATH``: a sidecar, or an overlay PNG with its sidecar beside it."""
    p = Path(path)
    if p.suffix.lower() == ".png":
        side = p.with_suffix(".json")
        if not side.is_file():
            raise SidecarError(f"{p} has no sidecar next to it ({side.name} not found)")
        return side, p
    return p, None


def check_overlay(rec: dict, sidecar: Path, given: Path | None) -> str | None:
    """Raise :class:`SidecarError` when the overlay (the PNG given, else the one beside the sidecar) is not
    the one the sidecar records; a note when it cannot be checked."""
    from .data.files import regular_file

    outputs = rec.get("outputs") or {}
    recorded = outputs.get("overlay_sha256")
    png = given or sidecar.with_suffix(Path(outputs.get("overlay") or "x.png").suffix or ".png")
    if not png.is_file():
        return None if given is None else f"{png} not found"
    if recorded is None:
        return f"{sidecar.name} records no hash of its overlay (an older famegui): {png.name} is not verified"
    regular_file(png, "overlay", "image", SidecarError)
    if _file_sha(png) != recorded:
        raise SidecarError(f"{png} does not belong to {sidecar}: its sha256 differs from the one the sidecar "
                           "records (the picture was replaced or comes from another export)")
    return None


def compare_with_export(rec: dict, amap: np.ndarray) -> tuple[float | None, str | None]:
    """(max |difference| to the exported .npy, a note) - no difference when that file is not the sidecar's."""
    from .data.files import regular_file

    outputs = rec.get("outputs") or {}
    old = outputs.get("map")
    if not old or not Path(old).exists():
        return None, None
    try:
        saved = np.load(regular_file(old, "map", "image", SidecarError), allow_pickle=False)
    except (OSError, ValueError) as e:
        return None, f"the exported map {old} cannot be read ({e}); no comparison"
    expected = outputs.get("map_sha256")
    if expected is not None and (saved.dtype != np.float32 or _sha(saved) != expected):
        return None, (f"the exported map {old} does not belong to this sidecar (sha256 differs): "
                      "it was replaced after the export; no comparison")
    if saved.shape != amap.shape:
        return None, f"the exported map {old} has shape {saved.shape}, not {amap.shape}; no comparison"
    return float(np.abs(saved.astype(np.float32) - amap).max()), None


def reproduce(sidecar: str, out: str | None = None, save_map: str | None = None,
              trust_entry_point: bool = False) -> Reproduction:
    """Recompute the export of ``sidecar`` (or of the overlay PNG given, whose sidecar is beside it)."""
    side, given = sidecar_of(sidecar)
    rec = load_sidecar(str(side))
    notes = [n for n in [check_overlay(rec, side, given)] if n]
    amap, probe, _model, problem = compute_from_record(rec, trust_entry_point)
    outputs = rec.get("outputs", {}) or {}
    out = out or str(side.with_name(side.stem + ".reproduced.png"))
    size = outputs.get("overlay_size")
    write_outputs(amap, probe, rec, out, save_map, on_photo=outputs.get("on_photo", False),
                  opacity=outputs.get("opacity", 0.5), cmap=outputs.get("colormap", "jet"), sidecar=False,
                  long_side=max(size) if size else None)
    diff, note = compare_with_export(rec, amap)
    notes += [n for n in (note, problem and problem.text) if n]
    return Reproduction(out, diff, notes)


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
