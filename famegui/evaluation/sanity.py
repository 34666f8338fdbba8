"""Model-parameter randomisation test (Adebayo et al., NeurIPS 2018).

A map that does not change when the network's weights are replaced by random
ones does not explain the network. :func:`randomise_weights` builds the random
network the way the paper does: trainable layers are re-initialised from the
output down ("cascading"; ``depth=None`` re-initialises them all). Convolutions
and linear layers get He-normal weights and zero biases (for dlib's network the
folded affine layers go with them), normalisation layers their identity
initialisation. :func:`compare_maps` gives the paper's similarity measures:
Spearman rank correlation of the maps and of their absolute values, and Pearson
correlation.

Where the comparison is made matters on aligned face chips. Every map of a
convolutional network, trained or not, is low near the chip's border (fewer
windows and more zero padding reach it), and the trained network's maps are low
there too because that is background. Over the whole chip that shared frame
alone gives correlations around 0.5-0.7 between a trained map and a random one
that look nothing alike. The default comparison region of a face model is
therefore the alignment's own face square (dlib chips: the central 100x100 of
150x150); the whole-chip numbers are always reported next to it. The "prior"
numbers compare two random networks (seeds s and s+1): how much of a map the
architecture and the image fix whatever the weights are.
"""
from __future__ import annotations

import copy
import dataclasses
import math
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from ..models.wrapper import ModelWrapper
from ..targets import Target

_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.GroupNorm, nn.LayerNorm, nn.InstanceNorm2d)
DEFAULT_THRESHOLD = 0.5  # Adebayo et al. call a method sane when its map decorrelates; the bound


def trainable_layers(module: nn.Module) -> list[tuple[str, nn.Module]]:
    """Layers holding weights, in registration order (for the networks we ship: input to output)."""
    return [(n, m) for n, m in module.named_modules()
            if isinstance(m, (nn.Conv2d, nn.Linear) + _NORMS) and getattr(m, "weight", None) is not None]


def randomise_weights(model: ModelWrapper, seed: int = 0, depth: int | None = None) -> ModelWrapper:
    """A copy of ``model`` whose top ``depth`` trainable layers (all if None) are re-initialised.

    Deterministic for a given seed; ``model`` itself is not touched.
    """
    module = copy.deepcopy(model.module)
    layers = trainable_layers(module)
    if not layers:
        raise ValueError(f"{model.name} has no conv, linear or normalisation layers to randomise")
    if depth is not None and depth < 1:
        raise ValueError(f"depth must be >= 1 (the number of layers to randomise from the top), got {depth}")
    chosen = layers if depth is None else layers[max(0, len(layers) - depth):]
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, m in chosen:
            if isinstance(m, _NORMS):
                m.weight.fill_(1.0)
                if getattr(m, "bias", None) is not None:
                    m.bias.zero_()
                if getattr(m, "running_mean", None) is not None:
                    m.running_mean.zero_()
                    m.running_var.fill_(1.0)
                continue
            fan_in = m.weight[0].numel()
            w = torch.randn(m.weight.shape, generator=g, dtype=torch.float32) * math.sqrt(2.0 / fan_in)
            m.weight.copy_(w.to(m.weight.dtype))
            if m.bias is not None:
                m.bias.zero_()
    what = "all layers" if depth is None else f"top {len(chosen)} of {len(layers)} layers"
    return dataclasses.replace(model, module=module, name=f"{model.name} (random weights: {what}, seed {seed})")


# --------------------------------------------------------------------------- similarity
def _corr(a: np.ndarray, b: np.ndarray) -> float:
    a = a.ravel().astype(np.float64)
    b = b.ravel().astype(np.float64)
    if a.std() == 0 or b.std() == 0:
        return float("nan")  # a constant (e.g. empty) map ranks nothing: the correlation is undefined
    return float(np.corrcoef(a, b)[0, 1])


def _ranks(a: np.ndarray) -> np.ndarray:
    from scipy.stats import rankdata

    return rankdata(a.ravel(), method="average")


