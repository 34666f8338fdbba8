"""Protocol-run throughput (not a CI test; numbers for the notes of the protocol issue).

Runs the bundled demo protocol with FAME on the dlib model, serially (one worker) and with two
local workers, in this one process one after the other, and reports items per hour, their ratio and
whether the two tables are identical. Then the cost of Ray: the same cheap run (Grad-CAM) on the
local engine and on a local Ray instance, the difference per item.

Usage: python scripts/bench_protocol.py [--items 8] [--iterations 500] [--skip-ray]
Prints one JSON line per measurement.
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path


def _timed_run(out: Path, items: int, **kwargs) -> float:
    from famegui.evaluation.protocol import demo_protocol
    from famegui.evaluation.runner import run_protocol

    t0 = time.perf_counter()
    summary = run_protocol(demo_protocol(limit=items), "dlib-resnet", out_dir=out, **kwargs)
    if summary.done != items:
        raise SystemExit(f"{out}: {summary.line()}")
    return time.perf_counter() - t0


def _table(out: Path) -> list[dict]:
    from famegui.evaluation import rundir

    rows = rundir.read_results(out).to_pylist()
    return sorted(rows, key=lambda r: (r["item_index"], r["method"], r["target"], r["metric"]))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--items", type=int, default=8)
    ap.add_argument("--iterations", type=int, default=500)
    ap.add_argument("--skip-ray", action="store_true")
    args = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="famegui-bench-protocol-"))
    seconds = {}
    for workers in (1, 2):
        seconds[workers] = _timed_run(root / f"w{workers}", args.items, methods=["fame"],
                                      iterations=args.iterations, workers=workers)
        print(json.dumps({"bench": "local", "method": "fame", "iterations": args.iterations, "items": args.items,
                          "workers": workers, "seconds": round(seconds[workers], 1),
                          "items_per_hour": round(3600 * args.items / seconds[workers], 1)}), flush=True)
    a, b = _table(root / "w1"), _table(root / "w2")
    same = len(a) == len(b) and all(
        {k: v for k, v in x.items() if k != "seconds"} == {k: v for k, v in y.items() if k != "seconds"}
        for x, y in zip(a, b))
    print(json.dumps({"bench": "local-workers", "throughput_ratio_2_vs_1": round(seconds[1] / seconds[2], 2),
                      "identical_tables": same}), flush=True)
    if args.skip_ray:
        return
    cheap = {"methods": ["gradcam"], "workers": 2}
    local = _timed_run(root / "gradcam-local", args.items, **cheap)
    ray = _timed_run(root / "gradcam-ray", args.items, engine="ray", **cheap)
    print(json.dumps({"bench": "ray-overhead", "method": "gradcam", "items": args.items,
                      "local_s": round(local, 1), "ray_s": round(ray, 1),
                      "ray_extra_s_per_item": round((ray - local) / args.items, 2),
                      "note": "includes starting the local Ray instance and its actors once"}), flush=True)


if __name__ == "__main__":
    main()
