"""Locality over layers: how much of a feature-map cell's FAME map lies under the cell, layer by layer.

The CAM assumption is that a cell of a feature map sees the patch under it. For every chosen layer and image,
FAME explains a sample of cells (batched, cropped to the receptive field as the all-cells sheet is) and each
map is measured against the cell's footprint (the patch under it) and its theoretical receptive field:

- ``inside``, ``inside_2x``, ``inside_4x``: the share of the map's mass inside the footprint, and inside
  squares of twice and four times its side around the same centre (clipped to the input);
- ``r50``, ``r90``: the radius in pixels, around the footprint's centre, of the smallest disc that holds 50 %
  / 90 % of the mass (the effective receptive field), and ``r50_rf`` / ``r90_rf`` the same as a share of the
  theoretical receptive field's radius (the radius of the disc with the area of its box).

Maps are measured before FAME's Gaussian blur by default (``blur=None``): the blur alone spreads a point over
some 50 pixels and would be measured as much as the network. One part per (image, layer) is written to
``out/parts`` as it is done, so an interrupted run resumes where it stopped. The parts can be computed in
this process or by a protocol run's engines (``engine="local"``: worker processes; ``"ray"``: Ray actors,
on a cluster with ``address``), each worker loading the model once from its spec; only this process
writes files.
"""
from __future__ import annotations

import csv
import io
import json
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..data.pipeline import ModelInput, prepare_for_model
from ..explanation import Row, explain_rows
from ..models.receptive import Box, footprint, mass_inside, receptive_field
from ..paths import file_sha256
from ..targets import Target

MEASURES = ("inside", "inside_2x", "inside_4x", "r50", "r90", "r50_rf", "r90_rf")
WORDS = {"inside": "mass in footprint", "inside_2x": "in 2x footprint", "inside_4x": "in 4x footprint",
         "r50": "r50 (px)", "r90": "r90 (px)", "r50_rf": "r50 / RF radius", "r90_rf": "r90 / RF radius"}
SHARES = ("inside", "inside_2x", "inside_4x", "r50_rf", "r90_rf")  # shown as percentages


# ----------------------------------------------------------------------------- one map
def scaled_box(box: Box, k: float, shape: tuple[int, int]) -> Box:
    """``box`` grown ``k`` times around its centre, clipped to an image of ``shape`` (H, W)."""
    cx, cy = (box.x0 + box.x1) / 2, (box.y0 + box.y1) / 2
    hw, hh = box.width * k / 2, box.height * k / 2
    return Box(max(0.0, cx - hw), max(0.0, cy - hh), min(float(shape[1]), cx + hw), min(float(shape[0]), cy + hh))


def mass_radius(amap: np.ndarray, centre: tuple[float, float], share: float) -> float:
    """The radius (pixels) of the smallest disc around ``centre`` (x, y) that holds ``share`` of the map's
    mass (|map|); NaN for an empty map. Pixel (i, j) sits at (j + 0.5, i + 0.5)."""
    m = np.abs(np.asarray(amap, dtype=np.float64))
    total = m.sum()
    if not total > 0:
        return float("nan")
    ys, xs = np.indices(m.shape)
    d = np.hypot(xs + 0.5 - centre[0], ys + 0.5 - centre[1]).ravel()
    order = np.argsort(d, kind="stable")
    cum = np.cumsum(m.ravel()[order])
    k = int(np.searchsorted(cum, share * total - 1e-12 * total))
    return float(d[order[min(k, len(order) - 1)]])


def measure(amap: np.ndarray, fp: Box, rf: Box) -> dict:
    """The measures of :data:`MEASURES` for one cell's map, its footprint ``fp`` and receptive field ``rf``."""
    shape = amap.shape
    centre = ((fp.x0 + fp.x1) / 2, (fp.y0 + fp.y1) / 2)
    rf_radius = math.sqrt(max(rf.width * rf.height, 1e-12) / math.pi)
    r50, r90 = mass_radius(amap, centre, 0.5), mass_radius(amap, centre, 0.9)
    return {"inside": mass_inside(amap, fp), "inside_2x": mass_inside(amap, scaled_box(fp, 2, shape)),
            "inside_4x": mass_inside(amap, scaled_box(fp, 4, shape)), "r50": r50, "r90": r90,
            "r50_rf": r50 / rf_radius, "r90_rf": r90 / rf_radius, "rf_radius": rf_radius}


