"""The papers' table from a run directory: synthetic runs written with pyarrow, numbers checked independently."""
import csv
import io
import json
import math

import numpy as np
import pyarrow as pa  # noqa: E402  (a declared dependency: missing is a failure)
import pyarrow.parquet as pq  # noqa: E402
import pytest
from PIL import Image
from scipy import stats

from famegui.cli import main
from famegui.evaluation import report_tables as rt

ITEMS = [f"pair{i}" for i in range(6)]
METHODS = ("fame", "gradcam", "random")
TARGETS = ("e+", "e-")
METRICS = ("deletion", "insertion")
FRACTIONS = [i / 10 for i in range(11)]
# mean AUC per (method, target, metric): fame best for deletion (lowest), gradcam best for insertion (highest);
# gradcam no better than random for e+ deletion, fame no better than random for e- insertion
BASE = {("fame", "e+", "deletion"): 0.20, ("gradcam", "e+", "deletion"): 0.55, ("random", "e+", "deletion"): 0.45,
        ("fame", "e+", "insertion"): 0.60, ("gradcam", "e+", "insertion"): 0.80, ("random", "e+", "insertion"): 0.40,
        ("fame", "e-", "deletion"): 0.25, ("gradcam", "e-", "deletion"): 0.30, ("random", "e-", "deletion"): 0.50,
        ("fame", "e-", "insertion"): 0.30, ("gradcam", "e-", "insertion"): 0.70, ("random", "e-", "insertion"): 0.35}
NAN_AT = {("fame", "e+", "deletion", "pair2"), ("random", "e-", "insertion", "pair5")}
ERROR_AT = ("gradcam", "e-", "insertion", "pair3")


def synthetic_rows():
    rng = np.random.default_rng(7)
    rows = []
    for key, base in BASE.items():
        method, target, metric = key
        for i, item in enumerate(ITEMS):
            auc = float(base + rng.normal(0, 0.05))
            start = 1.0 if metric == "deletion" else 0.1
            curve = list(np.linspace(start, 2 * auc - start, len(FRACTIONS)))  # a line whose area is auc
            error = None
            if (method, target, metric, item) in NAN_AT:
                auc = math.nan
            if (method, target, metric, item) == ERROR_AT:
                auc, curve, error = math.nan, [], "CUDA out of memory\nTraceback (most recent call last): ..."
            flip = float(rng.uniform(0.05, 0.5)) if method == "fame" and metric == "deletion" else None
            rows.append(dict(item=item, item_index=i, label="same" if i % 2 else "different", method=method,
                             target=target, metric=metric, auc=auc, flip=flip, curve=curve,
                             fractions=list(FRACTIONS) if curve else [], score="cosine", seconds=0.1, error=error,
                             map=None))
    return rows


def schema():
    return pa.schema([("item", pa.string()), ("item_index", pa.int64()), ("label", pa.string()),
                      ("method", pa.string()), ("target", pa.string()), ("metric", pa.string()),
                      ("auc", pa.float64()), ("flip", pa.float64()), ("curve", pa.list_(pa.float64())),
                      ("fractions", pa.list_(pa.float64())), ("score", pa.string()), ("seconds", pa.float64()),
                      ("error", pa.string()), ("map", pa.string())])


def write_run(path, rows, methods=METHODS, parts=2):
    (path / "results").mkdir(parents=True)
    meta = {"famegui_run": 1, "protocol": {"name": "lfw-test", "kind": "pairs"}, "model": {"name": "dlib-resnet"},
            "methods": {m: {} for m in methods if m != "random"}, "targets": list(TARGETS),
            "metrics": list(METRICS), "fractions": FRACTIONS, "fill": "mean"}
    (path / "run.json").write_text(json.dumps(meta))
    for k in range(parts):
        chunk = rows[k::parts]
        pq.write_table(pa.Table.from_pylist(chunk, schema=schema()), path / "results" / f"part-{k:05d}.parquet")
    return path


@pytest.fixture
def run_dir(tmp_path):
    return write_run(tmp_path / "run", synthetic_rows())


