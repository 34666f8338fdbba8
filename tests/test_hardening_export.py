"""An export is one set: PNG, .npy and sidecar are all old or all new, whatever kills the writer.

A child process writes a new set over an old one and is killed (SIGKILL) at each rename, between the
files (the test hook ``FAMEGUI_TEST_EXPORT_STEP_DELAY`` makes it announce and wait before each rename), and
at random moments. Afterwards the folder holds the whole old set or, once the interrupted export is
finished (by the next export of that name or by reading its sidecar), the whole new set; never a mix.
Ctrl+C (SIGINT) leaves no temporary file. ``reproduce`` recognises a PNG or a map that is not its
sidecar's.
"""
from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import face

from famegui.export import STEP_DELAY_ENV, journal_path, recover_set, write_set
from famegui.report import load_sidecar

WRITER = """
import sys
from famegui.export import write_set
folder, tag, size = sys.argv[1], sys.argv[2], int(sys.argv[3])
names = ["o.npy", "o.png", "o.json"]
write_set([(f"{folder}/{n}", (tag + ":" + n + ":").encode() * (size // 10)) for n in names], anchor=f"{folder}/o.png")
print("done", flush=True)
"""
NAMES = ("o.npy", "o.png", "o.json")


def _set_state(folder: Path) -> str:
    """'old', 'new' or 'mixed: ...' for the three files of the set."""
    tags = []
    for n in NAMES:
        data = (folder / n).read_bytes()
        tags.append(data.split(b":")[0].decode())
    return tags[0] if len(set(tags)) == 1 else f"mixed: {tags}"


