"""Faithfulness metrics as small classes in one registry (the CLI, the Compare tab and protocol runs share them).

A metric (after Quantus) keeps its configuration in ``__init__`` and scores one
explained item in ``__call__(sample)``; :meth:`Metric.aggregate` combines the
items of one method (the mean curve by default). :class:`Sample` is one map
with everything a metric may need. A new metric is one subclass passed to
:func:`register_metric`; ``famegui faithfulness --mode NAME`` and
:func:`famegui.evaluation.experiment.evaluate` pick it up by name.

Built-in: ``deletion`` and ``insertion`` (curves of the explained score, with
S-RISE's decision-flip share when the sample has a decision threshold),
``hiding`` (the gweEBP authors' hiding game, needs a non-mate), ``accuracy-deletion`` /
``accuracy-insertion`` (one pair's decision at each fraction; their mean over
a pair list is the verification accuracy of the FAME paper's Tab. 2) and
``sanity`` (Adebayo et al.'s randomisation test; it reruns the method). The GUI's
Compare tab runs every metric that declares ``gui = True`` (``metric_names(gui=True)``).
"""
from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import torch

from ..targets import Target
from . import curves as C

if TYPE_CHECKING:
    from ..models.wrapper import ModelWrapper


@dataclass
class Sample:
    """One map to evaluate, and what it explains."""

    model: ModelWrapper
    x: torch.Tensor  # (1,3,H,W) the explained image in [0,1]
    target: Target
    amap: np.ndarray | None = None  # None: computed from ``method`` by the experiment
    method: str = ""
    params: dict = field(default_factory=dict)
    reference: torch.Tensor | None = None  # (1,3,H,W) the other image of a pair
    non_mate: torch.Tensor | None = None  # a third face of another identity (hiding game)
    threshold: float | None = None  # the cosine decision threshold (flip share, accuracy)
    same: bool | None = None  # the pair's label, for accuracy over a pair list
    group: str = ""  # how results are grouped in tables (default: the target's label)


class Metric:
    """One faithfulness measure; ``needs`` lists the :class:`Sample` fields it cannot do without."""

    name: str = ""
    label: str = ""
    needs: tuple[str, ...] = ()
    targets: tuple[str, ...] | None = None  # target kinds it applies to (None: all)
    gives_curve: bool = True  # __call__ returns a Curve (False: another result with to_dict(), e.g. sanity)
    lower_is_better: bool = False  # for the area under the curve
    reversible: bool = True  # the curve can be run along the reversed ranking (its gain is then measured)
    # the Compare tab runs it on the maps it shows (:func:`metric_names` with ``gui=True``): cheap enough to
    # run interactively on every map there (well under a second per map on a CPU), meaningful for one image
    # or pair, and its result a curve over the fractions that the tab can draw; opt-in, each metric decides
    gui: bool = False

    def __init__(self, fractions: Sequence[float] = C.DEFAULT_FRACTIONS, fill: str = "mean", batch: int = 16,
                 masks: str = "rank", batched: bool = True):
        if fill not in C.FILLS:
            raise ValueError(f"fill must be one of {', '.join(C.FILLS)}, got {fill!r}")
        if masks not in C.MASKS:
            raise ValueError(f"masks must be one of {', '.join(C.MASKS)}, got {masks!r}")
        self.fractions = [float(f) for f in fractions]
        self.fill = fill
        self.batch = batch
        self.masks = masks
        # False: every measure by its own passes (the curve, then the flip share's 101-point curve), as before
        # the one-scan path; the same numbers, kept for the equality test and the benchmark
        self.batched = bool(batched)

    def applies(self, sample: Sample) -> bool:
        if self.targets is not None and sample.target.kind not in self.targets:
            return False
        return all(getattr(sample, n) is not None for n in self.needs)

    def __call__(self, sample: Sample) -> C.Curve:  # pragma: no cover - interface
        raise NotImplementedError

    def curve_only(self, sample: Sample) -> C.Curve:
        """The curve alone (no extra measures such as the flip share); what the reversed ranking runs."""
        return self(sample)

    def add_gain(self, sample: Sample, result: C.Curve) -> C.Curve:
        """Run the curve again along the reversed ranking (least important first) and store the signed area
        between the two as ``extra["gain"]`` (higher is better): whatever a perturbation does to the network
        regardless of which pixels it hits (scattered pixels are gentler than a region) affects both orders
        alike and cancels, so a random ranking's expected gain is exactly 0. ``extra["reverse"]``: the
        reversed curve's scores."""
        rev = self.curve_only(dataclasses.replace(sample, amap=-np.asarray(sample.amap, dtype=np.float64)))
        result.extra["reverse"] = [float(v) for v in rev.scores]
        diff = result.auc - rev.auc
        result.extra["gain"] = -diff if self.lower_is_better else diff
        return result

    def aggregate(self, results: Sequence[C.Curve]) -> C.Curve:
        """The mean curve over items (one method, one group)."""
        first = results[0]
        scores = np.mean([r.scores for r in results], axis=0)
        return C.Curve(first.mode, list(first.fractions), [float(s) for s in scores], first.score_name,
                       first.method, {**first.extra, "items": len(results)})


