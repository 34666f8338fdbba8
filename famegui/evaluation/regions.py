"""Where on the face a map looks: regions of the aligned face, and each map's share of mass per region.

The regions are defined once, here, from the five points of the alignment template (the aligner maps every
face's landmarks onto them): the eye centres, the nose and the mouth (ArcFace's mouth corners; dlib's
template has no mouth point, so its mouth sits below the nose by a fixed share of the eye distance ``d``).
In units of ``d``, around those points:

- ``eyes``: an ellipse round each eye centre (0.36 d x 0.2 d);
- ``brows``: an ellipse 0.36 d above each eye (0.42 d x 0.15 d);
- ``mouth``: an ellipse round the mouth centre (0.5 d x 0.24 d);
- ``nose``: from 0.2 d below the eye line to 0.15 d below the nose point, 0.25 d either side of the middle;
- ``cheeks``: beside the nose and mouth, down to the mouth, out to 0.5 d beyond each eye;
- ``forehead``: from 0.5 d to 1.1 d above the eye line, as wide as the eyes plus 0.5 d;
- ``face``: the rest of an ellipse round the face (1.05 d wide, 1.45 d high, half-axes);
- ``outside``: everything else (hair, background, neck).

Each pixel belongs to one region (the first in :data:`REGIONS` order that holds it), so a map's shares add
up to 1. ``docs/face_regions.png`` is :func:`regions_picture` for both alignments.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

REGIONS = ("eyes", "brows", "mouth", "nose", "cheeks", "forehead", "face", "outside")
COLORS = {"eyes": (230, 60, 60), "brows": (240, 150, 40), "mouth": (200, 60, 200), "nose": (60, 170, 230),
          "cheeks": (90, 200, 90), "forehead": (240, 220, 80), "face": (150, 150, 150), "outside": (40, 40, 40)}
MOUTH_BELOW_NOSE = 0.4  # dlib's template: the mouth centre this many eye distances below the nose point


def landmarks(alignment: str, size: int | None = None) -> dict[str, np.ndarray]:
    """The template's eye centres (left and right in the image), nose and mouth centre in chip pixels."""
    from ..data.faces import ARCFACE_TEMPLATE_112, CHIP_SIZES, dlib_template_points

    if alignment not in CHIP_SIZES:
        raise ValueError(f"face regions need an aligned face (dlib150 or arcface112), not {alignment!r}")
    size = size or CHIP_SIZES[alignment]
    if alignment == "dlib150":
        p = dlib_template_points(size)
        left, right = (p[2] + p[3]) / 2, (p[0] + p[1]) / 2
        nose = p[4]
        d = float(np.linalg.norm(right - left))
        mouth = nose + np.array([0.0, MOUTH_BELOW_NOSE * d])
    else:
        p = ARCFACE_TEMPLATE_112 * (size / 112.0)
        left, right, nose, mouth = p[0], p[1], p[2], (p[3] + p[4]) / 2
    return {"left_eye": left, "right_eye": right, "nose": nose, "mouth": mouth}


def region_labels(alignment: str, size: int | None = None) -> np.ndarray:
    """(H, W) int8: the index into :data:`REGIONS` of every pixel of the aligned chip."""
    from ..data.faces import CHIP_SIZES

    size = size or CHIP_SIZES.get(alignment, 0)
    pts = landmarks(alignment, size)
    left, right, nose, mouth = pts["left_eye"], pts["right_eye"], pts["nose"], pts["mouth"]
    d = float(np.linalg.norm(right - left))
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float64) + 0.5
    mid_x, eye_y = (left[0] + right[0]) / 2, (left[1] + right[1]) / 2

    def ellipse(c, ax, ay):
        return ((xs - c[0]) / (ax * d)) ** 2 + ((ys - c[1]) / (ay * d)) ** 2 <= 1.0

    masks = {
        "eyes": ellipse(left, 0.36, 0.2) | ellipse(right, 0.36, 0.2),
        "brows": ellipse(left - [0, 0.36 * d], 0.42, 0.15) | ellipse(right - [0, 0.36 * d], 0.42, 0.15),
        "mouth": ellipse(mouth, 0.5, 0.24),
        "nose": (np.abs(xs - mid_x) <= 0.25 * d) & (ys >= eye_y + 0.2 * d) & (ys <= nose[1] + 0.15 * d),
        "cheeks": ((ys >= eye_y + 0.2 * d) & (ys <= mouth[1]) & (xs >= left[0] - 0.5 * d)
                   & (xs <= right[0] + 0.5 * d)),
        "forehead": ((ys >= eye_y - 1.1 * d) & (ys <= eye_y - 0.5 * d) & (xs >= left[0] - 0.5 * d)
                     & (xs <= right[0] + 0.5 * d)),
        "face": ellipse(np.array([mid_x, (eye_y + mouth[1]) / 2]), 1.05, 1.45),
    }
    labels = np.full((size, size), REGIONS.index("outside"), dtype=np.int8)
    for name in reversed(REGIONS[:-1]):  # the first region in REGIONS order wins where they overlap
        labels[masks[name]] = REGIONS.index(name)
    return labels


