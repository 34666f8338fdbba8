"""Helpers shared by the face-pair methods (FGGB, xSSAB, X-Maps, the EBP family).

Notation: ``x`` is the probe in [0, 1], ``r`` the frozen embedding of the other
image of the pair, ``phi(.)`` the L2-normalised embedding, ``theta`` the cosine
decision threshold, ``D`` the embedding size.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F

from ..models.thresholds import default_cosine_threshold
from .registry import MethodContext

if TYPE_CHECKING:
    from ..models.wrapper import ModelWrapper

VERIFICATION = frozenset({"verification"})


def resolve_threshold(model: ModelWrapper, given: float | None = None) -> float:
    """The cosine threshold theta: ``given`` (ctx.threshold), else the model's default
    (:func:`famegui.models.thresholds.default_cosine_threshold`); 0.0 for a model with none
    (the weights then split at zero contribution)."""
    if given is not None:
        return float(given)
    t = default_cosine_threshold(model)
    return 0.0 if t is None else float(t)


def unit(v: torch.Tensor) -> torch.Tensor:
    return F.normalize(v.reshape(1, -1).float(), dim=1)


def scale_max(m: torch.Tensor) -> torch.Tensor:
    """Divide a non-negative map by its maximum (an all-zero map stays zero)."""
    hi = m.max()
    return m / hi if hi > 0 else torch.zeros_like(m)


def scale_absmax(m: torch.Tensor) -> torch.Tensor:
    hi = m.abs().max()
    return m / hi if hi > 0 else torch.zeros_like(m)


def to_numpy(m: torch.Tensor) -> np.ndarray:
    return m.detach().cpu().float().numpy().astype(np.float32)


def need_reference(ctx: MethodContext) -> torch.Tensor:
    if ctx.reference_embedding is None:
        raise ValueError("this method explains a pair: it needs a reference image")
    return ctx.reference_embedding


def is_similar(ctx: MethodContext) -> bool:
    return ctx.target.kind == "similar"
