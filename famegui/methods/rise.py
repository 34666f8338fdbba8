"""The RISE family (black box: only forward passes) in the method registry.

All masks multiply the probe in [0, 1] RGB, so a masked-out pixel is black
(the same space every famegui method works in). Mask sets are seeded: the
same seed, size and parameters always give the same masks, whatever the batch
size, and the mask sets of S-RISE and CorrRISE are cached (see
:func:`mask_set`) so every pair explained with one seed uses the very same set.
Progress (with a partial map) and cancellation go through ``ctx.report``
between batches.

- RISE (Petsiuk et al., BMVC 2018; classification): N binary s x s grids, a
  cell kept with probability p, bilinearly upsampled to (s+1) cells and shifted
  by a random offset below one cell; score_i = softmax probability of the
  class; saliency = sum_i score_i M_i / (N p), then scaled to [0, 1].
- S-RISE (Lu & Ebrahimi; face pairs): each mask is 100 Gaussian
  patches (kernel 40, sigma 7, peak 1, combined by maximum) at uniformly random
  centres; only the probe is masked, the reference embedding stays fixed.
  The paper weights every mask by the similarity s_i = cos(f(x M_i), r) and
  sums, H = sum_i s_i M_i, then normalises; it explains a matching and a
  non-matching pair with that same similarity map and defines no e-. Here the
  e+ weight is s_i and the e- weight the dissimilarity 1 - s_i (as FAME's
  L- = 1 - s). Measured on dlib's net: all s_i of one pair are close, so the
  paper's plain sum is the mask density sum_i M_i to a Pearson correlation of
  > 0.95, the same for e+ and e- (0.998) and for trained and randomised weights
  (1.000): it fails the randomisation sanity check. ``score_baseline="mean"``
  (the default) subtracts the mean weight first, H = sum_i (w_i - mean w) M_i,
  clipped at 0, so e+ and e- are the two signs of one map (randomised-weights
  Pearson -0.11); ``"none"`` is the paper's literal formula.
- CorrRISE (Lu et al., WACV 2024; face pairs): N masks of ones with three
  30 x 30 black patches lying fully inside; s_i = cos(f(x M_i), r);
  map(pixel) = Spearman correlation over i between M_i(pixel) and s_i
  (M_i(pixel) is binary, so this is the Pearson correlation of the mask column
  with rank(s)); NaN -> 0; no blur. e+ = max(corr, 0), e- = max(-corr, 0);
  the map is the correlation itself (not rescaled).
"""
from __future__ import annotations

import math
import threading
from collections import OrderedDict
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F

from ..core.attribution import normalize_maps
from .registry import MethodContext, MethodSpec, Param, register

# --------------------------------------------------------------------------- mask sets
_CACHE: OrderedDict[tuple, torch.Tensor] = OrderedDict()
_CACHE_LOCK = threading.Lock()
CACHE_BYTES = 512 * 2**20  # least recently used sets are dropped beyond this


def _rng(kind: str, seed: int, *extra) -> np.random.Generator:
    words = [int(seed) & 0xFFFFFFFF, sum(ord(c) << (8 * (i % 4)) for i, c in enumerate(kind))]
    words += [int(v) & 0xFFFFFFFF for v in extra]
    return np.random.default_rng(np.random.SeedSequence(words))


def corrrise_masks(n: int, size: tuple[int, int], seed: int = 0, patch: int = 30, patches: int = 3) -> torch.Tensor:
    """(n, H, W) float32: ones with ``patches`` black ``patch`` x ``patch`` squares fully inside."""
    h, w = size
    if patch > h or patch > w:
        raise ValueError(f"patch size {patch} does not fit a {h}x{w} image")
    rng = _rng("corr", seed)
    ys = rng.integers(0, h - patch + 1, size=(n, patches))
    xs = rng.integers(0, w - patch + 1, size=(n, patches))
    m = np.ones((n, h, w), dtype=np.float32)
    for i in range(n):
        for y, x in zip(ys[i], xs[i]):
            m[i, y:y + patch, x:x + patch] = 0.0
    return torch.from_numpy(m)


