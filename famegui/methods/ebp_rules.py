"""Excitation Backprop's rules as operations on a rebuilt network (forward records, top-down pass).

The engine (:mod:`.ebp_engine`) rebuilds a network as a list of these
operations. Rules:

- conv / linear: the extended EBP rule of Wang et al. (PRL 2025, eq. 3 / 4): a neuron with a
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

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn


class Reached(Exception):
    def __init__(self, r: torch.Tensor) -> None:
        super().__init__("reached")
        self.r = r


def safe_div(num: torch.Tensor, den: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    ok = mask & (den != 0)
    return torch.where(ok, num / torch.where(ok, den, torch.ones_like(den)), torch.zeros_like(num))


def expand(t: torch.Tensor, k: int) -> torch.Tensor:
    t = t.detach()
    return t if t.shape[0] == k else t.expand(k, *t.shape[1:])


class Record:
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
        return w if w is not None else expand(t, k)

    def weigh_by(self, gains: Sequence[torch.Tensor]) -> None:
        """gweEBP eq. 6 for every recorded child tensor, one row per gain."""
        tensors = list(self.children.values())
        per_gain = [torch.autograd.grad(g, tensors, retain_graph=True, allow_unused=True) for g in gains]
        for i, t in enumerate(tensors):
            a = t.detach()
            grads = [pg[i] if pg[i] is not None else torch.zeros_like(a) for pg in per_gain]
            g = torch.cat(grads, dim=0)
            a = expand(a, g.shape[0])
            self.weighted[id(t)] = torch.where(a >= 0, a * g.clamp(min=0), a * (-g).clamp(min=0))


class Op:
    def run(self, a: torch.Tensor, rec: Record) -> torch.Tensor:  # pragma: no cover - interface
        raise NotImplementedError

    def back(self, r: torch.Tensor, rec: Record, stop: str | None) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError


def signed_rule(a_resp: torch.Tensor, out: torch.Tensor, r: torch.Tensor,
                 f_pos: Callable, f_neg: Callable | None) -> torch.Tensor:
    """Extended EBP (Wang et al., PRL 2025, eq. 3/4) through a linear map ``f_pos + f_neg``.

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
        positive = expand(out, k) >= 0
        sp = safe_div(r, zp.detach(), positive)
        sn = safe_div(r, zn.detach(), ~positive)
        gp, gn = torch.autograd.grad((zp * sp).sum() + (zn * sn).sum(), [ap, an], allow_unused=True)
    res = torch.zeros_like(a_resp)
    if gp is not None:
        res = res + ap.detach() * gp
    if gn is not None:
        res = res + an.detach() * gn
    return res


class Linear(Op):
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
        return signed_rule(rec.response(a, r.shape[0]), out, r,
                            lambda v: self.f(v, self.w_pos), lambda v: self.f(v, self.w_neg))


class Pool(Op):
    """A linear map with non-negative coefficients: average pooling, global mean, flatten."""

    def __init__(self, fn: Callable[[torch.Tensor], torch.Tensor]):
        self.fn = fn

    def run(self, a, rec):
        out = self.fn(a)
        rec.store[id(self)] = (rec.child(a), out.detach())
        return out

    def back(self, r, rec, stop):
        a, out = rec.store[id(self)]
        return signed_rule(rec.response(a, r.shape[0]), out, r, self.fn, None)


class MaxPool(Op):
    """Winner takes all: the probability of a pooled unit goes to its arg-max."""

    def __init__(self, module: nn.Module):
        self.module = module

    def run(self, a, rec):
        rec.store[id(self)] = (a.detach(),)
        return self.module(a)

    def back(self, r, rec, stop):
        (a,) = rec.store[id(self)]
        v = expand(a, r.shape[0]).clone().requires_grad_(True)
        with torch.enable_grad():
            (g,) = torch.autograd.grad(self.module(v), v, r)
        return g


class Pointwise(Op):
    """One child per output (ReLU, PReLU, dropout, a lone BatchNorm): the probability passes unchanged."""

    def __init__(self, fn: Callable[[torch.Tensor], torch.Tensor]):
        self.fn = fn

    def run(self, a, rec):
        return self.fn(a)

    def back(self, r, rec, stop):
        return r


class Mark(Op):
    """A named point (a module's output) where the map can be read."""

    def __init__(self, name: str):
        self.name = name

    def run(self, a, rec):
        rec.shapes[self.name] = tuple(a.shape[1:])
        rec.order.append(self.name)
        return a

    def back(self, r, rec, stop):
        if stop == self.name:
            raise Reached(r)
        return r


def run_seq(ops: Sequence[Op], a: torch.Tensor, rec: Record) -> torch.Tensor:
    for op in ops:
        a = op.run(a, rec)
    return a


def back_seq(ops: Sequence[Op], r: torch.Tensor, rec: Record, stop: str | None) -> torch.Tensor:
    for op in reversed(ops):
        r = op.back(r, rec, stop)
    return r


class Residual(Op):
    """``post(combine(branch(a), shortcut(a)))``; the sum splits by same-signed contributions."""

    def __init__(self, branch: list[Op], shortcut: list[Op], combine: Callable, post: list[Op]):
        self.branch, self.shortcut, self.combine, self.post = branch, shortcut, combine, post

    def run(self, a, rec):
        y = run_seq(self.branch, a, rec)
        s = run_seq(self.shortcut, a, rec)
        o = self.combine(y, s)
        rec.store[id(self)] = (rec.child(y), rec.child(s), o.detach())
        return run_seq(self.post, o, rec)

    def back(self, r, rec, stop):
        r = back_seq(self.post, r, rec, stop)
        y, s, o = rec.store[id(self)]
        k = r.shape[0]
        yw, sw = rec.response(y, k), rec.response(s, k)
        leaves = [t.detach().requires_grad_(True) for t in
                  (yw.clamp(min=0), sw.clamp(min=0), yw.clamp(max=0), sw.clamp(max=0))]
        with torch.enable_grad():
            zp = self.combine(leaves[0], leaves[1])
            zn = self.combine(leaves[2], leaves[3])
            positive = expand(o, k) >= 0
            sp = safe_div(r, zp.detach(), positive)
            sn = safe_div(r, zn.detach(), ~positive)
            grads = torch.autograd.grad((zp * sp).sum() + (zn * sn).sum(), leaves, allow_unused=True)
        parts = [torch.zeros_like(leaf) if g is None else leaf.detach() * g for leaf, g in zip(leaves, grads)]
        r_y, r_s = parts[0] + parts[2], parts[1] + parts[3]
        return back_seq(self.branch, r_y, rec, stop) + back_seq(self.shortcut, r_s, rec, stop)
