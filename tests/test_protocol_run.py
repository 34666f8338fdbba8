"""Protocols (reading, making, the demo) and protocol runs (run directory, resume, bad items, engines, SIGKILL)."""
from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from conftest import drop_item, face

from famegui.evaluation import rundir, runfiles
from famegui.evaluation.protocol import (
    PairItem,
    TripletItem,
    demo_protocol,
    detect_kind,
    make_protocol,
    read_protocol,
)
from famegui.evaluation.runner import run_protocol

# the shared small configuration: 3 demo pairs, FAME (3 iterations), Grad-CAM, CorrRISE (16 masks), + random;
# FAME maps two at a time: blocks [0, 1] and [2], so two workers and a resumed block are exercised
LIMIT = 3
METHODS = ["fame", "gradcam", "corrrise"]
RUN = dict(methods=METHODS, iterations=3, method_params={"corrrise": {"masks": 16, "batch_size": 16}}, fame_batch=2)
CLI_RUN = ["run", "demo", "--limit", str(LIMIT), "--method", ",".join(METHODS), "--iterations", "3",
           "--masks", "16", "--batch-size", "16", "--fame-batch", "2", "--quiet"]
N_ROWS = LIMIT * (len(METHODS) + 1) * 2 * 2  # items x (methods + random) x (e+, e-) x (deletion, insertion)


# --------------------------------------------------------------------------- protocols (no model)
def test_demo_protocol_is_balanced_and_stable():
    p = demo_protocol()
    assert p.kind == "pairs" and len(p) == 88 and sum(i.same for i in p.items) == 44
    assert [i.same for i in p.items[:4]] == [True, False, True, False]  # any prefix is balanced
    assert [demo_protocol().key(i) for i in range(5)] == [p.key(i) for i in range(5)]  # seeded
    assert p.key(0).startswith("0000:") and "|" in p.key(0) and not p.key(0).split(":", 1)[1].startswith("/")
    t = demo_protocol("triplets", limit=3)
    assert len(t) == 3 and all(isinstance(i, TripletItem) and i.non_mate.parent != i.probe.parent for i in t.items)


def test_make_protocol_and_read_all_formats(tmp_path):
    from famegui.cli import main

    gallery = tmp_path / "gallery"
    for who in ("ann", "bob", "cy"):
        (gallery / who).mkdir(parents=True)
        for k in range(2):
            (gallery / who / f"{k}.jpg").write_bytes(b"x")
    n_pairs, n_trips = make_protocol(gallery, tmp_path / "pairs.csv", tmp_path / "trips.csv")
    assert (n_pairs, n_trips) == (6, 3)
    pairs = read_protocol(tmp_path / "pairs.csv")
    assert pairs.kind == "pairs" and sum(isinstance(i, PairItem) and i.same for i in pairs.items) == 3
    trips = read_protocol(tmp_path / "trips.csv")
    assert trips.kind == "triplets" and len(trips) == 3
    (tmp_path / "images.txt").write_text("# images\npath,class\ngallery/ann/0.jpg,cat\ngallery/bob/1.jpg 281\n")
    assert detect_kind(tmp_path / "images.txt") == "images"
    imgs = read_protocol(tmp_path / "images.txt")
    assert [i.label for i in imgs.items] == ["cat", "281"]
    assert main(["protocol", "make", str(gallery), "--out", str(tmp_path / "p2.csv"),
                 "--triplets", str(tmp_path / "t2.csv")]) == 0
    assert (tmp_path / "p2.csv").read_text() == (tmp_path / "pairs.csv").read_text()
    with pytest.raises(ValueError, match="image not found"):
        (tmp_path / "bad.csv").write_text("a.jpg,b.jpg,c.jpg\n")
        read_protocol(tmp_path / "bad.csv")


# --------------------------------------------------------------------------- runs
def _rows(out) -> list[dict]:
    return rundir.read_results(out).to_pylist()


