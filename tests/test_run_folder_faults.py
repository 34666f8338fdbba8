"""Hostile run folders: a broken ``run.json``, a Parquet part of garbage, a map ``.npy`` (loose or in a block)
that holds Python objects, a map block that is not a zip, and files that are symlinks out of the folder.
``famegui report`` (one run, two runs) and the run browser give one line per bad file and show the rest;
nothing in a folder is ever unpickled (the pickled map here would create a file if it were loaded)."""
from __future__ import annotations

import io
import json
import pathlib
import zipfile

import numpy as np
import pytest

from famegui.cli import main
from famegui.evaluation import report_tables as rt
from famegui.evaluation import rundir, runfiles

ITEMS = 4
METHOD = "gradcam"


class Touch:
    """Unpickled, it creates its file: the proof that a loader ran code from the folder."""

    def __init__(self, path: pathlib.Path) -> None:
        self.path = path

    def __reduce__(self):
        return pathlib.Path.touch, (self.path,)


def make_run(path: pathlib.Path, compacted: bool = True, seed: int = 0) -> pathlib.Path:
    """A run folder written by famegui's own writer: 4 pairs, Grad-CAM and the random ranking, e+, deletion."""
    rng = np.random.default_rng(seed)
    (path / "results").mkdir(parents=True)
    meta = {"famegui_run": rundir.RUN_FORMAT, "protocol": {"name": "hostile", "kind": "pairs", "path": "pairs.csv"},
            "model": {"name": "dlib-resnet"}, "methods": {METHOD: {}}, "targets": ["e+"], "metrics": ["deletion"]}
    (path / "run.json").write_text(json.dumps(meta))
    writer = rundir.RunWriter(path, every=1000)
    for i in range(ITEMS):
        rel = rundir.map_path(i, METHOD, "e+")
        rows = [dict(item=f"{i}:a{i}.jpg,b{i}.jpg", item_index=i, label="same", method=m, target="e+",
                     metric="deletion", auc=float(0.2 + 0.1 * i + (0.3 if m == "random" else 0.0)), gain=0.1,
                     flip=None, curve=[1.0, 0.5, 0.1], reverse=[], fractions=[0.0, 0.5, 1.0], score="cosine",
                     seconds=0.1, error=None, map=rel if m == METHOD else None) for m in (METHOD, "random")]
        writer.add(i, rows, {rel: rng.random((8, 8)).astype(np.float32)})
    if compacted:
        writer.close()
    return path


def pickled_npy(marker: pathlib.Path) -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.array([Touch(marker)], dtype=object), allow_pickle=True)
    return buf.getvalue()


def put_pickle(run: pathlib.Path, rel: str, marker: pathlib.Path) -> None:
    """Replace the map ``rel`` (loose, or its member of the block) with a pickle of :class:`Touch`."""
    loose = run / rel
    if loose.is_file():
        loose.write_bytes(pickled_npy(marker))
        return
    (block,) = sorted((run / "maps").glob("block-*.npz"))
    with zipfile.ZipFile(block) as z:
        members = {n: z.read(n) for n in z.namelist()}
    assert rel in members
    members[rel] = pickled_npy(marker)
    with zipfile.ZipFile(block, "w") as z:
        for n, b in members.items():
            z.writestr(n, b)


def report(capsys, *args) -> tuple[int, str, list[str]]:
    code = main(["report", *map(str, args)])
    out, err = capsys.readouterr()
    return code, out, err.strip().splitlines()


def table_items(out: str) -> int:
    """The item count of Grad-CAM's row in the Markdown table."""
    line = next(ln for ln in out.splitlines() if ln.startswith(f"| e+ | deletion (lower is better) | {METHOD} |"))
    head = next(ln for ln in out.splitlines() if ln.startswith("|") and "items" in ln)
    cols = [c.strip() for c in head.strip("|").split("|")]
    return int([c.strip() for c in line.strip("|").split("|")][cols.index("items")])


def test_the_payload_is_real(tmp_path):
    """The pickled map used below does run code when numpy is allowed to unpickle it."""
    marker = tmp_path / "ran"
    np.load(io.BytesIO(pickled_npy(marker)), allow_pickle=True)
    assert marker.exists()


def test_a_broken_run_json_is_one_line_and_the_table_is_shown(tmp_path, capsys):
    run = make_run(tmp_path / "run")
    (run / "run.json").write_text('{"famegui_run": 2, "protocol": ')
    code, out, err = report(capsys, run)
    assert code == 0 and table_items(out) == ITEMS
    assert len(err) == 1 and err[0].startswith("famegui: warning: ") and "run.json" in err[0]
    with pytest.raises(ValueError, match="run.json"):  # a folder with no results is still not a run
        (run / "results").rename(tmp_path / "elsewhere")
        rt.load_run(run)


@pytest.mark.parametrize("compacted", [True, False], ids=["merged", "loose"])
def test_a_garbage_part_is_one_line_and_the_other_parts_are_reported(tmp_path, capsys, compacted):
    run = make_run(tmp_path / "run", compacted=compacted)
    parts = sorted((run / "results").glob("part-*.parquet"))
    bad = run / "results" / ("part-m999999.parquet" if compacted else "part-000099-0.parquet")
    bad.write_bytes(b"PAR1" + bytes(range(256)) * 4)
    code, out, err = report(capsys, run)
    assert code == 0 and table_items(out) == ITEMS  # every real part is read
    assert len(err) == 1 and bad.name in err[0] and "not a readable parquet" in err[0]
    if not compacted:  # one item's own part broken: its item is left out, the rest are there
        parts[0].write_bytes(b"garbage")
        code, out, err = report(capsys, run)
        assert code == 0 and table_items(out) == ITEMS - 1 and len(err) == 2


