"""How a face model decides same / different: its decision rule and a cosine threshold for methods.

* :func:`decision_rule`: the rule a model decides with (dlib: Euclidean
  distance < 0.6; others: cosine >= ``model.threshold``; an EER threshold from
  a labelled pair list overrides both).
* :func:`default_cosine_threshold`: a cosine threshold for methods that need
  one (FGGB / xSSAB ``theta``), also for dlib, whose own rule is a distance.
"""
from __future__ import annotations

from dataclasses import dataclass

from .wrapper import ModelWrapper

#: Cosine threshold for dlib's ResNet descriptor (``same`` if cos >= it), for
#: methods that need a cosine threshold (FGGB / xSSAB theta). dlib's own rule is
#: Euclidean distance < 0.6 on the raw, unnormalised 128-D descriptor. With
#: d^2 = |a|^2 + |b|^2 - 2|a||b| cos and |a| = |b| = n this is
#: cos > 1 - 0.18 / n^2. Measured on the 37 bundled sample photos (aligned,
#: ``hard_cases`` excluded): descriptor lengths 1.30-1.56, mean n^2 = 2.063,
#: hence 1 - 0.18 / 2.063 = 0.9128 (median of the per-pair equivalents
#: (|a|^2 + |b|^2 - 0.36) / (2|a||b|) over the 666 sample pairs: 0.9146).
#: Checks on those 666 pairs (44 genuine, 622 impostor): cos >= 0.913 makes the
#: same decision as dlib's distance < 0.6 on 665 of them (all but one impostor pair
#: at distance 0.595, cosine 0.907), and it lies between the highest impostor
#: cosine (0.910) and the lowest genuine cosine (0.948), i.e. 0 errors there. The
#: sample pairs' EER sweep alone would give 0.948 (their lowest genuine score,
#: EER 0): a threshold on the edge of 37 photos, so the distance equivalent
#: is used instead. Hard-coded: not recomputed at run time.
DLIB_COSINE_THRESHOLD = 0.913

_DLIB_NAMES = ("dlib-resnet",)


# --------------------------------------------------------------------------- scores


@dataclass(frozen=True)
class DecisionRule:
    """``metric`` 'distance': same if Euclidean distance < threshold; 'cosine': same if cos >= threshold."""

    metric: str
    threshold: float
    source: str = "model default"

    def __post_init__(self) -> None:
        if self.metric not in ("cosine", "distance"):
            raise ValueError(f"a decision rule compares 'cosine' or 'distance', not {self.metric!r}")

    def is_same(self, cos: float, distance: float) -> bool:
        if self.metric == "distance":
            return bool(distance < self.threshold)
        return bool(cos >= self.threshold)

    def describe(self) -> str:
        op = "distance <" if self.metric == "distance" else "cosine >="
        return f"{op} {self.threshold:.4g}"


def _is_dlib(model: ModelWrapper) -> bool:
    return model.name in _DLIB_NAMES or model.source in _DLIB_NAMES


def decision_rule(model: ModelWrapper, eer: float | None = None, *, source: str | None = None) -> DecisionRule:
    """The rule ``model`` decides same/different with.

    ``eer``: an EER threshold (cosine) from a labelled pair list; it overrides
    the model's own rule. Otherwise: Euclidean distance < ``distance_threshold``
    when the model sets one (dlib: 0.6, its native rule), else cosine >=
    ``model.threshold``. A model with neither raises ``ValueError``.
    """
    if eer is not None:
        return DecisionRule("cosine", float(eer), source or "EER threshold of a pair list")
    if model.distance_threshold is not None:
        return DecisionRule("distance", float(model.distance_threshold),
                            source or f"{model.name}'s native rule")
    if model.threshold is not None:
        default = model.extras.get("threshold_is_default")
        return DecisionRule("cosine", float(model.threshold),
                            source or (f"{model.name}'s default" + (" (not calibrated)" if default else "")))
    raise ValueError(f"{model.name} has no verification threshold; give a labelled pair list "
                     "(--pairs FILE) to set one from its EER")


def default_cosine_threshold(model: ModelWrapper, eer: float | None = None) -> float | None:
    """A cosine threshold (same if cos >= it) for methods that need one, e.g. FGGB / xSSAB theta.

    Order: an ``eer`` threshold if given; ``model.threshold``;
    ``model.extras['cosine_threshold']``; for dlib's ResNet
    :data:`DLIB_COSINE_THRESHOLD` (the cosine equivalent of its distance 0.6).
    ``None`` for a model with none of these (an uncalibrated embedder): FAME
    and the other methods that need no threshold still run; a method that does
    need one should ask for a labelled pair list (:func:`eer_from_pairs`).
    """
    if eer is not None:
        return float(eer)
    if model.threshold is not None:
        return float(model.threshold)
    if model.extras.get("cosine_threshold") is not None:
        return float(model.extras["cosine_threshold"])
    if _is_dlib(model):
        return DLIB_COSINE_THRESHOLD
    return None
