"""A real two-node Ray cluster on this machine, started as a user starts one on two machines (``ray start
--head`` and ``ray start --address``), runs a protocol through ``famegui run --engine ray --address``; the
worker node killed in the middle of the run costs at most its blocks in flight, which Ray sends again, and
the run ends with the table of an uninterrupted run."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from famegui.evaluation import rundir
from famegui.evaluation.protocol import demo_protocol
from famegui.evaluation.runner import run_protocol

pytest.importorskip("ray")

pytestmark = pytest.mark.slow  # a cluster of two nodes and three protocol runs (about three minutes)

RAY = str(Path(sys.executable).parent / "ray")
LIMIT = 8
RUN = {"methods": ["gradcam"], "metrics": ["deletion", "insertion"]}
CLI = ["run", "demo", "--limit", str(LIMIT), "--method", "gradcam", "--metric", "deletion,insertion", "--quiet"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _alive_nodes(address: str) -> int:
    code = (f"import ray; ray.init(address={address!r}, log_to_driver=False); "
            "print(sum(n['Alive'] for n in ray.nodes()))")
    try:  # a driver that asks too early (the head still starting) may hang: ask again
        got = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30)
    except subprocess.TimeoutExpired:
        return 0
    return int(got.stdout.strip().splitlines()[-1]) if got.returncode == 0 and got.stdout.strip() else 0


def _start(args: list[str], env: dict) -> subprocess.Popen:
    """A ``ray start ... --block`` in its own session: killing the session kills the node and its workers."""
    return subprocess.Popen([RAY, "start", *args, "--block"], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)


def _kill(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait(timeout=60)


@pytest.fixture
def cluster(tmp_path):
    """(address, worker node process): a head node with 2 CPUs and a worker node with 1 CPU."""
    port = _free_port()
    address = f"127.0.0.1:{port}"
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    head = _start(["--head", f"--port={port}", "--num-cpus=2", "--include-dashboard=false",
                   "--node-ip-address=127.0.0.1"], env)
    node = None
    try:
        deadline = time.monotonic() + 240
        time.sleep(5)
        while _alive_nodes(address) < 1:
            assert time.monotonic() < deadline and head.poll() is None, "the head node did not start"
            time.sleep(1)
        node = _start([f"--address={address}", "--num-cpus=1", "--node-ip-address=127.0.0.1"], env)
        while _alive_nodes(address) < 2:
            assert time.monotonic() < deadline and node.poll() is None, "the worker node did not join"
            time.sleep(1)
        yield address, node
    finally:
        if node is not None:
            _kill(node)
        _kill(head)


def _table(out) -> list[dict]:
    return [{k: v for k, v in r.items() if k != "seconds"} for r in rundir.read_results(out).to_pylist()]


def _assert_same(a: list[dict], b: list[dict], tol: float = 1e-6) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert {k: v for k, v in x.items() if not isinstance(v, (float, list))} == \
            {k: v for k, v in y.items() if not isinstance(v, (float, list))}
        for k, v in x.items():
            if isinstance(v, (float, list)):
                assert v == pytest.approx(y[k], abs=tol, nan_ok=True), (k, x["item"], x["method"])


def test_a_run_on_two_nodes_survives_losing_one(cluster, tmp_path):
    address, node = cluster
    reference = tmp_path / "local"
    run_protocol(demo_protocol(limit=LIMIT), "dlib-resnet", out_dir=reference, workers=2, **RUN)

    out = tmp_path / "cluster"
    cmd = [sys.executable, "-m", "famegui", *CLI, "--engine", "ray", "--address", address, "--workers", "2",
           "--out", str(out)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    while len(rundir.finished_keys(out) if (out / "results").is_dir() else ()) < 2:
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "no item finished on the cluster"
        time.sleep(0.05)
    _kill(node)  # the worker node goes, with the actor on it and its block in flight
    lost_at = len(rundir.finished_keys(out))
    stdout, stderr = proc.communicate(timeout=600)
    assert proc.returncode == 0, stderr
    assert lost_at < LIMIT, "the run had finished before the node was killed: nothing was tested"
    assert f"{LIMIT} items done" in stdout
    _assert_same(_table(out), _table(reference))
    [session] = json.loads((out / "run.json").read_text())["provenance"]
    assert session["engine"] == {"name": "ray", "workers": 2, "address": address, "evaluation": "batched"}
    hosts = {w["worker"] for w in session["workers"]}
    assert len(hosts) >= 2  # the blocks were done by more than one actor process
