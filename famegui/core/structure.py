"""How a network is wired, as rule-based methods (Excitation Backprop) need to know it.

Backpropagating relevance with rules needs more than autograd: which additions are
residual joins, which maps are linear with non-negative coefficients, where a
block's branches go. Torch's own layer types (conv, linear, batch norm, pooling,
activations, ``nn.Sequential``) are understood by the methods directly. Anything
else is *declared by the model family that builds it*, next to its loader, and
looked up by the module's type (its MRO), never by class name (the role of
zennit's canonizers):

- :func:`register_block` for a block type: its :class:`ResidualBlock` wiring, or
  a :class:`NonNegative` / :class:`Elementwise` map for a custom elementary module;
- :func:`register_network` for a whole-network type: its :class:`Network` layout.

A part is ``(name, thing)``: ``thing`` is an ``nn.Module``, a :class:`NonNegative`
or :class:`Elementwise` map, or a :class:`Nested` network; a non-empty name marks
a point whose map can be read (the model's own layer name).
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from torch import nn


@dataclass(frozen=True)
class NonNegative:
    """A linear map with non-negative coefficients: pooling, a global mean, flatten, strided subsampling."""

    fn: Callable[[torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class Elementwise:
    """One output per input (an activation, a normalisation by a positive number): relevance passes as is."""

    fn: Callable[[torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class Nested:
    """A whole network inside another one; its layer names get ``prefix`` (e.g. ``"embedder."``)."""

    module: nn.Module
    prefix: str


Part = tuple[str, nn.Module | NonNegative | Elementwise | Nested]


def plain_add(y: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    return y + s


@dataclass
class ResidualBlock:
    """``post(combine(branch(a), shortcut(a)))``; an empty shortcut is the identity."""

    branch: Sequence[Part]
    shortcut: Sequence[Part] = ()
    combine: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = plain_add
    post: Sequence[Part] = ()


@dataclass
class Network:
    """A network as parts applied one after the other.

    ``relation`` says how the parts' output relates to the module's: ``"exact"``
    (equal) or ``"direction"`` (equal up to a positive scale, e.g. a forward that
    divides by the norm at the end).
    """

    parts: Sequence[Part]
    relation: str = "exact"
    notes: dict = field(default_factory=dict)


# keys: a type, or "module:QualName" for a type of a library that is only imported when a model needs it
_BLOCKS: dict[type | str, Callable[[nn.Module], object]] = {}
_NETWORKS: dict[type | str, Callable[[nn.Module], Network]] = {}


def register_block(cls: type | str):
    """Decorator: ``fn(module) -> ResidualBlock | NonNegative | Elementwise`` declares blocks of type ``cls``
    (a type, or its ``"module:QualName"`` so that declaring does not import the library)."""
    def deco(fn):
        _BLOCKS[cls] = fn
        return fn
    return deco


def register_network(cls: type | str):
    """Decorator: ``fn(module) -> Network`` declares the layout of networks of type ``cls`` (a type or its
    ``"module:QualName"``)."""
    def deco(fn):
        _NETWORKS[cls] = fn
        return fn
    return deco


def _lookup(table: dict, module: nn.Module):
    for cls in type(module).__mro__:
        fn = table.get(cls) or table.get(f"{cls.__module__}:{cls.__qualname__}")
        if fn is not None:
            return fn(module)
    return None


def block_structure(module: nn.Module):
    """The declared wiring of ``module``'s type, or None."""
    return _lookup(_BLOCKS, module)


def network_structure(module: nn.Module) -> Network | None:
    """The declared layout of ``module``'s type, or None."""
    return _lookup(_NETWORKS, module)


def children(module: nn.Module, names: Sequence[str]) -> list[Part]:
    """``(name, child)`` for the listed attribute names that are set (a helper for declarations)."""
    return [(n, getattr(module, n)) for n in names if getattr(module, n, None) is not None]


def declared_networks() -> list[str]:
    """Names of the network types that have a declared layout (for error messages)."""
    return [cls.rsplit(":", 1)[-1] if isinstance(cls, str) else cls.__name__ for cls in _NETWORKS]
