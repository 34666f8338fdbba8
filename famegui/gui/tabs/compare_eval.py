"""The Compare tab's checks of its maps, as background work: faithfulness curves and the sanity test.

The curves are those of every registered metric that declares itself fit for the GUI
(``Metric.gui``, :func:`famegui.evaluation.metrics.metric_names` with ``gui=True``) and applies to a
sample; a metric registered elsewhere is run here without an edit. Curves and sanity test call the same
Qt-free experiment code as ``famegui faithfulness`` / ``famegui sanity``
(:func:`famegui.evaluation.experiment.evaluate`, :func:`famegui.evaluation.sanity.sanity_suite`);
the functions here only gather their inputs from the session.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from ...evaluation.experiment import baseline, evaluate
from ...evaluation.metrics import Sample, metric_names
from ...session import MapResult, Session


class FaithfulnessPlan:
    """What the curves of ``results`` need, read from the session in the GUI thread (no network work).

    ``verification``: the maps explain a face pair; the decision threshold (for S-RISE's flip share) is
    looked up in the worker. A third photo not in the pair is the non-mate of the hiding game.
    ``metrics``: the registry's GUI metrics when the plan is made; the experiment skips, per sample, those
    that do not apply (the hiding game without a non-mate, a class metric on a pair).
    """

    def __init__(self, session: Session, results: Sequence[MapResult], verification: bool) -> None:
        self.model = session.model
        self.results = list(results)
        self.verification = verification
        self.inputs: dict[str, torch.Tensor] = {slot: session.input(slot).tensor for r in self.results
                                                for slot in (r.slot, r.other) if slot}
        self.non_mate: torch.Tensor | None = None
        if verification and "third" in session.inputs and \
                all("third" not in (r.slot, r.other) for r in self.results):
            self.non_mate = session.input("third").tensor
        self.metrics: list[str] = metric_names(gui=True)

    def samples(self) -> list[Sample]:
        """A random-ranking baseline per target, then every map, in the order of ``results``."""
        threshold = None
        if self.verification:
            from ...explanation import decision_threshold

            threshold = decision_threshold(self.model)  # the decision-flip share needs the decision

        def sample(r: MapResult, **kw) -> Sample:
            ref = self.inputs[r.other] if r.other else None
            return Sample(self.model, self.inputs[r.slot], r.target, reference=ref, non_mate=self.non_mate,
                          threshold=threshold, **kw)

        out = []
        for target in dict.fromkeys(r.target for r in self.results):
            first = next(r for r in self.results if r.target == target)
            out.append(baseline(sample(first)))
        out += [sample(r, amap=r.map, method=r.method, params=r.params) for r in self.results]
        return out

    def run(self, progress: Callable[[float], None] | None = None,
            cancel: Callable[[], bool] | None = None) -> list:
        """The curves (in the worker thread): every GUI metric that applies to each sample."""
        return evaluate(self.samples(), self.metrics, progress=progress, cancel=cancel)


def sanity_work(session: Session, names: list[str], targets, params: dict, slot: str, other: str | None,
                report: Callable) -> Callable:
    """A job that runs the randomisation test of ``names``; ``report(job, result, done, total)`` per result.

    ``targets`` None: the top-1 class, found in the worker.
    """
    from ...evaluation.sanity import sanity_suite
    from ...targets import Target

    model = session.model
    x = session.input(slot).tensor
    ref = session.input(other).tensor if other else None

    def work(job):
        tg = targets or [Target("class", class_index=session.top_classes(1)[0][0])]
        out = []
        for r in sanity_suite(names, model, x, tg, params, reference=ref, prior=False,
                              progress=lambda f: job.progress(f, None), cancel=job.cancelled):
            out.append(r)
            report(job, r, len(out), len(names) * len(tg))
        return out

    return work