def assert_same_table(a, b, tol=1e-6):
    ra, rb = _rows(a), _rows(b)
    assert len(ra) == len(rb)
    for x, y in zip(ra, rb):
        for k in ("item", "item_index", "label", "method", "target", "metric", "score", "error", "map", "fractions"):
            assert x[k] == y[k], (k, x, y)
        assert (math.isnan(x["auc"]) and math.isnan(y["auc"])) or abs(x["auc"] - y["auc"]) <= tol
        assert (x["flip"] is None) == (y["flip"] is None)
        if x["flip"] is not None:
            assert abs(x["flip"] - y["flip"]) <= tol
        np.testing.assert_allclose(x["curve"], y["curve"], atol=tol)


def assert_same_maps(a, b, tol=1e-6):
    """Every map that run ``a`` recorded is in run ``b`` too, equal within ``tol`` (whatever their layout)."""
    maps = sorted({r["map"] for r in _rows(a) if r["map"]})
    assert maps
    for rel in maps:
        np.testing.assert_allclose(runfiles.read_map(a, rel), runfiles.read_map(b, rel), atol=tol, err_msg=rel)


@pytest.fixture(scope="module")
def base_run(tmp_path_factory):
    """The shared configuration, one local worker: (run dir, summary)."""
    out = tmp_path_factory.mktemp("run") / "base"
    summary = run_protocol(demo_protocol(limit=LIMIT), "dlib-resnet", out_dir=out, workers=1, **RUN)
    return out, summary


@pytest.mark.slow  # the shared demo run (three pairs, every method)
def test_demo_run_writes_the_run_directory(base_run):
    out, summary = base_run
    assert (summary.done, summary.skipped, summary.errors) == (LIMIT, 0, 0)
    cfg = json.loads((out / "run.json").read_text())
    assert cfg["famegui_run"] == rundir.RUN_FORMAT and cfg["protocol"]["kind"] == "pairs"
    assert cfg["protocol"]["items"] == LIMIT
    assert cfg["protocol"]["path"] == "demo" and len(cfg["model"]["weights_sha256"]) == 64
    assert set(cfg["methods"]) == set(METHODS) and cfg["methods"]["fame"]["iterations"] == 3
    assert cfg["targets"] == ["e+", "e-"] and cfg["metrics"] == ["deletion", "insertion"] and cfg["fill"] == "mean"
    assert cfg["preset"] == "famegui" and cfg["masks"] == "rank"
    assert cfg["engine"]["name"] == "local" and "torch" in cfg["versions"] and cfg["created"]
    # compacted at the end: one part, one map block, no loose files
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()) == [
        ".famegui-run.lock", "items.parquet", "maps/block-000001.npz", "results/part-m000001.parquet", "run.json"]
    rows = _rows(out)
    assert len(rows) == N_ROWS
    assert {r["method"] for r in rows} == {"random", *METHODS} and {r["target"] for r in rows} == {"e+", "e-"}
    assert {r["label"] for r in rows} == {"genuine", "impostor"}
    assert all(r["error"] is None and np.isfinite(r["auc"]) and len(r["curve"]) == 11 for r in rows)
    # the gain: the curve against the same curve along the reversed ranking (higher is better)
    for r in rows:
        rev = np.trapezoid(r["reverse"], r["fractions"]) if hasattr(np, "trapezoid") else np.trapz(r["reverse"],
                                                                                                      r["fractions"])
        sign = -1.0 if r["metric"] == "deletion" else 1.0
        assert len(r["reverse"]) == 11 and r["gain"] == pytest.approx(sign * (r["auc"] - rev), abs=1e-9)
    assert all(r["score"] == {"e+": "cosine", "e-": "1 - cosine"}[r["target"]] and r["seconds"] >= 0 for r in rows)
    for r in rows:
        if r["method"] == "random":
            assert r["map"] is None
        else:
            assert r["map"] == f"maps/{r['item_index']}/{r['method']}_{r['target']}.npy"
            m = runfiles.read_map(out, r["map"])
            assert m.dtype == np.float32 and m.shape == (150, 150)