# ----------------------------------------------------------------------------- choices
def default_layers(model) -> list[str]:
    """The model's stages (``extras['stages']``), else its top-level layers that are feature maps."""
    stages = model.extras.get("stages") or {}
    if stages:
        return [v for _k, v in sorted(stages.items())]
    return [info.name for info in model.spatial_layers() if "." not in info.name]


def choose_layers(model, layers: str | Sequence[str] | None) -> list[str]:
    """``None`` / ``"stages"``: :func:`default_layers`; ``"all"``: every feature map; else the names given,
    each checked (one-line ValueError)."""
    if layers is None or layers == "stages":
        chosen = default_layers(model)
    elif layers == "all":
        chosen = [info.name for info in model.spatial_layers()]
    else:
        chosen = [layers] if isinstance(layers, str) else list(layers)
    for name in chosen:
        try:
            info = model.layer_info(name)
        except KeyError as e:
            raise ValueError(str(e).strip("'\"")) from None
        if not info.is_spatial:
            raise ValueError(f"layer {name!r} of {model.name} gives {info.grid_text}, not a grid of cells")
    if not chosen:
        raise ValueError(f"{model.name} has no layer that is a grid of cells")
    return chosen


def choose_cells(grid: tuple[int, int], cells: int | str, seed: int = 0) -> list[tuple[int, int]]:
    """Every cell of a (H, W) grid (``"all"``), or ``cells`` of them drawn without replacement (seeded: the
    same cells for every image)."""
    h, w = grid
    every = [(r, c) for r in range(h) for c in range(w)]
    if cells == "all":
        return every
    n = int(cells)
    if n < 1:
        raise ValueError(f"cells must be 'all' or a whole number >= 1, got {cells!r}")
    if n >= len(every):
        return every
    pick = np.random.default_rng(seed).choice(len(every), size=n, replace=False)
    return [every[i] for i in sorted(pick)]


# ----------------------------------------------------------------------------- the result
@dataclass
class LocalityResult:
    """Every measured cell (``cells``: one dict per image x layer x cell) and the summary per layer
    (``layers``: depth order, mean and standard deviation of each measure, counts)."""

    model: str
    params: dict
    cells: list[dict]
    layers: list[dict] = field(default_factory=list)
    reused: int = 0  # parts read back from an earlier, interrupted run

    def to_dict(self) -> dict:
        return {"famegui_locality": 1, "model": self.model, "params": self.params, "layers": self.layers,
                "cells": self.cells}

    def table(self, fmt: str = "md") -> str:
        """The per-layer table as Markdown (``md``), ``csv`` or ``latex``."""
        if fmt == "csv":
            buf = io.StringIO()
            w = csv.writer(buf, lineterminator="\n")
            w.writerow(["layer", "depth", "grid", "n", *[f"{m}_{s}" for m in MEASURES for s in ("mean", "sd")]])
            for r in self.layers:
                w.writerow([r["layer"], r["depth"], f"{r['grid'][0]}x{r['grid'][1]}", r["n"],
                            *[_raw(r[m][s]) for m in MEASURES for s in ("mean", "sd")]])
            return buf.getvalue()
        cols = ["layer", "grid", "n", *[WORDS[m] for m in MEASURES]]
        body = [[r["layer"], f"{r['grid'][0]}x{r['grid'][1]}", str(r["n"]),
                 *[_cell(r[m], m in SHARES, fmt) for m in MEASURES]] for r in self.layers]
        if fmt == "md":
            lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
            return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in body]) + "\n"
        if fmt == "latex":
            from .report_tables import tex_escape

            head = " & ".join(tex_escape(c).replace("%", r"\%") for c in cols)
            rows = [" & ".join(tex_escape(v) for v in row) + r" \\" for row in body]
            return "\n".join([r"\begin{tabular}{l" + "r" * (len(cols) - 1) + "}", r"\toprule", head + r" \\",
                              r"\midrule", *rows, r"\bottomrule", r"\end{tabular}"]) + "\n"
        raise ValueError(f"format must be md, csv or latex, got {fmt!r}")

    def figure(self, width: float = 6.0, height: float = 3.6, dpi: int = 100, mark: str | None = None) -> np.ndarray:
        """The shares against depth (mean and standard deviation), as an (H, W, 3) uint8 picture; ``mark``: a
        layer to mark (the one on screen)."""
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        fig = Figure(figsize=(width, height), dpi=dpi)
        FigureCanvasAgg(fig)
        ax = fig.add_subplot(1, 1, 1)
        x = np.arange(len(self.layers))
        top = 1.05
        for m, style in (("inside", "o-"), ("inside_2x", "s--"), ("inside_4x", "^:"), ("r90_rf", "d-.")):
            mean = np.array([np.nan if r[m]["mean"] is None else r[m]["mean"] for r in self.layers], dtype=float)
            sd = np.array([np.nan if r[m]["sd"] is None else r[m]["sd"] for r in self.layers], dtype=float)
            ax.errorbar(x, mean, yerr=np.nan_to_num(sd), fmt=style, capsize=3, label=WORDS[m])
            if np.isfinite(mean + np.nan_to_num(sd)).any():
                top = max(top, float(np.nanmax(mean + np.nan_to_num(sd))) * 1.05)
        ax.set_xticks(x, [r["layer"] for r in self.layers], rotation=30, ha="right", fontsize=8)
        names = [r["layer"] for r in self.layers]
        if mark in names:
            ax.axvline(names.index(mark), color="0.4", lw=6, alpha=0.25, zorder=0)
            ax.get_xticklabels()[names.index(mark)].set_fontweight("bold")
        ax.set_ylim(0, top)  # r90 can exceed the theoretical radius (a disc is not the receptive field's box)
        ax.set_ylabel("share")
        ax.set_title(f"{self.model}: locality over layers", fontsize=10)
        ax.legend(fontsize=7, loc="best")
        fig.tight_layout()
        fig.canvas.draw()
        return np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()

    def save(self, out: str | os.PathLike) -> list[Path]:
        """``locality.json`` (every number), ``locality.md`` / ``.csv`` / ``.tex`` and ``locality.png`` in
        ``out``; returns the paths."""
        from ..export import write_png

        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        written = [_atomic(out / "locality.json", json.dumps(self.to_dict(), indent=1, allow_nan=False,
                                                            default=_json_default))]
        for fmt, ext in (("md", "md"), ("csv", "csv"), ("latex", "tex")):
            written.append(_atomic(out / f"locality.{ext}", self.table(fmt)))
        written.append(Path(write_png(out / "locality.png", self.figure())))
        return written