def gaussian_patch(kernel: int, sigma: float) -> np.ndarray:
    """A kernel x kernel Gaussian with peak 1."""
    c = (kernel - 1) / 2.0
    d = np.arange(kernel, dtype=np.float64) - c
    g = np.exp(-(d[:, None] ** 2 + d[None, :] ** 2) / (2.0 * sigma ** 2))
    return (g / g.max()).astype(np.float32)


def srise_masks(n: int, size: tuple[int, int], seed: int = 0, patches: int = 100, kernel: int = 40,
                sigma: float = 7.0) -> torch.Tensor:
    """(n, H, W) float32 in [0,1]: ``patches`` Gaussian patches per mask at uniformly random centres (maximum)."""
    h, w = size
    g = gaussian_patch(kernel, sigma)
    rng = _rng("srise", seed)
    cy = rng.integers(0, h, size=(n, patches))
    cx = rng.integers(0, w, size=(n, patches))
    m = np.zeros((n, h, w), dtype=np.float32)
    half = kernel // 2
    for i in range(n):
        mi = m[i]
        for y, x in zip(cy[i], cx[i]):
            y0, x0 = y - half, x - half
            ya, xa = max(y0, 0), max(x0, 0)
            yb, xb = min(y0 + kernel, h), min(x0 + kernel, w)
            np.maximum(mi[ya:yb, xa:xb], g[ya - y0:yb - y0, xa - x0:xb - x0], out=mi[ya:yb, xa:xb])
    return torch.from_numpy(m)


def mask_set(kind: str, n: int, size: tuple[int, int], seed: int = 0, **params) -> torch.Tensor:
    """The cached, seeded mask set ``kind`` ("corrrise" or "srise"): (n, H, W) float32. Do not modify it."""
    makers = {"corrrise": corrrise_masks, "srise": srise_masks}
    if kind not in makers:
        raise ValueError(f"unknown mask set {kind!r}")
    key = (kind, int(n), tuple(int(v) for v in size), int(seed), tuple(sorted(params.items())))
    with _CACHE_LOCK:
        if key in _CACHE:
            _CACHE.move_to_end(key)
            return _CACHE[key]
    masks = makers[kind](int(n), tuple(size), int(seed), **params)
    with _CACHE_LOCK:
        masks = _CACHE.setdefault(key, masks)
        _CACHE.move_to_end(key)
        total = sum(t.numel() * t.element_size() for t in _CACHE.values())
        while total > CACHE_BYTES and len(_CACHE) > 1:
            _, old = _CACHE.popitem(last=False)
            total -= old.numel() * old.element_size()
    return masks


class RiseGrids:
    """RISE's mask set as its small parameters (grids and shifts); masks are made batch by batch."""

    def __init__(self, n: int, size: tuple[int, int], grid: int, keep: float, seed: int = 0) -> None:
        self.n, self.size, self.grid, self.keep = int(n), tuple(size), int(grid), float(keep)
        h, w = self.size
        self.cell = (math.ceil(h / grid), math.ceil(w / grid))
        rng = _rng("rise", seed)
        self.grids = torch.from_numpy((rng.random((n, grid, grid)) < keep).astype(np.float32))
        self.shifts = np.stack([rng.integers(0, self.cell[0], size=n), rng.integers(0, self.cell[1], size=n)], 1)

    def masks(self, start: int, stop: int) -> torch.Tensor:
        """Masks ``start:stop`` as (B, H, W) float32 in [0,1]."""
        h, w = self.size
        up = ((self.grid + 1) * self.cell[0], (self.grid + 1) * self.cell[1])
        big = F.interpolate(self.grids[start:stop, None], size=up, mode="bilinear", align_corners=False)[:, 0]
        out = torch.empty((stop - start, h, w), dtype=torch.float32)
        for j, i in enumerate(range(start, stop)):
            dy, dx = self.shifts[i]
            out[j] = big[j, dy:dy + h, dx:dx + w]
        return out


# --------------------------------------------------------------------------- helpers
def _seed(ctx: MethodContext) -> int:
    s = ctx.params.get("seed")
    return int(ctx.seed if s is None else s)


def _scorer(ctx: MethodContext) -> Callable[[torch.Tensor], torch.Tensor]:
    """Images (B,3,H,W) in [0,1] -> (B,) scores, from the target's kind (class probability, or cosine)."""
    return ctx.target.spec.probe_score(ctx.model, ctx.target, ctx.reference_embedding)


