"""The papers' table from a protocol run directory: mean AUC with its 95 % confidence interval per method.

A run directory (written by the protocol runner) holds ``run.json`` (what was run) and
``results/part-*.parquet`` (one row per item x method x target x metric: ``auc``, ``flip``, ``curve``,
``error``, ...). :func:`load_run` reads it, :func:`summarise` makes the table and the formatters
(:func:`to_markdown`, :func:`to_csv`, :func:`to_latex`) write it as text:

- one row per (target, metric, method): the mean AUC over items and its 95 % confidence interval
  (Student's t over the items whose AUC is defined), the mean decision-flip share where present, the
  number of items, of undefined AUCs (NaN: excluded from the mean, never counted as 0) and of errors;
- the random-ranking baseline (method ``"random"``) is always a row, even when the run lacks it;
- the best method of each (target, metric) column is marked (by mean; lower is better for deletion,
  higher for insertion and the hiding game); the baseline is not a candidate;
- a method whose mean is not better than the baseline's is flagged ``not better than random``;
- the rows that failed are listed (item, method, target, metric, message) so a reader sees bad items.

:func:`mean_curves` gives the mean curve of each method x target x metric and :func:`curves_picture`
draws them (matplotlib's Agg canvas, no Qt).
"""
from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

RANDOM = "random"  # the random-ranking baseline's method name
NOT_BETTER = "not better than random"
COLUMNS = ("item", "item_index", "label", "method", "target", "metric", "auc", "gain", "flip", "curve", "reverse",
           "fractions", "score", "seconds", "error")
CSV_HEADER = ("target", "metric", "method", "better", "auc_mean", "ci_low", "ci_high", "ci_half", "gain_mean",
              "gain_ci_low", "gain_ci_high", "flip_mean", "flip_n", "items", "defined", "undefined", "errors", "best",
              "not_better_than_random")


def lower_is_better(metric: str) -> bool:
    """Deletion-like metrics (the output should fall fast): a lower area is better. Asks the metric
    registry; a metric it does not know (a plug-in absent here) is judged by its name."""
    from .metrics import get_metric

    try:
        return bool(get_metric(metric).lower_is_better)
    except ValueError:
        return metric == "deletion" or metric.endswith("-deletion")


# --------------------------------------------------------------------------- reading
@dataclass
class Run:
    path: Path
    meta: dict  # run.json
    rows: list[dict]  # one per item x method x target x metric (the COLUMNS that the files have)
    problems: list[str] = field(default_factory=list)  # one line per file of the folder that was not read

    @property
    def title(self) -> str:
        proto = self.meta.get("protocol") or {}
        model = self.meta.get("model") or {}
        kind = f" ({proto['kind']})" if proto.get("kind") else ""
        return f"{proto.get('name', self.path.name)}{kind}, model {model.get('name', '?')}"


