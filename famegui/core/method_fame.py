"""FAME in the method registry."""
from __future__ import annotations

import time

import numpy as np

from .explain import explain_fame
from .fame import FameParams
from .methods import MethodContext, MethodSpec, Param, register

MAP_INTERVAL_S = 0.2  # shortest time between two intermediate maps sent to a viewer

FAME_PARAMS = (
    Param("iterations", int, 500, "optimisation steps T", 1, 100000),
    Param("step", float, 1.0 / 255.0, "step size eta", 1e-6, 1.0),
    Param("epsilon", float, None, "early stop when the loss drops below it", 0.0, None),
    Param("clamp", bool, False, "keep the perturbed image in [0,1]"),
    Param("space", str, "pixel", "where the step is taken", choices=("pixel", "normalized")),
    Param("blur_kernel", int, None, "Gaussian blur kernel (odd; default 49 for classifiers, 25 for faces)", 0, 301),
    Param("blur_sigma", float, None, "Gaussian blur sigma (default 7.7 for classifiers, 5 for faces)", 0.0, 100.0),
    Param("normalization", str, "minmax", "how the map is scaled to [0,1]", choices=("minmax", "max")),
    Param("progress_every", int, 5, "report an intermediate map every N iterations", 1, 10000),
)


def fame_params_for(model, params: dict) -> FameParams:
    """FameParams from registry params; blur defaults follow the model (faces 25/5, else 49/7.7)."""
    face = model.alignment is not None or model.task == "embedding"
    k = params.get("blur_kernel")
    s = params.get("blur_sigma")
    fp = FameParams(
        iterations=params["iterations"], step=params["step"], epsilon=params.get("epsilon"),
        clamp=bool(params.get("clamp")), space=params.get("space", "pixel"),
        blur_kernel=(25 if face else 49) if k is None else k,
        blur_sigma=(5.0 if face else 7.7) if s is None else s,
        normalization=params.get("normalization", "minmax"),
    )
    return fp.validate()


def _fame(ctx: MethodContext) -> np.ndarray:
    fp = fame_params_for(ctx.model, ctx.params)
    every = int(ctx.params.get("progress_every") or 5)
    last_map = [-1.0]

    def progress(step):
        # the first intermediate map at once, then at most ~5 per second: drawing is not free
        now = time.perf_counter()
        want_map = ctx.progress is not None and (last_map[0] < 0 or now - last_map[0] >= MAP_INTERVAL_S)
        if want_map:
            last_map[0] = now
        ctx.report(step.iteration / step.total, step.maps(fp)[0] if want_map else None)

    res = explain_fame(ctx.model, ctx.x, ctx.target, fp, reference=ctx.reference_embedding,
                       callback=progress, cancel=ctx.cancel, every=every)
    ctx.info.update(initial_loss=float(res.initial_loss[0]), final_loss=float(res.final_loss[0]),
                    iterations=int(res.iterations[0]), empty=bool(res.empty[0]))
    return res.maps[0]


register(MethodSpec(
    name="fame", label="FAME", tasks=frozenset({"classification", "verification", "cell"}), output="pair",
    cost="iterative", fn=_fame, params=FAME_PARAMS, task_outputs={"classification": "single", "cell": "single"},
    description="Feature Activation Map Explanation: accumulated normalised-gradient perturbation",
))