def _run_masks(ctx: MethodContext, n: int, get_masks: Callable[[int, int], torch.Tensor],
               on_batch: Callable[[torch.Tensor, torch.Tensor, int], np.ndarray | None]) -> None:
    """Score the probe masked by every mask, batch by batch.

    ``on_batch(masks, scores, done)`` accumulates and may return a partial map for the progress report.
    """
    score = _scorer(ctx)
    x = ctx.x[:1].detach()
    bs = int(ctx.params.get("batch_size") or 32)
    ctx.report(0.0)
    for start in range(0, n, bs):
        stop = min(n, start + bs)
        m = get_masks(start, stop).to(x.device)
        with torch.no_grad():
            s = score(x * m[:, None]).float().cpu()
        partial = on_batch(m.cpu(), s, stop)
        ctx.report(stop / n, partial)


def _normalize(h: torch.Tensor, mode: str) -> np.ndarray:
    return normalize_maps(h[None].float(), mode)[0].numpy().astype(np.float32)


# --------------------------------------------------------------------------- RISE
def _rise(ctx: MethodContext) -> np.ndarray:
    p = ctx.params
    h, w = ctx.x.shape[-2:]
    grids = RiseGrids(p["masks"], (h, w), p["grid_size"], p["keep_prob"], _seed(ctx))
    acc = torch.zeros((h, w), dtype=torch.float64)
    want_partial = ctx.progress is not None

    def on_batch(m, s, done):
        acc.add_((s.double()[:, None, None] * m.double()).sum(0))
        return _normalize(acc, p["normalization"]) if want_partial else None

    _run_masks(ctx, grids.n, grids.masks, on_batch)
    return _normalize(acc / (grids.n * grids.keep), p["normalization"])


# --------------------------------------------------------------------------- S-RISE
def _srise(ctx: MethodContext) -> np.ndarray:
    p = ctx.params
    h, w = ctx.x.shape[-2:]
    masks = mask_set("srise", p["masks"], (h, w), _seed(ctx), patches=p["patches"], kernel=p["patch_kernel"],
                     sigma=float(p["patch_sigma"]))
    dissimilar = ctx.target.kind == "dissimilar"
    acc = torch.zeros((h, w), dtype=torch.float64)  # sum_i w_i M_i
    dens = torch.zeros((h, w), dtype=torch.float64)  # sum_i M_i
    wsum = [0.0, 0]
    want_partial = ctx.progress is not None

    def current() -> np.ndarray:
        hmap = acc
        if p["score_baseline"] == "mean" and wsum[1]:
            hmap = (acc - (wsum[0] / wsum[1]) * dens).clamp_min(0)
        return _normalize(hmap, p["normalization"])

    def on_batch(m, s, done):
        wt = (1.0 - s.double()) if dissimilar else s.double()
        acc.add_((wt[:, None, None] * m.double()).sum(0))
        dens.add_(m.double().sum(0))
        wsum[0] += float(wt.sum())
        wsum[1] += len(wt)
        return current() if want_partial else None

    _run_masks(ctx, masks.shape[0], lambda a, b: masks[a:b], on_batch)
    return current()


# --------------------------------------------------------------------------- CorrRISE
def spearman_map(masks: torch.Tensor, scores: np.ndarray) -> np.ndarray:
    """Per pixel, Spearman's rho over i between ``masks[i, pixel]`` (binary) and ``scores[i]``; (H,W), NaN -> 0.

    For a binary mask column Spearman equals Pearson against rank(scores):
    one matrix product of the centred ranks with the mask columns.
    """
    n = len(scores)
    h, w = masks.shape[-2:]
    if n < 2:
        return np.zeros((h, w), dtype=np.float32)
    from scipy.stats import rankdata  # scipy.stats costs a second at start-up: only when ranks are needed

    m = masks[:n].reshape(n, -1)
    r = rankdata(np.asarray(scores, dtype=np.float64), method="average") - 1.0  # ties: average ranks
    r -= r.mean()
    rn = float(np.sqrt((r * r).sum()))
    if rn == 0.0:
        return np.zeros((h, w), dtype=np.float32)
    num = (torch.from_numpy(r).to(m.dtype) @ m).double()
    col_sum = m.sum(0, dtype=torch.float64)
    col_sq = (m * m).sum(0, dtype=torch.float64)
    var = (col_sq - col_sum * col_sum / n).clamp_min(0)
    den = var.sqrt() * rn
    corr = torch.where(den > 1e-12 * rn, num / den.clamp_min(1e-300), torch.zeros_like(num))
    corr = torch.nan_to_num(corr, nan=0.0, posinf=0.0, neginf=0.0).clamp(-1, 1)
    return corr.reshape(h, w).numpy().astype(np.float32)