def region_shares(amap: np.ndarray, alignment: str) -> dict[str, float]:
    """The share of ``amap``'s mass (|map|) in each region of the aligned face (NaN for an empty map).

    Examples
    --------
    >>> import numpy as np
    >>> from famegui.evaluation.regions import region_labels, region_shares, REGIONS
    >>> eyes = (region_labels("dlib150") == REGIONS.index("eyes")).astype(float)
    >>> region_shares(eyes, "dlib150")["eyes"]
    1.0
    """
    m = np.abs(np.asarray(amap, dtype=np.float64))
    labels = region_labels(alignment, m.shape[0])
    if labels.shape != m.shape:
        raise ValueError(f"a {m.shape[0]}x{m.shape[1]} map is not a square aligned face chip")
    total = m.sum()
    if not total > 0:
        return {r: float("nan") for r in REGIONS}
    sums = np.bincount(labels.ravel(), weights=m.ravel(), minlength=len(REGIONS))
    return {r: float(sums[i] / total) for i, r in enumerate(REGIONS)}


def regions_picture(alignment: str, size: int | None = None, face: np.ndarray | None = None) -> np.ndarray:
    """The regions as an (H, W, 3) uint8 picture (over a face chip when given), with a legend strip."""
    import cv2

    labels = region_labels(alignment, size)
    colors = np.array([COLORS[r] for r in REGIONS], dtype=np.uint8)
    pic = colors[labels]
    if face is not None:
        pic = (0.55 * pic + 0.45 * np.asarray(face, dtype=np.float64)).astype(np.uint8)
    scale = max(1, 300 // labels.shape[0])
    pic = cv2.resize(pic, None, fx=scale, fy=scale, interpolation=cv2.INTER_NEAREST)
    legend = np.full((16 * len(REGIONS) + 8, pic.shape[1], 3), 255, np.uint8)
    for i, r in enumerate(REGIONS):
        y = 4 + 16 * i
        legend[y:y + 12, 4:16] = COLORS[r]
        cv2.putText(legend, r, (22, y + 11), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 1, cv2.LINE_AA)
    return np.concatenate([pic, legend], axis=0)


# ----------------------------------------------------------------------------- over a protocol run
def run_regions(path, by: Sequence[str] = (), problems: list[str] | None = None) -> list[dict]:
    """Per method x target of a face model's run: the mean share of its maps' mass per region over the items,
    with a 95 % confidence interval (Student's t), from the run's maps. ``by``: item columns of the run's list
    (``group``, ``pose``): one row per group as well, its values under ``"by"``. ``problems``: a list that
    gets one line per file of the folder that was not read (a broken part, a pickled or outside map)."""
    from .compare_runs import map_paths, read_map
    from .report_tables import item_values, load_run, mean_ci

    run = load_run(path)
    alignment = (run.meta.get("model") or {}).get("alignment")
    if alignment not in ("dlib150", "arcface112"):
        raise ValueError(f"{path}: face regions need a run of an aligned face model (this one: "
                         f"{alignment or 'no alignment'})")
    values = item_values(run, by) if by else {}
    shares: dict[tuple, list[dict]] = {}
    for (index, method, target), rel in sorted(map_paths(run).items()):
        amap = read_map(run, rel)
        if amap is None or amap.ndim != 2 or amap.shape[0] != amap.shape[1]:
            continue
        shares.setdefault((values.get(index, ()), method, target), []).append(region_shares(amap, alignment))
    out = []
    for (group, method, target), items in sorted(shares.items(), key=lambda kv: kv[0][0]):  # stable: groups
        row = {"method": method, "target": target, "items": len(items)}
        if by:
            row["by"] = dict(zip(by, group))
        for r in REGIONS:
            m, lo, hi = mean_ci([s[r] for s in items])
            row[r] = {"mean": m, "low": lo, "high": hi}
        out.append(row)
    if problems is not None:
        problems.extend(run.problems)
    return out


def render_regions(rows: list[dict], fmt: str = "md") -> str:
    """The regions table: method, target, items, then each region's mean share [95 % CI]. Rows of a run
    split by item columns (``"by"``): one table per group in Markdown and LaTeX, the columns first in CSV."""
    def cell(v: dict) -> str:
        if not np.isfinite(v["mean"]):
            return "n/a"
        ci = f" [{100 * v['low']:.1f}, {100 * v['high']:.1f}]" if np.isfinite(v["low"]) else ""
        return f"{100 * v['mean']:.1f}%{ci}"

    by = list(rows[0].get("by", {})) if rows else []
    if fmt == "csv":
        head = [*by, "method", "target", "items"] + [f"{r}_{k}" for r in REGIONS for k in ("mean", "low", "high")]
        lines = [",".join(head)]
        for row in rows:
            vals = [*(row["by"][c] for c in by), row["method"], row["target"], str(row["items"])]
            vals += ["" if not np.isfinite(row[r][k]) else f"{row[r][k]:.6g}" for r in REGIONS
                     for k in ("mean", "low", "high")]
            lines.append(",".join(vals))
        return "\n".join(lines) + "\n"
    if fmt not in ("md", "latex"):
        raise ValueError(f"format must be md, csv or latex, got {fmt!r}")
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        groups.setdefault(tuple(row.get("by", {}).values()), []).append(row)
    cols = ["method", "target", "items", *REGIONS]
    out = []
    for values, members in groups.items():
        body = [[row["method"], row["target"], str(row["items"]), *(cell(row[r]) for r in REGIONS)]
                for row in members]
        name = ", ".join(f"{c} = {v}" for c, v in zip(by, values))
        if fmt == "md":
            out.append("\n".join(([f"### {name}", ""] if by else []) + ["| " + " | ".join(cols) + " |",
                                  "|" + "---|" * len(cols)] + ["| " + " | ".join(b) + " |" for b in body]) + "\n")
        else:
            from .report_tables import tex_escape

            out.append("\n".join(([f"% {tex_escape(name)}"] if by else [])
                                 + [r"\begin{tabular}{" + "l" * len(cols) + "}", " & ".join(cols) + r" \\",
                                    r"\hline", *(" & ".join(tex_escape(v).replace("%", r"\%") for v in b) + r" \\"
                                                 for b in body), r"\end{tabular}"]) + "\n")
    return "\n".join(out)


def regions_chart(rows: list[dict], width: float = 7.0, height: float = 3.6, dpi: int = 100) -> np.ndarray:
    """Grouped bars: the mean share per region for each method x target, with its 95 % CI."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=dpi)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    x = np.arange(len(REGIONS))
    w = 0.8 / max(len(rows), 1)
    for i, row in enumerate(rows):
        mean = np.array([row[r]["mean"] for r in REGIONS], dtype=float)
        err = np.array([[row[r]["mean"] - row[r]["low"], row[r]["high"] - row[r]["mean"]] for r in REGIONS]).T
        group = " ".join(str(v) for v in row.get("by", {}).values())
        ax.bar(x + i * w - 0.4 + w / 2, np.nan_to_num(mean), w, yerr=np.nan_to_num(err), capsize=2,
               label=f"{row['method']} {row['target']}" + (f" ({group})" if group else ""))
    ax.set_xticks(x, REGIONS, fontsize=8)
    ax.set_ylabel("share of the map's mass")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.canvas.draw()
    return np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()