@dataclass(frozen=True)
class MapSimilarity:
    spearman: float  # rank correlation of the maps (Adebayo's main measure)
    spearman_abs: float  # rank correlation of |map| (differs from ``spearman`` for signed maps only)
    pearson: float

    @property
    def defined(self) -> bool:
        """False when a map is constant (e.g. empty): then nothing can be said, least of all "it changed"."""
        return bool(np.isfinite([self.spearman, self.spearman_abs, self.pearson]).all())

    @property
    def worst(self) -> float:
        """The largest of the three (NaN when undefined): a map passes only if every measure is below the bound."""
        return max(self.spearman, self.spearman_abs, self.pearson) if self.defined else float("nan")

    def to_dict(self) -> dict:
        def num(v):
            return float(v) if np.isfinite(v) else None  # JSON has no NaN: null = undefined

        return {"spearman": num(self.spearman), "spearman_abs": num(self.spearman_abs), "pearson": num(self.pearson)}


Region = tuple[int, int, int, int]  # top, bottom, left, right


def compare_maps(a: np.ndarray, b: np.ndarray, region: Region | None = None) -> MapSimilarity:
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"maps differ in shape: {a.shape} vs {b.shape}")
    if region is not None:
        t, bo, le, ri = region
        a, b = a[t:bo, le:ri], b[t:bo, le:ri]
        if a.size < 4:
            raise ValueError(f"region {region} leaves fewer than 4 pixels")
    return MapSimilarity(spearman=_corr(_ranks(a), _ranks(b)),
                         spearman_abs=_corr(_ranks(np.abs(a)), _ranks(np.abs(b))),
                         pearson=_corr(a, b))


def default_region(model: ModelWrapper) -> Region | None:
    """The face square of an aligned face chip; None (the whole input) otherwise."""
    from ..data.faces import face_box

    return face_box(model.alignment, tuple(model.input_size))


def resolve_region(model: ModelWrapper, region: str | Region | None) -> Region | None:
    if region is None or region == "full":
        return None
    if region == "face":
        return default_region(model)
    if isinstance(region, str):
        raise ValueError(f"region must be 'face', 'full' or (top, bottom, left, right), got {region!r}")
    return tuple(int(v) for v in region)


# --------------------------------------------------------------------------- the test
@dataclass
class SanityResult:
    method: str
    target: Target
    region: Region | None
    inside: MapSimilarity  # trained vs random, inside ``region``
    full: MapSimilarity  # trained vs random, whole input
    trained: np.ndarray
    randomised: np.ndarray
    threshold: float = DEFAULT_THRESHOLD
    prior: MapSimilarity | None = None  # random (seed) vs random (seed + 1), inside ``region``
    prior_full: MapSimilarity | None = None
    seconds: float = 0.0
    info: dict = field(default_factory=dict)
    signed: bool = False  # the method's declared output for this target (maps in [-1, 1])

    @property
    def passed(self) -> bool:
        """Every correlation is below the bound; never True for an undefined (constant-map) comparison."""
        return self.inside.defined and self.inside.worst < self.threshold

    @property
    def verdict(self) -> str:
        """"pass", "FAIL", or "undefined" (a constant map, e.g. an empty random-weights map)."""
        if not self.inside.defined:
            return "undefined"
        return "pass" if self.passed else "FAIL"

    def to_dict(self) -> dict:
        return {"method": self.method, "target": self.target.label(), "region": self.region,
                "threshold": self.threshold, "passed": self.passed, "verdict": self.verdict,
                "inside": self.inside.to_dict(),
                "full": self.full.to_dict(), "seconds": round(self.seconds, 3),
                "prior": None if self.prior is None else self.prior.to_dict(),
                "prior_full": None if self.prior_full is None else self.prior_full.to_dict()}


class RandomisedModels:
    """The random networks of one test, built once and shared by every method."""

    def __init__(self, model: ModelWrapper, seed: int = 0, depth: int | None = None, prior: bool = True):
        self.first = randomise_weights(model, seed=seed, depth=depth)
        self.second = randomise_weights(model, seed=seed + 1, depth=depth) if prior else None


