"""X-Maps (Knoche et al., WACVW 2023): systematic occlusion of a face pair's probe.

``xmaps`` (Knoche et al., WACVW 2023), output ``signed``
    Occlusion with square patches 7 / 14 / 28 px at stride 5 (positions
    ``0, 5, ... < H - patch`` as in the reference code), filled with ``fill`` (in
    [0, 1] pixel space, default 0 = black). ``d = (dist_occluded - dist_original) /
    patch^2`` (cosine distance to the fixed reference); every pixel gets the sum of
    ``d`` over the patches covering it divided by the number of positions (the
    reference's mean over all masks); 5x5 blur with sigma 5; mean over the patch
    sizes; divided by ``max |.|``. Positive = occluding this region makes the pair
    less similar, i.e. the region supports similarity. The returned map is
    oriented towards the target: e+ returns it as is, e- returns its negation, so
    positive always means "evidence for the target". ``signed=False`` returns only
    the part supporting the target, in [0, 1].
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F

from ..core.attribution import blur_maps
from .face_common import (
    VERIFICATION,
    is_similar,
    need_reference,
    scale_absmax,
    scale_max,
    to_numpy,
    unit,
)
from .registry import MethodContext, MethodSpec, Param, register

if TYPE_CHECKING:
    from ..models.wrapper import ModelWrapper

OCCLUSION_BATCH = 32  # occluded images per forward pass


def parse_patch_sizes(text: str | Sequence[int]) -> tuple[int, ...]:
    if isinstance(text, str):
        try:
            sizes = tuple(int(v) for v in text.replace(";", ",").split(",") if v.strip())
        except ValueError:
            raise ValueError(f"patch_sizes must be comma-separated integers like 7,14,28, got {text!r}") from None
    else:
        sizes = tuple(int(v) for v in text)
    if not sizes or min(sizes) < 1:
        raise ValueError(f"patch_sizes must be positive integers, got {text!r}")
    return sizes


def xmaps(model: ModelWrapper, x: torch.Tensor, reference_embedding: torch.Tensor, *,
          patch_sizes: Sequence[int] = (7, 14, 28), stride: int = 5, fill: float = 0.0,
          blur_kernel: int = 5, blur_sigma: float = 5.0, batch: int = OCCLUSION_BATCH,
          report: Callable[[float, np.ndarray | None], None] | None = None) -> torch.Tensor:
    """The signed X-Maps map of probe ``x`` (1,3,H,W) in [-1, 1]; positive = supports similarity."""
    _, _, h, w = x.shape
    r_hat = unit(reference_embedding).to(x.device)
    with torch.no_grad():
        dist0 = 1.0 - float((F.normalize(model(x).float(), dim=1) * r_hat).sum())
    jobs = []
    for p in patch_sizes:
        if p >= min(h, w):
            raise ValueError(f"patch size {p} does not fit a {h}x{w} image")
        ys, xs = range(0, h - p, stride), range(0, w - p, stride)
        jobs.append((p, [(y, xx) for y in ys for xx in xs]))
    total = sum(len(pos) for _, pos in jobs)
    done = 0
    maps = []
    for p, positions in jobs:
        acc = torch.zeros((h, w), dtype=torch.float64)
        for start in range(0, len(positions), batch):
            chunk = positions[start:start + batch]
            imgs = x.expand(len(chunk), -1, -1, -1).clone()
            for i, (y, xx) in enumerate(chunk):
                imgs[i, :, y:y + p, xx:xx + p] = fill
            with torch.no_grad():
                cos = (F.normalize(model(imgs).float(), dim=1) * r_hat).sum(1)
            dev = ((1.0 - cos) - dist0).double().cpu() / float(p * p)
            for i, (y, xx) in enumerate(chunk):
                acc[y:y + p, xx:xx + p] += dev[i]
            done += len(chunk)
            if report is not None:
                report(done / total, None)
        m = (acc / max(1, len(positions))).float()
        m = blur_maps(m.unsqueeze(0), blur_kernel, blur_sigma)[0]
        maps.append(m)
        if report is not None:
            report(done / total, to_numpy(scale_absmax(torch.stack(maps).mean(0))))
    return scale_absmax(torch.stack(maps).mean(0)).to(x.device)


def _xmaps_method(ctx: MethodContext) -> np.ndarray:
    ref = need_reference(ctx)
    p = ctx.params
    signed = xmaps(ctx.model, ctx.x, ref, patch_sizes=parse_patch_sizes(p.get("patch_sizes") or "7,14,28"),
                   stride=int(p.get("stride") or 5), fill=float(p.get("fill") or 0.0),
                   batch=int(p.get("batch_size") or OCCLUSION_BATCH),
                   report=lambda f, m: ctx.report(f, None if m is None else (m if is_similar(ctx) else -m)))
    oriented = signed if is_similar(ctx) else -signed
    if p.get("signed", True):
        return to_numpy(oriented)
    return to_numpy(scale_max(oriented.clamp(min=0)))


register(MethodSpec(
    name="xmaps", label="X-Maps", tasks=VERIFICATION, output="signed", cost="sampling", fn=_xmaps_method,
    params=(
        Param("patch_sizes", str, "7,14,28", "occluding square patch sizes in pixels, comma-separated"),
        Param("stride", int, 5, "step between patch positions in pixels", 1, 1000),
        Param("fill", float, 0.0, "value of the occluded pixels in [0,1] (0 = black)", 0.0, 1.0),
        Param("signed", bool, True, "signed map (positive = evidence for the target); off: only the part "
              "supporting the target, in [0,1]"),
        Param("batch_size", int, OCCLUSION_BATCH, "occluded images per forward pass (progress and cancel "
              "between batches)", 1, 4096),
    ),
    description="Systematic occlusion: change of the cosine distance per occluded pixel, "
                "averaged over patch sizes 7/14/28",
    gradient_based=False,
    signed_when=lambda p: bool(p.get("signed", True)),
))
