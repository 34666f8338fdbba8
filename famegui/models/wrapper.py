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


LAYOUTS = ("chw", "hwc", "tokens")  # how a layer's output holds a grid of cells
MAX_PREFIX_TOKENS = 8  # class, distillation and register tokens before a transformer's patch tokens


@dataclass(frozen=True)
class LayerInfo:
    """A layer and its output. ``shape`` is the feature map's (C, H, W) when the output is a grid of cells,
    whatever its layout (``layout``): ``chw`` (a CNN), ``hwc`` (channels last, e.g. Swin stages) or
    ``tokens`` ((N, C) patch tokens of a vision transformer, after ``prefix`` class/register tokens);
    otherwise the output shape itself (``layout`` None). ``raw``: the output shape without the batch
    dimension, as the layer gives it."""

    name: str
    type: str
    shape: tuple[int, ...]  # (C, H, W) for a grid of cells, else the output shape without the batch dimension
    layout: str | None = "chw"
    prefix: int = 0  # tokens before the patch grid (layout "tokens")
    raw: tuple[int, ...] = ()

    @property
    def is_spatial(self) -> bool:
        return self.layout in LAYOUTS and len(self.shape) == 3

    @property
    def layout_note(self) -> str:
        """What the layer's output is when it is not a plain (C, H, W) map: ``tokens 197x192: 14x14 +1 token``,
        ``channels last 56x56x96``; else empty."""
        raw = "x".join(map(str, self.raw or self.shape))
        if self.layout == "tokens":
            return f"tokens {raw}: {self.grid_text}"
        if self.layout == "hwc":
            return f"channels last {raw}"
        return ""

    @property
    def grid_text(self) -> str:
        """``14x14`` (``+1 token`` for a transformer's class token), or the plain shape."""
        if not self.is_spatial:
            return "x".join(map(str, self.shape))
        text = f"{self.shape[1]}x{self.shape[2]}"
        return text + (f" +{self.prefix} token{'s' if self.prefix > 1 else ''}" if self.prefix else "")


def _near(ratio: float, aspect: float) -> bool:
    return aspect / 1.5 <= ratio <= aspect * 1.5


def grid_layout(raw: tuple[int, ...], input_size: tuple[int, int]) -> tuple[str | None, tuple[int, ...], int]:
    """(layout, (C, H, W) or ``raw``, prefix tokens) of a layer output of shape ``raw`` (no batch dimension),
    read from the shape and the input's aspect ratio alone (no class names): a (C, H, W) map whose H:W is the
    input's; an (H, W, C) map (channels last) whose H:W is; (N, C) tokens whose N is a few prefix tokens plus
    a grid with the input's aspect ratio."""
    aspect = input_size[0] / input_size[1]
    if len(raw) == 3:
        a, b, c = raw
        if _near(b / c, aspect):
            return "chw", tuple(raw), 0
        if _near(a / b, aspect):
            return "hwc", (c, a, b), 0
        return None, tuple(raw), 0
    if len(raw) == 2:
        n, c = raw
        for k in range(0, MAX_PREFIX_TOKENS + 1):
            cells = n - k
            if cells < 4:
                break
            gh = round((cells * aspect) ** 0.5)
            if gh > 0 and cells % gh == 0 and abs(gh / (cells // gh) / aspect - 1) <= 0.1:
                return "tokens", (c, gh, cells // gh), k
        return None, tuple(raw), 0
    return None, tuple(raw), 0


def to_grid(out: torch.Tensor, info: LayerInfo) -> torch.Tensor:
    """A layer's output as a (B, C, H, W) feature map, whatever its layout (``info.layout``)."""
    if info.layout == "hwc":
        return out.permute(0, 3, 1, 2)
    if info.layout == "tokens":
        c, h, w = info.shape
        return out[:, info.prefix:, :].transpose(1, 2).reshape(out.shape[0], c, h, w)
    return out


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

        batch: dict[str, bool] = {}

        def make_hook(n: str):
            def hook(_m, _i, out):
                if isinstance(out, torch.Tensor) and n not in shapes:
                    shapes[n] = tuple(out.shape[1:])
                    batch[n] = out.ndim > 0 and out.shape[0] == 1  # per image (not Swin's windows)
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
        self._layers = []
        for n in names:
            layout, shape, prefix = grid_layout(shapes[n], self.input_size) if batch[n] else (None, shapes[n], 0)
            self._layers.append(LayerInfo(n, types[n], shape, layout, prefix, shapes[n]))
        self._by_name = {info.name: info for info in self._layers}
        return self._layers

    def spatial_layers(self) -> list[LayerInfo]:
        return [layer for layer in self.layers() if layer.is_spatial]

    def layer_info(self, name: str) -> LayerInfo:
        self.layers()
        found = getattr(self, "_by_name", {}).get(name)
        if found is not None:
            return found
        for layer in self.layers():
            if layer.name == name:
                return layer
        self.get_layer(name)  # raises a KeyError with a hint if the name is unknown
        raise KeyError(f"layer {name!r} of {self.name} produces no tensor output")

    def activation(self, x: torch.Tensor, layer: str, *, normalized_input: bool = False,
                   raw: bool = False) -> torch.Tensor:
        """Output of ``layer`` for input ``x``; the forward pass stops right there. A grid of cells comes as a
        (B, C, H, W) feature map whatever the layer's layout (transformer tokens, channels last), unless
        ``raw``."""
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
        return out if raw else to_grid(out, self.layer_info(layer))

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
