"""Evaluation of explanations: curves (:mod:`.curves`), the metric registry (:mod:`.metrics`), the one
faithfulness experiment (:mod:`.experiment`), the randomisation sanity check (:mod:`.sanity`) and face
verification calibration (:mod:`.verification`)."""