_METRICS: dict[str, type[Metric]] = {}


def register_metric(cls: type[Metric]) -> type[Metric]:
    """Class decorator: make a metric known by its ``name`` everywhere (CLI ``--mode``, GUI, protocol runs)."""
    if not cls.name:
        raise ValueError("a metric needs a name")
    if cls.gui and not cls.gives_curve:
        raise ValueError(f"metric {cls.name!r}: the Compare tab draws curves, so gui=True needs gives_curve=True")
    _METRICS[cls.name] = cls
    return cls


def unregister_metric(name: str) -> None:
    """Forget a metric registered with :func:`register_metric` (plug-ins and tests)."""
    _METRICS.pop(name, None)


def metric_names(curves_only: bool = False, gui: bool | None = None) -> list[str]:
    """Registered metric names, in the order they were registered.

    Parameters
    ----------
    curves_only : bool, optional
        Only the metrics whose results are curves (``Metric.gives_curve``).
    gui : bool or None, optional
        ``True``: only the metrics the GUI's Compare tab runs (``Metric.gui``); ``False``: only those it
        does not run; ``None`` (default): either.

    Returns
    -------
    list of str
        The names, for :func:`get_metric` and :func:`famegui.evaluation.experiment.evaluate`.
    """
    return [n for n, cls in _METRICS.items()
            if (cls.gives_curve or not curves_only) and (gui is None or bool(cls.gui) == gui)]


def get_metric(name: str, **config) -> Metric:
    if name not in _METRICS:
        raise ValueError(f"unknown metric {name!r}; choose from {', '.join(_METRICS)}")
    return _METRICS[name](**config)


# --------------------------------------------------------------------------- built-in metrics
class _Removal(Metric):
    mode = "deletion"

    def curve_only(self, sample: Sample) -> C.Curve:
        return C.curve(sample.model, sample.x, sample.amap, sample.target, self.mode, reference=sample.reference,
                       fractions=self.fractions, fill=self.fill, batch=self.batch, method=sample.method,
                       masks=self.masks)

    def __call__(self, sample: Sample) -> C.Curve:
        flips = sample.threshold is not None and sample.reference is not None  # S-RISE's decision-flip share
        if flips and self.batched:  # the curve and the flip share from one scan of the fine curve
            c, flip = C.curve_and_flip(sample.model, sample.x, sample.reference, sample.amap, sample.target,
                                       sample.threshold, self.mode, fractions=self.fractions, fill=self.fill,
                                       batch=2 * self.batch, method=sample.method, masks=self.masks)
            c.extra.update(masks=self.masks, flip=flip)
            return c
        c = self.curve_only(sample)
        c.extra["masks"] = self.masks
        if flips:
            c.extra["flip"] = C.flip_fraction(sample.model, sample.x, sample.reference, sample.amap,
                                              sample.threshold, self.mode, fill=self.fill, masks=self.masks)
        return c


