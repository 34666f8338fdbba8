"""Classification metrics from other papers, in the metric registry: ROAD and SDD-CAM's deletion / retention.

- ``road`` (Rong et al., ICML 2022, through pytorch-grad-cam's ``ROADMostRelevantFirst``): the top P of the
  pixels are removed and filled by noisy linear imputation from their neighbours (so the hole carries no
  shape the network could react to); the curve is the class score at P = 0, 10, ..., 90 % (100 % leaves no
  neighbour to impute from). Lower area is better. The experiment's reversed ranking gives the
  least-relevant-first curve, so the gain is twice pytorch-grad-cam's ``ROADCombined`` score.
- ``sdd-deletion`` / ``sdd-retention`` (the SDD-CAM authors' evaluation): the top 20 % of the map's values
  are set to zero (deletion) or only they are kept (retention); the curve has two points, the class score
  relative to the clean image's at 0 and at 20 %. Its end point is 1 - the confidence drop;
  ``extra["drop"]`` is the drop and ``extra["changed"]`` whether the predicted class changed (their
  prediction-change rate is its mean). The random baseline is the random map of equal area they compare with.
"""
from __future__ import annotations

import numpy as np
import torch

from . import curves as C
from .metrics import Metric, Sample, register_metric

ROAD_FRACTIONS = tuple(i / 10 for i in range(10))  # 0 .. 0.9


def _class_score(sample: Sample):
    """score(batch) of the sample's class, as the deletion curves read it (probability or class cosine)."""
    fn, name = C.score_fn(sample.model, sample.target)
    return fn, name


@register_metric
class Road(Metric):
    """ROAD: most relevant pixels first, imputed from their neighbours (pytorch-grad-cam)."""

    name, label = "road", "ROAD (most relevant first)"
    targets = ("class",)
    lower_is_better = True
    # not in the GUI: the noisy linear imputation solves a sparse system per fraction, ~15x a deletion curve
    # (about 4 s per 224 x 224 map with its reversed ranking on a 2-core CPU, for every map and the random
    # ranking), and its curve (mode "road") has no panel in the Compare tab's plots
    gui = False

    def __init__(self, fractions=ROAD_FRACTIONS, fill: str = "mean", batch: int = 16, masks: str = "rank",
                 seed: int = 0):
        fractions = [f for f in fractions if f < 1.0] or list(ROAD_FRACTIONS)
        super().__init__(fractions, fill, batch, masks)
        self.seed = seed

    @torch.no_grad()
    def __call__(self, sample: Sample) -> C.Curve:
        from pytorch_grad_cam.metrics.road import ROADMostRelevantFirst

        score, name = _class_score(sample)
        x = sample.x.to(sample.model.device)
        cam = np.asarray(sample.amap, dtype=np.float32)[None]
        values = []
        with torch.random.fork_rng(devices=[]):  # the imputer's noise comes from torch's global generator
            torch.manual_seed(self.seed)
            for f in self.fractions:
                if f <= 0:
                    values.append(float(score(x)[0]))
                    continue
                metric = ROADMostRelevantFirst(percentile=100.0 * (1.0 - f))
                after = metric(x, cam, [lambda out: out], _Scored(score), return_diff=False)
                values.append(float(np.asarray(after).ravel()[0]))
        return C.Curve("road", list(self.fractions), values, name, sample.method, {"imputation": "noisy linear"})


class _Scored(torch.nn.Module):
    """The class score of a batch as the 'model' pytorch-grad-cam's metric calls (its target is identity)."""

    def __init__(self, score) -> None:
        super().__init__()
        self.score = score

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.score(x).reshape(-1, 1)


class _Sdd(Metric):
    top = 0.2
    keep = False
    targets = ("class",)
    # not in the GUI: cheap, but a two-point "curve" (0 and 20 %) of the score relative to the clean image's
    # is one number, not a curve over fractions; the Compare tab draws by curve mode, where it would land in
    # the deletion / insertion panels next to curves of another score
    gui = False

    @torch.no_grad()
    def __call__(self, sample: Sample) -> C.Curve:
        score, name = _class_score(sample)
        model, x = sample.model, sample.x.to(sample.model.device)
        h, w = x.shape[-2:]
        order = torch.from_numpy(C.pixel_order(sample.amap).copy())
        top = C.top_mask(sample.amap, order, self.top, "percentile").view(1, 1, h, w).to(x.device)
        kept = top if self.keep else ~top
        xp = torch.where(kept, x, torch.zeros_like(x))
        clean, after = float(score(x)[0]), float(score(xp)[0])
        changed = bool(model(x).argmax(1)[0] != model(xp).argmax(1)[0])
        rel = after / clean if clean > 0 else float("nan")
        return C.Curve("deletion" if not self.keep else "insertion", [0.0, self.top], [1.0, rel],
                       f"{name} / clean", sample.method,
                       {"drop": 1.0 - rel, "changed": changed, "fill": "zero", "masks": "percentile"})


@register_metric
class SddDeletion(_Sdd):
    """SDD-CAM's deletion: the top 20 % set to zero; the confidence should drop (lower area is better)."""

    name, label = "sdd-deletion", "SDD-CAM deletion (top 20 %)"
    lower_is_better = True


@register_metric
class SddRetention(_Sdd):
    """SDD-CAM's retention: only the top 20 % kept; the confidence should stay (higher area is better)."""

    name, label = "sdd-retention", "SDD-CAM retention (top 20 %)"
    keep = True