def expected(rows, method, target, metric):
    """Mean and 95 % CI computed here, independently of the module."""
    v = np.array([r["auc"] for r in rows if (r["method"], r["target"], r["metric"]) == (method, target, metric)
                  and r["error"] is None], dtype=float)
    v = v[~np.isnan(v)]
    m = v.mean()
    half = stats.t.ppf(0.975, len(v) - 1) * v.std(ddof=1) / np.sqrt(len(v))
    return m, m - half, m + half, len(v)


def row(rep, method, target, metric):
    (r,) = [r for r in rep.column(target, metric) if r.method == method]
    return r


def test_means_and_confidence_intervals_match_an_independent_computation(run_dir):
    rows = synthetic_rows()
    rep = rt.summarise(rt.load_run(run_dir))
    assert len(rep.rows) == len(BASE)
    for method, target, metric in BASE:
        m, lo, hi, n = expected(rows, method, target, metric)
        r = row(rep, method, target, metric)
        assert r.mean == pytest.approx(m, abs=1e-12)
        assert (r.ci_low, r.ci_high) == (pytest.approx(lo, abs=1e-12), pytest.approx(hi, abs=1e-12))
        assert r.defined == n and r.items == len(ITEMS)


def test_nan_counts_as_undefined_not_as_zero(run_dir):
    rows = synthetic_rows()
    rep = rt.summarise(rt.load_run(run_dir))
    r = row(rep, "fame", "e+", "deletion")
    assert (r.undefined, r.defined, r.errors) == (1, 5, 0)
    with_zero = np.nan_to_num([x["auc"] for x in rows if (x["method"], x["target"], x["metric"])
                               == ("fame", "e+", "deletion")]).mean()
    assert r.mean != pytest.approx(with_zero)
    assert row(rep, "random", "e-", "insertion").undefined == 1
    err = row(rep, "gradcam", "e-", "insertion")
    assert (err.errors, err.undefined, err.defined) == (1, 0, 5)


def test_best_per_column_follows_the_metric_direction(run_dir):
    rep = rt.summarise(rt.load_run(run_dir))
    best = {(r.target, r.metric): r.method for r in rep.rows if r.best}
    assert best == {("e+", "deletion"): "fame", ("e-", "deletion"): "fame",
                    ("e+", "insertion"): "gradcam", ("e-", "insertion"): "gradcam"}
    assert rt.lower_is_better("deletion") and not rt.lower_is_better("insertion")
    assert not rt.lower_is_better("hiding")


def test_not_better_than_random_flag(run_dir):
    rep = rt.summarise(rt.load_run(run_dir))
    flagged = {(r.method, r.target, r.metric) for r in rep.rows if r.not_better}
    assert flagged == {("gradcam", "e+", "deletion"), ("fame", "e-", "insertion")}
    assert rt.NOT_BETTER in row(rep, "gradcam", "e+", "deletion").note
    assert not any(r.best or r.not_better for r in rep.rows if r.method == "random")


def test_flip_share_where_present(run_dir):
    rows = synthetic_rows()
    rep = rt.summarise(rt.load_run(run_dir))
    flips = [r["flip"] for r in rows if (r["method"], r["target"], r["metric"]) == ("fame", "e-", "deletion")]
    r = row(rep, "fame", "e-", "deletion")
    assert r.flip_mean == pytest.approx(np.mean(flips)) and r.flip_n == len(ITEMS)
    assert row(rep, "gradcam", "e-", "deletion").flip_mean is None


def test_errors_are_listed(run_dir):
    rep = rt.summarise(rt.load_run(run_dir))
    assert [(e.item, e.method, e.target, e.metric, e.message) for e in rep.errors] == [
        ("pair3", "gradcam", "e-", "insertion", "CUDA out of memory")]
    md = rt.to_markdown(rep)
    assert "## Errors (1)" in md and "| pair3 | gradcam | e- | insertion | CUDA out of memory |" in md
    assert "pair3" in rt.to_latex(rep)
    (e,) = list(csv.DictReader(io.StringIO(rt.errors_csv(rep))))
    assert e["item"] == "pair3" and e["message"] == "CUDA out of memory"


def test_random_baseline_is_always_a_row(tmp_path):
    rows = [r for r in synthetic_rows() if r["method"] != "random"]
    rep = rt.summarise(rt.load_run(write_run(tmp_path / "run", rows)))
    base = [r for r in rep.rows if r.method == "random"]
    assert len(base) == 4 and all(r.items == 0 and math.isnan(r.mean) for r in base)
    assert not any(r.not_better for r in rep.rows)
    assert "baseline missing" in base[0].note
    assert "n/a" in rt.to_markdown(rep)


