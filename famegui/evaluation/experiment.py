"""The faithfulness experiment: maps (given or computed), a random-ranking baseline, every metric that applies.

One function, :func:`evaluate`, serves ``famegui faithfulness`` (one image, one
pair or a pair list), the Compare tab's curves and protocol runs. A sample
without a map gets it through the one explain path (:func:`famegui.explanation.explain_rows`);
:func:`baseline` makes the random ranking that every method should beat.
"""
from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence

import numpy as np

from . import curves as C
from .metrics import Metric, Sample, get_metric

RANDOM = "random"  # the method name of the random-ranking baseline


def baseline(sample: Sample, seed: int = 0) -> Sample:
    """The random-ranking baseline of ``sample`` (same image, target and pair; a uniformly random map)."""
    amap = C.random_map(tuple(sample.x.shape[-2:]), seed)
    return dataclasses.replace(sample, amap=amap, method=RANDOM, params={})


def _metrics(metrics: Sequence[str | Metric], fractions, fill, masks: str = "rank",
             batched: bool = True) -> list[Metric]:
    chosen = [m if isinstance(m, Metric) else get_metric(m, fractions=fractions, fill=fill, masks=masks)
              for m in metrics]
    for m in chosen:
        m.batched = batched and getattr(m, "batched", True)  # set, not passed: a plug-in's __init__ may lack it
    return chosen


def compute_map(sample: Sample, cancel: Callable[[], bool] | None = None) -> Sample:
    """``sample`` with its map (computed by its method when missing)."""
    if sample.amap is not None:
        return sample
    from ..explanation import Row, explain_rows

    [e] = explain_rows(sample.model, [Row(sample.x, sample.target, sample.reference, sample.non_mate)],
                       sample.method, sample.params, threshold=sample.threshold, cancel=cancel, fatal="keep")
    return dataclasses.replace(sample, amap=e.map)


def evaluate(samples: Sequence[Sample], metrics: Sequence[str | Metric], *,
             fractions: Sequence[float] = C.DEFAULT_FRACTIONS, fill: str = "mean", masks: str = "rank",
             progress: Callable[[float], None] | None = None,
             cancel: Callable[[], bool] | None = None, batched: bool = True) -> list:
    """Every metric that applies to each sample, in order: one result per (sample, metric).

    Curves get ``extra["target"]`` (the sample's group, default the target's label),
    ``extra["seconds"]`` (map plus metrics) and, for a map that ranks its pixels, ``extra["gain"]``: the
    area between the curve and the same curve along the reversed ranking (:meth:`Metric.add_gain`; the
    random ranking's expected gain is 0). ``cancel()`` is polled between samples. ``batched=False``: each
    measure by its own forward passes (the path before the one-scan curves; the same numbers).
    """
    from ..core.fame import Cancelled

    chosen = _metrics(metrics, fractions, fill, masks, batched)
    out = []
    for i, sample in enumerate(samples):
        if cancel is not None and cancel():
            raise Cancelled("cancelled")
        started = time.perf_counter()
        sample = compute_map(sample, cancel)
        constant = float(np.ptp(sample.amap)) == 0.0  # an empty or flat map ranks no pixel
        got = [(m, m(sample)) for m in chosen if m.applies(sample)]
        for m, r in got:
            if isinstance(r, C.Curve):
                if constant:
                    r.extra["undefined"] = "the map is constant: it ranks no pixel"
                elif m.reversible:
                    m.add_gain(sample, r)
                r.metric = m.name
                r.extra.update(target=sample.group or sample.target.label(),
                               seconds=round(time.perf_counter() - started, 3))
        out.extend(r for _, r in got)
        if progress is not None:
            progress((i + 1) / len(samples))
    return out


def aggregate(results: Sequence[C.Curve], metrics: Sequence[str | Metric], *,
              fractions: Sequence[float] = C.DEFAULT_FRACTIONS, fill: str = "mean") -> list[C.Curve]:
    """One curve per (method, group, metric): each metric's :meth:`~Metric.aggregate` over its items
    (with the mean gain over the items whose gain is defined)."""
    chosen = {m.name: m for m in _metrics(metrics, fractions, fill)}
    groups: dict[tuple, list[C.Curve]] = {}
    for r in results:
        groups.setdefault((r.method, r.extra.get("target", ""), r.metric), []).append(r)
    out = []
    for (_method, target, metric), items in groups.items():
        c = chosen[metric].aggregate(items)
        c.metric = metric
        c.extra["target"] = target
        c.extra["seconds"] = round(sum(r.extra.get("seconds", 0.0) for r in items), 3)
        gains = [r.gain for r in items if np.isfinite(r.gain)]
        c.extra.pop("reverse", None)
        c.extra["gain"] = float(np.mean(gains)) if gains else None
        out.append(c)
    return out
