"""Two runs of one protocol side by side: two models (ArcFace vs AdaFace, fp32 vs a quantised copy) or two
settings, compared on the same items.

- The tables: per (target, metric, method) present in both runs, the mean AUC and gain of each run and their
  difference (each mean as :mod:`.report_tables` computes it).
- The maps: per (method, target) present in both runs, for every item with a map in both, the Spearman rank
  correlation of the two maps' pixels and the overlap of their top 10 % pixels (the share of run A's top
  pixels that are also run B's); their mean over items. Identical runs agree with 1.0.
- The decisions (face verification runs): each item's unperturbed cosine in each run (read back from its
  deletion curve at 0 % removed, or its insertion curve at 100 % kept) against each run's own threshold;
  how many decisions agree, each run's accuracy, and every item where they differ.

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
    decisions: dict = field(default_factory=dict)  # items, same, differ, accuracy_a/_b, thresholds (verification)
    differ: list[dict] = field(default_factory=list)  # one dict per item whose decision differs
    problems: list[str] = field(default_factory=list)  # one line per file of either folder that was not read

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
            if self.decisions:
                w.writerow(["table", *D_COLS])
                for r in self.differ:
                    w.writerow(["decision", *[_raw(r[c]) for c in D_COLS]])
            return buf.getvalue()
        t_rows = [[r["target"], r["metric"], r["method"], *(_num(r[c]) for c in t_cols[3:8]), str(r["items"])]
                  for r in self.tables]
        a_rows = [[r["method"], r["target"], str(r["items"]), _num(r["spearman"]), _num(r["top10_overlap"])]
                  for r in self.agreement]
        if fmt == "md":
            out = [f"# {self.a} (A) vs {self.b} (B)", "", "## Mean AUC and gain", ""]
            out += _md(t_cols, t_rows) + ["", "## Map agreement per item (mean over items)", ""]
            out += _md(a_cols, a_rows)
            if self.decisions:
                out += ["", "## Decisions", "", self.decisions_line(), ""]
                out += _md(D_COLS, self._differ_rows()) if self.differ else ["no item's decision differs"]
            return "\n".join(out) + "\n"
        if fmt == "latex":
            dec = ("\n% " + self.decisions_line() + "\n" + _tex(D_COLS, self._differ_rows())) if self.decisions else ""
            return _tex(t_cols, t_rows) + "\n" + _tex(a_cols, a_rows) + dec
        raise ValueError(f"format must be md, csv or latex, got {fmt!r}")


    def decisions_line(self) -> str:
        d = self.decisions
        return (f"{d['items']} items: {d['same']} decided alike, {d['differ']} differently; accuracy A "
                f"{_num(d['accuracy_a'])} (threshold {_num(d['threshold_a'])}), B {_num(d['accuracy_b'])} "
                f"(threshold {_num(d['threshold_b'])})")

    def _differ_rows(self) -> list[list[str]]:
        return [[r["item"], r["label"], _num(r["cosine_a"]), r["decision_a"], _num(r["cosine_b"]), r["decision_b"]]
                for r in self.differ]


D_COLS = ["item", "label", "cosine_a", "decision_a", "cosine_b", "decision_b"]


def item_cosines(run: Run) -> dict[int, float]:
    """Item index -> the unperturbed cosine of its probe and reference, read from a deletion curve at 0 %
    removed (or an insertion curve at 100 % kept) of any method; e- curves score 1 - cosine."""
    out: dict[int, float] = {}
    for prefer in ("deletion", "insertion"):
        for r in run.rows:
            if r.get("metric") != prefer or r.get("error") or r.get("score") not in ("cosine", "1 - cosine"):
                continue
            fr, cv = list(r.get("fractions") or ()), list(r.get("curve") or ())
            if not fr or len(fr) != len(cv):
                continue
            v = cv[0] if prefer == "deletion" and fr[0] == 0 else cv[-1] if prefer == "insertion" and fr[-1] == 1 \
                else None
            if v is None or not math.isfinite(v):
                continue
            out.setdefault(int(r["item_index"]), float(v) if r["score"] == "cosine" else 1.0 - float(v))
    return out


def _decisions(ra: Run, rb: Run, out: RunComparison) -> None:
    ta, tb = ra.meta.get("threshold"), rb.meta.get("threshold")
    if not isinstance(ta, (int, float)) or not isinstance(tb, (int, float)):
        return  # not a verification run
    ca, cb = item_cosines(ra), item_cosines(rb)
    labels = {int(r["item_index"]): (str(r["item"]), str(r.get("label"))) for r in ra.rows}
    common = sorted(set(ca) & set(cb))
    if not common:
        return
    right_a = right_b = same = 0
    for i in common:
        da, db = ca[i] >= ta, cb[i] >= tb
        key, label = labels[i]
        truth = {"genuine": True, "triplet": True, "impostor": False}.get(label)
        right_a += truth is not None and da == truth
        right_b += truth is not None and db == truth
        same += da == db
        if da != db:
            word = {True: "same", False: "different"}
            out.differ.append({"item": key, "label": label, "cosine_a": ca[i], "cosine_b": cb[i],
                               "decision_a": word[da], "decision_b": word[db]})
    n = len(common)
    out.decisions = {"items": n, "same": same, "differ": n - same, "accuracy_a": right_a / n,
                     "accuracy_b": right_b / n, "threshold_a": float(ta), "threshold_b": float(tb)}


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
        rows = read_results(run.path, []).select(["item_index", "method", "target", "map"]).to_pylist()
    except (KeyError, OSError, ValueError):  # an older run without the column: no maps to compare
        return {}
    return {(int(r["item_index"]), r["method"], r["target"]): r["map"] for r in rows if r.get("map")}


def read_map(run: Run, rel) -> np.ndarray | None:
    """A map of ``run`` by its recorded relative path (a loose file or a member of the run's map store,
    :func:`.runfiles.map_or_reason`); None when absent, and when it is not read (outside the run folder, a
    pickle, not a map), with one line in ``run.problems`` saying why."""
    from .runfiles import map_or_reason

    got = map_or_reason(run.path, rel)
    if isinstance(got, str) and got not in run.problems:
        run.problems.append(got)
    return got if isinstance(got, np.ndarray) else None


def compare_runs(a: str | Path, b: str | Path) -> RunComparison:
    """Run ``a`` and run ``b`` (run folders of the same protocol) side by side.

    Parameters
    ----------
    a, b : path
        Run folders (``famegui run ... --out DIR``).

    Returns
    -------
    RunComparison
        ``tables``, ``agreement``, ``decisions`` (a summary; empty for classification runs), ``differ``
        (the items decided differently) and ``render(fmt)``.
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
    _decisions(ra, rb, out)
    out.problems = ra.problems + rb.problems
    return out