def test_csv_parses_and_carries_the_numbers(run_dir):
    rep = rt.summarise(rt.load_run(run_dir))
    got = list(csv.DictReader(io.StringIO(rt.to_csv(rep))))
    assert tuple(got[0]) == rt.CSV_HEADER and len(got) == len(BASE)
    m, lo, hi, n = expected(synthetic_rows(), "fame", "e+", "deletion")
    (r,) = [g for g in got if (g["method"], g["target"], g["metric"]) == ("fame", "e+", "deletion")]
    assert float(r["auc_mean"]) == pytest.approx(m) and float(r["ci_low"]) == pytest.approx(lo)
    assert (r["best"], r["undefined"], r["defined"], r["better"]) == ("1", "1", str(n), "lower")


def test_markdown_and_latex(run_dir):
    rep = rt.summarise(rt.load_run(run_dir))
    md = rt.to_markdown(rep).splitlines()
    head = md.index(next(line for line in md if line.startswith("| target")))
    assert set(md[head + 1].replace("|", "").replace("-", "").replace(":", "").strip()) == set()
    table = md[head + 2: head + 2 + len(BASE)]
    assert all(line.count("|") == md[head].count("|") for line in table)
    assert sum("**" in line for line in table) == 4
    tex = rt.to_latex(rep)
    assert r"\begin{tabular}" in tex and r"\end{tabular}" in tex and tex.count(r"\textbf{") == 4
    m = row(rep, "fame", "e+", "deletion").mean
    assert rf"\textbf{{{m:.3f}}}" in tex and r"e\_" not in tex
    assert rt.tex_escape("a_b&c%") == r"a\_b\&c\%"
    with pytest.raises(ValueError, match="format"):
        rt.render(rep, "html")


def test_mean_curves(run_dir):
    run = rt.load_run(run_dir)
    curves = rt.mean_curves(run)
    assert len(curves) == len(BASE) and curves[-1].method == "random"
    (c,) = [c for c in curves if (c.method, c.extra["target"], c.mode) == ("gradcam", "e-", "insertion")]
    assert c.extra["items"] == 5  # the failed item has no curve
    assert c.auc == pytest.approx(row(rt.summarise(run), "gradcam", "e-", "insertion").mean)
    img = rt.curves_picture(run, dpi=40)
    assert img.ndim == 3 and img.shape[2] == 3 and img.dtype == np.uint8


def test_cli_writes_out_and_plot(run_dir, tmp_path, capsys):
    out, png = tmp_path / "table.tex", tmp_path / "curves.png"
    code = main(["report", str(run_dir), "--format", "latex", "--out", str(out), "--plot", str(png)])
    stdout, err = capsys.readouterr()
    assert code == 0, err
    assert r"\begin{tabular}" in out.read_text() and str(out) in stdout
    assert Image.open(png).size[0] > 100
    assert main(["report", str(run_dir)]) == 0
    stdout, err = capsys.readouterr()
    assert stdout.startswith("# lfw-test (pairs), model dlib-resnet") and "## Errors (1)" in stdout
    assert main(["report", str(run_dir), "--format", "csv"]) == 0
    stdout, err = capsys.readouterr()
    assert len(list(csv.reader(io.StringIO(stdout)))) == len(BASE) + 1 and "pair3" in err


@pytest.mark.parametrize("breakage", ["missing", "no-json", "no-results", "bad-parquet"])
def test_cli_broken_run_dir_is_one_line_exit_1(tmp_path, capsys, breakage):
    d = tmp_path / "run"
    if breakage != "missing":
        write_run(d, synthetic_rows(), parts=1)
    if breakage == "no-json":
        (d / "run.json").unlink()
    elif breakage == "no-results":
        (d / "results" / "part-00000.parquet").unlink()
    elif breakage == "bad-parquet":
        (d / "results" / "part-00000.parquet").write_bytes(b"PAR1 truncated")
    code = main(["report", str(d)])
    stdout, err = capsys.readouterr()
    assert code == 1 and stdout == ""
    assert len(err.strip().splitlines()) == 1 and err.startswith("famegui: error: ")
    with pytest.raises(ValueError):
        rt.load_run(d)
