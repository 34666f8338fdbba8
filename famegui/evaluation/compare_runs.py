"""Two runs of one protocol side by side: two models (ArcFace vs AdaFace, fp32 vs a quantised copy) or two
settings, compared on the same items.

- The tables: per (target, metric, method) present in both runs, the mean AUC and gain of each run and their
  difference (each mean as :mod:`.report_tables` computes it).
- The maps: per (method, target) present in both runs, for every item with a map in both, the Spearman rank
  correlation of the two maps' pixels and the overlap of their top 10 % pixels (the share of run A's top
  pixels that are also run B's); their mean over items. Identical runs agree with 1.0.

The runs must hold the same protocol: the same items by index and name (a one-line ValueError says what
differs). Maps are read from inside each run folder only (``allow_pickle=False``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .report_tables import Run, load_run, summarise, tex_escape

TOP_SHARE = 0.10


def map_agreement(a: np.ndarray, b: np.ndarray, top: float = TOP_SHARE) -> tuple[float, float]:
    """(Spearman correlation of the pixels, share of a's top ``top`` pixels that are among b's): NaN for a
    constant map (it ranks nothing)."""
    from scipy.stats import rankdata

    a, b = np.asarray(a, dtype=np.float64).ravel(), np.asarray(b, dtype=np.float64).ravel()
    if a.shape != b.shape:
        raise ValueError(f"maps differ in size: {a.size} vs {b.size} pixels")
    if np.ptp(a) == 0 or np.ptp(b) == 0:
        return math.nan, math.nan
    ra, rb = rankdata(a), rankdata(b)
    rho = float(np.corrcoef(ra, rb)[0, 1])
    k = max(1, int(math.ceil(top * a.size)))
    ta, tb = set(np.argsort(-a, kind="stable")[:k].tolist()), set(np.argsort(-b, kind="stable")[:k].tolist())
    return rho, len(ta & tb) / k


@dataclass
class RunComparison:
    """Run A and run B of one protocol: ``tables`` (one dict per target x metric x method in both) and
    ``agreement`` (one dict per method x target with maps in both)."""

    a: str
    b: str
    tables: list[dict] = field(default_factory=list)
    agreement: list[dict] = field(default_factory=list)

    def render(self, fmt: str = "md") -> str:
        """Both tables as Markdown (``md``), ``csv`` or ``latex``."""
        t_cols = ["target", "metric", "method", "auc_a", "auc_b", "auc_diff", "gain_a", "gain_b", "items"]
        a_cols = ["method", "target", "items", "spearman", "top10_overlap"]
        if fmt == "csv":
            import csv
            import io

            buf = io.StringIO()
            w = csv.writer(buf, lineterminator="\n")
            w.writerow(["table", *t_cols])
            for r in self.tables:
                w.writerow(["auc", *[_raw(r[c]) for c in t_cols]])
            w.writerow(["table", *a_cols])
            for r in self.agreement:
                w.writerow(["agreement", *[_raw(r[c]) for c in a_cols]])
            return buf.getvalue()
        t_rows = [[r["target"], r["metric"], r["method"], *(_num(r[c]) for c in t_cols[3:8]), str(r["items"])]
                  for r in self.tables]
        a_rows = [[r["method"], r["target"], str(r["items"]), _num(r["spearman"]), _num(r["top10_overlap"])]
                  for r in self.agreement]
        if fmt == "md":
            out = [f"# {self.a} (A) vs {self.b} (B)", "", "## Mean AUC and gain", ""]
            out += _md(t_cols, t_rows) + ["", "## Map agreement per item (mean over items)", ""]
            out += _md(a_cols, a_rows)
            return "\n".join(out) + "\n"
        if fmt == "latex":
            return _tex(t_cols, t_rows) + "\n" + _tex(a_cols, a_rows)
        raise ValueError(f"format must be md, csv or latex, got {fmt!r}")


def _md(cols: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)] + ["| " + " | ".join(r) + " |" for r in rows]


def _tex(cols: list[str], rows: list[list[str]]) -> str:
    body = [" & ".join(tex_escape(v) for v in r) + r" \\" for r in rows]
    return "\n".join([r"\begin{tabular}{" + "l" * len(cols) + "}", r"\toprule",
                      " & ".join(tex_escape(c) for c in cols) + r" \\", r"\midrule", *body, r"\bottomrule",
                      r"\end{tabular}"]) + "\n"


def _num(x) -> str:
    return "n/a" if x is None or not math.isfinite(x) else f"{x:.3f}"


def _raw(x) -> str:
    if isinstance(x, float):
        return "" if not math.isfinite(x) else f"{x:.6g}"
    return str(x)


def _items(run: Run) -> dict[int, str]:
    return {int(r["item_index"]): str(r["item"]) for r in run.rows}


def map_paths(run: Run) -> dict[tuple[int, str, str], str]:
    """(item index, method, target) -> the map's path in the run folder, from the results' ``map`` column."""
    from .rundir import read_results

    try:
        rows = read_results(run.path).select(["item_index", "method", "target", "map"]).to_pylist()
    except (KeyError, OSError, ValueError):  # an older run without the column: no maps to compare
        return {}
    return {(int(r["item_index"]), r["method"], r["target"]): r["map"] for r in rows if r.get("map")}


def read_map(run: Run, rel) -> np.ndarray | None:
    """A map of ``run`` by its recorded relative path; None when absent or outside the run folder."""
    if not isinstance(rel, str) or not rel:
        return None
    root = Path(run.path).resolve()
    path = (root / rel).resolve()
    if not path.is_relative_to(root) or path.suffix != ".npy" or not path.is_file():
        return None
    try:
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError):
        return None


def compare_runs(a: str | Path, b: str | Path) -> RunComparison:
    """Run ``a`` and run ``b`` (run folders of the same protocol) side by side.

    Parameters
    ----------
    a, b : path
        Run folders (``famegui run ... --out DIR``).

    Returns
    -------
    RunComparison
        ``tables``, ``agreement`` and ``render(fmt)``.
    """
    ra, rb = load_run(a), load_run(b)
    ia, ib = _items(ra), _items(rb)
    if ia != ib:
        only = sorted(set(ia.items()) ^ set(ib.items()))[:3]
        raise ValueError(f"{a} and {b} do not hold the same protocol: items differ, e.g. {only}")
    sa = {(r.target, r.metric, r.method): r for r in summarise(ra).rows}
    sb = {(r.target, r.metric, r.method): r for r in summarise(rb).rows}
    out = RunComparison(str(a), str(b))
    for key, x in sa.items():
        y = sb.get(key)
        if y is None:
            continue
        out.tables.append({"target": key[0], "metric": key[1], "method": key[2], "auc_a": x.mean, "auc_b": y.mean,
                           "auc_diff": y.mean - x.mean, "gain_a": x.gain_mean, "gain_b": y.gain_mean,
                           "items": min(x.items, y.items)})
    maps_a, maps_b = map_paths(ra), map_paths(rb)
    pairs: dict[tuple[str, str], list[tuple[float, float]]] = {}
    for key, rel in maps_a.items():
        if key not in maps_b:
            continue
        ma, mb = read_map(ra, rel), read_map(rb, maps_b[key])
        if ma is None or mb is None or ma.shape != mb.shape:
            continue
        pairs.setdefault((key[1], key[2]), []).append(map_agreement(ma, mb))
    for (method, target), values in pairs.items():
        rho = [v[0] for v in values if math.isfinite(v[0])]
        top = [v[1] for v in values if math.isfinite(v[1])]
        out.agreement.append({"method": method, "target": target, "items": len(values),
                              "spearman": float(np.mean(rho)) if rho else math.nan,
                              "top10_overlap": float(np.mean(top)) if top else math.nan})
    return out
