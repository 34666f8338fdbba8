"""One interface for every network famegui explains.

A :class:`ModelWrapper` takes float RGB in [0, 1] shaped (B, 3, H, W). It folds
the model's own normalisation (mean/std, channel order) into its forward pass,
knows its input size, its task (``"classification"`` or ``"embedding"``), its
class names, and can list its layers with output shapes from one dummy forward
pass. :meth:`ModelWrapper.activation` runs the network only up to a chosen
layer: nothing after it is computed.
"""
from __future__ import annotations

import copy
import dataclasses
import threading
from dataclasses import dataclass, field

import torch
from torch import nn


class ModelLoadError(RuntimeError):
    """A model or its weights could not be loaded; the message is one line for the user."""


class _StopForward(Exception):
    """Raised from a hook to end a forward pass at the target layer."""


@dataclass(frozen=True)
class LayerInfo:
    name: str
    type: str
    shape: tuple[int, ...]  # output shape without the batch dimension, e.g. (512, 7, 7)

    @property
    def is_spatial(self) -> bool:
        return len(self.shape) == 3


@dataclass
class ModelWrapper:
    """A network behind famegui's common interface.

    ``module`` takes *normalised* input: ``(x01[:, order] - mean) / std``.
    ``threshold`` holds the verification decision threshold of an embedding
    model as a cosine similarity (``same`` if cos >= threshold); models whose
    native rule is a Euclidean distance (dlib) also set ``distance_threshold``.
    """

    name: str
    module: nn.Module
    input_size: tuple[int, int]  # (H, W)
    mean: tuple[float, float, float] = (0.0, 0.0, 0.0)
    std: tuple[float, float, float] = (1.0, 1.0, 1.0)
    task: str = "classification"  # or "embedding"
    class_names: list[str] | None = None
    channel_order: str = "RGB"  # "BGR" flips the channels before normalising
    weights_id: str = "random"  # sha256 of the weights file, or "random"/"torchvision-cache:..."
    threshold: float | None = None
    distance_threshold: float | None = None
    alignment: str | None = None  # "dlib150" / "arcface112" for face models, None otherwise
    default_layer: str | None = None
    source: str = ""  # how to load it again (zoo name, file path or entry point)
    extras: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.task not in ("classification", "embedding"):
            raise ValueError(f"unknown task {self.task!r}")
        self.module.eval()
        for p in self.module.parameters():
            p.requires_grad_(False)
        self._layers: list[LayerInfo] | None = None
        self._channels_last()

    def _channels_last(self) -> None:
        """Keep the convolution weights in channels-last layout: oneDNN's convolutions run faster that way
        on CPU (forward and backward at batch 1: dlib network 1.2-1.3x, VGG16 1.2x, ResNet50 1.06x; measured
        in the README). Values are the same up to float rounding; a TorchScript module keeps its layout."""
        self.set_layout(channels_last=True)

    def set_layout(self, channels_last: bool) -> None:
        """The memory layout of the 4-D weights (channels-last or PyTorch's default). Maps agree up to float
        rounding either way; the goldens of the test suite were written in the default layout."""
        if self.is_scripted:
            return
        fmt = torch.channels_last if channels_last else torch.contiguous_format
        try:
            self.module.to(memory_format=fmt)
        except (RuntimeError, TypeError):  # a module whose parameters cannot take that layout keeps its own
            self.module.to(memory_format=torch.contiguous_format)

    # ------------------------------------------------------------------ basics
    @property
    def device(self) -> torch.device:
        for p in self.module.parameters():
            return p.device
        for b in self.module.buffers():
            return b.device
        return torch.device("cpu")

    @property
    def is_scripted(self) -> bool:
        return isinstance(self.module, torch.jit.ScriptModule)

    def to(self, device: str | torch.device) -> ModelWrapper:
        self.module.to(device)
        return self

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """[0,1] RGB -> the network's own input space."""
        if self.channel_order == "BGR":
            x = x.flip(1)
        mean = torch.tensor(self.mean, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
        std = torch.tensor(self.std, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
        return (x - mean) / std

    def denormalize(self, z: torch.Tensor) -> torch.Tensor:
        """Inverse of :meth:`normalize`."""
        mean = torch.tensor(self.mean, dtype=z.dtype, device=z.device).view(1, 3, 1, 1)
        std = torch.tensor(self.std, dtype=z.dtype, device=z.device).view(1, 3, 1, 1)
        x = z * std + mean
        if self.channel_order == "BGR":
            x = x.flip(1)
        return x

    def _check_input(self, x: torch.Tensor) -> None:
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"{self.name} expects (B,3,H,W) RGB, got {tuple(x.shape)}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Network output (logits or embedding) for [0,1] RGB input."""
        self._check_input(x)
        return self.module(self.normalize(x))

    __call__ = forward

    # ------------------------------------------------------------------ layers
    def get_layer(self, name: str) -> nn.Module:
        modules = dict(self.module.named_modules())
        if name not in modules or name == "":
            raise KeyError(
                f"{self.name} has no layer {name!r}; try `famegui layers --model {self.source or self.name}`"
            )
        return modules[name]

    def layers(self) -> list[LayerInfo]:
        """All named layers with their output shapes, from one dummy forward pass."""
        if self._layers is not None:
            return self._layers
        if self.is_scripted:
            self._layers = []  # TorchScript modules accept no forward hooks: no layer access
            return self._layers
        shapes: dict[str, tuple[int, ...]] = {}
        types: dict[str, str] = {}
        order: list[str] = []
        hooks = []

        def make_hook(n: str):
            def hook(_m, _i, out):
                if isinstance(out, torch.Tensor) and n not in shapes:
                    shapes[n] = tuple(out.shape[1:])
                    order.append(n)
            return hook

        for n, m in self.module.named_modules():
            if n == "":
                continue
            types[n] = type(m).__name__
            hooks.append(m.register_forward_hook(make_hook(n)))
        try:
            h, w = self.input_size
            with torch.no_grad():
                self.forward(torch.full((1, 3, h, w), 0.5, device=self.device))
        finally:
            for hk in hooks:
                hk.remove()
        # keep the modules' own (definition) order; drop modules never called
        names = [n for n, _ in self.module.named_modules() if n in shapes]
        self._layers = [LayerInfo(n, types[n], shapes[n]) for n in names]
        return self._layers

    def spatial_layers(self) -> list[LayerInfo]:
        return [layer for layer in self.layers() if layer.is_spatial]

    def layer_info(self, name: str) -> LayerInfo:
        for layer in self.layers():
            if layer.name == name:
                return layer
        self.get_layer(name)  # raises a KeyError with a hint if the name is unknown
        raise KeyError(f"layer {name!r} of {self.name} produces no tensor output")

    def activation(self, x: torch.Tensor, layer: str, *, normalized_input: bool = False) -> torch.Tensor:
        """Output of ``layer`` for input ``x``; the forward pass stops right there."""
        self._check_input(x)
        if self.is_scripted:
            raise ValueError(f"{self.name} is a TorchScript model, whose layers cannot be observed; for feature-map "
                             "cells load it as a Python model (zoo name or package.module:callable)")
        target = self.get_layer(layer)
        box: list[torch.Tensor] = []
        owner = threading.get_ident()

        def hook(_m, _i, out):
            if threading.get_ident() != owner:
                return None  # a forward pass of another thread on the same module: not ours
            box.append(out)
            raise _StopForward

        handle = target.register_forward_hook(hook)
        try:
            self.module(x if normalized_input else self.normalize(x))
        except _StopForward:
            pass
        finally:
            handle.remove()
        if not box:
            raise RuntimeError(f"layer {layer!r} was not reached in the forward pass of {self.name}")
        out = box[0]
        if not isinstance(out, torch.Tensor):
            raise RuntimeError(f"layer {layer!r} of {self.name} does not output a tensor")
        return out

    def clone(self) -> ModelWrapper:
        """An independent copy (own module, own hooks) for use in another thread."""
        extras = {k: v for k, v in self.extras.items() if not k.startswith("_")}  # no caches, no helper nets
        return dataclasses.replace(self, module=copy.deepcopy(self.module), extras=extras)

    # ------------------------------------------------------------------ description
    def __repr__(self) -> str:
        """One line: a notebook shows the model, not its module tree and a thousand class names."""
        h, w = self.input_size
        outputs = f"{len(self.class_names)} classes" if self.class_names else self.task
        threshold = "" if self.threshold is None else f", threshold={self.threshold:.4f}"
        return (f"ModelWrapper({self.name!r}, {outputs}, input {h}x{w}, default layer "
                f"{self.default_layer!r}{threshold}, source={self.source or self.name!r})")

    def describe(self) -> dict:
        """What an export sidecar records about the model."""
        return {
            "name": self.name,
            "source": self.source or self.name,
            "weights": self.weights_id,
            "task": self.task,
            "input_size": list(self.input_size),
            "mean": list(self.mean),
            "std": list(self.std),
            "channel_order": self.channel_order,
            "alignment": self.alignment,
            "threshold": self.threshold,
            "distance_threshold": self.distance_threshold,
            # a module given in memory (famegui.wrap) or by an entry point: its class, and whether it was in memory
            **{k: self.extras[k] for k in ("in_memory", "module_class") if k in self.extras},
        }
