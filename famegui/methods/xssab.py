"""Similarity Score Argument Backpropagation (xSSAB; Huber et al., WACV 2024) for face pairs.

``xssab`` (Huber et al., WACV 2024), output ``pair``
    ``cos = <phi_x, r_hat>`` written as a bias-free linear layer on ``phi_x``.
    ``bound = theta / D``; the "pos" layer keeps ``r_hat[i]`` where
    ``phi_x[i] r_hat[i] >= bound``, the "neg" layer the rest (the two outputs sum to
    the cosine). Each is backpropagated to the image; map = ``mean_colour |grad|``.
    e+ = pos, e- = neg, each divided by its maximum. ``combined=True`` returns the
    signed map ``(pos - neg) / max|pos - neg|`` in [-1, 1] oriented towards the
    target (e+: pos - neg, e-: neg - pos).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F

from .face_common import (
    VERIFICATION,
    is_similar,
    need_reference,
    resolve_threshold,
    scale_absmax,
    scale_max,
    to_numpy,
    unit,
)
from .registry import MethodContext, MethodSpec, Param, register

if TYPE_CHECKING:
    from ..models.wrapper import ModelWrapper

@dataclass
class XssabResult:
    pos_mask: torch.Tensor  # (D,) bool: r_hat[i] kept in the "pos" layer
    neg_mask: torch.Tensor  # (D,) bool: the complement
    pos_weights: torch.Tensor  # (D,) r_hat * pos_mask
    neg_weights: torch.Tensor  # (D,) r_hat * neg_mask
    out_pos: float  # <phi_x, pos_weights>
    out_neg: float  # <phi_x, neg_weights>
    cosine: float  # <phi_x, r_hat>
    bound: float  # theta / D
    pos_map: torch.Tensor  # (H,W) mean over colour of |d out_pos / dx|, unscaled
    neg_map: torch.Tensor  # (H,W) same for out_neg

    @property
    def combined(self) -> torch.Tensor:
        """(pos - neg) / max |pos - neg| in [-1, 1]."""
        return scale_absmax(self.pos_map - self.neg_map)


def xssab(model: ModelWrapper, x: torch.Tensor, reference_embedding: torch.Tensor, theta: float) -> XssabResult:
    """xSSAB of probe ``x`` against a frozen reference embedding (two backward passes)."""
    xr = x.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        phi = F.normalize(model(xr).float(), dim=1)[0]
        r_hat = unit(reference_embedding)[0].to(phi.device)
        d = phi.numel()
        bound = theta / d
        contrib = phi.detach() * r_hat
        pos = contrib >= bound
        neg = ~pos
        w_pos = torch.where(pos, r_hat, torch.zeros_like(r_hat))
        w_neg = torch.where(neg, r_hat, torch.zeros_like(r_hat))
        out_pos = (phi * w_pos).sum()  # the bias-free linear layer, restricted to "pos" arguments
        out_neg = (phi * w_neg).sum()
        (g_pos,) = torch.autograd.grad(out_pos, xr, retain_graph=True)
        (g_neg,) = torch.autograd.grad(out_neg, xr)
    return XssabResult(pos_mask=pos, neg_mask=neg, pos_weights=w_pos, neg_weights=w_neg,
                       out_pos=float(out_pos.detach()), out_neg=float(out_neg.detach()),
                       cosine=float(contrib.sum()), bound=float(bound),
                       pos_map=g_pos[0].abs().mean(0), neg_map=g_neg[0].abs().mean(0))


def _xssab_method(ctx: MethodContext) -> np.ndarray:
    ref = need_reference(ctx)
    theta = resolve_threshold(ctx.model, ctx.threshold)
    res = xssab(ctx.model, ctx.x, ref, theta)
    ctx.report(1.0)
    if ctx.params.get("combined"):
        m = res.combined
        return to_numpy(m if is_similar(ctx) else -m)
    return to_numpy(scale_max(res.pos_map if is_similar(ctx) else res.neg_map))


register(MethodSpec(
    name="xssab", label="xSSAB", tasks=VERIFICATION, output="pair", cost="cheap", fn=_xssab_method,
    signed_when=lambda p: bool(p.get("combined")),
    params=(Param("combined", bool, False, "return the signed map pos - neg in [-1,1] (oriented towards the "
                  "target) instead of e+ / e-"),),
    description="Similarity Score Argument Backpropagation: gradients of the cosine's arguments above (e+) "
                "and below (e-) theta/D",
))
