"""The run folder at scale: one map store and compacted parts, provenance in run.json, one-scan curves."""
from __future__ import annotations

import dataclasses
import json
import math
import shutil
import zipfile

import numpy as np
import pyarrow.parquet as pq
import pytest
from conftest import drop_item, face

from famegui.evaluation import curves as C
from famegui.evaluation import rundir, runfiles


def _rows(index: int, with_map: bool = True) -> list[dict]:
    return [{"item": f"item-{index}", "item_index": index, "label": "genuine", "method": m, "target": "e+",
             "metric": "deletion", "auc": 0.1 * index, "gain": 0.0, "flip": None, "curve": [1.0, float(index)],
             "reverse": [], "fractions": [0.0, 1.0], "score": "cosine", "seconds": 0.0, "error": None,
             "map": rundir.map_path(index, m, "e+") if (with_map and m != "random") else None}
            for m in ("gradcam", "random")]


def _map(index: int) -> np.ndarray:
    return np.random.default_rng(index).random((12, 12)).astype(np.float32)


def _loose_run(out, items: int = 3):
    """A run folder as a run leaves it before any compaction: a part file and a .npy map per item."""
    rundir.check_or_write_config(out, {"famegui_run": rundir.RUN_FORMAT})
    for i in range(items):
        rundir.write_item(out, i, _rows(i), {rundir.map_path(i, "gradcam", "e+"): _map(i)})
    return out


def _files(out) -> list[str]:
    return sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())


def test_the_writer_compacts_as_it_goes_and_into_one_part_and_one_block(tmp_path):
    out = tmp_path / "run"
    rundir.check_or_write_config(out, {"famegui_run": rundir.RUN_FORMAT})
    w = rundir.RunWriter(out, every=4)
    for i in range(10):
        w.add(i, _rows(i), {rundir.map_path(i, "gradcam", "e+"): _map(i)})
        if i == 5:  # readable while the run goes on: two items loose, four in a block
            assert rundir.finished_keys(out) == {f"item-{k}" for k in range(6)}
            assert len(list((out / "maps").glob("block-*.npz"))) == 1
            np.testing.assert_array_equal(runfiles.read_map(out, "maps/1/gradcam_e+.npy"), _map(1))  # in the block
            np.testing.assert_array_equal(runfiles.read_map(out, "maps/5/gradcam_e+.npy"), _map(5))  # loose
    w.close()
    assert _files(out) == ["maps/block-000003.npz", "results/part-m000003.parquet", "run.json"]
    table = rundir.read_results(out).to_pylist()
    assert [(r["item_index"], r["method"]) for r in table] == [(i, m) for i in range(10) for m in ("gradcam", "random")]
    for i in range(10):
        np.testing.assert_array_equal(runfiles.read_map(out, rundir.map_path(i, "gradcam", "e+")), _map(i))
    assert runfiles.read_map(out, "maps/10/gradcam_e+.npy") is None
    for bad in ("../run.json", "maps/../../x.npy", "/etc/passwd", None, 3, "maps/1/gradcam_e+.txt"):
        assert runfiles.read_map(out, bad) is None


def test_a_crash_during_compaction_counts_each_row_and_map_once(tmp_path):
    """The merge written, its sources not yet deleted (a kill between the two): readers see every row once,
    and the next compaction removes the leftovers."""
    out = _loose_run(tmp_path / "run")
    saved = tmp_path / "saved"
    shutil.copytree(out, saved)
    rundir.compact(out)
    for p in (saved / "results").glob("part-*.parquet"):  # the sources come back, as if never deleted
        shutil.copy(p, out / "results" / p.name)
    shutil.copytree(saved / "maps" / "1", out / "maps" / "1")
    assert len(list((out / "results").glob("part-*.parquet"))) == 4
    rows = rundir.read_results(out).to_pylist()
    assert len(rows) == 6 and rundir.finished_keys(out) == {"item-0", "item-1", "item-2"}
    rundir.compact(out, whole=True)
    assert _files(out) == ["maps/block-000002.npz", "results/part-m000001.parquet", "run.json"]
    assert len(rundir.read_results(out)) == 6
    with zipfile.ZipFile(out / "maps" / "block-000002.npz") as z:
        assert sorted(z.namelist()) == [rundir.map_path(i, "gradcam", "e+") for i in range(3)]