@pytest.mark.slow  # the shared demo run (three pairs, every method)
def test_report_of_a_run_lists_every_method_target_and_metric(base_run, capsys):
    """`famegui run` then `famegui report`: the table has FAME, Grad-CAM, CorrRISE and the random baseline for
    e+ and e- with deletion, insertion and the flip share."""
    from famegui.cli import main

    out, _ = base_run
    assert main(["report", str(out)]) == 0
    table = [line.split("|")[1:-1] for line in capsys.readouterr().out.splitlines() if line.startswith("| e")]
    cells = {(c[0].strip(), c[1].split("(")[0].strip(), c[2].strip()): c for c in table}
    for target in ("e+", "e-"):
        for metric in ("deletion", "insertion"):
            for method in ("random", *METHODS):
                row = cells[(target, metric, method)]
                assert float(row[3].strip("* ")) == float(row[3].strip("* "))  # a number, not n/a
                assert float(row[5].strip("* ")) == float(row[5].strip("* "))  # the gain
                assert row[7].strip() not in ("", "n/a") and int(row[8]) == LIMIT  # flip share over every item


@pytest.mark.slow  # the shared demo run (three pairs, every method)
def test_rerun_skips_finished_items_and_other_config_is_refused(base_run, capsys):
    from famegui.cli import main

    out, _ = base_run
    before = {p: p.stat().st_mtime_ns for p in rundir.part_files(out)}
    again = run_protocol(demo_protocol(limit=LIMIT), "dlib-resnet", out_dir=out, workers=2, **RUN)
    assert (again.done, again.skipped) == (0, LIMIT)  # another worker count is the same configuration
    assert {p: p.stat().st_mtime_ns for p in rundir.part_files(out)} == before
    with pytest.raises(rundir.ConfigMismatch, match="methods"):
        run_protocol(demo_protocol(limit=LIMIT), "dlib-resnet", out_dir=out, workers=1,
                     **{**RUN, "iterations": 4})
    assert main(CLI_RUN[:6] + ["--method", "gradcam", "--out", str(out)]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "another configuration" in err


def test_bad_items_become_error_rows(tmp_path):
    from PIL import Image

    (tmp_path / "corrupt.jpg").write_bytes(b"\xff\xd8 this is not a jpeg")
    Image.new("RGB", (200, 200), (128, 128, 128)).save(tmp_path / "gray.png")
    good_a, good_b = face("london_001", "neutral.jpg"), face("london_001", "smiling.jpg")
    (tmp_path / "pairs.csv").write_text(f"{good_a},{good_b},1\ncorrupt.jpg,{good_b},1\ngray.png,{good_a},0\n")
    out = tmp_path / "run"
    s = run_protocol(read_protocol(tmp_path / "pairs.csv"), "dlib-resnet", methods=["gradcam"], out_dir=out)
    assert (s.done, s.errors) == (3, 2)
    rows = _rows(out)
    assert len(rows) == 3 * 2 * 2 * 2
    for r in rows:
        assert (r["error"] is not None) == (r["item_index"] > 0)
        assert math.isnan(r["auc"]) == (r["item_index"] > 0)
        if r["error"]:
            assert "\n" not in r["error"] and r["map"] is None and r["curve"] == []
    from famegui.evaluation.report_tables import load_run, summarise, to_markdown

    text = to_markdown(summarise(load_run(out)))  # the report lists both bad items under its errors
    assert "## Errors (" in text and "corrupt.jpg" in text and "gray.png" in text


@pytest.mark.slow  # the shared demo run (three pairs, every method)
def test_two_workers_give_the_same_table(base_run, tmp_path):
    out = tmp_path / "two"
    s = run_protocol(demo_protocol(limit=LIMIT), "dlib-resnet", out_dir=out, workers=2, **RUN)
    assert s.done == LIMIT
    assert_same_table(base_run[0], out)
    assert_same_maps(base_run[0], out)


@pytest.mark.slow
def test_sigkill_then_rerun_equals_an_uninterrupted_run(base_run, tmp_path):
    out = tmp_path / "killed"
    cmd = [sys.executable, "-m", "famegui", *CLI_RUN, "--out", str(out)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 240
    try:
        while not rundir.part_files(out) and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the command and its pool workers (its own session)
        proc.wait()
    finished = len(rundir.part_files(out))
    assert 1 <= finished < LIMIT  # killed mid-run (an item takes seconds; the poll is 20 ms)
    s = run_protocol(demo_protocol(limit=LIMIT), "dlib-resnet", out_dir=out, workers=1, **RUN)
    assert s.skipped == finished and s.done == LIMIT - finished
    assert_same_table(base_run[0], out)


@pytest.mark.slow
def test_a_resumed_block_is_computed_whole_and_its_finished_items_kept(base_run, tmp_path):
    """Item 1 of block [0, 1] lost (its part file and maps gone): the rerun computes the block again (the
    same batch, the same sums), writes item 1 only, and the table equals the uninterrupted run."""
    import shutil

    out = tmp_path / "resumed"
    shutil.copytree(base_run[0], out)
    drop_item(out, 1)
    s = run_protocol(demo_protocol(limit=LIMIT), "dlib-resnet", out_dir=out, workers=1, **RUN)
    assert (s.done, s.skipped) == (1, LIMIT - 1)  # item 0 was not written again
    assert_same_table(base_run[0], out)
    assert_same_maps(base_run[0], out)


@pytest.mark.slow
def test_fame_maps_in_batches_equal_one_by_one(base_run, tmp_path):
    """The batch changes float sums only: one map at a time gives the maps of the batched run up to
    rounding (and curves move a little where near-equal pixels swap ranks), and the batch size is
    part of the configuration (a resume with another one is refused)."""
    out = tmp_path / "single"
    s = run_protocol(demo_protocol(limit=LIMIT), "dlib-resnet", out_dir=out, workers=1, **{**RUN, "fame_batch": 1})
    assert s.done == LIMIT and json.loads((out / "run.json").read_text())["fame_batch"] == 1
    fame = sorted({r["map"] for r in _rows(base_run[0]) if r["method"] == "fame"})
    assert len(fame) == 2 * LIMIT
    for rel in fame:  # FAME's normalised steps carry last-bit differences into the map (as other thread counts do)
        a, b = runfiles.read_map(base_run[0], rel).ravel(), runfiles.read_map(out, rel).ravel()
        assert np.corrcoef(a, b)[0, 1] >= 0.999 and np.abs(a - b).max() <= 1e-2
    ra, rb = _rows(base_run[0]), _rows(out)
    assert [(r["item"], r["method"], r["target"], r["metric"]) for r in ra] == \
        [(r["item"], r["method"], r["target"], r["metric"]) for r in rb]
    assert max(abs(x["auc"] - y["auc"]) for x, y in zip(ra, rb)) <= 5e-3
    with pytest.raises(rundir.ConfigMismatch, match="fame_batch"):
        run_protocol(demo_protocol(limit=LIMIT), "dlib-resnet", out_dir=out, workers=1, **RUN)


@pytest.mark.slow
def test_ray_engine_gives_the_same_table(base_run, tmp_path):
    ray = pytest.importorskip("ray")
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        out = tmp_path / "ray"
        s = run_protocol(demo_protocol(limit=LIMIT), "dlib-resnet", out_dir=out, engine="ray", workers=2, **RUN)
    finally:
        ray.shutdown()
    assert s.done == LIMIT
    assert json.loads((out / "run.json").read_text())["engine"] == {"name": "ray", "workers": 2,
                                                                    "evaluation": "batched"}
    assert_same_table(base_run[0], out)


def test_image_protocol_on_a_classifier(tmp_path):
    (tmp_path / "images.csv").write_text(f"path,class\n{face('london_001', 'neutral.jpg')},3\n"
                                         f"{face('london_005', 'neutral.jpg')},no-such-class\n")
    out = tmp_path / "run"
    s = run_protocol(read_protocol(tmp_path / "images.csv"), "resnet18", "random", methods=["gradcam"],
                     out_dir=out)
    assert (s.done, s.errors) == (2, 1)
    rows = _rows(out)
    assert len(rows) == 2 * 2 * 2 and {r["target"] for r in rows} == {"class"}
    assert all((r["error"] is None) == (r["item_index"] == 0) for r in rows)
    assert runfiles.read_map(out, "maps/0/gradcam_class.npy").shape == (224, 224)


def test_triplet_protocol_plays_the_hiding_game(tmp_path):
    out = tmp_path / "run"
    s = run_protocol(demo_protocol("triplets", limit=1), "dlib-resnet", methods=["gradcam"],
                     metrics=["deletion", "hiding"], out_dir=out)
    assert s.done == 1
    got = {(r["method"], r["target"], r["metric"]) for r in _rows(out)}
    # the hiding game explains the match: it has rows for e+ only
    assert got == {(m, t, "deletion") for m in ("random", "gradcam") for t in ("e+", "e-")} | \
        {(m, "e+", "hiding") for m in ("random", "gradcam")}


def test_percentile_masks_remove_tied_values_together():
    import torch

    from famegui.evaluation.curves import perturbed

    amap = np.zeros((10, 10), dtype=np.float32)
    amap[:2] = 1.0  # 20 tied top pixels
    x = torch.ones(1, 3, 10, 10)
    rank = perturbed(x, amap, [0.0, 0.1], "deletion", "zero", masks="rank")
    pct = perturbed(x, amap, [0.0, 0.1], "deletion", "zero", masks="percentile")
    assert float((rank[1, 0] == 0).sum()) == 10  # exactly 10 % of the pixels
    assert float((pct[1, 0] == 0).sum()) == 20  # every pixel at or above the 90th percentile: the whole tie
    assert float((pct[0, 0] == 0).sum()) == 0


def test_fame_authors_preset_records_its_choices(tmp_path):
    out = tmp_path / "authors"
    s = run_protocol(demo_protocol(limit=1), "dlib-resnet", methods=["fame", "gradcam"], iterations=2,
                     metrics=["deletion", "accuracy-deletion"], preset="fame-authors", out_dir=out)
    assert (s.done, s.errors) == (1, 0)
    cfg = json.loads((out / "run.json").read_text())
    assert cfg["preset"] == "fame-authors" and cfg["fill"] == "zero" and cfg["masks"] == "percentile"
    assert cfg["targets"] == ["e+"] and cfg["methods"]["fame"]["epsilon"] == 0.01
    # famegui's own preset adds the decision target for an accuracy metric, and refuses to mix into that folder
    with pytest.raises(rundir.ConfigMismatch):
        run_protocol(demo_protocol(limit=1), "dlib-resnet", methods=["fame", "gradcam"], iterations=2,
                     metrics=["deletion", "accuracy-deletion"], out_dir=out)
    rows = _rows(out)
    assert {r["target"] for r in rows} == {"e+"} and {r["metric"] for r in rows} == {"deletion", "accuracy-deletion"}


def test_decision_target_reuses_the_map_of_the_pairs_own_decision(tmp_path):
    out = tmp_path / "decision"
    run_protocol(demo_protocol(limit=2), "dlib-resnet", methods=["gradcam"], metrics=["accuracy-deletion"],
                 out_dir=out)
    assert json.loads((out / "run.json").read_text())["targets"] == ["e+", "e-", "decision"]
    rows = [r for r in _rows(out) if r["method"] == "gradcam"]
    for index, label in {(r["item_index"], r["label"]) for r in rows}:
        own = "e+" if label == "genuine" else "e-"
        a = runfiles.read_map(out, f"maps/{index}/gradcam_decision.npy")
        np.testing.assert_array_equal(a, runfiles.read_map(out, f"maps/{index}/gradcam_{own}.npy"))
