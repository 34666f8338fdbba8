"""Receptive-field geometry of a feature-map cell.

Two regions are drawn next to a FAME map:

- the *footprint*: the patch of the image geometrically under the cell
  (image size / feature-map size), which CAM-style methods assume the cell sees;
- the *theoretical receptive field*: every input pixel connected to the cell
  by some path through the network, clipped to the image.

The receptive field is measured on the real network graph, so it works for any
architecture: a float64 copy of the network gets positive weights (each conv /
linear output the mean of its inputs, normalisation layers the identity, max
pooling replaced by average pooling so every element of a window passes a
gradient), and the support of d(cell)/d(input) on a positive input is the set
of connected pixels.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from .wrapper import ModelWrapper, _StopForward, to_grid


@dataclass(frozen=True)
class Box:
    """Axis-aligned box in input-pixel coordinates, half-open: [x0, x1) x [y0, y1)."""

    x0: float
    y0: float
    x1: float
    y1: float

    @property
    def width(self) -> float:
        return self.x1 - self.x0

    @property
    def height(self) -> float:
        return self.y1 - self.y0

    def as_tuple(self) -> tuple[float, float, float, float]:
        return (self.x0, self.y0, self.x1, self.y1)

    def mask(self, shape: tuple[int, int]) -> np.ndarray:
        h, w = shape
        ys = (np.arange(h) + 0.5)[:, None]
        xs = (np.arange(w) + 0.5)[None, :]
        return (ys >= self.y0) & (ys < self.y1) & (xs >= self.x0) & (xs < self.x1)


def footprint(input_size: tuple[int, int], fmap_size: tuple[int, int], cell: tuple[int, int]) -> Box:
    """The image patch geometrically under ``cell`` = (row, col)."""
    (h, w), (fh, fw) = input_size, fmap_size
    r, c = cell
    sy, sx = h / fh, w / fw
    return Box(c * sx, r * sy, (c + 1) * sx, (r + 1) * sy)


def mass_inside(attribution: np.ndarray, box: Box) -> float:
    """Share of the map's total mass that lies inside ``box`` (0 for an empty map)."""
    total = float(np.abs(attribution).sum())
    if total <= 0:
        return 0.0
    return float(np.abs(attribution)[box.mask(attribution.shape)].sum() / total)


def _positive_copy(module: nn.Module) -> nn.Module:
    net = copy.deepcopy(module).double().eval()

    def convert(parent: nn.Module) -> None:
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.MaxPool2d):
                k, s, p = child.kernel_size, child.stride, child.padding
                setattr(parent, name, nn.AvgPool2d(k, s, p, ceil_mode=child.ceil_mode))
                continue
            convert(child)

    convert(net)
    for m in net.modules():
        if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose2d, nn.Linear)):
            fan_in = m.weight[0].numel()
            with torch.no_grad():
                m.weight.copy_(torch.rand_like(m.weight) * 0.5 + 0.75).div_(fan_in)
                if m.bias is not None:
                    m.bias.zero_()
        elif isinstance(m, nn.modules.batchnorm._BatchNorm):
            with torch.no_grad():
                if m.running_mean is not None:
                    m.running_mean.zero_()
                    m.running_var.fill_(1.0 - m.eps)
                if m.affine:
                    m.weight.fill_(1.0)
                    m.bias.zero_()
        elif isinstance(m, nn.PReLU):
            with torch.no_grad():
                m.weight.fill_(1.0)
    for p in net.parameters():
        p.requires_grad_(False)
    return net


def cached_receptive_field(model: ModelWrapper, layer: str, cell: tuple[int, int]) -> Box | None:
    """The receptive field if it was computed before, else None (never computes)."""
    return model.extras.get("_rf_cache", {}).get((layer, tuple(cell)))


def receptive_field(model: ModelWrapper, layer: str, cell: tuple[int, int]) -> Box:
    """Theoretical receptive field of ``cell`` of ``layer``, clipped to the model's input."""
    cache = model.extras.setdefault("_rf_cache", {})
    key = (layer, tuple(cell))
    if key in cache:
        return cache[key]
    net = model.extras.get("_rf_net")
    if net is None:
        net = _positive_copy(model.module)
        model.extras["_rf_net"] = net
    target = dict(net.named_modules())[layer]
    box: list[torch.Tensor] = []

    def hook(_m, _i, out):
        box.append(out)
        raise _StopForward

    h, w = model.input_size
    gen = torch.Generator().manual_seed(0)
    x = (torch.rand(1, 3, h, w, generator=gen, dtype=torch.float64) * 0.5 + 0.5)
    x = x.to(next(net.parameters()).device).requires_grad_(True)
    handle = target.register_forward_hook(hook)
    try:
        net(x)
    except _StopForward:
        pass
    finally:
        handle.remove()
    a = to_grid(box[0], model.layer_info(layer))  # tokens or channels-last outputs as (B, C, H, W)
    r, c = cell
    (g,) = torch.autograd.grad(a[0, :, r, c].sum(), x)
    support = (g[0].abs().sum(0) > 0).cpu().numpy()
    ys, xs = np.nonzero(support)
    if len(ys) == 0:
        result = footprint((h, w), tuple(a.shape[-2:]), cell)
    else:
        result = Box(float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1))
    cache[key] = result
    return result
