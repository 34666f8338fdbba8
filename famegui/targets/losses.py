"""Task losses for the FAME loop: callables ``x -> (B,)`` on [0,1] RGB input.

The optimiser always descends, so each loss is the quantity to suppress:

- :func:`cell_loss`: L_a = sum_c |a_c[i, j]| of one feature-map cell per batch element (Eq. 5);
  the forward pass stops at the layer.
- :func:`class_logit_loss`: the raw logit z_o of the class of interest (not |z_o|).
- :func:`verification_loss`: L+ = cos(f(x), r) for e+ ("what makes the pair similar"),
  L- = 1 - cos(f(x), r) for e- (Eq. 6); r is a frozen reference embedding.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

from ..models.wrapper import ModelWrapper

LossFn = Callable[[torch.Tensor], torch.Tensor]
VERIFICATION_TARGETS = ("similar", "dissimilar")


def _as_index(values: Sequence[int] | int | torch.Tensor, batch: int, device) -> torch.Tensor:
    t = torch.as_tensor(values, dtype=torch.long, device=device).reshape(-1)
    if t.numel() == 1 and batch > 1:
        t = t.expand(batch)
    if t.numel() != batch:
        raise ValueError(f"got {t.numel()} targets for a batch of {batch}")
    return t


def cell_loss(model: ModelWrapper, layer: str, cells: Sequence[tuple[int, int]] | tuple[int, int]) -> LossFn:
    """sum_c |a_c[i,j]| at ``layer``; ``cells`` is one (row, col) or one per batch element."""
    cells_t = torch.as_tensor(cells, dtype=torch.long).reshape(-1, 2)
    shape = model.layer_info(layer).shape
    if len(shape) != 3:
        raise ValueError(f"layer {layer!r} has output shape {shape}, not a (C,H,W) feature map")
    _, h, w = shape
    bad = [(int(r), int(c)) for r, c in cells_t.tolist() if not (0 <= r < h and 0 <= c < w)]
    if bad:
        raise ValueError(f"cell {bad[0]} is outside layer {layer!r}, whose feature map is {h}x{w}")

    def loss(x: torch.Tensor) -> torch.Tensor:
        a = model.activation(x, layer)
        rows = _as_index(cells_t[:, 0], x.shape[0], a.device)
        cols = _as_index(cells_t[:, 1], x.shape[0], a.device)
        b = torch.arange(x.shape[0], device=a.device)
        return a[b, :, rows, cols].abs().sum(1)

    return loss


def class_logit_loss(model: ModelWrapper, classes: Sequence[int] | int) -> LossFn:
    """The raw logit (or class score) of the class of interest, one class per batch element."""

    def loss(x: torch.Tensor) -> torch.Tensor:
        out = model(x)
        if out.ndim != 2:
            raise ValueError(f"{model.name} outputs shape {tuple(out.shape)}, not class scores")
        idx = _as_index(classes, x.shape[0], out.device)
        if int(idx.max()) >= out.shape[1] or int(idx.min()) < 0:
            raise ValueError(f"class index out of range: {model.name} has {out.shape[1]} classes")
        return out[torch.arange(x.shape[0], device=out.device), idx]

    return loss


def cosine_to(model: ModelWrapper, x: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """cos(f(x), r) per batch element (norms differentiable)."""
    e = model(x)
    return F.cosine_similarity(e, reference.to(e.dtype).expand_as(e), dim=1)


def verification_loss(model: ModelWrapper, reference: torch.Tensor, target: str = "similar") -> LossFn:
    """L+ = cos (target 'similar', gives e+) or L- = 1 - cos (target 'dissimilar', gives e-)."""
    if target not in VERIFICATION_TARGETS:
        raise ValueError(f"target must be one of {VERIFICATION_TARGETS}, not {target!r}")
    ref = reference.detach()
    if ref.ndim == 1:
        ref = ref.unsqueeze(0)

    def loss(x: torch.Tensor) -> torch.Tensor:
        s = cosine_to(model, x, ref)
        return s if target == "similar" else 1.0 - s

    return loss


@torch.no_grad()
def embed(model: ModelWrapper, x: torch.Tensor) -> torch.Tensor:
    """Frozen embedding(s) of [0,1] RGB images."""
    return model(x).detach()