def test_the_report_reads_the_old_layout_and_the_new(tmp_path):
    """A run folder as earlier versions wrote it (a part per item, a .npy per map) reads as before."""
    from famegui.evaluation.compare_runs import read_map
    from famegui.evaluation.report_tables import load_run, summarise

    old = _loose_run(tmp_path / "old")
    new = tmp_path / "new"
    shutil.copytree(old, new)
    rundir.compact(new, whole=True)
    a, b = load_run(old), load_run(new)
    assert len(list((old / "results").glob("*.parquet"))) == 3 and len(a.rows) == len(b.rows) == 6
    assert [r.mean for r in summarise(a).rows] == [r.mean for r in summarise(b).rows]
    np.testing.assert_array_equal(read_map(a, "maps/2/gradcam_e+.npy"), read_map(b, "maps/2/gradcam_e+.npy"))


def test_one_scan_gives_the_curve_and_the_flip_share_of_the_per_step_path(dlib):
    """The batched scan against the per-step functions (the curve's passes, then the 101-point flip curve),
    for a Grad-CAM map and a random ranking, deletion and insertion, e+ and e-, at thresholds where the
    decision flips early, late, never, and back and forth."""
    from famegui.data.pipeline import prepare_for_model
    from famegui.explanation import Row, explain_rows
    from famegui.targets import Target

    x = prepare_for_model(dlib, face("london_001", "neutral.jpg")).tensor
    ref = prepare_for_model(dlib, face("london_001", "smiling.jpg")).tensor
    for kind in ("similar", "dissimilar"):
        target = Target(kind)
        cam = explain_rows(dlib, [Row(x, target, ref)], "gradcam", {})[0].map
        for amap in (cam, C.random_map(cam.shape, 3)):
            for mode in ("deletion", "insertion"):
                fine = C.pair_cosines(dlib, x, ref, amap, [i / 100 for i in range(101)], mode)
                # a threshold a hair above one cosine (less than float32 resolves): the flip share compares the
                # float32 cosines with it as float32, so that point still counts as at the threshold
                record = int(np.argmin(fine[:51]))
                hair = float(fine[record]) + 1e-12
                for threshold in (*np.quantile(fine, [0.05, 0.5, 0.95]), float(fine.max()) + 1e-3, hair):
                    c, flip = C.curve_and_flip(dlib, x, ref, amap, target, float(threshold), mode)
                    old = C.curve(dlib, x, amap, target, mode, reference=ref)
                    assert flip == C.flip_fraction(dlib, x, ref, amap, float(threshold), mode)
                    np.testing.assert_allclose(c.scores, old.scores, atol=1e-6)
                    assert c.score_name == old.score_name and c.fractions == old.fractions


def test_evaluate_batched_equals_per_step(dlib):
    from famegui.data.pipeline import prepare_for_model
    from famegui.evaluation.experiment import baseline, evaluate
    from famegui.evaluation.metrics import Sample
    from famegui.explanation import decision_threshold
    from famegui.targets import Target

    x = prepare_for_model(dlib, face("london_001", "neutral.jpg")).tensor
    ref = prepare_for_model(dlib, face("london_005", "neutral.jpg")).tensor
    base = Sample(dlib, x, Target("dissimilar"), reference=ref, threshold=decision_threshold(dlib), same=False)
    samples = [dataclasses.replace(base, method="gradcam"), baseline(base, seed=1)]
    a = evaluate(samples, ["deletion", "insertion"], batched=False)
    b = evaluate(samples, ["deletion", "insertion"], batched=True)
    assert [(r.method, r.metric) for r in a] == [(r.method, r.metric) for r in b]
    for r, s in zip(a, b):
        assert r.extra["flip"] == s.extra["flip"]
        assert math.isclose(r.auc, s.auc, abs_tol=1e-6) and math.isclose(r.gain, s.gain, abs_tol=1e-6)