@register_metric
class Deletion(_Removal):
    """The explained score as the most important pixels are removed (lower area is better)."""

    name, label, mode = "deletion", "deletion", "deletion"
    lower_is_better = True
    gui = True  # a few batched forward passes per map


@register_metric
class Insertion(_Removal):
    """The explained score as the most important pixels are put back into the fill (higher area is better)."""

    name, label, mode = "insertion", "insertion", "insertion"
    gui = True  # as cheap as deletion


@register_metric
class Hiding(Metric):
    """The hiding game (Wang et al., PRL 2025): probe pixels, least important first, replaced by the non-mate's."""

    name, label = "hiding", "hiding game"
    needs = ("reference", "non_mate")
    targets = ("similar",)  # it explains the match
    gui = True  # as cheap as deletion; applies only where the tab has a non-mate (the demo's third photo)

    def __call__(self, sample: Sample) -> C.Curve:
        return C.hiding_curve(sample.model, sample.x, sample.reference, sample.non_mate, sample.amap,
                              fractions=self.fractions, batch=self.batch, method=sample.method, masks=self.masks)


SCORE_ROUNDING = 1e-5  # float32 cosines of one pair computed in different batches differ by less than this


class _Accuracy(Metric):
    """Whether the pair is decided correctly at each fraction; the mean over a list is the accuracy."""

    mode = "deletion"
    needs = ("reference", "threshold", "same")
    # not in the GUI: one pair's decision is a 0/1 step, meaningful only as a mean over a labelled pair list
    # (the tab's pair carries no label, ``same``, so it would not apply anyway)
    gui = False

    def __call__(self, sample: Sample) -> C.Curve:
        cos = C.pair_cosines(sample.model, sample.x, sample.reference, sample.amap, self.fractions, self.mode,
                             fill=self.fill, batch=self.batch, masks=self.masks)
        # the EER threshold is one of the list's scores; the same pair scored again in another batch (other
        # float kernels) may land a few 1e-7 below it: within SCORE_ROUNDING it counts as at the threshold
        correct = (cos >= sample.threshold - SCORE_ROUNDING) == bool(sample.same)
        return C.Curve(self.mode, list(self.fractions), [float(v) for v in correct], "accuracy", sample.method,
                       {"fill": self.fill, "threshold": float(sample.threshold)})

    def aggregate(self, results: Sequence[C.Curve]) -> C.Curve:
        out = super().aggregate(results)
        out.extra["pairs"] = out.extra.pop("items")
        return out


@register_metric
class AccuracyDeletion(_Accuracy):
    name, label, mode = "accuracy-deletion", "verification accuracy (deletion)", "deletion"
    lower_is_better = True


@register_metric
class AccuracyInsertion(_Accuracy):
    name, label, mode = "accuracy-insertion", "verification accuracy (insertion)", "insertion"


@register_metric
class Sanity(Metric):
    """Adebayo et al.'s randomisation test of the sample's method (its map should change with random weights)."""

    name, label = "sanity", "randomisation sanity check"
    needs = ("method",)
    gives_curve = False
    reversible = False
    gui = False  # not a curve, and it reruns the method on a randomised network: the tab has its own button

    def __init__(self, seed: int = 0, region: str = "face", **config):
        super().__init__(**config)
        self.seed, self.region = seed, region

    def applies(self, sample: Sample) -> bool:
        return bool(sample.method) and sample.method != "random"

    def __call__(self, sample: Sample):
        from .sanity import sanity_check

        return sanity_check(sample.method, sample.model, sample.x, sample.target, sample.params,
                            reference=sample.reference, seed=self.seed, region=self.region)

    def aggregate(self, results):  # pragma: no cover - one result per item is the answer
        raise ValueError("sanity results are per item")
