"""Turn an accumulated perturbation into an attribution map (FAME Eq. 4).

One post-processing used everywhere (display, export and evaluation):

    d   = | gray(x_T) - gray(x) |      gray BEFORE subtracting
    d   = d / max d
    d   = GaussianBlur(d, kernel, sigma)
    map = (d - min d) / (max d - min d)   ("minmax")   or   d / max d   ("max")
"""
from __future__ import annotations

import math

import torch

# ITU-R BT.601 luma weights, as used by the FAME reference
GRAY_WEIGHTS = (0.2989, 0.587, 0.114)
NORMALIZATIONS = ("minmax", "max")


def gray(x: torch.Tensor) -> torch.Tensor:
    """(B,3,H,W) RGB -> (B,H,W) luma."""
    w = torch.tensor(GRAY_WEIGHTS, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    return (x * w).sum(1)


def _per_sample(op, d: torch.Tensor) -> torch.Tensor:
    return op(d.flatten(1), dim=1).values.view(-1, 1, 1)


def normalize_maps(d: torch.Tensor, mode: str = "minmax") -> torch.Tensor:
    """Scale each (H,W) map of a (B,H,W) batch into [0,1]; an all-zero map stays zero."""
    if mode not in NORMALIZATIONS:
        raise ValueError(f"normalization must be one of {NORMALIZATIONS}, not {mode!r}")
    hi = _per_sample(torch.max, d)
    if mode == "max":
        return torch.where(hi > 0, d / hi.clamp_min(1e-30), torch.zeros_like(d))
    lo = _per_sample(torch.min, d)
    span = hi - lo
    return torch.where(span > 0, (d - lo) / span.clamp_min(1e-30), torch.zeros_like(d))


def check_blur(kernel: int | None, sigma: float | None, size: tuple[int, int] | None = None) -> None:
    """Raise ValueError (one line) for a blur the code cannot apply: an even or negative kernel, a sigma that
    is negative or not finite, or a kernel wider than the map allows (half of it must fit inside ``size``,
    the (H, W) of the map: torchvision pads by reflection)."""
    if sigma is not None and not (math.isfinite(float(sigma)) and sigma >= 0):
        raise ValueError(f"blur sigma must be a finite number >= 0, got {sigma}")
    if kernel is None or kernel in (0, 1):
        return
    if kernel < 0 or kernel != int(kernel) or kernel % 2 == 0:
        raise ValueError(f"blur kernel must be 0 (none) or an odd whole number, got {kernel}")
    if size is not None:
        largest = 2 * min(size) - 1
        if kernel > largest:
            raise ValueError(f"blur kernel {kernel} is too large for a {size[0]}x{size[1]} map "
                             f"(at most {largest})")


def blur_maps(d: torch.Tensor, kernel: int, sigma: float) -> torch.Tensor:
    """Gaussian blur of a (B,H,W) batch; kernel 0 or 1 means no blur."""
    if kernel is None or kernel <= 1 or sigma <= 0:
        return d
    check_blur(kernel, sigma, tuple(d.shape[-2:]))
    from torchvision.transforms.functional import gaussian_blur  # torchvision: seconds of start-up, when needed

    return gaussian_blur(d.unsqueeze(1), [kernel, kernel], [float(sigma), float(sigma)]).squeeze(1)


def perturbation_map(
    x0: torch.Tensor,
    xt: torch.Tensor,
    blur_kernel: int = 49,
    blur_sigma: float = 7.7,
    normalization: str = "minmax",
) -> torch.Tensor:
    """FAME attribution of the change from ``x0`` to ``xt`` (both (B,3,H,W)); returns (B,H,W) in [0,1]."""
    if x0.shape != xt.shape:
        raise ValueError(f"shape mismatch {tuple(x0.shape)} vs {tuple(xt.shape)}")
    d = (gray(xt.detach().float()) - gray(x0.detach().float())).abs()
    d = normalize_maps(d, "max")
    d = blur_maps(d, blur_kernel, blur_sigma)
    return normalize_maps(d, normalization).clamp_(0.0, 1.0)
