"""Explanations of face verification: FGGB, xSSAB, X-Maps and the Excitation Backprop family.

Notation: ``x`` is the probe in [0, 1], ``r`` the frozen embedding of the other
image of the pair, ``phi(.)`` the L2-normalised embedding, ``theta`` the cosine
decision threshold, ``D`` the embedding size.

Registered methods (all ``verification``; the EBP family also ``classification``):

``fggb`` (Lu et al., FG 2024), output ``pair``
    For every dimension k: ``g_k = mean_colour |d phi_k / dx|``, ``g_k /= ||g_k||_2``
    (D backward passes, batched over a basis of grad-outputs). Weights
    ``w_k = phi_x[k] phi_y[k] - theta / D`` (so ``sum_k w_k = cos - theta``);
    ``S = sum_k w_k g_k``; e+ = max(S, 0), e- = max(-S, 0); Gaussian blur 25 / 5;
    divided by its maximum. ``max_dims`` > 0 keeps only that many dimensions, half
    with the most positive and half with the most negative ``w_k`` (an
    approximation offered for speed on 512-D models).
``xssab`` (Huber et al., WACV 2024), output ``pair``
    ``cos = <phi_x, r_hat>`` written as a bias-free linear layer on ``phi_x``.
    ``bound = theta / D``; the "pos" layer keeps ``r_hat[i]`` where
    ``phi_x[i] r_hat[i] >= bound``, the "neg" layer the rest (the two outputs sum to
    the cosine). Each is backpropagated to the image; map = ``mean_colour |grad|``.
    e+ = pos, e- = neg, each divided by its maximum. ``combined=True`` returns the
    signed map ``(pos - neg) / max|pos - neg|`` in [-1, 1] oriented towards the
    target (e+: pos - neg, e-: neg - pos).
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
``ebp``, ``cebp``, ``gweebp`` (Zhang et al. IJCV 2018; Wang et al. PRL 2025 = seed 004)
    Excitation Backprop with hand-written rules on an internal copy of the network
    (see "EBP engine" below); the map is the marginal winning probability (MWP)
    summed over the channels of an intermediate layer (param ``layer``; default:
    the deepest stage whose feature map is at least 12 px, e.g. dlib ``stage2``
    17x17, IResNet ``layer3`` 14x14, like the paper's 14x14 / 16x16; stage
    aliases ``stage1``.. of ``model.extras['stages']`` are accepted; ``input`` =
    pixels), bilinearly upsampled and divided by its maximum.

    Top signal, verification: the embedding is turned into a one-neuron
    "classifier" whose weights are the normalised reference (``s = <phi_x, r_hat>``,
    as the seed-004 paper stacks the mate's embedding into an extra fc layer).
    e+ starts from the excitatory contributions ``(r_hat_k a_k)^+`` (normalised to
    sum 1); e- from the dual unit with weights ``-r_hat`` (the contributions that
    pull the pair apart). Classification: the class row of the last fc layer (and
    its negation for the dual).

    - ``ebp``: MWP from the target unit, with the extended rule below (seed 004's
      eEBP); on layers with non-negative responses (dlib's ReLU stages) this is
      Zhang et al.'s EBP exactly. Like the original, e+ and e- look alike: EBP is
      not contrastive.
    - ``cebp``: contrastive EBP: MWP(target unit) - MWP(dual unit) at the layer,
      positive part (Zhang et al.'s contrastive MWP with the negated top weights).
    - ``gweebp``: every child response is replaced by its gradient-weighted value
      ``a [dG/da]^+`` (a >= 0) or ``a [-dG/da]^+`` (a < 0) before the MWP of each
      layer is computed (seed 004, eq. 6). The paper's gain is the triplet gain
      ``max(0, ||a-n|| - ||a-p||)`` on normalised embeddings: used for e+ when a
      non-mate image is given (``run_method(..., non_mate=...)``, the GUI's third
      image, ``--non-mate``). Without one, and for e-, ``G = cos(phi_x, r)`` for e+
      (reference = positive) and ``G = 1 - cos`` for e- (gradients flip sign), with
      the top unit ``r_hat`` / ``-r_hat`` as above. ``info["gain"]`` says which.
      Clamping ``[-dG/da]^+`` for negative neurons (the paper writes ``a (-dG/da)``) keeps the sign of every response;
      the paper's text says such neurons are "suppressed", which this implements.

EBP engine (``EbpNet``): the network is rebuilt as a list of operations and
checked against the real forward pass (same output, else an error names the
unsupported architecture). Supported: dlib's face ResNet, arcface IResNet,
AdaFace IR, torchvision ResNets and plain ``nn.Sequential`` stacks of
Conv2d / Linear / BatchNorm / ReLU / PReLU / pooling / Flatten. Rules:

- conv / linear: the extended EBP rule of seed 004 (eq. 3 / 4): a neuron with a
  positive response passes its probability to children whose contribution
  ``w_ji a_j`` is positive, one with a negative response to children whose
  contribution is negative, in proportion to the contributions (bias excluded,
  as in EBP). With non-negative inputs and positive responses this is exactly
  Zhang et al.'s EBP (= LRP z+). A BatchNorm / dlib affine directly after a conv
  (or linear) layer is folded into it first (exact).
- residual additions (incl. dlib's zero-padded add): the same rule with weight 1,
  i.e. the sum is split between the two branches in proportion to their
  same-signed contributions.
- average pooling, global mean, flatten: the same rule (non-negative weights).
- max pooling: winner takes all (the probability goes to the arg-max).
- ReLU, PReLU, dropout, a BatchNorm that does not follow a conv: pass-through
  (each output has exactly one child).

Probability is conserved layer by layer, except at a neuron whose response
sign comes from its bias alone (it has no excitatory child): that mass is
dropped, as EBP ignores biases. :func:`ebp_layer_map` returns the unnormalised
MWP map at a layer (sum 1 when nothing is dropped).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..models.wrapper import ModelWrapper
from .attribution import blur_maps
from .methods import MethodContext, MethodSpec, Param, register

#: Used when :mod:`famegui.core.verify` cannot be imported and the model is dlib's
#: ResNet: the cosine equivalent of dlib's Euclidean threshold 0.6 at the typical
#: descriptor length 1.43 of the bundled faces, 1 - 0.6^2 / (2 * 1.43^2) = 0.912
#: (verify.DLIB_COSINE_THRESHOLD = 0.913 is the same number measured more carefully).
DLIB_COSINE_THRESHOLD_FALLBACK = 0.913

JACOBIAN_CHUNK = 32  # grad-outputs per batched backward pass (FGGB)
OCCLUSION_BATCH = 32  # occluded images per forward pass (X-Maps)


# ============================================================================ shared helpers
def resolve_threshold(model: ModelWrapper, given: float | None = None) -> float:
    """The cosine threshold theta: ``given`` (ctx.threshold), else the model's default.

    Order: ``given``; :func:`famegui.core.verify.default_cosine_threshold`
    (model.threshold, extras, dlib's 0.913); if that module is missing:
    ``model.threshold``, then :data:`DLIB_COSINE_THRESHOLD_FALLBACK` for a model
    with a Euclidean rule (dlib). A model with no threshold at all gets 0.0 (the
    weights then split at zero contribution).
    """
    if given is not None:
        return float(given)
    try:
        from .verify import default_cosine_threshold
    except ImportError:
        default_cosine_threshold = None
    if default_cosine_threshold is not None:
        t = default_cosine_threshold(model)
        if t is not None:
            return float(t)
        return 0.0
    if model.threshold is not None:
        return float(model.threshold)
    if model.distance_threshold is not None:
        return DLIB_COSINE_THRESHOLD_FALLBACK
    return 0.0


def _unit(v: torch.Tensor) -> torch.Tensor:
    return F.normalize(v.reshape(1, -1).float(), dim=1)


def _scale_max(m: torch.Tensor) -> torch.Tensor:
    """Divide a non-negative map by its maximum (an all-zero map stays zero)."""
    hi = m.max()
    return m / hi if hi > 0 else torch.zeros_like(m)


def _scale_absmax(m: torch.Tensor) -> torch.Tensor:
    hi = m.abs().max()
    return m / hi if hi > 0 else torch.zeros_like(m)


def _np(m: torch.Tensor) -> np.ndarray:
    return m.detach().cpu().float().numpy().astype(np.float32)


def _need_reference(ctx: MethodContext) -> torch.Tensor:
    if ctx.reference_embedding is None:
        raise ValueError("this method explains a pair: it needs a reference image")
    return ctx.reference_embedding


def _is_similar(ctx: MethodContext) -> bool:
    return ctx.target.kind == "similar"


# ============================================================================ FGGB
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
    phi_y = _unit(reference_embedding)[0].to(phi_x.device)
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
                      e_plus=_scale_max(pair[0]), e_minus=_scale_max(pair[1]))


def _fggb_method(ctx: MethodContext) -> np.ndarray:
    ref = _need_reference(ctx)
    theta = resolve_threshold(ctx.model, ctx.threshold)
    p = ctx.params
    res = fggb(ctx.model, ctx.x, ref, theta, max_dims=int(p.get("max_dims") or 0),
               blur_kernel=p.get("blur_kernel") if p.get("blur_kernel") is not None else 25,
               blur_sigma=p.get("blur_sigma") if p.get("blur_sigma") is not None else 5.0,
               report=lambda f: ctx.report(0.95 * f))
    ctx.report(1.0)
    return _np(res.e_plus if _is_similar(ctx) else res.e_minus)


# ============================================================================ xSSAB
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
        return _scale_absmax(self.pos_map - self.neg_map)


def xssab(model: ModelWrapper, x: torch.Tensor, reference_embedding: torch.Tensor, theta: float) -> XssabResult:
    """xSSAB of probe ``x`` against a frozen reference embedding (two backward passes)."""
    xr = x.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        phi = F.normalize(model(xr).float(), dim=1)[0]
        r_hat = _unit(reference_embedding)[0].to(phi.device)
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
    ref = _need_reference(ctx)
    theta = resolve_threshold(ctx.model, ctx.threshold)
    res = xssab(ctx.model, ctx.x, ref, theta)
    ctx.report(1.0)
    if ctx.params.get("combined"):
        m = res.combined
        return _np(m if _is_similar(ctx) else -m)
    return _np(_scale_max(res.pos_map if _is_similar(ctx) else res.neg_map))


# ============================================================================ X-Maps
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
    r_hat = _unit(reference_embedding).to(x.device)
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
            report(done / total, _np(_scale_absmax(torch.stack(maps).mean(0))))
    return _scale_absmax(torch.stack(maps).mean(0)).to(x.device)


def _xmaps_method(ctx: MethodContext) -> np.ndarray:
    ref = _need_reference(ctx)
    p = ctx.params
    signed = xmaps(ctx.model, ctx.x, ref, patch_sizes=parse_patch_sizes(p.get("patch_sizes") or "7,14,28"),
                   stride=int(p.get("stride") or 5), fill=float(p.get("fill") or 0.0),
                   batch=int(p.get("batch_size") or OCCLUSION_BATCH),
                   report=lambda f, m: ctx.report(f, None if m is None else (m if _is_similar(ctx) else -m)))
    oriented = signed if _is_similar(ctx) else -signed
    if p.get("signed", True):
        return _np(oriented)
    return _np(_scale_max(oriented.clamp(min=0)))


# ============================================================================ EBP engine
class _Reached(Exception):
    def __init__(self, r: torch.Tensor) -> None:
        super().__init__("reached")
        self.r = r


def _safe_div(num: torch.Tensor, den: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    ok = mask & (den != 0)
    return torch.where(ok, num / torch.where(ok, den, torch.ones_like(den)), torch.zeros_like(num))


def _expand(t: torch.Tensor, k: int) -> torch.Tensor:
    t = t.detach()
    return t if t.shape[0] == k else t.expand(k, *t.shape[1:])


class _Record:
    """What one forward pass keeps for the top-down pass."""

    def __init__(self, weigh: bool) -> None:
        self.store: dict[int, tuple] = {}
        self.weigh = weigh
        self.children: dict[int, torch.Tensor] = {}  # tensors whose gradient-weighted value is needed
        self.weighted: dict[int, torch.Tensor] = {}
        self.shapes: dict[str, tuple[int, ...]] = {}
        self.order: list[str] = []

    def child(self, t: torch.Tensor) -> torch.Tensor:
        if self.weigh:
            self.children[id(t)] = t
        return t

    def response(self, t: torch.Tensor, k: int) -> torch.Tensor:
        """The child responses used by the rules: gradient-weighted (gweEBP) or as they are."""
        w = self.weighted.get(id(t))
        return w if w is not None else _expand(t, k)

    def weigh_by(self, gains: Sequence[torch.Tensor]) -> None:
        """gweEBP eq. 6 for every recorded child tensor, one row per gain."""
        tensors = list(self.children.values())
        per_gain = [torch.autograd.grad(g, tensors, retain_graph=True, allow_unused=True) for g in gains]
        for i, t in enumerate(tensors):
            a = t.detach()
            grads = [pg[i] if pg[i] is not None else torch.zeros_like(a) for pg in per_gain]
            g = torch.cat(grads, dim=0)
            a = _expand(a, g.shape[0])
            self.weighted[id(t)] = torch.where(a >= 0, a * g.clamp(min=0), a * (-g).clamp(min=0))


class _Op:
    def run(self, a: torch.Tensor, rec: _Record) -> torch.Tensor:  # pragma: no cover - interface
        raise NotImplementedError

    def back(self, r: torch.Tensor, rec: _Record, stop: str | None) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError


def _signed_rule(a_resp: torch.Tensor, out: torch.Tensor, r: torch.Tensor,
                 f_pos: Callable, f_neg: Callable | None) -> torch.Tensor:
    """Extended EBP (seed 004 eq. 3/4) through a linear map ``f_pos + f_neg``.

    ``f_pos`` has the non-negative and ``f_neg`` the non-positive coefficients
    (``None``: all coefficients are non-negative). A neuron with response >= 0
    passes its probability to the children with positive contributions, one with
    a negative response to those with negative contributions, in proportion.
    """
    k = r.shape[0]
    ap = a_resp.clamp(min=0).detach().requires_grad_(True)
    an = a_resp.clamp(max=0).detach().requires_grad_(True)
    with torch.enable_grad():
        zp = f_pos(ap) if f_neg is None else f_pos(ap) + f_neg(an)  # sum of positive contributions
        zn = f_pos(an) if f_neg is None else f_pos(an) + f_neg(ap)  # sum of negative contributions
        positive = _expand(out, k) >= 0
        sp = _safe_div(r, zp.detach(), positive)
        sn = _safe_div(r, zn.detach(), ~positive)
        gp, gn = torch.autograd.grad((zp * sp).sum() + (zn * sn).sum(), [ap, an], allow_unused=True)
    res = torch.zeros_like(a_resp)
    if gp is not None:
        res = res + ap.detach() * gp
    if gn is not None:
        res = res + an.detach() * gn
    return res


class _Linear(_Op):
    """A conv or fully connected layer (a following per-channel affine / BN folded in)."""

    def __init__(self, kind: str, weight: torch.Tensor, bias: torch.Tensor | None, conv_kw: dict | None = None):
        self.kind = kind
        self.weight = weight.detach().float()
        self.bias = None if bias is None else bias.detach().float()
        self.kw = conv_kw or {}
        self.w_pos = self.weight.clamp(min=0)
        self.w_neg = self.weight.clamp(max=0)

    def f(self, v: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None = None) -> torch.Tensor:
        if self.kind == "conv":
            return F.conv2d(v, w, b, **self.kw)
        return F.linear(v, w, b)

    def run(self, a, rec):
        out = self.f(a, self.weight, self.bias)
        rec.store[id(self)] = (rec.child(a), out.detach())
        return out

    def back(self, r, rec, stop):
        a, out = rec.store[id(self)]
        return _signed_rule(rec.response(a, r.shape[0]), out, r,
                            lambda v: self.f(v, self.w_pos), lambda v: self.f(v, self.w_neg))


class _Pool(_Op):
    """A linear map with non-negative coefficients: average pooling, global mean, flatten."""

    def __init__(self, fn: Callable[[torch.Tensor], torch.Tensor]):
        self.fn = fn

    def run(self, a, rec):
        out = self.fn(a)
        rec.store[id(self)] = (rec.child(a), out.detach())
        return out

    def back(self, r, rec, stop):
        a, out = rec.store[id(self)]
        return _signed_rule(rec.response(a, r.shape[0]), out, r, self.fn, None)


class _MaxPool(_Op):
    """Winner takes all: the probability of a pooled unit goes to its arg-max."""

    def __init__(self, module: nn.Module):
        self.module = module

    def run(self, a, rec):
        rec.store[id(self)] = (a.detach(),)
        return self.module(a)

    def back(self, r, rec, stop):
        (a,) = rec.store[id(self)]
        v = _expand(a, r.shape[0]).clone().requires_grad_(True)
        with torch.enable_grad():
            (g,) = torch.autograd.grad(self.module(v), v, r)
        return g


class _Pointwise(_Op):
    """One child per output (ReLU, PReLU, dropout, a lone BatchNorm): the probability passes unchanged."""

    def __init__(self, fn: Callable[[torch.Tensor], torch.Tensor]):
        self.fn = fn

    def run(self, a, rec):
        return self.fn(a)

    def back(self, r, rec, stop):
        return r


class _Mark(_Op):
    """A named point (a module's output) where the map can be read."""

    def __init__(self, name: str):
        self.name = name

    def run(self, a, rec):
        rec.shapes[self.name] = tuple(a.shape[1:])
        rec.order.append(self.name)
        return a

    def back(self, r, rec, stop):
        if stop == self.name:
            raise _Reached(r)
        return r


def _run_seq(ops: Sequence[_Op], a: torch.Tensor, rec: _Record) -> torch.Tensor:
    for op in ops:
        a = op.run(a, rec)
    return a


def _back_seq(ops: Sequence[_Op], r: torch.Tensor, rec: _Record, stop: str | None) -> torch.Tensor:
    for op in reversed(ops):
        r = op.back(r, rec, stop)
    return r


def _plain_add(y: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    return y + s


class _Residual(_Op):
    """``post(combine(branch(a), shortcut(a)))``; the sum splits by same-signed contributions."""

    def __init__(self, branch: list[_Op], shortcut: list[_Op], combine: Callable, post: list[_Op]):
        self.branch, self.shortcut, self.combine, self.post = branch, shortcut, combine, post

    def run(self, a, rec):
        y = _run_seq(self.branch, a, rec)
        s = _run_seq(self.shortcut, a, rec)
        o = self.combine(y, s)
        rec.store[id(self)] = (rec.child(y), rec.child(s), o.detach())
        return _run_seq(self.post, o, rec)

    def back(self, r, rec, stop):
        r = _back_seq(self.post, r, rec, stop)
        y, s, o = rec.store[id(self)]
        k = r.shape[0]
        yw, sw = rec.response(y, k), rec.response(s, k)
        leaves = [t.detach().requires_grad_(True) for t in
                  (yw.clamp(min=0), sw.clamp(min=0), yw.clamp(max=0), sw.clamp(max=0))]
        with torch.enable_grad():
            zp = self.combine(leaves[0], leaves[1])
            zn = self.combine(leaves[2], leaves[3])
            positive = _expand(o, k) >= 0
            sp = _safe_div(r, zp.detach(), positive)
            sn = _safe_div(r, zn.detach(), ~positive)
            grads = torch.autograd.grad((zp * sp).sum() + (zn * sn).sum(), leaves, allow_unused=True)
        parts = [torch.zeros_like(leaf) if g is None else leaf.detach() * g for leaf, g in zip(leaves, grads)]
        r_y, r_s = parts[0] + parts[2], parts[1] + parts[3]
        return _back_seq(self.branch, r_y, rec, stop) + _back_seq(self.shortcut, r_s, rec, stop)


# ---------------------------------------------------------------------------- building
def _fold(conv: nn.Module, bn: nn.Module | None) -> tuple[torch.Tensor, torch.Tensor | None]:
    w = conv.weight.detach().float()
    b = None if conv.bias is None else conv.bias.detach().float()
    if bn is None:
        return w, b
    scale = 1.0 / torch.sqrt(bn.running_var.detach().float() + bn.eps)
    shift = -bn.running_mean.detach().float() * scale
    if bn.affine and bn.weight is not None:
        scale = scale * bn.weight.detach().float()
        shift = shift * bn.weight.detach().float() + bn.bias.detach().float()
    w = w * scale.view(-1, *([1] * (w.ndim - 1)))
    b = shift if b is None else b * scale + shift
    return w, b


def _conv_op(conv: nn.Conv2d, bn: nn.Module | None) -> _Linear:
    if conv.padding_mode != "zeros":
        raise ValueError(f"EBP supports zero-padded convolutions only (found {conv.padding_mode})")
    w, b = _fold(conv, bn)
    return _Linear("conv", w, b, dict(stride=conv.stride, padding=conv.padding, dilation=conv.dilation,
                                      groups=conv.groups))


_POINTWISE = (nn.ReLU, nn.PReLU, nn.LeakyReLU, nn.ELU, nn.Dropout, nn.Identity, nn.BatchNorm1d, nn.BatchNorm2d)


def _walk(named: Sequence[tuple[str, nn.Module]], prefix: str = "", marks: bool = True) -> list[_Op]:
    """Operations for modules applied one after the other (BN after conv/linear folded)."""
    ops: list[_Op] = []
    items = list(named)
    i = 0
    while i < len(items):
        name, m = items[i]
        full = f"{prefix}{name}" if name else ""
        nxt = items[i + 1][1] if i + 1 < len(items) else None
        mark_name = full
        if isinstance(m, nn.Conv2d):
            bn = nxt if isinstance(nxt, nn.BatchNorm2d) else None
            ops.append(_conv_op(m, bn))
            if bn is not None:
                i += 1
                mark_name = f"{prefix}{items[i][0]}"
        elif isinstance(m, nn.Linear):
            bn = nxt if isinstance(nxt, nn.BatchNorm1d) else None
            w, b = _fold(m, bn)
            ops.append(_Linear("linear", w, b))
            if bn is not None:
                i += 1
                mark_name = f"{prefix}{items[i][0]}"
        elif isinstance(m, _POINTWISE):
            ops.append(_Pointwise(m))
        elif isinstance(m, nn.MaxPool2d):
            ops.append(_MaxPool(m))
        elif isinstance(m, (nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.Flatten)):
            ops.append(_Pool(m))
        elif type(m).__name__ == "_Flatten":
            ops.append(_Pool(lambda t: t.reshape(t.shape[0], -1)))
        elif isinstance(m, nn.Sequential):
            ops.extend(_walk(list(m.named_children()), f"{full}." if full else "", marks))
        else:
            ops.append(_block(m, full))
        if marks and mark_name:
            ops.append(_Mark(mark_name))
        i += 1
    return ops


def _children(m: nn.Module, names: Sequence[str]) -> list[tuple[str, nn.Module]]:
    return [(n, getattr(m, n)) for n in names if getattr(m, n, None) is not None]


def _block(m: nn.Module, name: str) -> _Op:
    """A residual unit of a supported family."""
    kind = type(m).__name__
    if kind == "ResidualUnit":  # dlib
        from ..models.dlib_resnet import _add_padded

        shortcut = [] if m.downsample is None else [_Pool(m.downsample)]
        return _Residual(_walk(_children(m, ("conv1", "relu1", "conv2")), marks=False), shortcut, _add_padded,
                         [_Pointwise(m.relu2)])
    if kind == "IBasicBlock":  # arcface_torch
        branch = _walk(_children(m, ("bn1", "conv1", "bn2", "prelu", "conv2", "bn3")), marks=False)
        shortcut = [] if m.downsample is None else _walk([("", m.downsample)], marks=False)
        return _Residual(branch, shortcut, _plain_add, [])
    if kind == "AdaFaceBlock":
        return _Residual(_walk([("", m.res_layer)], marks=False), _walk([("", m.shortcut_layer)], marks=False),
                         _plain_add, [])
    if kind == "BasicBlock" and hasattr(m, "conv2") and hasattr(m, "bn2"):  # torchvision
        branch = _walk(_children(m, ("conv1", "bn1", "relu", "conv2", "bn2")), marks=False)
        shortcut = [] if m.downsample is None else _walk([("", m.downsample)], marks=False)
        return _Residual(branch, shortcut, _plain_add, [_Pointwise(m.relu)])
    if kind == "Bottleneck" and hasattr(m, "conv3"):  # torchvision
        branch = _walk(_children(m, ("conv1", "bn1", "relu", "conv2", "bn2", "relu", "conv3", "bn3")), marks=False)
        shortcut = [] if m.downsample is None else _walk([("", m.downsample)], marks=False)
        return _Residual(branch, shortcut, _plain_add, [_Pointwise(m.relu)])
    raise ValueError(f"Excitation Backprop does not know the layer {name or '(root)'} ({kind})")


def _build(module: nn.Module, prefix: str = "") -> tuple[list[_Op], str]:
    """Operations of a supported network and how its output relates to the module's (``exact``/``direction``).

    ``prefix`` is the network's own name inside a bigger model (e.g. ``"embedder."``), so the
    readable layer names match the model's.
    """
    kind = type(module).__name__
    if kind == "DlibResNet":
        named = [("stem", module.stem), ("pool", module.pool)] + [(n, getattr(module, n)) for n in module.stage_names]
        ops = _walk(named, prefix) + [_Pool(lambda t: t.mean(dim=(2, 3)))] + _walk([("fc", module.fc)], prefix)
        return ops, "exact"
    if kind == "IResNet":
        named = _children(module, ("conv1", "bn1", "prelu", "layer1", "layer2", "layer3", "layer4", "bn2"))
        ops = (_walk(named, prefix) + [_Pool(lambda t: torch.flatten(t, 1))]
               + _walk(_children(module, ("fc", "features")), prefix))
        return ops, "exact"
    if kind == "AdaFaceIR":  # its forward divides by the norm at the end: compare directions
        return _walk(_children(module, ("input_layer", "body", "output_layer")), prefix), "direction"
    if kind == "ResNet" and hasattr(module, "layer4") and hasattr(module, "fc"):  # torchvision
        named = _children(module, ("conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4",
                                   "avgpool"))
        ops = _walk(named, prefix) + [_Pool(lambda t: torch.flatten(t, 1))] + _walk([("fc", module.fc)], prefix)
        return ops, "exact"
    if kind == "IdentificationHead":  # cosine to gallery templates: normalise (a positive scale), then linear
        inner, _ = _build(module.embedder, f"{prefix}embedder.")  # the normalisation makes a direction exact
        head = _Linear("linear", module.gallery.detach().float(), None)
        return inner + [_Pointwise(lambda t: F.normalize(t, dim=1)), head], "exact"
    if isinstance(module, nn.Sequential):
        return _walk(list(module.named_children()), prefix), "exact"
    raise ValueError(f"Excitation Backprop does not support {kind} networks (supported: dlib ResNet, IResNet, "
                     "AdaFace IR, torchvision ResNet, plain nn.Sequential)")


class EbpNet:
    """A network rebuilt for Excitation Backprop, checked against the model on the first forward pass."""

    def __init__(self, model: ModelWrapper) -> None:
        if model.is_scripted:
            raise ValueError(f"{model.name} is a TorchScript model: Excitation Backprop needs its layers")
        self.model = model
        self.ops, self.relation = _build(model.module)
        self.names = [op.name for op in self.ops if isinstance(op, _Mark)]

    def forward(self, x: torch.Tensor, weigh: bool = False) -> tuple[torch.Tensor, _Record, torch.Tensor]:
        """(output, record, normalised input); the output is checked against the model's."""
        rec = _Record(weigh)
        z = self.model.normalize(x.detach().float())
        if weigh:
            z = z.requires_grad_(True)
        with torch.set_grad_enabled(weigh):
            out = _run_seq(self.ops, z, rec)
            with torch.no_grad():
                ref = self.model.module(z.detach())
        a, b = out.detach().flatten(1), ref.flatten(1)
        if a.shape != b.shape:
            raise ValueError(f"Excitation Backprop could not rebuild {self.model.name} (output shape "
                             f"{tuple(a.shape)} vs {tuple(b.shape)})")
        if self.relation == "direction":
            a, b = F.normalize(a, dim=1), F.normalize(b, dim=1)
        tol = 1e-3 * max(1.0, float(b.abs().max()))
        if float((a - b).abs().max()) > tol:
            raise ValueError(f"Excitation Backprop could not rebuild {self.model.name} faithfully "
                             f"(max difference {float((a - b).abs().max()):.3g}); its architecture is not supported")
        return out, rec, z

    def default_layer(self, rec: _Record, min_side: int = 12) -> str:
        """The deepest stage whose feature map is at least ``min_side`` px (else the first spatial one).

        Stages: the model's ``extras['stages']`` when it names them (IResNet, AdaFace), else the
        top-level modules.
        """
        spatial = [n for n in rec.order if len(rec.shapes[n]) == 3]
        named = set((self.model.extras.get("stages") or {}).values())
        top = [n for n in spatial if n in named] or [n for n in spatial if "." not in n] or spatial
        if not top:
            return "input"
        ok = [n for n in top if min(rec.shapes[n][1:]) >= min_side]
        return ok[-1] if ok else top[0]

    def backward(self, r: torch.Tensor, rec: _Record, layer: str, skip_last: bool = False) -> torch.Tensor:
        """MWP at ``layer`` (or ``"input"``) from probabilities ``r`` at the output (or at the input of
        the last layer when ``skip_last``): (K, C, h, w)."""
        ops = self.ops
        if skip_last:
            while ops and isinstance(ops[-1], _Mark):
                ops = ops[:-1]
            ops = ops[:-1]
        stop = None if layer == "input" else layer
        try:
            out = _back_seq(ops, r, rec, stop)
        except _Reached as hit:
            return hit.r
        if stop is not None:
            raise ValueError(f"layer {layer!r} is not on the path of {self.model.name}; "
                             f"choose one of: input, {', '.join(self.names)}")
        return out


def _last_linear(net: EbpNet) -> _Linear:
    for op in reversed(net.ops):
        if isinstance(op, _Mark):
            continue
        if isinstance(op, _Linear) and op.kind == "linear":
            return op
        break
    raise ValueError(f"{net.model.name}: a class target needs a final fully connected layer for EBP")


def _top_probabilities(children: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """P(child) of one top unit with ``weights`` (K, N): its excitatory contributions, normalised."""
    c = (weights * children).clamp(min=0)
    total = c.sum(dim=1, keepdim=True)
    return torch.where(total > 0, c / total.clamp_min(1e-30), torch.zeros_like(c))


@dataclass
class EbpMaps:
    maps: torch.Tensor  # (K, h, w) unnormalised MWP at the layer (summed over channels)
    layer: str
    shape: tuple[int, ...]  # feature shape at the layer (C, h, w)


def _resolve_layer(net: EbpNet, rec: _Record, layer: str | None) -> str:
    if not layer:
        return net.default_layer(rec)
    layer = (net.model.extras.get("stages") or {}).get(layer, layer)  # e.g. stage3 -> layer3 / body.N
    if layer != "input" and layer not in rec.shapes:
        raise ValueError(f"{net.model.name} has no EBP layer {layer!r}; choose one of: input, {', '.join(net.names)}")
    if layer != "input" and len(rec.shapes[layer]) != 3:
        raise ValueError(f"layer {layer!r} has no spatial map (shape {rec.shapes[layer]})")
    return layer


def _ebp_run(model: ModelWrapper, x: torch.Tensor, *, top: str, signs: Sequence[float],
             reference_embedding: torch.Tensor | None = None, class_index: int | None = None,
             layer: str | None = None, gains: Callable[[torch.Tensor], list[torch.Tensor]] | None = None) -> EbpMaps:
    """MWP maps at ``layer``, one per top unit: ``sign * r_hat`` (verification) or ``sign * W[class]``.

    ``gains(output) -> [G_k]`` (one per sign) turns on gradient weighting (gweEBP).
    """
    net = EbpNet(model)
    out, rec, z = net.forward(x, weigh=gains is not None)
    k = len(signs)
    sign = torch.tensor(list(signs), dtype=out.dtype, device=out.device).view(k, 1)
    if top == "verification":
        if reference_embedding is None:
            raise ValueError("EBP on a pair needs the reference embedding")
        r_hat = _unit(reference_embedding).to(out.device)
        children = rec.child(out) if gains is not None else out
        skip_last = False
        weights = sign * r_hat
    else:
        fc = _last_linear(net)
        children, _ = rec.store[id(fc)]
        skip_last = True
        weights = sign * fc.weight[class_index].view(1, -1)
    if gains is not None:
        rec.weigh_by(gains(out))
    layer = _resolve_layer(net, rec, layer)
    resp = rec.response(children, k) if gains is not None else _expand(children, k)
    p_top = _top_probabilities(resp.flatten(1), weights).view(k, *children.shape[1:])
    r = net.backward(p_top, rec, layer, skip_last=skip_last)
    maps = r.sum(dim=1) if r.ndim == 4 else r
    shape = tuple(z.shape[1:]) if layer == "input" else rec.shapes[layer]
    return EbpMaps(maps.detach(), layer, shape)


def ebp_layer_map(model: ModelWrapper, x: torch.Tensor, *, reference_embedding: torch.Tensor | None = None,
                  class_index: int | None = None, layer: str | None = None, dual: bool = False) -> EbpMaps:
    """Unnormalised EBP map (one row) at ``layer``: the MWP of the target unit, summed over channels.

    Verification when ``reference_embedding`` is given (top unit ``r_hat``, or
    ``-r_hat`` with ``dual``), else classification of ``class_index``. Sums to 1
    when no probability is dropped (see the module notes).
    """
    top = "verification" if reference_embedding is not None else "classification"
    return _ebp_run(model, x, top=top, signs=(-1.0 if dual else 1.0,), reference_embedding=reference_embedding,
                    class_index=class_index, layer=layer)


def _upsample(maps: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    if tuple(maps.shape[-2:]) == tuple(size):
        return maps
    return F.interpolate(maps.unsqueeze(1).float(), size=size, mode="bilinear", align_corners=False).squeeze(1)


def gweebp_maps(model: ModelWrapper, x: torch.Tensor, positive_embedding: torch.Tensor, *,
                negative_embedding: torch.Tensor | None = None, layer: str | None = None,
                targets: Sequence[str] = ("similar", "dissimilar")) -> EbpMaps:
    """gweEBP maps at ``layer`` for a pair (G = cos / 1 - cos) or a triplet (G = triplet gain).

    With ``negative_embedding`` only ``similar`` is meaningful: G = max(0, ||a - n|| - ||a - p||)
    on normalised embeddings, top unit = the positive (mate) embedding.
    """
    p_hat = _unit(positive_embedding)
    n_hat = None if negative_embedding is None else _unit(negative_embedding)
    signs = [1.0 if t == "similar" else -1.0 for t in targets]

    def gains(out: torch.Tensor) -> list[torch.Tensor]:
        a = F.normalize(out.flatten(1), dim=1)
        if n_hat is not None:
            g = (torch.linalg.vector_norm(a - n_hat.to(a.device), dim=1)
                 - torch.linalg.vector_norm(a - p_hat.to(a.device), dim=1)).clamp(min=0).sum()
            return [g if s > 0 else -g for s in signs]
        cos = (a * p_hat.to(a.device)).sum()
        return [cos if s > 0 else 1.0 - cos for s in signs]

    return _ebp_run(model, x, top="verification", signs=signs, reference_embedding=positive_embedding,
                    layer=layer, gains=gains)


def _ebp_common(ctx: MethodContext, variant: str) -> np.ndarray:
    size = tuple(ctx.x.shape[-2:])
    layer = ctx.params.get("layer") or None
    ctx.report(0.0)
    if ctx.task == "classification":
        cls = int(ctx.target.class_index)
        if variant == "gweebp":
            def gains(out):
                return [out.flatten(1)[0, cls]]
            res = _ebp_run(ctx.model, ctx.x, top="classification", signs=(1.0,), class_index=cls, layer=layer,
                           gains=gains)
            m = res.maps[0]
        else:
            signs = (1.0, -1.0) if variant == "cebp" else (1.0,)
            res = _ebp_run(ctx.model, ctx.x, top="classification", signs=signs, class_index=cls, layer=layer)
            m = res.maps[0] - res.maps[1] if variant == "cebp" else res.maps[0]
    else:
        ref = _need_reference(ctx)
        similar = _is_similar(ctx)
        if variant == "gweebp":
            # seed 004's triplet gain needs a non-mate and explains the match (e+); otherwise, and for e-,
            # the pair gain G = cos / 1 - cos
            triplet = ctx.non_mate_embedding is not None and similar
            ctx.info["gain"] = "triplet max(0, |a-n| - |a-p|)" if triplet else (
                "cos(a, p)" if similar else "1 - cos(a, p)")
            if triplet:
                with torch.no_grad():
                    a = F.normalize(ctx.model(ctx.x).flatten(1), dim=1)
                    gain = float(((a - _unit(ctx.non_mate_embedding)).norm() - (a - _unit(ref)).norm()).item())
                ctx.info["triplet_gain"] = gain
                if gain <= 0:  # max(0, .) has no gradient: the map is empty, say why
                    ctx.info["empty"] = True
                    ctx.info["note"] = "the non-mate is not farther from the probe than the mate: triplet gain 0"
            res = gweebp_maps(ctx.model, ctx.x, ref, layer=layer, targets=("similar" if similar else "dissimilar",),
                              negative_embedding=ctx.non_mate_embedding if triplet else None)
            m = res.maps[0]
        else:
            s = 1.0 if similar else -1.0
            signs = (s, -s) if variant == "cebp" else (s,)
            res = _ebp_run(ctx.model, ctx.x, top="verification", signs=signs, reference_embedding=ref, layer=layer)
            m = res.maps[0] - res.maps[1] if variant == "cebp" else res.maps[0]
    ctx.report(0.9)
    m = _upsample(m.clamp(min=0).unsqueeze(0), size)[0]
    ctx.report(1.0)
    return _np(_scale_max(m.clamp(min=0)))


def _ebp_method(ctx: MethodContext) -> np.ndarray:
    return _ebp_common(ctx, "ebp")


def _cebp_method(ctx: MethodContext) -> np.ndarray:
    return _ebp_common(ctx, "cebp")


def _gweebp_method(ctx: MethodContext) -> np.ndarray:
    return _ebp_common(ctx, "gweebp")


# ============================================================================ registration
VERIFICATION = frozenset({"verification"})
EBP_TASKS = frozenset({"verification", "classification"})
EBP_LAYER = Param("layer", str, None, "layer where the MWP map is read (default: the deepest stage with a "
                  "feature map of at least 12 px, e.g. dlib stage2, IResNet layer3; 'input' = pixels)")

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

register(MethodSpec(
    name="xssab", label="xSSAB", tasks=VERIFICATION, output="pair", cost="cheap", fn=_xssab_method,
    params=(Param("combined", bool, False, "return the signed map pos - neg in [-1,1] (oriented towards the "
                  "target) instead of e+ / e-"),),
    description="Similarity Score Argument Backpropagation: gradients of the cosine's arguments above (e+) "
                "and below (e-) theta/D",
))

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
))

register(MethodSpec(
    name="ebp", label="EBP", tasks=EBP_TASKS, output="pair", task_outputs={"classification": "single"}, cost="cheap", fn=_ebp_method, params=(EBP_LAYER,),
    description="Excitation Backprop: marginal winning probabilities from the similarity unit (e+) or its "
                "dual (e-), read at an intermediate layer",
))

register(MethodSpec(
    name="cebp", label="contrastive EBP", tasks=EBP_TASKS, output="pair", task_outputs={"classification": "single"}, cost="cheap", fn=_cebp_method,
    params=(EBP_LAYER,),
    description="Contrastive Excitation Backprop: MWP of the target unit minus MWP of its negated dual",
))

register(MethodSpec(
    name="gweebp", label="gweEBP", tasks=EBP_TASKS, output="pair", task_outputs={"classification": "single"},
    cost="cheap", fn=_gweebp_method, params=(EBP_LAYER,), uses_non_mate=True,
    description="Gradient-weighted extended EBP (seed 004): responses weighted by the gradient of the gain "
                "(with a non-mate: the triplet gain for e+; else cos for e+, 1 - cos for e-)",
))
