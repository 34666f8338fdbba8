"""FAME iteration time alone and next to one competing CPU-bound process, per OpenMP wait policy.

Each measurement runs in a fresh Python process (the wait policy is read when torch starts) with the
thread count famegui's GUI would use (:mod:`famegui.core.threads`). The competitor is
``python -c "while 1: pass"``, started and stopped by this script. Target (FAME speed issue): with
the competitor, FAME's iteration time grows by at most 2.5x on a 2-core machine.

Usage: python scripts/bench_threads.py [--iterations 30] [--policies PASSIVE,ACTIVE]
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
t0 = time.perf_counter()
explain_fame(model, x, Target("similar"), FameParams(iterations=its), reference=y, every=its)
print(json.dumps({"threads": n, "ms_per_iteration": 1000 * (time.perf_counter() - t0) / its}))
"""


def measure(policy: str, iterations: int) -> float:
    env = dict(os.environ)
    env.pop("OMP_NUM_THREADS", None)
    env["OMP_WAIT_POLICY"] = policy  # set before torch starts; famegui keeps a policy the user set
    out = subprocess.run([sys.executable, "-c", CHILD, str(iterations)], env=env, capture_output=True, text=True,
                         check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])["ms_per_iteration"]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--iterations", type=int, default=30)
    ap.add_argument("--policies", default="PASSIVE,ACTIVE")
    args = ap.parse_args()
    for policy in args.policies.split(","):
        alone = measure(policy, args.iterations)
        hog = subprocess.Popen([sys.executable, "-c", "while 1: pass"])
        try:
            loaded = measure(policy, args.iterations)
        finally:
            hog.terminate()
            hog.wait()
        print(json.dumps({"policy": policy, "ms_alone": round(alone, 1), "ms_with_competitor": round(loaded, 1),
                          "ratio": round(loaded / alone, 2)}), flush=True)


if __name__ == "__main__":
    main()