def _json_default(x):
    raise TypeError(f"not JSON: {type(x).__name__}")


def _raw(x: float) -> str:
    return "" if x is None or not math.isfinite(x) else f"{x:.6g}"


def _cell(stat: dict, share: bool, fmt: str) -> str:
    mean, sd = stat["mean"], stat["sd"]
    if mean is None or not math.isfinite(mean):
        return "-"
    pm = r" $\pm$ " if fmt == "latex" else " ± "
    if share:
        pct = r"\%" if fmt == "latex" else "%"
        return f"{100 * mean:.1f}{pct}" + (f"{pm}{100 * sd:.1f}" if sd is not None and math.isfinite(sd) else "")
    return f"{mean:.1f}" + (f"{pm}{sd:.1f}" if sd is not None and math.isfinite(sd) else "")


def _atomic(path: Path, text: str) -> Path:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
    return path


def summarise(model, layers: Sequence[str], cells: list[dict]) -> list[dict]:
    """Mean and standard deviation of every measure per layer (NaN measures of empty maps left out)."""
    depth = {info.name: i for i, info in enumerate(model.layers())}
    out = []
    for layer in layers:
        rows = [c for c in cells if c["layer"] == layer]
        summary = {"layer": layer, "depth": depth.get(layer, -1), "grid": list(model.layer_info(layer).shape[1:]),
                   "n": len(rows), "images": len({c["image_sha256"] for c in rows})}
        for m in MEASURES:
            v = np.array([c[m] for c in rows if c[m] is not None and math.isfinite(c[m])], dtype=float)
            summary[m] = {"mean": float(v.mean()) if len(v) else None,
                          "sd": float(v.std(ddof=1)) if len(v) > 1 else None, "n": int(len(v))}
        out.append(summary)
    return out


