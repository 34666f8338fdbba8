"""Two runs of one protocol side by side: the agreement measure by hand, and real runs of the demo protocol
(Grad-CAM at two layers; a copy of a run agrees with itself exactly)."""
import math
import shutil

import numpy as np
import pytest

from famegui.cli import main
from famegui.evaluation.compare_runs import compare_runs, map_agreement
from famegui.evaluation.protocol import demo_protocol
from famegui.evaluation.runner import run_protocol


def test_agreement_of_maps_by_hand():
    a = np.arange(100, dtype=np.float32).reshape(10, 10)
    assert map_agreement(a, a) == (pytest.approx(1.0), 1.0)
    rho, top = map_agreement(a, -a)
    assert rho == pytest.approx(-1.0) and top == 0.0
    b = a.copy()
    b.ravel()[-10:] = b.ravel()[-10:][::-1]  # the top 10 % reordered among themselves
    rho, top = map_agreement(a, b)
    assert top == 1.0 and 0.9 < rho < 1.0
    assert all(math.isnan(v) for v in map_agreement(a, np.ones_like(a)))


def _run(out, layer, limit=2):
    return run_protocol(demo_protocol(limit=limit), "dlib-resnet", methods=["gradcam"], metrics=["deletion"],
                        method_params={"gradcam": {"layer": layer}}, out_dir=out, workers=1)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    _run(root / "a", "stage3")
    _run(root / "b", "stage2")
    shutil.copytree(root / "a", root / "a_copy")
    return root


def test_a_copy_agrees_fully_and_another_layer_less(runs):
    same = compare_runs(runs / "a", runs / "a_copy")
    assert same.agreement and all(r["spearman"] == pytest.approx(1.0) and r["top10_overlap"] == 1.0
                                  for r in same.agreement)
    assert all(r["auc_diff"] == 0 for r in same.tables)
    other = compare_runs(runs / "a", runs / "b")
    assert {(r["method"], r["target"]) for r in other.agreement} == {(r["method"], r["target"])
                                                                      for r in same.agreement}
    assert all(r["items"] == 2 and r["spearman"] < 0.999 for r in other.agreement)
    assert any(r["auc_diff"] != 0 for r in other.tables if r["method"] == "gradcam")


def test_report_of_two_runs_from_the_command_line(runs, tmp_path, capsys):
    assert main(["report", str(runs / "a"), str(runs / "b")]) == 0
    out = capsys.readouterr().out
    assert "Map agreement" in out and "top10_overlap" in out and "gradcam" in out
    assert main(["report", str(runs / "a"), str(runs / "b"), "--format", "csv", "--out", str(tmp_path / "c.csv")]) == 0
    assert (tmp_path / "c.csv").read_text().startswith("table,target,metric,method")
    _run(tmp_path / "three", "stage3", limit=3)
    assert main(["report", str(runs / "a"), str(tmp_path / "three")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not hold the same protocol" in err[0]


def test_a_map_path_outside_the_run_is_not_read(runs, tmp_path):
    """A run folder whose table points a map outside the folder: that map is left out, nothing else read."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    bad = tmp_path / "bad"
    shutil.copytree(runs / "a", bad)
    for part in (bad / "results").glob("part-*.parquet"):
        t = pq.read_table(part).to_pylist()
        for r in t:
            r["map"] = "../../../../etc/passwd" if r["map"] else r["map"]
        pq.write_table(pa.Table.from_pylist(t, schema=pq.read_schema(part)), part)
    c = compare_runs(runs / "a", bad)
    assert c.agreement == [] and c.tables