def _writer(folder: Path, tag: str, size: int, delay: float = 0.0) -> subprocess.Popen:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    if delay:
        env[STEP_DELAY_ENV] = str(delay)
    return subprocess.Popen([sys.executable, "-c", WRITER, str(folder), tag, str(size)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _old_set(folder: Path, size: int = 1000) -> None:
    write_set([(folder / n, f"old:{n}:".encode() * (size // 10)) for n in NAMES], anchor=folder / "o.png")
    assert _set_state(folder) == "old"


def _temps(folder: Path) -> list[Path]:
    return sorted(folder.glob(".*.part"))


@pytest.mark.slow  # a child process per kill, each loading torch
@pytest.mark.parametrize("step", [0, 1, 2])
def test_killed_between_the_files_the_set_is_whole(tmp_path, step):
    _old_set(tmp_path)
    p = _writer(tmp_path, "new", 1000, delay=30)
    for line in p.stderr:  # "famegui-test: rename i" just before rename i
        if line.strip() == f"famegui-test: rename {step}":
            break
    p.send_signal(signal.SIGKILL)
    p.wait(timeout=30)
    # on disk: the journal of a committed set, and renames 0..step-1 done
    assert journal_path(tmp_path / "o.png").exists()
    on_disk = [(tmp_path / n).read_bytes().split(b":")[0].decode() for n in NAMES]
    assert on_disk == ["new"] * step + ["old"] * (3 - step)
    # reading the sidecar finishes the export: the whole new set, no journal, no temporary file
    with pytest.raises(ValueError):  # our fake sidecar bytes are no JSON, but the set was finished first
        load_sidecar(str(tmp_path / "o.json"))
    assert _set_state(tmp_path) == "new"
    assert not journal_path(tmp_path / "o.png").exists() and not _temps(tmp_path)


def test_killed_at_random_moments_old_or_new(tmp_path):
    rng = random.Random(0)
    outcomes = {"old": 0, "new": 0}
    t0 = time.perf_counter()  # how long a whole export takes here: python start, import, 3 x 2 MB, fsync, renames
    _writer(tmp_path, "old", 2_000_000).wait(timeout=60)
    full = time.perf_counter() - t0
    tag = "old"
    for i in range(16):
        new = f"v{i}"
        p = _writer(tmp_path, new, 2_000_000)
        time.sleep(rng.uniform(0.3, 1.0) * full)
        p.send_signal(signal.SIGKILL)
        p.wait(timeout=30)
        recover_set(tmp_path / "o.png")  # what the next export or reading the sidecar does first
        state = _set_state(tmp_path)
        assert state in (tag, new), f"kill {i}: {state}"
        outcomes["new" if state == new else "old"] += 1
        tag = state
        assert not journal_path(tmp_path / "o.png").exists()
        # the next export of this name removes the temporary files a kill before the commit left
        if i % 4 == 3:
            _old_set(tmp_path)
            tag = "old"
            assert not _temps(tmp_path)
    assert sum(outcomes.values()) == 16, outcomes


@pytest.mark.slow  # a child process, killed
def test_ctrl_c_leaves_no_temporary_file_and_a_whole_set(tmp_path):
    _old_set(tmp_path)
    p = _writer(tmp_path, "new", 1000, delay=30)
    for line in p.stderr:
        if "rename 1" in line:
            break
    p.send_signal(signal.SIGINT)  # KeyboardInterrupt after the commit: the renames are finished
    p.wait(timeout=30)
    assert p.returncode != 0
    assert _set_state(tmp_path) == "new" and not _temps(tmp_path)
    assert not journal_path(tmp_path / "o.png").exists()


def test_a_journal_only_renames_famegui_temporary_files(tmp_path):
    victim = tmp_path / "precious.txt"
    victim.write_text("keep")
    j = journal_path(tmp_path / "o.png")
    j.write_text(json.dumps({"renames": [[str(victim), str(tmp_path / "o.png")]]}))
    with pytest.raises(OSError, match="not a famegui export journal"):
        recover_set(tmp_path / "o.png")
    assert victim.read_text() == "keep" and not (tmp_path / "o.png").exists()


def test_two_files_of_one_set_on_one_path_are_refused(tmp_path):
    with pytest.raises(OSError, match="same path"):
        write_set([(tmp_path / "a.png", b"1"), (tmp_path / "a.png", b"2")])
    assert not list(tmp_path.iterdir())


def _explain(tmp_path, capsys, name="o", klass="3"):
    from famegui.cli import main

    code = main(["explain", "--model", "resnet18", "--weights", "random", "--image", face("london_001", "neutral.jpg"),
                 "--class", klass, "--method", "gradcam", "--out", str(tmp_path / f"{name}.png"),
                 "--save-map", str(tmp_path / f"{name}.npy")])
    out, err = capsys.readouterr()
    assert code == 0, err
    return out, err


def test_reproduce_checks_that_the_png_and_the_map_belong_to_the_sidecar(tmp_path, capsys):
    from famegui.cli import main

    _explain(tmp_path, capsys)
    side = json.loads((tmp_path / "o.json").read_text())
    import hashlib

    assert side["outputs"]["overlay_sha256"] == hashlib.sha256((tmp_path / "o.png").read_bytes()).hexdigest()
    # the PNG itself is accepted: its sidecar beside it is used, and the map matches
    code = main(["reproduce", str(tmp_path / "o.png"), "--out", str(tmp_path / "r.png")])
    out, err = capsys.readouterr()
    assert code == 0 and "difference" in out and "note" not in err, err
    # another picture under the exported name: refused, before any work
    _explain(tmp_path, capsys, "other", klass="7")
    assert (tmp_path / "other.png").read_bytes() != (tmp_path / "o.png").read_bytes()
    (tmp_path / "o.png").write_bytes((tmp_path / "other.png").read_bytes())
    for given in ("o.png", "o.json"):
        code = main(["reproduce", str(tmp_path / given), "--out", str(tmp_path / "r2.png")])
        _, err = capsys.readouterr()
        lines = err.strip().splitlines()
        assert code == 1 and len(lines) == 1 and "does not belong" in lines[0], err
        assert not (tmp_path / "r2.png").exists()
    # the exported map replaced: no difference is reported against it, a note says why
    (tmp_path / "o.png").unlink()
    np.save(tmp_path / "o.npy", np.zeros((224, 224), np.float32))
    code = main(["reproduce", str(tmp_path / "o.json"), "--out", str(tmp_path / "r3.png")])
    out, err = capsys.readouterr()
    assert code == 0 and "difference" not in out and "does not belong to this sidecar" in err, (out, err)