# ----------------------------------------------------------------------------- the measurement
# long: most of it is the public docstring (Parameters, Returns, Examples)
def locality(model, images: Sequence[str | os.PathLike], layers: str | Sequence[str] | None = None,
             cells: int | str = 16, iterations: int = 100, *, blur: tuple[int, float] | None = None,
             seed: int = 0, out: str | os.PathLike | None = None, align: bool = True,
             progress: Callable[[float], None] | None = None, cancel: Callable[[], bool] | None = None,
             engine: str | None = None, workers: int = 1, address: str | None = None, spec: dict | None = None
             ) -> LocalityResult:
    """FAME for a sample of cells of each layer on each image, measured against the cells' footprints.

    Parameters
    ----------
    model : ModelWrapper
        The network (:func:`famegui.load` or :func:`famegui.wrap`).
    images : sequence of paths (or prepared ModelInput)
        Photos (face models align them as the window does).
    layers : "stages", "all", or layer names
        Default: the model's stages (or its top-level feature maps).
    cells : int or "all"
        Cells per layer, drawn once (seeded) and used for every image.
    iterations : int
        FAME iterations per map.
    blur : (kernel, sigma), optional
        FAME's Gaussian blur before measuring; default none (the map as the network makes it).
    seed : int
        The cells' draw.
    out : folder, optional
        Parts are written to ``out/parts`` as they are done and read back on a rerun (resume).
    align : bool
        Face models: align the faces (False: centre crop).
    progress, cancel : callable, optional
        ``progress(fraction)``; ``cancel()`` True stops at the next map (in this process).
    engine : {"local", "ray"}, optional
        Compute the (image, layer) parts in ``workers`` worker processes or Ray actors (``address``: a
        running Ray cluster) as a protocol run does; default: in this process.
    workers : int
        Workers of the engine.
    address : str, optional
        Ray: the cluster to join.
    spec : dict, optional
        With an engine: how a worker loads the model (``{"model", "weights", "device", "options"}``, as
        :func:`famegui.evaluation.runner.load_spec` reads it); images must be paths.

    Returns
    -------
    LocalityResult

    Examples
    --------
    >>> import famegui
    >>> from famegui.evaluation.locality import locality
    >>> r = locality(famegui.load("dlib-resnet"), [famegui.sample_image()], layers=["stage1"], cells=1,
    ...              iterations=2)
    >>> r.layers[0]["layer"], r.layers[0]["n"]
    ('stage1', 1)
    """
    iterations = int(iterations)
    if iterations < 1:
        raise ValueError(f"iterations must be >= 1, got {iterations}")
    chosen = choose_layers(model, layers)
    params = {"iterations": iterations, "blur_kernel": int(blur[0]) if blur else 0,
              "blur_sigma": float(blur[1]) if blur else 0.0}
    parts = Path(out) / "parts" if out is not None else None
    if parts is not None:
        parts.mkdir(parents=True, exist_ok=True)
    plan = {layer: choose_cells(tuple(model.layer_info(layer).shape[1:]), cells, seed) for layer in chosen}
    total = max(1, len(images) * sum(len(v) for v in plan.values()))
    if engine is not None:
        measured, reused = _on_engine(images, chosen, plan, params, parts, engine, workers, address, spec, align,
                                      progress, total)
    else:
        measured, reused = _in_process(model, images, chosen, plan, params, parts, align, progress, cancel, total)
    result = LocalityResult(model.name, {**params, "cells": cells, "seed": seed, "layers": chosen,
                                         "images": [str(getattr(getattr(i, "image", None), "path", i))
                                                    for i in images]}, measured, reused=reused)
    result.layers = summarise(model, chosen, measured)
    return result


def _in_process(model, images, chosen, plan, params, parts, align, progress, cancel, total):
    """(measured cells, parts reused): every (image, layer) part computed here, in order."""
    done, reused, measured = 0, 0, []
    for image in images:
        if isinstance(image, ModelInput):  # an image already prepared for the model (the window's probe)
            inp, path, sha = image, Path(image.image.path), image.image.sha256
        else:
            inp, path = None, Path(image)
            sha = file_sha256(path)
        for layer in chosen:
            part = parts / f"{sha[:16]}-{_safe(layer)}.json" if parts is not None else None
            rows = _read_part(part)
            if rows is not None:
                reused += 1
            else:
                if cancel is not None and cancel():
                    from ..core.fame import Cancelled

                    raise Cancelled("cancelled")
                inp = inp or prepare_for_model(model, str(path), align=align)
                rows = _measure_layer(model, inp, path, sha, layer, plan[layer], params, cancel,
                                      _within(progress, done, len(plan[layer]), total))
                if part is not None:
                    _atomic(part, json.dumps({"cells": rows}, allow_nan=False))
            measured += rows
            done += len(plan[layer])
            if progress is not None:
                progress(done / total)
    return measured, reused