@pytest.mark.parametrize("compacted", [True, False], ids=["in-block", "loose"])
def test_a_pickled_map_is_never_loaded(tmp_path, capsys, compacted):
    a, b = make_run(tmp_path / "a", compacted), make_run(tmp_path / "b", compacted, seed=1)
    marker = tmp_path / "code-ran"
    rel = rundir.map_path(1, METHOD, "e+")
    put_pickle(a, rel, marker)
    got = runfiles.map_or_reason(a, rel)
    assert isinstance(got, str) and "Python objects" in got and runfiles.read_map(a, rel) is None
    code, out, err = report(capsys, a, b)  # two runs side by side read every map
    assert code == 0 and not marker.exists()
    assert len(err) == 1 and rel in err[0] and "Python objects" in err[0]
    agreement = next(ln for ln in out.splitlines() if ln.startswith(f"| {METHOD} | e+ |"))
    assert agreement.split("|")[3].strip() == str(ITEMS - 1)  # the other three items' maps are compared


def test_a_block_of_garbage_is_one_line(tmp_path, capsys):
    run = make_run(tmp_path / "run")
    (run / "maps" / "block-999999.npz").write_bytes(b"PK\x03\x04 not a zip at all")
    code, out, err = report(capsys, run)
    assert code == 0 and table_items(out) == ITEMS
    assert len(err) == 1 and "block-999999.npz" in err[0]
    assert isinstance(runfiles.read_map(run, rundir.map_path(0, METHOD, "e+")), np.ndarray)  # the real block still


@pytest.mark.parametrize("kind", ["map", "part", "run.json", "block"])
def test_a_symlink_out_of_the_folder_is_not_followed(tmp_path, capsys, kind):
    run = make_run(tmp_path / "run", compacted=kind != "map")
    outside = make_run(tmp_path / "outside", compacted=kind != "map", seed=5)
    if kind == "map":
        rel = rundir.map_path(2, METHOD, "e+")
        (run / rel).unlink()
        (run / rel).symlink_to(outside / rel)  # a valid map, but not the run's
        got = runfiles.map_or_reason(run, rel)
        assert isinstance(got, str) and "outside the run folder" in got
        code, out, err = report(capsys, run, make_run(tmp_path / "b", False, seed=3))
        assert code == 0 and len(err) == 1 and rel in err[0]
        return
    if kind == "part":
        link = run / "results" / "part-000050-0.parquet"
        link.symlink_to(next((outside / "results").glob("part-*.parquet")))
    elif kind == "run.json":
        (run / "run.json").unlink()
        (run / "run.json").symlink_to(outside / "run.json")
    else:
        (run / "maps" / "block-999999.npz").symlink_to(next((outside / "maps").glob("block-*.npz")))
    code, out, err = report(capsys, run)
    assert code == 0 and table_items(out) == ITEMS  # the outside part's rows are not counted
    assert len(err) == 1 and "outside the run folder" in err[0]


# --------------------------------------------------------------------------- the run browser
@pytest.fixture
def hostile_run(tmp_path):
    """A run with one of each: a broken run.json, a garbage part beside the merged one, a pickled map, a
    garbage block and a map that is a symlink out of the folder; and the file a loaded pickle would create."""
    run = make_run(tmp_path / "run", compacted=False)
    outside = make_run(tmp_path / "outside", compacted=False, seed=5)
    marker = tmp_path / "code-ran"
    put_pickle(run, rundir.map_path(1, METHOD, "e+"), marker)
    rel = rundir.map_path(2, METHOD, "e+")
    (run / rel).unlink()
    (run / rel).symlink_to(outside / rel)
    (run / "results" / "part-m999999.parquet").write_bytes(b"garbage")
    (run / "maps" / "block-999999.npz").write_bytes(b"garbage")
    (run / "run.json").write_text("{")
    return run, marker


def test_the_run_browser_shows_the_rest_and_one_line_per_bad_file(qtbot, hostile_run):
    pytest.importorskip("pytestqt")
    from famegui.gui.run_browser import RunBrowser

    run, marker = hostile_run
    b = RunBrowser(run)
    qtbot.addWidget(b)
    b.show()
    assert b.model.rowCount() == ITEMS
    lines = b.problems.text().splitlines()
    assert b.problems.isVisible() and len(lines) == 3
    for name in ("run.json", "part-m999999.parquet", "block-999999.npz"):
        assert sum(name in ln for ln in lines) == 1
    shown = {}
    for i in range(ITEMS):
        b.show_row(i)
        shown[b.current.index] = (len(b.map_labels), b.info.text())
    assert shown[0][0] == 1 and shown[3][0] == 1  # good maps are drawn
    assert shown[1][0] == 0 and "Python objects" in shown[1][1]
    assert shown[2][0] == 0 and "outside the run folder" in shown[2][1]
    assert not marker.exists()