def _corrrise(ctx: MethodContext) -> np.ndarray:
    p = ctx.params
    h, w = ctx.x.shape[-2:]
    masks = mask_set("corrrise", p["masks"], (h, w), _seed(ctx), patch=p["patch_size"], patches=p["patches"])
    sign = -1.0 if ctx.target.kind == "dissimilar" else 1.0
    scores: list[float] = []
    want_partial = ctx.progress is not None

    def side(corr: np.ndarray) -> np.ndarray:
        return np.maximum(sign * corr, 0.0).astype(np.float32)

    def on_batch(m, s, done):
        scores.extend(s.double().tolist())
        return side(spearman_map(masks[:done], np.asarray(scores))) if want_partial else None

    _run_masks(ctx, masks.shape[0], lambda a, b: masks[a:b], on_batch)
    return side(spearman_map(masks, np.asarray(scores)))


# --------------------------------------------------------------------------- registration
def _batch(default: int) -> Param:
    return Param("batch_size", int, default, "images per forward pass (progress and cancel between batches)",
                 1, 4096)


SEED = Param("seed", int, None, "seed of the mask set (default: the run's seed)", 0, 2**31 - 1)
NORM = Param("normalization", str, "minmax", "how the map is scaled to [0,1]", choices=("minmax", "max"))

register(MethodSpec(
    name="rise", label="RISE", tasks=frozenset({"classification"}), output="single", cost="sampling", fn=_rise,
    params=(Param("masks", int, 4000, "number of random masks N", 1, 100000),
            Param("grid_size", int, 7, "grid size s (s x s cells before upsampling)", 2, 64),
            Param("keep_prob", float, 0.5, "probability p that a grid cell is kept", 0.01, 1.0),
            _batch(32), SEED, NORM),
    description="Randomized Input Sampling: sum_i p(class | x M_i) M_i / (N p) over random upsampled grids",
    gradient_based=False,
))

register(MethodSpec(
    name="srise", label="S-RISE", tasks=frozenset({"verification"}), output="pair", cost="sampling", fn=_srise,
    params=(Param("masks", int, 500, "number of masks N (500 converge; 10 are poor)", 1, 100000),
            Param("patches", int, 100, "Gaussian patches per mask", 1, 10000),
            Param("patch_kernel", int, 40, "size of a Gaussian patch in pixels", 1, 1000),
            Param("patch_sigma", float, 7.0, "sigma of a Gaussian patch in pixels", 0.1, 1000.0),
            Param("score_baseline", str, "mean", "mask weights s_i (e+) or 1 - s_i (e-): 'mean' subtracts their mean; "
                                                 "'none' is the paper's plain sum (shows mostly the mask density)",
                  choices=("none", "mean")),
            _batch(32), SEED, NORM),
    description="Similarity-based RISE (S-RISE, Lu & Ebrahimi): H = sum_i s_i M_i over Gaussian-patch masks "
                "of the probe",
    gradient_based=False,
))

register(MethodSpec(
    name="corrrise", label="CorrRISE", tasks=frozenset({"verification"}), output="pair", cost="sampling",
    fn=_corrrise,
    params=(Param("masks", int, 500, "number of masks N", 2, 100000),
            Param("patch_size", int, 30, "side of a black patch in pixels", 1, 1000),
            Param("patches", int, 3, "black patches per mask", 1, 10000),
            _batch(32), SEED),
    description="Spearman correlation between each pixel's visibility and the pair's similarity over "
                "occlusion masks (a seeded set reused for every pair)",
    gradient_based=False,
))