def sanity_check(name: str, model: ModelWrapper, x: torch.Tensor, target: Target, params: dict | None = None, *,
                 reference: torch.Tensor | None = None, seed: int = 0, depth: int | None = None,
                 region: str | Region | None = "face", prior: bool = False,
                 threshold: float = DEFAULT_THRESHOLD, randomised: RandomisedModels | None = None,
                 progress: Callable[[float], None] | None = None,
                 cancel: Callable[[], bool] | None = None) -> SanityResult:
    """Run method ``name`` on the trained and on the randomised network and compare the maps.

    For a pair, the reference goes through the same network as the probe, so each
    network explains its own similarity. ``prior=True`` adds a second random network.
    """
    from ..methods import get_method, run_method
    from ..methods.fame import X_FINAL

    nets = randomised if randomised is not None else RandomisedModels(model, seed, depth, prior)
    runs = [model, nets.first] + ([nets.second] if prior and nets.second is not None else [])
    box = resolve_region(model, region)
    maps, info = [], {}
    t0 = time.perf_counter()
    for i, net in enumerate(runs):
        def part(f, _m=None, i=i):
            if progress is not None:
                progress((i + f) / len(runs))

        maps.append(run_method(name, net, x, target, params, reference=reference, cancel=cancel,
                               progress=part, info=info if i == 0 else None))
    info.pop(X_FINAL, None)  # FAME's perturbed image: not part of a sanity result
    res = SanityResult(method=name, target=target, region=box, inside=compare_maps(maps[0], maps[1], box),
                       full=compare_maps(maps[0], maps[1]), trained=maps[0], randomised=maps[1],
                       threshold=threshold, seconds=time.perf_counter() - t0, info=info,
                       signed=get_method(name).signed(target.task, params))
    if len(maps) == 3:
        res.prior = compare_maps(maps[1], maps[2], box)
        res.prior_full = compare_maps(maps[1], maps[2])
    return res


def sanity_suite(names: Sequence[str], model: ModelWrapper, x: torch.Tensor, targets: Sequence[Target],
                 params: dict[str, dict] | None = None, *, reference: torch.Tensor | None = None, seed: int = 0,
                 depth: int | None = None, region: str | Region | None = "face", prior: bool = True,
                 threshold: float = DEFAULT_THRESHOLD,
                 progress: Callable[[float], None] | None = None,
                 cancel: Callable[[], bool] | None = None) -> Iterator[SanityResult]:
    """:func:`sanity_check` for every method and target, sharing the random networks."""
    from ..methods import get_method

    nets = RandomisedModels(model, seed, depth, prior)
    # a signed method gives one map whatever the target: run it once
    plan = [(n, t) for n in names for i, t in enumerate(targets)
            if i == 0 or get_method(n).output_for(t.task) != "signed"]
    for i, (name, target) in enumerate(plan):
        def part(f, i=i):
            if progress is not None:
                progress((i + f) / len(plan))

        yield sanity_check(name, model, x, target, (params or {}).get(name), reference=reference, seed=seed,
                           depth=depth, region=region, prior=prior, threshold=threshold, randomised=nets,
                           progress=part, cancel=cancel)


def sanity_sheet(results: Sequence[SanityResult], base_rgb: np.ndarray, opacity: float = 0.5,
                 cmap: str = "jet") -> np.ndarray:
    """One picture: a row per method, (trained | random weights) per target; captions carry the verdict."""
    from ..core.render import draw_box, labelled, overlay, sheet
    from ..methods import get_method

    if not results:
        raise ValueError("no sanity results to draw")
    kinds = list(dict.fromkeys(r.target.label() for r in results))
    by_key = {(r.method, r.target.label()): r for r in results}
    blank = (np.asarray(base_rgb, dtype=np.float32) * 0.35)
    tiles = []
    for name in dict.fromkeys(r.method for r in results):
        for kind in kinds:
            r = by_key.get((name, kind))
            short = kind.split(" ")[0]
            if r is None:
                tiles += [labelled(blank, f"{name} {short}: not run")] * 2
                continue
            captions = (f"{get_method(name).label} {short}: trained",
                        f"random{' (empty)' if float(np.ptp(r.randomised)) == 0 else ''}: "
                        f"rho {r.inside.spearman:+.2f} {'ok' if r.passed else r.verdict}")
            for m, caption in zip((r.trained, r.randomised), captions):
                signed = r.signed
                peak = float(np.abs(m).max()) or 1.0
                shown = (m / peak + 1.0) / 2.0 if signed else m / peak
                tile = overlay(base_rgb, shown, opacity, "bwr" if signed else cmap)
                if r.region is not None:
                    t, b, le, ri = r.region
                    tile = draw_box(tile, (le, t, ri, b), (255, 255, 255), 1)
                tiles.append(labelled(tile, caption))
    return sheet(tiles, 2 * len(kinds), gap=4)
