"""Evaluation of explanations: curves (:mod:`.curves`), the metric registry (:mod:`.metrics`), the one
faithfulness experiment (:mod:`.experiment`), the randomisation sanity check (:mod:`.sanity`) and face
verification calibration (:mod:`.verification`)."""

# metrics that live in their own modules register themselves when imported; importing them here (not from
# metrics.py, which they import) makes every metric known whichever evaluation module is imported first
from . import class_metrics  # noqa: E402,F401
