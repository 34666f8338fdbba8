"""FAME in the method registry, and :func:`explain_fame`, the entry point the Session and bench share.

The optimisation loop itself is :mod:`famegui.core.fame`; the loss comes from the
target's kind (:meth:`famegui.targets.TargetKind.loss`).
"""
from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch

from ..core.fame import FameParams, FameResult, FameStep, run_fame
from ..targets import Target, build_loss
from .registry import MethodContext, MethodSpec, Param, register

if TYPE_CHECKING:
    from ..models.wrapper import ModelWrapper

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


@torch.no_grad()
def reference_embedding(model: ModelWrapper, reference: torch.Tensor) -> torch.Tensor:
    """Embedding of a reference image (1,3,H,W), or an embedding (D,) / (1,D) passed through."""
    if reference.ndim == 4:
        return model(reference).detach()
    return reference.detach().reshape(1, -1)


def explain_fame(
    model: ModelWrapper,
    x: torch.Tensor,
    targets: Target | Sequence[Target],
    params: FameParams | None = None,
    *,
    reference: torch.Tensor | None = None,
    callback: Callable[[FameStep], None] | None = None,
    cancel: Callable[[], bool] | None = None,
    every: int = 10,
) -> FameResult:
    """FAME maps for ``x`` (1 or B images in [0,1]) and one target per batch element.

    A single image with several targets (e.g. all cells of a layer) is run as one
    batch; its rows are independent, so the maps equal one-by-one runs.
    """
    targets = [targets] if isinstance(targets, Target) else list(targets)
    if not targets:
        raise ValueError("nothing to explain: no target given")
    x = x.to(model.device)
    if x.shape[0] == 1 and len(targets) > 1:
        x = x.expand(len(targets), -1, -1, -1)
    elif len(targets) == 1 and x.shape[0] > 1:
        targets = targets * x.shape[0]
    if x.shape[0] != len(targets):
        raise ValueError(f"{x.shape[0]} images but {len(targets)} targets")
    ref = reference_embedding(model, reference.to(model.device)) if reference is not None else None
    loss = build_loss(model, targets, ref)
    return run_fame(x, loss, params, callback=callback, every=every, cancel=cancel,
                    normalize=model.normalize, denormalize=model.denormalize)


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