def test_run_json_records_provenance_and_the_report_prints_it(tmp_path, capsys):
    from famegui.cli import main

    out = tmp_path / "run"
    cmd = ["run", "demo", "--limit", "2", "--method", "gradcam", "--metric", "deletion", "--quiet", "--out", str(out)]
    assert main(cmd) == 0
    drop_item(out, 1)
    assert main(cmd) == 0  # a resumed run is a second session
    capsys.readouterr()
    meta = json.loads((out / "run.json").read_text())
    first, second = meta["provenance"]
    assert (first["items"], second["items"]) == (2, 1)
    for s in (first, second):
        assert "run demo --limit" in s["command"] and s["famegui"] and s["packages"]["torch"]
        assert s["device"] == "cpu" and s["cpu"] and s["cores"] >= 1 and s["gpu"] == []
        assert s["engine"]["name"] == "local" and s["started"] <= s["ended"]
        [worker] = s["workers"]
        assert worker["blocks"] == s["items"] and worker["threads"] == 1 and worker["started"] <= worker["ended"]
    if (rundir.Path(__file__).parents[1] / ".git").exists():  # a checkout: its commit
        assert len(first["git"]["commit"]) == 40
    assert main(["report", str(out)]) == 0
    text = capsys.readouterr().out
    below = text[text.index("## Provenance"):]
    assert text.index("| e+") < text.index("## Provenance")
    assert "session 1:" in below and "session 2:" in below and "run demo --limit 2" in below and first["cpu"] in below
    assert main(["report", str(out), "--format", "csv"]) == 0
    got = capsys.readouterr()
    assert "## Provenance" not in got.out and "session 2:" in got.err


@pytest.mark.slow  # a thousand pairs, Grad-CAM on two workers (about two minutes)
def test_a_thousand_pair_run_is_a_handful_of_files(tmp_path):
    from famegui.data.pairs import sample_identities
    from famegui.evaluation.protocol import read_protocol
    from famegui.evaluation.runner import run_protocol

    photos = [str(p) for ps in sample_identities().values() for p in ps]
    people = {str(p): name for name, ps in sample_identities().items() for p in ps}
    pairs = [(a, b) for a in photos for b in photos if a != b][:1000]  # 37 photos: 1,332 ordered pairs
    lines = [f"{a},{b},{int(people[a] == people[b])},{people[a]}" for a, b in pairs]
    (tmp_path / "pairs.csv").write_text("pathA,pathB,label,group\n" + "\n".join(lines) + "\n")
    protocol = read_protocol(tmp_path / "pairs.csv")
    assert len(protocol) == 1000 and len(set(protocol.key(i) for i in range(1000))) == 1000
    out = tmp_path / "run"
    # what is measured is the folder's layout, not the maps: no face alignment (a centre crop) halves the time
    s = run_protocol(protocol, "dlib-resnet", methods=["gradcam"], targets=["e+"], metrics=["accuracy-deletion"],
                     fractions=[0.0, 0.5, 1.0], out_dir=out, workers=2, align=False)
    assert (s.done, s.errors) == (1000, 0)
    files = [p for p in out.rglob("*") if p.is_file()]
    assert len(files) < 50, [p.relative_to(out).as_posix() for p in files]
    assert len(pq.read_table(rundir.part_files(out)[0])) == 1000 * 2
    assert runfiles.read_map(out, rundir.map_path(999, "gradcam", "e+")).shape == (150, 150)


def test_a_second_run_into_a_folder_being_written_is_refused(tmp_path, capsys):
    """Two writers would compute the same items twice and compact each other's files: while one famegui run
    holds the folder, a second (another process, the same command) is refused in one line, and the first
    ends whole."""
    import subprocess
    import sys
    import time

    from famegui.cli import main
    from famegui.evaluation.protocol import demo_protocol
    from famegui.evaluation.runner import run_protocol

    out = tmp_path / "run"
    cmd = ["run", "demo", "--limit", "3", "--method", "gradcam", "--metric", "deletion", "--quiet", "--out", str(out)]
    first = subprocess.Popen([sys.executable, "-m", "famegui", *cmd], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True)
    deadline = time.monotonic() + 120
    while not (out / "run.json").exists():
        assert first.poll() is None and time.monotonic() < deadline, first.communicate()
        time.sleep(0.02)
    with pytest.raises(rundir.RunLocked, match="being written by another famegui run"):
        run_protocol(demo_protocol(limit=3), "dlib-resnet", methods=["gradcam"], metrics=["deletion"], out_dir=out)
    assert main(cmd) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "being written by another famegui run" in err[0]
    assert first.poll() is None, "the first run ended before the second tried: nothing was tested"
    stdout, stderr = first.communicate(timeout=300)
    assert first.returncode == 0, stderr
    assert "3 items done" in stdout and len(rundir.read_results(out)) == 3 * 2 * 2
    again = run_protocol(demo_protocol(limit=3), "dlib-resnet", methods=["gradcam"], metrics=["deletion"],
                         out_dir=out)  # the lock went with the first process
    assert (again.done, again.skipped) == (0, 3)
