"""Protocol-run throughput (not a CI test; numbers for the notes of the protocol issues).

1. Where an item's time goes: for two pairs of the demo protocol, in this process with one torch thread
   (as a worker has), the seconds in FAME (e+ and e- of both pairs in one batch) and in the metrics
   (deletion and insertion with the decision-flip share and the reversed ranking, on FAME's and the random
   baseline's maps), metrics both the per-step way and the one-scan way.
2. The same protocol run twice side by side, the per-step evaluation (``--per-step``) and the batched one,
   each with FAME, deletion and insertion (with the flip share) on ``--workers`` local workers: items per
   hour of each, their ratio, and whether the two tables agree to 1e-6.
3. Optionally (``--converge 0.99``) the batched run with FAME's convergence stop: items per hour and how far
   its table is from the exact one (it is an approximation, opt-in).
4. The projected hours of a 7,000-pair protocol (CFP-FP) at the measured rate, and per worker count,
   assuming each added worker (process or machine) adds the rate of one.
5. Unless ``--skip-ray``: the cost of Ray, the same cheap run (Grad-CAM) on the local engine and on a
   local Ray instance.

Usage: python scripts/bench_protocol.py [--items 8] [--iterations 500] [--workers 2] [--converge TOL]
       [--skip-ray]
Prints one JSON line per measurement.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import tempfile
import time
from pathlib import Path

TOLERANCE = 1e-6
PAIRS_CFP_FP = 7000


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


def _differ(a: float | None, b: float | None) -> float:
    if a is None or b is None:
        return 0.0 if a is None and b is None else math.inf
    if math.isnan(a) or math.isnan(b):
        return 0.0 if math.isnan(a) and math.isnan(b) else math.inf
    return abs(a - b)


def table_difference(a: list[dict], b: list[dict]) -> float:
    """The largest difference of any number of two tables (inf when their rows or their texts differ)."""
    if len(a) != len(b):
        return math.inf
    worst = 0.0
    for x, y in zip(a, b):
        for key in x:
            if key == "seconds":
                continue
            u, v = x[key], y[key]
            if isinstance(u, list):
                if len(u) != len(v):
                    return math.inf
                worst = max([worst, *(_differ(p, q) for p, q in zip(u, v))])
            elif isinstance(u, float) or isinstance(v, float):
                worst = max(worst, _differ(u, v))
            elif u != v:
                return math.inf
    return worst


def time_split(iterations: int) -> dict:
    """Seconds in FAME and in the metrics (both ways) for two demo pairs, one torch thread, in this process."""
    from famegui.core.threads import configure
    from famegui.evaluation import runner
    from famegui.evaluation.experiment import baseline, evaluate
    from famegui.evaluation.protocol import demo_protocol
    from famegui.explanation import decision_threshold

    configure("worker")
    protocol = demo_protocol(limit=2)
    model = runner.load_spec({"model": "dlib-resnet", "weights": None, "device": "cpu"})
    threshold = decision_threshold(model)
    cfg = {"methods": runner.resolve_methods(model, "verification", ["fame"], {}, iterations),
           "targets": ["e+", "e-"], "threshold": threshold, "align": True, "fame_batch": runner.FAME_BATCH}
    bases = [runner._base_samples(model, item, cfg) for item in protocol.items]
    t0 = time.perf_counter()
    made = runner._fame_in_batches(model, bases, cfg)
    fame = time.perf_counter() - t0
    samples = []
    for b in bases:
        for _name, base in b:
            amap = made[id(b)]["fame", base.target.kind][0]
            samples += [dataclasses.replace(base, method="fame", amap=amap), baseline(base, seed=0)]
    seconds = {}
    for batched in (False, True):
        t0 = time.perf_counter()
        evaluate(samples, ["deletion", "insertion"], batched=batched)
        seconds[batched] = time.perf_counter() - t0
    return {"bench": "time-split", "items": 2, "iterations": iterations, "fame_s": round(fame, 2),
            "metrics_per_step_s": round(seconds[False], 2), "metrics_batched_s": round(seconds[True], 2),
            "fame_share_per_step": round(fame / (fame + seconds[False]), 3),
            "fame_share_batched": round(fame / (fame + seconds[True]), 3),
            "bound_if_metrics_were_free": round((fame + seconds[False]) / fame, 2)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--items", type=int, default=8)
    ap.add_argument("--iterations", type=int, default=500)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--converge", type=float, default=None, help="also a run with FAME's convergence stop")
    ap.add_argument("--skip-split", action="store_true")
    ap.add_argument("--skip-ray", action="store_true")
    args = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="famegui-bench-protocol-"))
    if not args.skip_split:
        print(json.dumps(time_split(args.iterations)), flush=True)
    run = {"methods": ["fame"], "iterations": args.iterations, "workers": args.workers,
           "metrics": ["deletion", "insertion"]}
    seconds = {}
    for name, batched in (("per-step", False), ("batched", True)):
        seconds[name] = _timed_run(root / name, args.items, batched=batched, **run)
        print(json.dumps({"bench": "protocol", "evaluation": name, "items": args.items, "workers": args.workers,
                          "iterations": args.iterations, "seconds": round(seconds[name], 1),
                          "items_per_hour": round(3600 * args.items / seconds[name], 1)}), flush=True)
    diff = table_difference(_table(root / "per-step"), _table(root / "batched"))
    rate = 3600 * args.items / seconds["batched"]
    print(json.dumps({"bench": "per-step-vs-batched", "speedup": round(seconds["per-step"] / seconds["batched"], 2),
                      "max_table_difference": diff, "equal_to_1e-6": diff <= TOLERANCE}), flush=True)
    if args.converge is not None:
        params = {"fame": {"converge_tol": args.converge}}
        took = _timed_run(root / "converge", args.items, batched=True, method_params=params, **run)
        aucs = [(a["auc"], b["auc"]) for a, b in zip(_table(root / "batched"), _table(root / "converge"))
                if a["method"] == "fame"]
        print(json.dumps({"bench": "converge", "tol": args.converge, "seconds": round(took, 1),
                          "items_per_hour": round(3600 * args.items / took, 1),
                          "speedup_vs_per_step": round(seconds["per-step"] / took, 2),
                          "fame_auc_max_difference": round(max(abs(a - b) for a, b in aucs), 4)}), flush=True)
    per_worker = rate / args.workers
    print(json.dumps({"bench": "projection", "pairs": PAIRS_CFP_FP, "items_per_hour": round(rate, 1),
                      "hours": round(PAIRS_CFP_FP / rate, 1),
                      "hours_by_workers": {w: round(PAIRS_CFP_FP / (per_worker * w), 1) for w in (1, 2, 4, 8, 16)},
                      "note": "each worker one core and one torch thread; a worker on another machine adds the same"}),
          flush=True)
    if args.skip_ray:
        return
    cheap = {"methods": ["gradcam"], "workers": args.workers}
    local = _timed_run(root / "gradcam-local", args.items, **cheap)
    ray = _timed_run(root / "gradcam-ray", args.items, engine="ray", **cheap)
    print(json.dumps({"bench": "ray-overhead", "method": "gradcam", "items": args.items,
                      "local_s": round(local, 1), "ray_s": round(ray, 1),
                      "ray_extra_s_per_item": round((ray - local) / args.items, 2),
                      "note": "includes starting the local Ray instance and its actors once"}), flush=True)


if __name__ == "__main__":
    main()
