"""The Excitation Backprop engine: a network rebuilt from its declared structure, and MWP maps from it.

The network is rebuilt as a list of rule operations (:mod:`.ebp_rules`) from
torch's own layer types and from what each model family declares about its
blocks (:mod:`famegui.core.structure`, looked up by type), then checked against
the real forward pass (same output, else an error names the unsupported
architecture).
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from ..core.structure import (
    Elementwise,
    Nested,
    NonNegative,
    Part,
    ResidualBlock,
    block_structure,
    declared_networks,
    network_structure,
)
from .ebp_rules import Linear, Mark, MaxPool, Op, Pointwise, Pool, Reached, Record, Residual, back_seq, expand, run_seq
from .face_common import unit

if TYPE_CHECKING:
    from ..models.wrapper import ModelWrapper

_POINTWISE = (nn.ReLU, nn.PReLU, nn.LeakyReLU, nn.ELU, nn.Dropout, nn.Identity, nn.BatchNorm1d, nn.BatchNorm2d)


def _fold(conv: nn.Module, bn: nn.Module | None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Weight and bias of a conv / linear layer with a following batch norm folded in (exact)."""
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


def _conv_op(conv: nn.Conv2d, bn: nn.Module | None) -> Linear:
    if conv.padding_mode != "zeros":
        raise ValueError(f"EBP supports zero-padded convolutions only (found {conv.padding_mode})")
    w, b = _fold(conv, bn)
    return Linear("conv", w, b, dict(stride=conv.stride, padding=conv.padding, dilation=conv.dilation,
                                     groups=conv.groups))


def _linear_with_norm(m: nn.Module, nxt, norm_type) -> tuple[Op, bool]:
    """The op of a conv / linear layer and whether the next part (a batch norm) was folded into it."""
    bn = nxt if isinstance(nxt, norm_type) else None
    if isinstance(m, nn.Conv2d):
        return _conv_op(m, bn), bn is not None
    w, b = _fold(m, bn)
    return Linear("linear", w, b), bn is not None


def _elementary(m, prefix: str) -> list[Op] | None:
    """Ops of a part that is not a conv / linear layer (None: not elementary, ask its declaration)."""
    if isinstance(m, NonNegative):
        return [Pool(m.fn)]
    if isinstance(m, Elementwise) or isinstance(m, _POINTWISE):
        return [Pointwise(m.fn if isinstance(m, Elementwise) else m)]
    if isinstance(m, Nested):
        return _build(m.module, prefix + m.prefix)[0]
    if isinstance(m, nn.MaxPool2d):
        return [MaxPool(m)]
    if isinstance(m, (nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.Flatten)):
        return [Pool(m)]
    return None


def _walk(named: Sequence[Part], prefix: str = "", marks: bool = True) -> list[Op]:
    """Operations for parts applied one after the other (a batch norm after conv / linear folded)."""
    ops: list[Op] = []
    items = list(named)
    i = 0
    while i < len(items):
        name, m = items[i]
        mark_name = f"{prefix}{name}" if name else ""
        nxt = items[i + 1][1] if i + 1 < len(items) else None
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            op, folded = _linear_with_norm(m, nxt, nn.BatchNorm2d if isinstance(m, nn.Conv2d) else nn.BatchNorm1d)
            ops.append(op)
            if folded:
                i += 1
                mark_name = f"{prefix}{items[i][0]}"
        elif (elementary := _elementary(m, prefix)) is not None:
            ops.extend(elementary)
        elif isinstance(m, nn.Sequential):
            ops.extend(_walk(list(m.named_children()), f"{mark_name}." if mark_name else "", marks))
        else:
            ops.append(_block(m, mark_name))
        if marks and mark_name:
            ops.append(Mark(mark_name))
        i += 1
    return ops


def _block(m: nn.Module, name: str) -> Op:
    """A block declared by its model family (:func:`famegui.core.structure.register_block`)."""
    s = block_structure(m)
    if isinstance(s, ResidualBlock):
        return Residual(_walk(s.branch, marks=False), _walk(s.shortcut, marks=False), s.combine,
                        _walk(s.post, marks=False))
    if isinstance(s, NonNegative):
        return Pool(s.fn)
    if isinstance(s, Elementwise):
        return Pointwise(s.fn)
    raise ValueError(f"Excitation Backprop does not know the layer {name or '(root)'} ({type(m).__name__})")


def _build(module: nn.Module, prefix: str = "") -> tuple[list[Op], str]:
    """Operations of a network and how its output relates to the module's (``exact`` / ``direction``).

    ``prefix`` is the network's own name inside a bigger model (e.g. ``"embedder."``), so the
    readable layer names match the model's.
    """
    s = network_structure(module)
    if s is not None:
        return _walk(s.parts, prefix), s.relation
    if isinstance(module, nn.Sequential):
        return _walk(list(module.named_children()), prefix), "exact"
    known = ", ".join(declared_networks())
    raise ValueError(f"Excitation Backprop does not support {type(module).__name__} networks (supported: "
                     f"{known}, plain nn.Sequential)")