def _read_meta(path: Path) -> dict:
    f = path / "run.json"
    if not path.is_dir():
        raise ValueError(f"not a run directory: {path} does not exist or is not a folder")
    if not f.is_file():
        raise ValueError(f"not a run directory: {path} has no run.json")
    from .rundir import outside

    if outside(path, f):
        raise ValueError(f"{f} points outside the run folder (to {f.resolve()}); not read")
    try:
        meta = json.loads(f.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
        raise ValueError(f"{f} is broken: {(str(e).splitlines() or [type(e).__name__])[0]}") from None
    if not isinstance(meta, dict) or "famegui_run" not in meta:
        raise ValueError(f"{f} is not a famegui run description (no 'famegui_run' key)")
    return meta


def load_run(path: str | Path) -> Run:
    """The run directory ``path``; a ValueError with one line if it is missing or has no readable results.

    A folder with results is read even when some of its files are broken: a ``run.json`` that does not
    parse (the table is made without its title and provenance), a part of garbage, a map block that is not a
    zip, a file that is a symlink out of the folder. Each such file is left out with one line in
    :attr:`Run.problems`; nothing in the folder is ever unpickled."""
    from .runfiles import block_problems, read_parts

    p = Path(path)
    problems: list[str] = []
    try:
        meta = _read_meta(p)
    except ValueError as e:
        if not (p / "run.json").is_file() or not (p / "results").is_dir():
            raise  # not a run folder at all
        problems.append(f"{e}: the table is shown without the run's description")
        meta = {}
    rows = read_parts(p, problems, COLUMNS)
    problems += block_problems(p)
    return Run(p, meta, rows, problems)


# --------------------------------------------------------------------------- the table
@dataclass
class Row:
    target: str
    metric: str
    method: str
    mean: float = math.nan  # mean AUC over the items whose AUC is defined
    ci_low: float = math.nan  # 95 % confidence interval (Student's t); NaN with fewer than two values
    ci_high: float = math.nan
    gain_mean: float = math.nan  # mean gain over the reversed ranking (higher is better; random: 0 expected)
    gain_low: float = math.nan
    gain_high: float = math.nan
    flip_mean: float | None = None  # mean decision-flip share (None: the metric gives none)
    flip_n: int = 0
    items: int = 0  # distinct items
    defined: int = 0  # AUCs in the mean
    undefined: int = 0  # NaN AUCs without an error
    errors: int = 0  # rows with an error
    best: bool = False
    not_better: bool = False  # not better than the random baseline

    @property
    def ci_half(self) -> float:
        return (self.ci_high - self.ci_low) / 2.0

    @property
    def note(self) -> str:
        notes = (["best"] if self.best else []) + ([NOT_BETTER] if self.not_better else [])
        if self.method == RANDOM and self.items == 0:
            notes.append("baseline missing from the run")
        return "; ".join(notes)


@dataclass
class ErrorRow:
    item: str
    method: str
    target: str
    metric: str
    message: str


@dataclass
class Report:
    title: str
    rows: list[Row]
    errors: list[ErrorRow] = field(default_factory=list)
    meta: dict = field(default_factory=dict)

    def column(self, target: str, metric: str) -> list[Row]:
        return [r for r in self.rows if r.target == target and r.metric == metric]


def mean_ci(values, confidence: float = 0.95) -> tuple[float, float, float]:
    """(mean, low, high) of the finite ``values``: Student's t interval; NaNs dropped; NaN if undefined."""
    from scipy import stats

    v = np.asarray([x for x in values if x is not None], dtype=np.float64)
    v = v[np.isfinite(v)]
    if len(v) == 0:
        return math.nan, math.nan, math.nan
    m = float(v.mean())
    if len(v) < 2:
        return m, math.nan, math.nan
    half = float(stats.t.ppf(0.5 + confidence / 2.0, len(v) - 1) * v.std(ddof=1) / math.sqrt(len(v)))
    return m, m - half, m + half


def _finite(x) -> bool:
    return x is not None and isinstance(x, (int, float)) and math.isfinite(x)


def _row(target: str, metric: str, method: str, rows: list[dict]) -> Row:
    out = Row(target, metric, method)
    out.items = len({r["item"] for r in rows})
    ok = [r for r in rows if not r.get("error")]
    out.errors = len(rows) - len(ok)
    aucs = [r["auc"] for r in ok if _finite(r["auc"])]
    out.defined, out.undefined = len(aucs), len(ok) - len(aucs)
    out.mean, out.ci_low, out.ci_high = mean_ci(aucs)
    out.gain_mean, out.gain_low, out.gain_high = mean_ci([r.get("gain") for r in ok if _finite(r.get("gain"))])
    flips = [r.get("flip") for r in ok if _finite(r.get("flip"))]
    if flips:
        out.flip_mean, out.flip_n = float(np.mean(flips)), len(flips)
    return out


def _better(a: float, b: float, metric: str) -> bool:
    return a < b if lower_is_better(metric) else a > b


def _mark(rows: list[Row], metric: str) -> None:
    """Best method of one column (ties: all of them) and the not-better-than-random flags.

    Both are decided by the gain over the reversed ranking where the run measured it (a random ranking
    cannot win that by construction: its expected gain is 0); by the AUC only for runs without gains."""
    base = next((r for r in rows if r.method == RANDOM), None)
    by_gain = any(math.isfinite(r.gain_mean) for r in rows)

    def value(r: Row) -> float:
        return r.gain_mean if by_gain else r.mean

    def better(a: float, b: float) -> bool:
        return a > b if by_gain else _better(a, b, metric)

    cands = [r for r in rows if r.method != RANDOM and math.isfinite(value(r))]
    if cands:
        top = max(value(r) for r in cands) if by_gain or not lower_is_better(metric) else min(value(r) for r in cands)
        for r in cands:
            r.best = value(r) == top
    ref = value(base) if base is not None else math.nan
    if by_gain:  # the random ranking's expected gain is 0; a sample of it may fall below
        ref = max(ref, 0.0) if math.isfinite(ref) else 0.0
    if math.isfinite(ref):
        for r in cands:
            r.not_better = not better(value(r), ref)


def summarise(run: Run) -> Report:
    """The table of ``run``: one :class:`Row` per target x metric x method, in the run's order."""
    groups: dict[tuple[str, str, str], list[dict]] = {}
    for r in run.rows:
        groups.setdefault((r["target"], r["metric"], r["method"]), []).append(r)
    targets = _ordered(run.meta.get("targets"), (k[0] for k in groups))
    metrics = _ordered(run.meta.get("metrics"), (k[1] for k in groups))
    methods = [m for m in _ordered(list(run.meta.get("methods") or ()), (k[2] for k in groups)) if m != RANDOM]
    rows = []
    for t in targets:
        for m in metrics:
            present = {k[2] for k in groups if k[:2] == (t, m)}
            if not present:
                continue
            col = [_row(t, m, name, groups.get((t, m, name), [])) for name in methods + [RANDOM]
                   if name in present or name == RANDOM]
            _mark(col, m)
            rows.extend(col)
    errors = [ErrorRow(str(r["item"]), r["method"], r["target"], r["metric"], _one_line(r["error"]))
              for r in run.rows if r.get("error")]
    return Report(run.title, rows, errors, run.meta)


def _ordered(declared, seen) -> list[str]:
    """The names in ``declared`` order (run.json), then any others in the order they were seen."""
    out = [str(x) for x in (declared or ())]
    return list(dict.fromkeys(out + list(seen)))


def _one_line(msg) -> str:
    s = str(msg).strip()
    return s.splitlines()[0] if s else "error"


# --------------------------------------------------------------------------- formats
def _num(x: float | None, digits: int = 3) -> str:
    return "" if x is None or not math.isfinite(x) else f"{x:.{digits}f}"


def _ci(r: Row) -> str:
    return f"[{_num(r.ci_low)}, {_num(r.ci_high)}]" if math.isfinite(r.ci_low) else "n/a"


def _better_word(metric: str) -> str:
    return "lower" if lower_is_better(metric) else "higher"


def to_markdown(rep: Report) -> str:
    """A markdown document: the title, the table (best in bold), and the errors section."""
    lines = [f"# {rep.title}", "",
             "Mean AUC over items with its 95 % confidence interval (Student's t); undefined (NaN) AUCs are "
             "left out of the mean and counted. Gain: the area between the curve and the same curve along the "
             "reversed ranking, signed so that higher is better; a random ranking's expected gain is 0, so it is "
             "a baseline and cannot win by construction. **bold**: the best method of its target and metric (by "
             "gain).", "",
             "| target | metric | method | AUC | 95% CI | gain | gain 95% CI | flip | items | undefined | errors "
             "| note |",
             "|---|---|---|---:|---|---:|---|---:|---:|---:|---:|---|"]
    for r in rep.rows:
        auc, gain = _num(r.mean) or "n/a", _num(r.gain_mean) or "n/a"
        if r.best:
            auc, gain = (f"**{auc}**", f"**{gain}**") if math.isfinite(r.gain_mean) else (f"**{auc}**", gain)
        metric = f"{r.metric} ({_better_word(r.metric)} is better)"
        gci = f"[{_num(r.gain_low)}, {_num(r.gain_high)}]" if math.isfinite(r.gain_low) else "n/a"
        lines.append(f"| {r.target} | {metric} | {r.method} | {auc} | {_ci(r)} | {gain} | {gci} | "
                     f"{_num(r.flip_mean)} | {r.items} | {r.undefined} | {r.errors} | {r.note} |")
    lines += ["", *errors_markdown(rep)]
    return "\n".join(lines) + "\n"


def errors_markdown(rep: Report) -> list[str]:
    if not rep.errors:
        return ["## Errors", "", "none"]
    lines = [f"## Errors ({len(rep.errors)})", "", "| item | method | target | metric | message |",
             "|---|---|---|---|---|"]
    for e in rep.errors:
        msg = e.message.replace("|", "\\|")
        lines.append(f"| {e.item} | {e.method} | {e.target} | {e.metric} | {msg} |")
    return lines


def to_csv(rep: Report) -> str:
    """The table as CSV (one header line, one line per row; numbers unrounded, empty where undefined)."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(CSV_HEADER)
    for r in rep.rows:
        w.writerow([r.target, r.metric, r.method, _better_word(r.metric), _raw(r.mean), _raw(r.ci_low),
                    _raw(r.ci_high), _raw(r.ci_half), _raw(r.gain_mean), _raw(r.gain_low), _raw(r.gain_high),
                    _raw(r.flip_mean), r.flip_n, r.items, r.defined, r.undefined,
                    r.errors, int(r.best), int(r.not_better)])
    return buf.getvalue()


def errors_csv(rep: Report) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(("item", "method", "target", "metric", "message"))
    for e in rep.errors:
        w.writerow((e.item, e.method, e.target, e.metric, e.message))
    return buf.getvalue()


def _raw(x: float | None) -> str:
    return "" if x is None or not math.isfinite(x) else repr(float(x))


_TEX = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{",
        "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}


def tex_escape(s: str) -> str:
    return "".join(_TEX.get(ch, ch) for ch in str(s))


def to_latex(rep: Report) -> str:
    """A LaTeX ``tabular`` (booktabs rules): the best of each column in bold, the flags as a dagger;
    the errors follow as comment lines."""
    lines = [f"% {tex_escape(rep.title)}", r"% needs \usepackage{booktabs}", r"\begin{tabular}{lllrcrrrrr}",
             r"\toprule",
             r"target & metric & method & AUC & 95\% CI & gain & flip & items & undef. & errors \\", r"\midrule"]
    prev = None
    for r in rep.rows:
        if prev is not None and (r.target, r.metric) != prev:
            lines.append(r"\midrule")
        prev = (r.target, r.metric)
        auc = _num(r.mean) or "--"
        auc = rf"\textbf{{{auc}}}" if r.best else auc
        auc += r"$^\dagger$" if r.not_better else ""
        ci = f"[{_num(r.ci_low)}, {_num(r.ci_high)}]" if math.isfinite(r.ci_low) else "--"
        arrow = r"$\downarrow$" if lower_is_better(r.metric) else r"$\uparrow$"
        gain = _num(r.gain_mean) or "--"
        gain = rf"\textbf{{{gain}}}" if r.best and math.isfinite(r.gain_mean) else gain
        lines.append(f"{tex_escape(r.target)} & {tex_escape(r.metric)} ({arrow}) & "
                     f"{tex_escape(r.method)} & {auc} & {ci} & {gain} & {_num(r.flip_mean) or '--'} & {r.items} & "
                     f"{r.undefined} & {r.errors} \\\\")
    lines += [r"\bottomrule", r"\end{tabular}", f"% \\dagger: {NOT_BETTER}"]
    lines += [f"% error: {tex_escape(e.item)} / {tex_escape(e.method)} / {e.target} / {e.metric}: "
              f"{tex_escape(e.message)}" for e in rep.errors]
    return "\n".join(lines) + "\n"


FORMATS = {"md": to_markdown, "csv": to_csv, "latex": to_latex}


def render(rep: Report, fmt: str = "md") -> str:
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    return FORMATS[fmt](rep)


def provenance_text(meta: dict, fmt: str = "md") -> str:
    """What made the run (``run.json``'s sessions, :func:`.provenance.lines`) to print under its table:
    a markdown section, LaTeX comment lines, or plain lines (CSV: for stderr). Empty for an older run."""
    from .provenance import lines

    got = lines(meta)
    if not got:
        return ""
    if fmt == "md":
        return "\n## Provenance\n\n```\n" + "\n".join(got) + "\n```\n"
    if fmt == "latex":
        return "".join(f"% {line}\n" for line in got)
    return "".join(f"{line}\n" for line in got)


# --------------------------------------------------------------------------- split by item columns
def item_values(run: Run, by: Sequence[str]) -> dict[int, tuple[str, ...]]:
    """Item index -> its values of the extra columns ``by`` (a pair list's ``group``, ``pose``, ...), from
    the run's ``items.parquet``; a one-line ValueError for a run without them or an unknown column."""
    from .rundir import ITEMS, read_items

    items = read_items(run.path)
    if items is None:
        raise ValueError(f"{run.path} has no {ITEMS} (a run made before famegui kept item columns): run it again "
                         "to split its tables")
    have = [c for c in (items[0] if items else {}) if c not in ("item_index", "item", "label")]
    wanted = [c for c in by if c != "label"]
    missing = [c for c in wanted if c not in have]
    if missing:
        raise ValueError(f"{run.path}: no item column {missing[0]!r} (its list has "
                         f"{', '.join(have + ['label']) if have else 'only label'})")
    return {int(r["item_index"]): tuple(str(r[c] if c != "label" else r["label"]) for c in by) for r in items}


def group_label(by: Sequence[str], values: Sequence[str]) -> str:
    return ", ".join(f"{c} = {v}" for c, v in zip(by, values))


def split_run(run: Run, by: Sequence[str]) -> list[tuple[tuple[str, ...], Run]]:
    """The run cut by the values of the item columns ``by``: [(values, a Run of those items' rows)], in the
    order the values first occur in the protocol."""
    values = item_values(run, by)
    groups: dict[tuple[str, ...], list[dict]] = {v: [] for v in dict.fromkeys(values[i] for i in sorted(values))}
    for r in run.rows:
        v = values.get(int(r["item_index"]))
        if v is not None:
            groups[v].append(r)
    return [(v, Run(run.path, run.meta, rows)) for v, rows in groups.items() if rows]


def render_by(run: Run, by: Sequence[str], fmt: str = "md") -> str:
    """One table per group of items (see :func:`split_run`): Markdown and LaTeX give one table each under
    its group's name; CSV gives one table with the ``by`` columns first."""
    parts = []
    for i, (values, sub) in enumerate(split_run(run, by)):
        rep = summarise(sub)
        items = len({r["item"] for r in sub.rows})
        rep.title = f"{run.title}: {group_label(by, values)} ({items} items)"
        if fmt == "csv":
            lines = to_csv(rep).splitlines()
            head = [] if i else [",".join([*by, lines[0]])]
            parts.append("\n".join(head + [",".join([*(_csv_field(v) for v in values), ln]) for ln in lines[1:]]))
        else:
            parts.append(render(rep, fmt))
    return ("\n".join(parts) + "\n") if fmt == "csv" else "\n".join(parts)


def _csv_field(v: str) -> str:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="").writerow([v])
    return buf.getvalue()


# --------------------------------------------------------------------------- curves
def mean_curves(run: Run) -> list:
    """The mean curve (over items without error whose curve is finite) of each method x target x metric,
    as :class:`~famegui.evaluation.curves.Curve` objects (``extra["target"]``, ``extra["items"]``)."""
    from .curves import Curve

    groups: dict[tuple[str, str, str], list[dict]] = {}
    for r in run.rows:
        c, f = r.get("curve"), r.get("fractions")
        if r.get("error") or not c or not f or len(c) != len(f) or len(f) < 2:
            continue
        if not all(_finite(v) for v in c):
            continue
        groups.setdefault((r["target"], r["metric"], r["method"]), []).append(r)
    out = []
    for (target, metric, method), rows in groups.items():
        common = max({tuple(r["fractions"]) for r in rows}, key=lambda fr: sum(tuple(r["fractions"]) == fr
                                                                            for r in rows))
        use = [r for r in rows if tuple(r["fractions"]) == common]
        scores = np.mean([r["curve"] for r in use], axis=0)
        out.append(Curve(metric, list(common), [float(s) for s in scores], use[0].get("score") or "score", method,
                         {"target": target, "items": len(use)}, metric))
    order = {m: i for i, m in enumerate(_ordered(list(run.meta.get("methods") or ()), ()))}
    out.sort(key=lambda c: (c.method == RANDOM, order.get(c.method, len(order))))
    return out


def curves_picture(run: Run, width: float = 5.0, height: float = 3.6, dpi: int = 100) -> np.ndarray:
    """The mean curves as an RGB uint8 image: one panel per target x metric (random dashed)."""
    from ..core.plots import curves_figure

    curves = mean_curves(run)
    if not curves:
        raise ValueError(f"no curves to draw in {run.path}: every row failed or has no curve")
    return curves_figure(curves, width=width, height=height, dpi=dpi)
