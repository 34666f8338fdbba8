"""Worker processes that die under a protocol run: the blocks beside them run again, the block that kills
its worker when alone (local) or twice (Ray) becomes error rows, and the run ends (a Ray node lost mid-run:
tests/test_ray_cluster.py)."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from famegui.evaluation import engines, rundir


def _load(spec):  # the toy "model": nothing to load
    return None


def _work(model, job, cfg):
    """Job ``cfg["killer"]`` kills its process every time; ``cfg["once"]`` the first time only."""
    if job == cfg["killer"]:
        os.kill(os.getpid(), signal.SIGKILL)
    if job == cfg["once"] and not os.path.exists(cfg["marker"]):
        open(cfg["marker"], "w").close()
        os.kill(os.getpid(), signal.SIGKILL)
    return job * 10


def _killer_run(engine: str, tmp_path) -> None:
    """Eight blocks on two workers: block 5 kills its worker every time, block 2 the first time only."""
    cfg = {"killer": 5, "once": 2, "marker": str(tmp_path / "killed-once")}
    got = list(engines.run_items(engine, list(range(8)), {}, cfg, load=_load, work=_work, workers=2,
                                 failed=lambda job, message: ("failed", job, message)))
    assert sorted(r for r in got if isinstance(r, int)) == [j * 10 for j in range(8) if j != 5]
    [(word, job, message)] = [r for r in got if isinstance(r, tuple)]
    assert (word, job) == ("failed", 5) and "died" in message and os.path.exists(cfg["marker"])
    with pytest.raises(engines.WorkerDied):
        list(engines.run_items(engine, [5], {}, cfg, load=_load, work=_work, workers=1))


def test_a_block_that_kills_its_worker_fails_alone_and_the_rest_finish(tmp_path):
    _killer_run("local", tmp_path)


@pytest.mark.slow  # a local Ray (about 40 s)
def test_a_block_that_kills_its_ray_actor_every_time_costs_its_own_rows_only(tmp_path):
    """Before, Ray retried the poison block on its actor until the actor's restarts were spent and the whole
    run stopped with ActorDiedError; now each block is tried twice and then becomes error rows."""
    ray = pytest.importorskip("ray")
    here = os.path.dirname(os.path.abspath(__file__))  # the actors import this module for _load and _work
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": here}})
    try:
        _killer_run("ray", tmp_path)
    finally:
        ray.shutdown()


def _workers_of(pid: int) -> list[int]:
    """The worker processes of the famegui run ``pid`` (its children that are Python, not the pool's manager)."""
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()
    kids = [int(p) for p in out]
    return [k for k in kids if "spawn_main" in open(f"/proc/{k}/cmdline", "rb").read().decode(errors="replace")]


@pytest.mark.slow  # two runs of four pairs
def test_a_worker_killed_by_its_pid_costs_a_rerun_and_the_table_is_whole(tmp_path):
    from famegui.evaluation.protocol import demo_protocol
    from famegui.evaluation.runner import run_protocol

    run = {"methods": ["gradcam"], "metrics": ["deletion", "insertion"]}
    reference = tmp_path / "reference"
    run_protocol(demo_protocol(limit=4), "dlib-resnet", out_dir=reference, workers=2, **run)
    out = tmp_path / "killed"
    cmd = [sys.executable, "-m", "famegui", "run", "demo", "--limit", "4", "--method", "gradcam", "--metric",
           "deletion,insertion", "--workers", "2", "--quiet", "--out", str(out)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 240
    while not (out / "results").is_dir() or not rundir.finished_keys(out):
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.05)
    victims = _workers_of(proc.pid)
    assert victims, "no worker process found"
    os.kill(victims[0], signal.SIGKILL)
    killed_at = len(rundir.finished_keys(out))
    stdout, stderr = proc.communicate(timeout=600)
    assert proc.returncode == 0, stderr
    assert killed_at < 4, "the run had finished before the kill: nothing was tested"
    assert "4 items done" in stdout and "0 with errors" in stdout
    a = [{k: v for k, v in r.items() if k != "seconds"} for r in rundir.read_results(reference).to_pylist()]
    b = [{k: v for k, v in r.items() if k != "seconds"} for r in rundir.read_results(out).to_pylist()]
    assert len(a) == len(b)
    for x, y in zip(a, b):
        for k in x:
            if isinstance(x[k], (float, list)):
                assert x[k] == pytest.approx(y[k], abs=1e-6, nan_ok=True), k
            else:
                assert x[k] == y[k], k


@pytest.mark.slow  # a run interrupted, then finished
def test_ctrl_c_stops_the_run_cleanly_and_the_rerun_finishes_it(tmp_path):
    """SIGINT to the run's process group (what Ctrl+C in a terminal sends, to the workers too): exit 130 with
    one line, nothing half-written, and the same command afterwards finishes the table."""
    from famegui.evaluation.protocol import demo_protocol
    from famegui.evaluation.runner import run_protocol

    out = tmp_path / "interrupted"
    cmd = [sys.executable, "-m", "famegui", "run", "demo", "--limit", "6", "--method", "gradcam", "--metric",
           "deletion,insertion", "--workers", "2", "--quiet", "--out", str(out)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    deadline = time.monotonic() + 240
    while not (out / "results").is_dir() or not rundir.finished_keys(out):
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGINT)
    _stdout, stderr = proc.communicate(timeout=120)
    done = rundir.finished_keys(out)
    assert proc.returncode == 130 and stderr.strip().splitlines() == ["famegui: interrupted"], stderr
    assert 1 <= len(done) < 6
    assert not [p for p in out.rglob("*") if p.name.endswith(".tmp")]  # no half-written file
    s = run_protocol(demo_protocol(limit=6), "dlib-resnet", out_dir=out, workers=2, methods=["gradcam"],
                     metrics=["deletion", "insertion"])
    assert (s.skipped, s.done) == (len(done), 6 - len(done))
    assert len(rundir.read_results(out)) == 6 * 2 * 2 * 2


def _small_files():  # in the child before exec: files over 50 kB cannot be written (a full disk, for writes)
    import resource

    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # the write fails with EFBIG instead of killing the process
    resource.setrlimit(resource.RLIMIT_FSIZE, (50_000, 50_000))


@pytest.mark.slow  # a run stopped by the disk, then finished
def test_a_full_disk_stops_the_run_in_one_line_and_the_rerun_finishes_it(tmp_path):
    """No room for the first map (a 150x150 float32 map is 90 kB): the run stops with one line that says what
    to do, run.json and the item list are whole, nothing half-written is left, and with room again the same
    command writes every item."""
    import json

    out = tmp_path / "full"
    cmd = [sys.executable, "-m", "famegui", "run", "demo", "--limit", "3", "--method", "gradcam", "--metric",
           "deletion", "--quiet", "--out", str(out)]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300, preexec_fn=_small_files)
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 1 and len(lines) == 1, r.stderr
    assert "no space left to write into" in lines[0] and "run the same command again" in lines[0]
    assert json.loads((out / "run.json").read_text())["provenance"]
    assert not [p for p in out.rglob("*") if p.name.endswith(".tmp")] and not rundir.finished_keys(out)
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and "3 items done" in r.stdout, r.stderr
    assert len(rundir.read_results(out)) == 3 * 2 * 2
