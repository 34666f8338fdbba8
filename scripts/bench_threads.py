"""FAME iteration time alone and next to one competing CPU-bound process, per thread policy.

Each measurement runs in a fresh Python process (OpenMP reads its environment when torch starts).
``famegui`` is what the app does (:mod:`famegui.core.threads`: the cores other processes leave
free, decided before the job); the others fix the OpenMP wait policy
(PASSIVE, ACTIVE, ``default``: the runtime's own, ``spin:N``: libgomp's GOMP_SPINCOUNT) or the
thread count (``threads:N``), and keep famegui's thread decision out of it. The competitor is
``python -c "while 1: pass"``, started and stopped by this script. Target (FAME speed issue): with
the competitor, FAME's iteration time grows by at most 2.5x on a 2-core machine.

Usage: python scripts/bench_threads.py [--iterations 30]
       [--policies famegui,PASSIVE,ACTIVE,default,spin:10000,threads:1]
Prints one JSON line per policy.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

CHILD = r"""
import json, sys, time
from famegui.core import threads
n = threads.configure("gui")
import torch
from famegui.data.pairs import demo_pairs
from famegui.data.pipeline import prepare_for_model
from famegui.methods.fame import explain_fame
from famegui.core.fame import FameParams
from famegui.models.zoo import load_model
from famegui.targets import Target
model = load_model("dlib-resnet")
pair = demo_pairs()[0]
x = prepare_for_model(model, str(pair.a)).tensor
y = prepare_for_model(model, str(pair.b)).tensor
its = int(sys.argv[1])
explain_fame(model, x, Target("similar"), FameParams(iterations=3), reference=y)
time.sleep(0.3)  # as the GUI: a load reading from before the click
t0 = time.perf_counter()
threads.adapt()  # as the GUI's scheduler before a job
explain_fame(model, x, Target("similar"), FameParams(iterations=its), reference=y)
ms = 1000 * (time.perf_counter() - t0) / its
print(json.dumps({"threads": torch.get_num_threads(), "others_busy": threads.state()["others"],
                  "ms_per_iteration": ms}))
"""


def threads_for_gui() -> int:
    from famegui.core.threads import threads_for

    return threads_for("gui")


def environment(policy: str) -> dict:
    """The child's environment for a policy (see the module's text)."""
    env = dict(os.environ)
    for k in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", "GOMP_SPINCOUNT"):
        env.pop(k, None)
    kind, _, value = policy.partition(":")
    if kind != "famegui" and kind != "threads":
        env["OMP_NUM_THREADS"] = str(threads_for_gui())  # fixed: famegui's adaptation stays out of it
    if kind == "spin":
        env["GOMP_SPINCOUNT"] = value
    elif kind == "threads":
        env["OMP_NUM_THREADS"] = value
    elif kind in ("PASSIVE", "ACTIVE"):
        env["OMP_WAIT_POLICY"] = kind
    return env


def measure(policy: str, iterations: int) -> dict:
    env = environment(policy)
    out = subprocess.run([sys.executable, "-c", CHILD, str(iterations)], env=env, capture_output=True, text=True,
                         check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--iterations", type=int, default=30)
    ap.add_argument("--policies", default="famegui,PASSIVE,default,threads:1")
    args = ap.parse_args()
    for policy in args.policies.split(","):
        alone = measure(policy, args.iterations)
        hog = subprocess.Popen([sys.executable, "-c", "while 1: pass"])
        try:
            loaded = measure(policy, args.iterations)
        finally:
            hog.terminate()
            hog.wait()
        a, b = alone["ms_per_iteration"], loaded["ms_per_iteration"]
        print(json.dumps({"policy": policy, "ms_alone": round(a, 1), "ms_with_competitor": round(b, 1),
                          "ratio": round(b / a, 2), "threads_alone": alone["threads"],
                          "threads_with_competitor": loaded["threads"]}), flush=True)


if __name__ == "__main__":
    main()
