"""Reading exports back: a sidecar validated field by field, and ``reproduce`` (recompute an export from its
sidecar and check that its PNG and map belong to it).

A sidecar is validated field by field when it is read (:func:`validate_sidecar`): a wrong type, a
non-finite number or a missing key is one line naming the key and the file. What a sidecar holds and how an
export set is written is :mod:`famegui.records`; the map is recomputed through the one explain path
(:func:`famegui.explanation.explain_rows`).
"""
from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .export import recover_set
from .records import (  # noqa: F401  (re-exported: the names callers used before records.py existed)
    SIDECAR_VERSION,
    EmptyMapError,
    MapProblem,
    check_display,
    check_map,
    explain_record,
    map_sha256,
    record_is_signed,
    render_overlay,
    write_outputs,
)


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
    from .explanation import Row, explain_rows
    from .models.zoo import load_model, runs_code
    from .targets import Target

    m = rec["model"]
    source = str(m["source"])
    if runs_code(source) and not trust_entry_point:
        raise SidecarError(f"the sidecar's model {source!r} is Python code (package.module:callable): "
                           "reproducing it would import that module and run it; pass --trust-entry-point only if "
                           "you trust that code")
    options = {}
    if runs_code(source):  # an entry point takes the preprocessing the sidecar recorded (a zoo model has its own)
        options = {k: m[k] for k in ("input_size", "mean", "std", "task", "channel_order") if m.get(k) is not None}
        options["input_size"] = tuple(options["input_size"]) if "input_size" in options else None
    model = load_model(source, m.get("weights_path"), **options)
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
    with recorded_threads(rec, model):
        [e] = explain_rows(model, [Row(probe, Target.from_dict(rec["target"]), ref, non_mate)],
                           rec.get("method", "fame"), rec.get("params", {}), fatal="keep")
    problem = MapProblem(e.info.problem, e.info.fatal) if e.info.problem is not None else None
    return e.map, probe, model, problem


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
    if expected is not None and (saved.dtype != np.float32 or map_sha256(saved) != expected):
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