class EbpNet:
    """A network rebuilt for Excitation Backprop, checked against the model on the first forward pass."""

    def __init__(self, model: ModelWrapper) -> None:
        if model.is_scripted:
            raise ValueError(f"{model.name} is a TorchScript model: Excitation Backprop needs its layers")
        self.model = model
        self.ops, self.relation = _build(model.module)
        self.names = [op.name for op in self.ops if isinstance(op, Mark)]

    def forward(self, x: torch.Tensor, weigh: bool = False) -> tuple[torch.Tensor, Record, torch.Tensor]:
        """(output, record, normalised input); the output is checked against the model's."""
        rec = Record(weigh)
        z = self.model.normalize(x.detach().float())
        if weigh:
            z = z.requires_grad_(True)
        with torch.set_grad_enabled(weigh):
            out = run_seq(self.ops, z, rec)
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

    def default_layer(self, rec: Record, min_side: int = 12) -> str:
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

    def backward(self, r: torch.Tensor, rec: Record, layer: str, skip_last: bool = False) -> torch.Tensor:
        """MWP at ``layer`` (or ``"input"``) from probabilities ``r`` at the output (or at the input of
        the last layer when ``skip_last``): (K, C, h, w)."""
        ops = self.ops
        if skip_last:
            while ops and isinstance(ops[-1], Mark):
                ops = ops[:-1]
            ops = ops[:-1]
        stop = None if layer == "input" else layer
        try:
            out = back_seq(ops, r, rec, stop)
        except Reached as hit:
            return hit.r
        if stop is not None:
            raise ValueError(f"layer {layer!r} is not on the path of {self.model.name}; "
                             f"choose one of: input, {', '.join(self.names)}")
        return out


def last_linear(net: EbpNet) -> Linear:
    for op in reversed(net.ops):
        if isinstance(op, Mark):
            continue
        if isinstance(op, Linear) and op.kind == "linear":
            return op
        break
    raise ValueError(f"{net.model.name}: a class target needs a final fully connected layer for EBP")


def top_probabilities(children: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """P(child) of one top unit with ``weights`` (K, N): its excitatory contributions, normalised."""
    c = (weights * children).clamp(min=0)
    total = c.sum(dim=1, keepdim=True)
    return torch.where(total > 0, c / total.clamp_min(1e-30), torch.zeros_like(c))


@dataclass
class EbpMaps:
    maps: torch.Tensor  # (K, h, w) unnormalised MWP at the layer (summed over channels)
    layer: str
    shape: tuple[int, ...]  # feature shape at the layer (C, h, w)


def resolve_layer(net: EbpNet, rec: Record, layer: str | None) -> str:
    if not layer:
        return net.default_layer(rec)
    layer = (net.model.extras.get("stages") or {}).get(layer, layer)  # e.g. stage3 -> layer3 / body.N
    if layer != "input" and layer not in rec.shapes:
        raise ValueError(f"{net.model.name} has no EBP layer {layer!r}; choose one of: input, {', '.join(net.names)}")
    if layer != "input" and len(rec.shapes[layer]) != 3:
        raise ValueError(f"layer {layer!r} has no spatial map (shape {rec.shapes[layer]})")
    return layer


def ebp_run(model: ModelWrapper, x: torch.Tensor, *, top: str, signs: Sequence[float],
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
        r_hat = unit(reference_embedding).to(out.device)
        children = rec.child(out) if gains is not None else out
        skip_last = False
        weights = sign * r_hat
    else:
        fc = last_linear(net)
        children, _ = rec.store[id(fc)]
        skip_last = True
        weights = sign * fc.weight[class_index].view(1, -1)
    if gains is not None:
        rec.weigh_by(gains(out))
    layer = resolve_layer(net, rec, layer)
    resp = rec.response(children, k) if gains is not None else expand(children, k)
    p_top = top_probabilities(resp.flatten(1), weights).view(k, *children.shape[1:])
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
    return ebp_run(model, x, top=top, signs=(-1.0 if dual else 1.0,), reference_embedding=reference_embedding,
                    class_index=class_index, layer=layer)


def upsample(maps: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
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
    p_hat = unit(positive_embedding)
    n_hat = None if negative_embedding is None else unit(negative_embedding)
    signs = [1.0 if t == "similar" else -1.0 for t in targets]

    def gains(out: torch.Tensor) -> list[torch.Tensor]:
        a = F.normalize(out.flatten(1), dim=1)
        if n_hat is not None:
            g = (torch.linalg.vector_norm(a - n_hat.to(a.device), dim=1)
                 - torch.linalg.vector_norm(a - p_hat.to(a.device), dim=1)).clamp(min=0).sum()
            return [g if s > 0 else -g for s in signs]
        cos = (a * p_hat.to(a.device)).sum()
        return [cos if s > 0 else 1.0 - cos for s in signs]

    return ebp_run(model, x, top="verification", signs=signs, reference_embedding=positive_embedding,
                    layer=layer, gains=gains)
