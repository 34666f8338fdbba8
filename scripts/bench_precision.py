"""FAME in bf16 (autocast) against fp32 on the dlib face model: time per sample and map correlation.

Batch 1: e+ of the genuine demo pair (the whole network); batch 16: 16 cells of ``stage4``. Both
precisions run side by side in this process, fixed iterations. Numbers go to README (Speed).

Usage: python scripts/bench_precision.py [--iterations 40] [--precision bf16]
Prints one JSON line per batch size.
"""
from __future__ import annotations

import argparse
import json
import time


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--iterations", type=int, default=40)
    ap.add_argument("--precision", default="bf16", choices=("bf16", "fp16"))
    args = ap.parse_args()
    import torch

    from famegui.core.fame import FameParams, map_correlation
    from famegui.data.pairs import demo_pairs
    from famegui.data.pipeline import prepare_for_model
    from famegui.methods.fame import explain_fame
    from famegui.models.zoo import load_model
    from famegui.targets import Target

    model = load_model("dlib-resnet")
    pair = demo_pairs()[0]
    x = prepare_for_model(model, str(pair.a)).tensor
    y = prepare_for_model(model, str(pair.b)).tensor
    cells = [Target("cell", layer="stage4", cell=(r, c)) for r in range(4) for c in range(4)]
    jobs = {1: ([Target("similar")], y), 16: (cells, None)}
    for batch, (targets, ref) in jobs.items():
        row = {"batch": batch, "iterations": args.iterations, "threads": torch.get_num_threads()}
        maps = {}
        for precision in ("fp32", args.precision, "fp32", args.precision):  # twice each, interleaved
            fp = FameParams(iterations=args.iterations, blur_kernel=25, blur_sigma=5.0, precision=precision)
            t0 = time.perf_counter()
            res = explain_fame(model, x, targets, fp, reference=ref, every=args.iterations)
            ms = 1000 * (time.perf_counter() - t0) / args.iterations / len(targets)
            key = f"{precision}_ms_per_sample_iteration"
            row[key] = round(min(ms, row.get(key, ms)), 2)
            maps[precision] = torch.from_numpy(res.maps)
        corr = map_correlation(maps[args.precision], maps["fp32"])
        low = row[f"{args.precision}_ms_per_sample_iteration"]
        row["speedup"] = round(row["fp32_ms_per_sample_iteration"] / low, 2)
        row["corr_min"], row["corr_mean"] = round(float(corr.min()), 4), round(float(corr.mean()), 4)
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
