"""Faithfulness: deletion and insertion curves of an attribution map.

Pixels are ranked by the map (most important first; for a signed map the most
positive first). For each fraction P of the pixels (0, 10, ..., 100 % by default):

- deletion: the top-P pixels of the image are replaced by a fill, the rest kept;
- insertion: the image starts as the fill and only the top-P pixels are put back;
- hiding (the hiding game of Wang et al., PRL 2025, with a non-mate): the probe's pixels are replaced
  by the non-mate's, least important first; the match to the mate should survive
  until the important pixels go (higher area is better).

The fill (``"mean"``: each channel's mean colour, as S-RISE; ``"zero"``: black;
``"blur"``: a strongly blurred copy) is the same for every method, so curves are
comparable. A curve's score is the network output the map explains: the cosine to
the reference embedding (face pairs), the class probability (softmax of the
logits; raw scores for models whose class scores are cosines), or the cell's
L1 activation. For a pair it is the cosine to the reference for e+ and
1 - cosine for e- (each map explains its own output), so "lower is better for
deletion" holds for both. The area under the curve is the trapezoid over P in [0, 1]:
lower is better for deletion (the output falls fast), higher for insertion.

Over a labelled pair list (FAME paper, Tab. 2) the score at each P is the
verification accuracy at the clean EER threshold; genuine pairs are perturbed
along their e+ map (what makes them similar), impostor pairs along their e- map.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from ..models.wrapper import ModelWrapper
from ..targets import Target

MODES = ("deletion", "insertion")
GAMES = MODES + ("hiding",)  # hiding: the hiding game of Wang et al. (PRL 2025; needs a non-mate)
FILLS = ("mean", "zero", "blur")
MASKS = ("rank", "percentile")  # exactly round(P*N) pixels, or every pixel at or above the map's percentile
DEFAULT_FRACTIONS = tuple(i / 10 for i in range(11))


TIE_SEED = 0  # the seed of the fixed permutation that orders tied pixels


def tie_break(n: int) -> np.ndarray:
    """A fixed random permutation of ``n`` pixels (numpy ``default_rng(TIE_SEED)``): the order of tied values."""
    return np.random.default_rng(TIE_SEED).permutation(n)


def pixel_order(amap: np.ndarray) -> np.ndarray:
    """Flat pixel indices, most important first. Tied values carry no ranking, so they go in a fixed random
    order (:func:`tie_break`), not row by row: a tie block (a CAM's zeros) removed row by row would be a
    contiguous strip of the image, which the network reacts to more than to scattered pixels, and the curve
    would measure the tie rule instead of the map."""
    a = np.asarray(amap, dtype=np.float64).ravel()
    return np.lexsort((tie_break(a.size), -a))


def fill_image(x: torch.Tensor, fill: str = "mean") -> torch.Tensor:
    """What a removed pixel becomes: (1,3,H,W) like ``x``."""
    if fill == "mean":
        return x.mean(dim=(2, 3), keepdim=True).expand_as(x).clone()
    if fill == "zero":
        return torch.zeros_like(x)
    if fill == "blur":
        from torchvision.transforms.functional import gaussian_blur

        k = max(3, (min(x.shape[-2:]) // 4) | 1)  # a quarter of the image: no detail survives
        return gaussian_blur(x, [k, k], [k / 3.0, k / 3.0])
    raise ValueError(f"fill must be one of {', '.join(FILLS)}, got {fill!r}")


def top_mask(amap: np.ndarray, order: torch.Tensor, f: float, masks: str = "rank") -> torch.Tensor:
    """(H*W,) bool: the top ``f`` of the pixels. ``"rank"``: exactly round(f*N) pixels in ``order``;
    ``"percentile"`` (the FAME authors' evaluation): every pixel whose value is at or above the map's
    (100 - 100 f)-th percentile, so tied values go together (f = 0 removes nothing)."""
    n = order.numel()
    top = torch.zeros(n, dtype=torch.bool)
    if masks == "rank":
        top[order[:int(round(f * n))]] = True
    elif masks == "percentile":
        if f > 0:
            a = np.asarray(amap, dtype=np.float64).ravel()
            top = torch.from_numpy(a >= np.percentile(a, 100.0 * (1.0 - f)))
    else:
        raise ValueError(f"masks must be one of {', '.join(MASKS)}, got {masks!r}")
    return top


def perturbed(x: torch.Tensor, amap: np.ndarray, fractions: Sequence[float] = DEFAULT_FRACTIONS,
              mode: str = "deletion", fill: str | torch.Tensor = "mean", masks: str = "rank") -> torch.Tensor:
    """(len(fractions),3,H,W): ``x`` with its top pixels removed (deletion), alone kept (insertion), or
    its least important pixels replaced first (hiding). ``fill`` may be an image like ``x`` (hiding: the
    non-mate); ``masks`` chooses how the top pixels are counted (:func:`top_mask`)."""
    if mode not in GAMES:
        raise ValueError(f"mode must be one of {', '.join(GAMES)}, got {mode!r}")
    h, w = x.shape[-2:]
    if tuple(np.shape(amap)) != (h, w):
        raise ValueError(f"map shape {np.shape(amap)} does not match the image {h}x{w}")
    order = pixel_order(amap)
    if mode == "hiding":
        order, amap = order[::-1], -np.asarray(amap, dtype=np.float64)  # least important first
    order = torch.from_numpy(order.copy())
    if isinstance(fill, torch.Tensor):
        if fill.shape[-2:] != x.shape[-2:]:
            raise ValueError(f"the fill image is {tuple(fill.shape[-2:])}, the image {tuple(x.shape[-2:])}")
        base = fill.to(x.device, x.dtype).expand_as(x)
    else:
        base = fill_image(x, fill)
    out = []
    for f in fractions:
        if not 0.0 <= f <= 1.0:
            raise ValueError(f"fractions must lie in [0, 1], got {f}")
        top = top_mask(amap, order, f, masks).view(1, 1, h, w).to(x.device)
        keep_x = top if mode == "insertion" else ~top
        out.append(torch.where(keep_x, x, base))
    return torch.cat(out)


def area(fractions: Sequence[float], values: Sequence[float]) -> float:
    """Trapezoid area under ``values`` over ``fractions``, normalised by their span (1 for 0..1)."""
    f = np.asarray(fractions, dtype=np.float64)
    v = np.asarray(values, dtype=np.float64)
    span = f[-1] - f[0]
    if len(f) < 2 or span <= 0:
        raise ValueError("an area needs at least two increasing fractions")
    return float(np.sum((v[1:] + v[:-1]) * np.diff(f)) / 2.0 / span)


@dataclass
class Curve:
    mode: str
    fractions: list[float]
    scores: list[float]
    score_name: str
    method: str = ""
    extra: dict = field(default_factory=dict)
    metric: str = ""  # the registered metric that made it (see :mod:`.metrics`)

    @property
    def gain(self) -> float:
        """How much better the map's ranking does than its reversal (area between the two curves, signed so
        that higher is better); a random ranking's expected gain is 0. NaN when undefined or not measured."""
        g = self.extra.get("gain")
        if self.extra.get("undefined") or g is None:
            return float("nan")
        return float(g)

    @property
    def auc(self) -> float:
        """The area under the curve; NaN when the curve is undefined (``extra["undefined"]`` says why, e.g. a
        constant map ranks no pixel, so its "order" is only the tie rule)."""
        if self.extra.get("undefined"):
            return float("nan")
        return area(self.fractions, self.scores)

    def to_dict(self) -> dict:
        auc = self.auc
        gain = self.gain
        return {"method": self.method, "mode": self.mode, **({"metric": self.metric} if self.metric else {}),
                "score": self.score_name, "auc": auc if np.isfinite(auc) else None, **self.extra,
                "gain": gain if np.isfinite(gain) else None,
                "fractions": list(self.fractions), "scores": list(self.scores)}


# --------------------------------------------------------------------------- scores
def score_fn(model: ModelWrapper, target: Target, reference: torch.Tensor | None = None
             ) -> tuple[Callable[[torch.Tensor], torch.Tensor], str]:
    """(batch -> one score per image, the score's name) for what ``target`` explains (from its kind)."""
    r = None
    if reference is not None:
        with torch.no_grad():
            r = model(reference.to(model.device)).detach()
    return target.spec.explained_score(model, target, r)


@torch.no_grad()
def curve(model: ModelWrapper, x: torch.Tensor, amap: np.ndarray, target: Target, mode: str = "deletion", *,
          reference: torch.Tensor | None = None, fractions: Sequence[float] = DEFAULT_FRACTIONS,
          fill: str = "mean", batch: int = 16, method: str = "", masks: str = "rank") -> Curve:
    """The deletion or insertion curve of one map for one image (or one side of a pair)."""
    fn, name = score_fn(model, target, reference)
    xs = perturbed(x.to(model.device), amap, fractions, mode, fill, masks)
    scores = torch.cat([fn(xs[i:i + batch]).float().cpu() for i in range(0, len(xs), batch)])
    return Curve(mode, [float(f) for f in fractions], [float(s) for s in scores], name, method,
                 {"fill": fill})


@torch.no_grad()
def pair_cosines(model: ModelWrapper, x: torch.Tensor, reference: torch.Tensor, amap: np.ndarray,
                 fractions: Sequence[float], mode: str = "deletion", *, fill: str = "mean",
                 batch: int = 16, masks: str = "rank") -> np.ndarray:
    """cos(f(x'), f(reference)) of ``x`` perturbed along ``amap`` at each fraction."""
    r = model(reference.to(model.device)).detach()
    xs = perturbed(x.to(model.device), amap, fractions, mode, fill, masks)
    cos = torch.cat([F.cosine_similarity(model(xs[i:i + batch]), r, dim=1) for i in range(0, len(xs), batch)])
    return cos.cpu().numpy()


@torch.no_grad()
def flip_fraction(model: ModelWrapper, x: torch.Tensor, reference: torch.Tensor, amap: np.ndarray, threshold: float,
                  mode: str = "deletion", *, step: float = 0.01, fill: str = "mean", batch: int = 32,
                  masks: str = "rank") -> float | None:
    """The share of pixels, in the map's order, at which the verification decision flips (S-RISE's measure).

    Deletion: the first fraction removed at which the decision (cosine >= ``threshold``) is no longer
    the clean image's. Insertion: the first fraction put back into the fill at which the decision is
    the clean image's again. Smaller is better. None if it never flips (deletion) or never
    recovers (insertion), or if the fill alone already gives the clean decision (insertion).
    """
    n = int(round(1.0 / step))
    fractions = [i / n for i in range(n + 1)]
    same = pair_cosines(model, x, reference, amap, fractions, mode, fill=fill, batch=batch, masks=masks) >= threshold
    clean = bool(same[0]) if mode == "deletion" else bool(same[-1])
    if mode == "insertion" and bool(same[0]) == clean:
        return None
    hits = np.flatnonzero(same != clean) if mode == "deletion" else np.flatnonzero(same == clean)
    return float(fractions[hits[0]]) if len(hits) else None


class _Replay:
    """A batch's embeddings, already computed, handed to a score function that asks "the model" for them
    (:meth:`famegui.targets.TargetKind.explained_score` of a pair kind): the cosine and the explained score
    of one forward pass."""

    def __init__(self, model: ModelWrapper, emb: torch.Tensor):
        self.extras, self.device, self._emb = model.extras, model.device, emb

    def __call__(self, xs: torch.Tensor) -> torch.Tensor:
        if xs.shape[0] != self._emb.shape[0]:
            raise ValueError("the replayed batch is another batch")
        return self._emb


@torch.no_grad()
def curve_and_flip(model: ModelWrapper, x: torch.Tensor, reference: torch.Tensor, amap: np.ndarray, target: Target,
                   threshold: float, mode: str = "deletion", *, fractions: Sequence[float] = DEFAULT_FRACTIONS,
                   step: float = 0.01, fill: str = "mean", batch: int = 32, method: str = "",
                   masks: str = "rank") -> tuple[Curve, float | None]:
    """:func:`curve` and :func:`flip_fraction` of one map from one scan of the fine grid (``step``), with the
    same numbers: the curve's fractions are points of the fine grid (0.1 = 10/100 exactly), so their images
    are computed once; the fine points go through the network in batches, in order, only until the flip is
    found (the first fine point whose decision differs, which a coarser or bisecting search could miss).
    Each batch's embeddings give both the cosine (the decision) and the explained score (the curve).
    Fractions off the grid fall back to the two separate functions."""
    n = int(round(1.0 / step))
    fine = [i / n for i in range(n + 1)]
    at = {f: i for i, f in enumerate(fine)}
    if any(float(f) not in at for f in fractions):
        return (curve(model, x, amap, target, mode, reference=reference, fractions=fractions, fill=fill,
                      method=method, masks=masks),
                flip_fraction(model, x, reference, amap, threshold, mode, step=step, fill=fill, masks=masks))
    x = x.to(model.device)
    r = model(reference.to(model.device)).detach()
    same: dict[int, bool] = {}  # the decision at each fine point computed so far
    score: dict[int, float] = {}
    name = ""

    def run(indices: list[int]) -> None:
        nonlocal name
        xs = perturbed(x, amap, [fine[i] for i in indices], mode, fill, masks)
        emb = model(xs)
        fn, name = target.spec.explained_score(_Replay(model, emb), target, r)
        # compared as flip_fraction compares (a float32 array against the threshold), so the same decisions
        decided = F.cosine_similarity(emb, r, dim=1).cpu().numpy() >= threshold
        got_score = fn(xs).float().cpu().numpy()
        for k, i in enumerate(indices):
            same[i], score[i] = bool(decided[k]), float(got_score[k])

    def missing_from(i: int) -> list[int]:
        return [j for j in range(i, n + 1) if j not in same][:batch]

    needed = list(dict.fromkeys([at[float(f)] for f in fractions] + [0, n]))
    run(needed + [j for j in missing_from(0) if j not in needed][:max(0, batch - len(needed))])
    clean = same[0] if mode == "deletion" else same[n]
    flip = None
    if not (mode == "insertion" and same[0] == clean):
        for i in range(n + 1):
            if i not in same:
                run(missing_from(i))
            if (same[i] != clean) if mode == "deletion" else (same[i] == clean):
                flip = float(fine[i])
                break
    c = Curve(mode, [float(f) for f in fractions], [score[at[float(f)]] for f in fractions], name, method,
              {"fill": fill})
    return c, flip


@torch.no_grad()
def hiding_curve(model: ModelWrapper, x: torch.Tensor, mate: torch.Tensor, non_mate: torch.Tensor, amap: np.ndarray,
                 *, fractions: Sequence[float] = DEFAULT_FRACTIONS, batch: int = 16, method: str = "",
                 masks: str = "rank") -> Curve:
    """The hiding game (Wang et al., PRL 2025) for one triplet: the probe's pixels, least important first,
    are replaced by
    the non-mate's; the score is cos(probe', mate) - cos(probe', non-mate) (> 0: still matched to the mate).
    A good map keeps the match longest: higher area is better."""
    xs = perturbed(x.to(model.device), amap, fractions, "hiding", fill=non_mate.to(model.device), masks=masks)
    m, n = model(mate.to(model.device)).detach(), model(non_mate.to(model.device)).detach()
    emb = torch.cat([model(xs[i:i + batch]) for i in range(0, len(xs), batch)])
    margin = (F.cosine_similarity(emb, m, dim=1) - F.cosine_similarity(emb, n, dim=1)).float().cpu()
    return Curve("hiding", [float(f) for f in fractions], [float(v) for v in margin],
                 "cos(mate) - cos(non-mate)", method, {"matched": [bool(v > 0) for v in margin]})


# --------------------------------------------------------------------------- over a pair list
@dataclass
class LabelledPair:
    probe: torch.Tensor  # (1,3,H,W) model input
    reference: torch.Tensor
    same: bool
    name: str = ""


@torch.no_grad()
def accuracy_curves(model: ModelWrapper, pairs: Sequence[LabelledPair], maps: Sequence[np.ndarray],
                    threshold: float, modes: Sequence[str] = MODES, *,
                    fractions: Sequence[float] = DEFAULT_FRACTIONS, fill: str = "mean", batch: int = 16,
                    method: str = "", masks: str = "rank") -> dict[str, Curve]:
    """Verification accuracy at ``threshold`` vs the fraction of probe pixels removed / kept.

    ``maps[i]`` explains pair i's probe: its e+ map for a genuine pair, its e- map for an
    impostor pair (see :func:`explain_pairs`).
    """
    if len(pairs) != len(maps) or not pairs:
        raise ValueError("one map per pair, and at least one pair")
    out = {}
    for mode in modes:
        correct = np.zeros(len(fractions))
        for p, amap in zip(pairs, maps):
            cos = pair_cosines(model, p.probe, p.reference, amap, fractions, mode, fill=fill, batch=batch,
                               masks=masks)
            correct += (cos >= threshold) == p.same
        out[mode] = Curve(mode, [float(f) for f in fractions], list(correct / len(pairs)), "accuracy", method,
                          {"fill": fill, "threshold": float(threshold), "pairs": len(pairs)})
    return out


def explain_pairs(name: str, model: ModelWrapper, pairs: Sequence[LabelledPair], params: dict | None = None, *,
                  threshold: float | None = None, progress: Callable[[float], None] | None = None,
                  cancel: Callable[[], bool] | None = None) -> list[np.ndarray]:
    """Method ``name``'s map of each pair's probe: e+ for genuine pairs, e- for impostor pairs (through the one
    explain path, :func:`famegui.explanation.explain_rows`: FAME runs the pairs as batches)."""
    from ..explanation import Row, explain_rows

    rows = [Row(p.probe, Target("similar" if p.same else "dissimilar"), p.reference) for p in pairs]
    made = explain_rows(model, rows, name, params, threshold=threshold, cancel=cancel, fatal="keep",
                        progress=None if progress is None else (lambda f, _m=None: progress(f)))
    return [e.map for e in made]


def random_map(shape: tuple[int, int], seed: int = 0) -> np.ndarray:
    """The baseline every method should beat: a uniformly random ranking of the pixels."""
    return np.random.default_rng(seed).random(shape).astype(np.float32)