def _on_engine(images, chosen, plan, params, parts, engine, workers, address, spec, align, progress, total):
    """(measured cells, parts reused): the missing (image, layer) parts computed by the protocol engines
    (:func:`famegui.evaluation.engines.run_items`), written here as they come back, read in order."""
    from . import engines
    from .runner import check_engine, load_spec

    check_engine(engine)
    if not isinstance(spec, dict) or "model" not in spec:
        raise ValueError("an engine loads the model in its workers: give spec={'model': NAME or FILE, ...}")
    if any(isinstance(i, ModelInput) for i in images):
        raise ValueError("an engine reads the images itself: give file paths")
    if int(workers) < 1:
        raise ValueError(f"workers must be at least 1, got {workers}")
    keys = [(str(Path(i)), file_sha256(Path(i)), layer) for i in images for layer in chosen]
    got: dict[tuple[str, str], list[dict]] = {}
    reused = 0
    for _path, sha, layer in keys:
        rows = _read_part(parts / f"{sha[:16]}-{_safe(layer)}.json" if parts is not None else None)
        if rows is not None:
            got[sha, layer] = rows
            reused += 1
    jobs = list(dict.fromkeys((p, sha, layer, tuple(plan[layer])) for p, sha, layer in keys if (sha, layer) not in got))
    done = sum(len(plan[layer]) for _p, _sha, layer in keys if (_sha, layer) in got)
    if progress is not None:
        progress(done / total)
    if jobs:
        cfg = {"params": params, "align": align}
        for sha, layer, rows in engines.run_items(engine, jobs, {**spec, "align": align}, cfg, load=load_spec,
                                                  work=measure_part, workers=min(int(workers), len(jobs)),
                                                  address=address):
            if parts is not None:
                _atomic(parts / f"{sha[:16]}-{_safe(layer)}.json", json.dumps({"cells": rows}, allow_nan=False))
            got[sha, layer] = rows
            done += len(plan[layer])
            if progress is not None:
                progress(done / total)
    return [row for _p, sha, layer in keys for row in got[sha, layer]], reused


def measure_part(model, job: tuple, cfg: dict) -> tuple[str, str, list[dict]]:
    """One (image, layer) part in an engine's worker: (image sha256, layer, measured cells)."""
    path, sha, layer, cells = job
    inp = prepare_for_model(model, path, align=cfg["align"])
    return sha, layer, _measure_layer(model, inp, Path(path), sha, layer, [tuple(c) for c in cells], cfg["params"],
                                      None, None)


def _read_part(part: Path | None) -> list[dict] | None:
    """The cells of a part an earlier run wrote (None: none, or a broken one from a killed run)."""
    if part is None or not part.is_file():
        return None
    try:
        rows = json.loads(part.read_text())["cells"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return rows if isinstance(rows, list) else None


def _measure_layer(model, inp, path: Path, sha: str, layer: str, cells: list, params: dict, cancel,
                   progress) -> list[dict]:
    """FAME for ``cells`` of ``layer`` on one image (one batch), each map measured."""
    targets = [Target("cell", layer=layer, cell=rc) for rc in cells]
    t0 = time.perf_counter()
    exps = explain_rows(model, [Row(inp, t) for t in targets], "fame", params, cancel=cancel, progress=progress)
    seconds = (time.perf_counter() - t0) / max(len(targets), 1)
    grid = tuple(model.layer_info(layer).shape[1:])
    rows = []
    for t, e in zip(targets, exps):
        m = measure(e.map, footprint(model.input_size, grid, t.cell), receptive_field(model, layer, t.cell))
        rows.append({"image": f"{path.parent.name}/{path.name}", "image_sha256": sha, "layer": layer,
                     "row": t.cell[0], "col": t.cell[1], **{k: _finite(v) for k, v in m.items()},
                     "seconds": seconds})
    return rows


def _within(progress, done: int, n: int, total: int):
    """explain_rows' progress of ``n`` maps, as a fraction of the whole measurement."""
    if progress is None:
        return None
    return lambda f, _partial: progress((done + f * n) / total)


def _finite(v):
    return float(v) if v is not None and math.isfinite(v) else None


def _safe(layer: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "._-" else "_" for ch in layer)
