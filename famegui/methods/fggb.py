"""Feature-Guided Gradient Backpropagation (FGGB; Lu et al., FG 2024) for face pairs.

``fggb`` (Lu et al., FG 2024), output ``pair``
    For every dimension k: ``g_k = mean_colour |d phi_k / dx|``, ``g_k /= ||g_k||_2``
    (D backward passes, batched over a basis of grad-outputs). Weights
    ``w_k = phi_x[k] phi_y[k] - theta / D`` (so ``sum_k w_k = cos - theta``);
    ``S = sum_k w_k g_k``; e+ = max(S, 0), e- = max(-S, 0); Gaussian blur 25 / 5;
    divided by its maximum. ``max_dims`` > 0 keeps only that many dimensions, half
    with the most positive and half with the most negative ``w_k`` (an
    approximation offered for speed on 512-D models).
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F

from ..core.attribution import blur_maps
from .face_common import (
    VERIFICATION,
    is_similar,
    need_reference,
    resolve_threshold,
    scale_max,
    to_numpy,
    unit,
)
from .registry import MethodContext, MethodSpec, Param, register

if TYPE_CHECKING:
    from ..models.wrapper import ModelWrapper

JACOBIAN_CHUNK = 32  # grad-outputs per batched backward pass


@dataclass
class FggbResult:
    """Everything FGGB computes for one probe (tests and the UI can show the parts)."""

    weights: torch.Tensor  # (K,) w_k of the dimensions used
    dims: torch.Tensor  # (K,) their indices
    maps: torch.Tensor  # (K,H,W) g_k, each with unit L2 norm
    phi_x: torch.Tensor  # (D,)
    phi_y: torch.Tensor  # (D,)
    theta: float
    saliency: torch.Tensor  # (H,W) S = sum_k w_k g_k, before blur
    e_plus: torch.Tensor  # (H,W) in [0,1]
    e_minus: torch.Tensor  # (H,W) in [0,1]


def embedding_jacobian(model: ModelWrapper, x: torch.Tensor, dims: Sequence[int] | torch.Tensor,
                       chunk: int = JACOBIAN_CHUNK,
                       report: Callable[[float], None] | None = None) -> torch.Tensor:
    """``d phi_k / dx`` for the listed dimensions k of the normalised embedding: (K,3,H,W).

    One forward pass; the backward passes are batched over one-hot grad-outputs
    (``is_grads_batched``), ``chunk`` at a time; a loop is the fallback.
    """
    dims = torch.as_tensor(dims, dtype=torch.long).flatten()
    xr = x.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        phi = F.normalize(model(xr), dim=1)
    d_total = phi.shape[1]
    out = torch.empty((len(dims), *x.shape[1:]), dtype=x.dtype, device=x.device)
    batched = True
    for start in range(0, len(dims), chunk):
        sel = dims[start:start + chunk]
        n = len(sel)
        if batched:
            go = torch.zeros((n, 1, d_total), dtype=phi.dtype, device=phi.device)
            go[torch.arange(n), 0, sel] = 1.0
            try:
                (g,) = torch.autograd.grad(phi, xr, go, retain_graph=True, is_grads_batched=True)
                out[start:start + n] = g[:, 0]
            except RuntimeError:  # an op without a batching rule: one pass per dimension
                batched = False
        if not batched:
            for i, k in enumerate(sel.tolist()):
                (g,) = torch.autograd.grad(phi[0, k], xr, retain_graph=True)
                out[start + i] = g[0]
        if report is not None:
            report(min(1.0, (start + n) / len(dims)))
    return out


def balanced_top_dims(weights: torch.Tensor, k: int) -> torch.Tensor:
    """The ``k`` dimensions FGGB keeps with ``max_dims``: half with the most positive, half with the most
    negative weights (so that neither e+ nor e- is left empty), sorted by index."""
    pos = torch.nonzero(weights > 0).flatten()
    neg = torch.nonzero(weights <= 0).flatten()
    pos = pos[torch.argsort(weights[pos], descending=True)]
    neg = neg[torch.argsort(weights[neg])]
    kn = min(len(neg), k // 2)
    kp = min(len(pos), k - kn)
    kn = min(len(neg), k - kp)
    return torch.cat([pos[:kp], neg[:kn]]).sort().values


def fggb(model: ModelWrapper, x: torch.Tensor, reference_embedding: torch.Tensor, theta: float, *,
         max_dims: int = 0, blur_kernel: int = 25, blur_sigma: float = 5.0,
         report: Callable[[float], None] | None = None) -> FggbResult:
    """FGGB maps of probe ``x`` (1,3,H,W) against a frozen reference embedding."""
    with torch.no_grad():
        phi_x = F.normalize(model(x).float(), dim=1)[0]
    phi_y = unit(reference_embedding)[0].to(phi_x.device)
    d = phi_x.numel()
    w_all = phi_x * phi_y - theta / d
    if max_dims and 0 < max_dims < d:
        dims = balanced_top_dims(w_all, max_dims)
    else:
        dims = torch.arange(d, device=phi_x.device)
    jac = embedding_jacobian(model, x, dims, report=report)
    g = jac.abs().mean(dim=1)  # (K,H,W): mean over colour of |d phi_k / dx|
    norms = g.flatten(1).norm(dim=1).clamp_min(1e-30)
    g = g / norms.view(-1, 1, 1)
    w = w_all[dims]
    s = torch.einsum("k,khw->hw", w.to(g.dtype), g)
    pair = torch.stack([s.clamp(min=0), (-s).clamp(min=0)])
    pair = blur_maps(pair, blur_kernel, blur_sigma)
    return FggbResult(weights=w, dims=dims, maps=g, phi_x=phi_x, phi_y=phi_y, theta=float(theta), saliency=s,
                      e_plus=scale_max(pair[0]), e_minus=scale_max(pair[1]))


def _fggb_method(ctx: MethodContext) -> np.ndarray:
    ref = need_reference(ctx)
    theta = resolve_threshold(ctx.model, ctx.threshold)
    p = ctx.params
    res = fggb(ctx.model, ctx.x, ref, theta, max_dims=int(p.get("max_dims") or 0),
               blur_kernel=p.get("blur_kernel") if p.get("blur_kernel") is not None else 25,
               blur_sigma=p.get("blur_sigma") if p.get("blur_sigma") is not None else 5.0,
               report=lambda f: ctx.report(0.95 * f))
    ctx.report(1.0)
    return to_numpy(res.e_plus if is_similar(ctx) else res.e_minus)


register(MethodSpec(
    name="fggb", label="FGGB", tasks=VERIFICATION, output="pair", cost="iterative", fn=_fggb_method,
    params=(
        Param("max_dims", int, 0, "use only this many embedding dimensions, half with the most positive and "
              "half with the most negative w_k (0 = all D, as in the paper; fewer is faster but approximate)",
              0, 100000),
        Param("blur_kernel", int, 25, "Gaussian blur kernel (odd; 0 = none)", 0, 301),
        Param("blur_sigma", float, 5.0, "Gaussian blur sigma", 0.0, 100.0),
    ),
    description="Feature-Guided Gradient Backpropagation: per-dimension gradient maps weighted by "
                "phi_x[k] phi_y[k] - theta/D (D backward passes)",
))
