"""Face-recognition backbones: insightface ArcFace IResNets and AdaFace IR nets.

Two families of "improved ResNet" (IR) face embedders are supported, each in the
exact parameter layout of its public checkpoints, so the published weights load
without any key renaming:

* ``iresnet18`` / ``iresnet34`` / ``iresnet50`` / ``iresnet100`` -- the
  backbones of insightface's ``recognition/arcface_torch`` trainer
  (https://github.com/deepinsight/insightface). Their checkpoints are plain state
  dicts, usually called ``backbone.pth``. The network takes RGB, scaled to
  [-1, 1] (mean 0.5, std 0.5), and returns a 512-D embedding (not normalised).
* ``adaface_ir18`` / ``adaface_ir50`` / ``adaface_ir101`` -- the backbones of
  AdaFace (https://github.com/mk-minchul/AdaFace, file ``net.py``). Their
  checkpoints are PyTorch-Lightning ``.ckpt`` files whose ``state_dict`` holds
  the backbone under ``model.`` and the training head under ``head.``; the head
  is ignored. AdaFace was trained on **BGR** input scaled to [-1, 1]; the
  wrapper flips the channels for you. The original forward returns
  ``(embedding / norm, norm)``; ours returns only the L2-normalised embedding
  (``forward_with_norm`` gives both).

Where to get real weights
-------------------------
famegui ships no face weights. For ArcFace, look at the "Model Zoo" section of
the README in insightface's ``recognition/arcface_torch`` folder: it links
trained backbones (for instance ResNet-50 or ResNet-100 trained on MS1MV3 or
Glint360K); each download contains a ``backbone.pth`` -- pass it with
``--model iresnet50`` (or the depth you downloaded). For AdaFace, the
"Pretrained Models" table of the AdaFace README links ``.ckpt`` files for R18,
R50 and R100 trained on several data sets; use ``adaface_ir18``,
``adaface_ir50`` or ``adaface_ir101`` (the R100 models are ``adaface_ir101``).

The verification threshold set here is only a default; an EER threshold
computed from a labelled pair list overrides it.
"""
from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from famegui.core.structure import Network, NonNegative, ResidualBlock, children, register_block, register_network
from famegui.models.weights import UnsafeWeightsError, read_weights_file
from famegui.models.wrapper import ModelLoadError, ModelWrapper
from famegui.paths import file_sha256

__all__ = [
    "FACE_ARCHS",
    "DEFAULT_FACE_THRESHOLD",
    "IBasicBlock",
    "IResNet",
    "AdaFaceBlock",
    "AdaFaceIR",
    "build_face_network",
    "wrap_face_network",
    "load_face_checkpoint",
]

# Default cosine-similarity threshold ("same person" if cos >= threshold).
# Neither insightface nor AdaFace publishes a fixed operating threshold (both
# pick it by cross-validation on each benchmark). The deepface library
# (serengil/deepface, deepface/config/threshold.py) ships a cosine *distance*
# of 0.68 for its ArcFace ResNet-100 port, i.e. a cosine similarity of 0.32; we
# round that to 0.30 and use it for both families. This is a rough default for
# LFW-like, well-aligned faces only: the EER threshold computed from the user's
# pair list replaces it.
DEFAULT_FACE_THRESHOLD = 0.30


@dataclass(frozen=True)
class _Spec:
    family: str  # "arcface" or "adaface"
    blocks: tuple[int, int, int, int]
    title: str


_SPECS: dict[str, _Spec] = {
    "iresnet18": _Spec("arcface", (2, 2, 2, 2), "insightface arcface_torch IResNet-18"),
    "iresnet34": _Spec("arcface", (3, 4, 6, 3), "insightface arcface_torch IResNet-34"),
    "iresnet50": _Spec("arcface", (3, 4, 14, 3), "insightface arcface_torch IResNet-50"),
    "iresnet100": _Spec("arcface", (3, 13, 30, 3), "insightface arcface_torch IResNet-100"),
    "adaface_ir18": _Spec("adaface", (2, 2, 2, 2), "AdaFace IR-18"),
    "adaface_ir50": _Spec("adaface", (3, 4, 14, 3), "AdaFace IR-50"),
    "adaface_ir101": _Spec("adaface", (3, 13, 30, 3), "AdaFace IR-101"),
}

#: The face architectures famegui can build, with a one-line description each.
FACE_ARCHS: dict[str, str] = {name: spec.title for name, spec in _SPECS.items()}

_WHERE = {
    "arcface": (
        "get a real backbone.pth from the model zoo of insightface's recognition/arcface_torch "
        "(github.com/deepinsight/insightface)"
    ),
    "adaface": (
        "get a real .ckpt from the 'Pretrained Models' table of the AdaFace README "
        "(github.com/mk-minchul/AdaFace)"
    ),
}

_STAGE_WIDTHS = (64, 128, 256, 512)
_EMBEDDING = 512


def _conv3x3(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, kernel_size=3, stride=stride, padding=1, bias=False)


# ====================================================================== ArcFace
class IBasicBlock(nn.Module):
    """Pre-activation IR block of arcface_torch.

    BN -> 3x3 conv -> BN -> PReLU -> 3x3 conv (carries the stride) -> BN, plus
    the identity or a 1x1-conv+BN ``downsample`` shortcut.
    """

    def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(cin, eps=1e-5)
        self.conv1 = _conv3x3(cin, cout)
        self.bn2 = nn.BatchNorm2d(cout, eps=1e-5)
        self.prelu = nn.PReLU(cout)
        self.conv2 = _conv3x3(cout, cout, stride)
        self.bn3 = nn.BatchNorm2d(cout, eps=1e-5)
        self.downsample: nn.Module | None = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(
                nn.Conv2d(cin, cout, kernel_size=1, stride=stride, bias=False),
                nn.BatchNorm2d(cout, eps=1e-5),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.bn3(self.conv2(self.prelu(self.bn2(self.conv1(self.bn1(x))))))
        shortcut = x if self.downsample is None else self.downsample(x)
        return y + shortcut  # not in place: hooks may hold on to bn3's output


class IResNet(nn.Module):
    """arcface_torch IResNet for 112x112 faces; returns the 512-D (unnormalised) embedding."""

    def __init__(self, blocks: tuple[int, int, int, int], num_features: int = _EMBEDDING) -> None:
        super().__init__()
        self.conv1 = _conv3x3(3, 64)
        self.bn1 = nn.BatchNorm2d(64, eps=1e-5)
        self.prelu = nn.PReLU(64)
        cin = 64
        for i, (n, width) in enumerate(zip(blocks, _STAGE_WIDTHS), start=1):
            # every stage halves the resolution in its first block: 112 -> 56 -> 28 -> 14 -> 7
            stage = [IBasicBlock(cin, width, stride=2)]
            stage += [IBasicBlock(width, width) for _ in range(n - 1)]
            self.add_module(f"layer{i}", nn.Sequential(*stage))
            cin = width
        self.bn2 = nn.BatchNorm2d(512, eps=1e-5)
        self.dropout = nn.Dropout(p=0.0)  # arcface_torch's default; a no-op in eval mode anyway
        self.fc = nn.Linear(512 * 7 * 7, num_features)
        self.features = nn.BatchNorm1d(num_features, eps=1e-5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.prelu(self.bn1(self.conv1(x)))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        x = self.bn2(x)
        x = self.dropout(torch.flatten(x, 1))
        return self.features(self.fc(x))


# ====================================================================== AdaFace
class _Flatten(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.reshape(x.shape[0], -1)


class AdaFaceBlock(nn.Module):
    """AdaFace ``BasicBlockIR``: ``res_layer`` (BN, conv, BN, PReLU, conv, BN) + ``shortcut_layer``.

    The shortcut is a parameter-free ``MaxPool2d(1, stride)`` (plain subsampling)
    when the width does not change, else a strided 1x1 conv + BN.
    """

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        if cin == cout:
            self.shortcut_layer: nn.Module = nn.MaxPool2d(1, stride)
        else:
            self.shortcut_layer = nn.Sequential(
                nn.Conv2d(cin, cout, kernel_size=1, stride=stride, bias=False),
                nn.BatchNorm2d(cout),
            )
        self.res_layer = nn.Sequential(
            nn.BatchNorm2d(cin),
            _conv3x3(cin, cout),
            nn.BatchNorm2d(cout),
            nn.PReLU(cout),
            _conv3x3(cout, cout, stride),
            nn.BatchNorm2d(cout),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.res_layer(x) + self.shortcut_layer(x)


class AdaFaceIR(nn.Module):
    """AdaFace IR backbone (112x112 BGR input in [-1, 1]); returns the L2-normalised 512-D embedding.

    ``body`` is one flat ``Sequential`` as in the original, so its blocks are
    named ``body.0`` ... ``body.N``; :attr:`stage_ends` names the last block of
    each of the four resolution stages (56, 28, 14, 7 pixels).
    """

    def __init__(self, blocks: tuple[int, int, int, int], num_features: int = _EMBEDDING) -> None:
        super().__init__()
        self.input_layer = nn.Sequential(_conv3x3(3, 64), nn.BatchNorm2d(64), nn.PReLU(64))
        units: list[nn.Module] = []
        ends: list[str] = []
        cin = 64
        for n, width in zip(blocks, _STAGE_WIDTHS):
            units.append(AdaFaceBlock(cin, width, 2))
            units += [AdaFaceBlock(width, width, 1) for _ in range(n - 1)]
            ends.append(f"body.{len(units) - 1}")
            cin = width
        self.body = nn.Sequential(*units)
        self.output_layer = nn.Sequential(
            nn.BatchNorm2d(512),
            nn.Dropout(0.4),  # no-op in eval mode
            _Flatten(),
            nn.Linear(512 * 7 * 7, num_features),
            nn.BatchNorm1d(num_features, affine=False),
        )
        self.stage_ends: tuple[str, ...] = tuple(ends)

    def forward_with_norm(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """What the original ``forward`` returns: (unit-length embedding, its norm before scaling)."""
        z = self.output_layer(self.body(self.input_layer(x)))
        norm = torch.linalg.vector_norm(z, ord=2, dim=1, keepdim=True)
        return z / norm, norm

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_with_norm(x)[0]


# ====================================================================== building
def _spec(arch: str) -> _Spec:
    key = str(arch).strip().lower()
    if key not in _SPECS:
        raise ModelLoadError(f"unknown face architecture {arch!r}; choose one of {', '.join(_SPECS)}")
    return _SPECS[key]


def build_face_network(arch: str) -> nn.Module:
    """A randomly initialised face backbone ``arch`` (a key of :data:`FACE_ARCHS`)."""
    spec = _spec(arch)
    if spec.family == "arcface":
        return IResNet(spec.blocks)
    return AdaFaceIR(spec.blocks)


def _stage_names(module: nn.Module) -> dict[str, str]:
    if isinstance(module, AdaFaceIR):
        return {f"stage{i}": name for i, name in enumerate(module.stage_ends, start=1)}
    return {f"stage{i}": f"layer{i}" for i in range(1, 5)}


def wrap_face_network(arch: str, module: nn.Module | None = None, weights_id: str = "random") -> ModelWrapper:
    """``module`` (default: a random ``arch`` network) behind famegui's :class:`ModelWrapper`."""
    spec = _spec(arch)
    if module is None:
        module = build_face_network(arch)
    name = str(arch).strip().lower()
    stages = _stage_names(module)
    return ModelWrapper(
        name=name,
        module=module,
        input_size=(112, 112),
        mean=(0.5, 0.5, 0.5),
        std=(0.5, 0.5, 0.5),
        task="embedding",
        channel_order="BGR" if spec.family == "adaface" else "RGB",
        weights_id=weights_id,
        threshold=DEFAULT_FACE_THRESHOLD,
        alignment="arcface112",
        default_layer=stages["stage4"],
        source=name,
        extras={
            "family": spec.family,
            "stages": stages,  # last block of each resolution stage (56, 28, 14, 7 px)
            "threshold_is_default": True,  # an EER threshold from a pair list should replace it
        },
    )


# ====================================================================== loading
def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _tensor_dict(obj: object) -> dict[str, torch.Tensor] | None:
    """The state dict inside a loaded checkpoint, or None."""
    if not isinstance(obj, Mapping):
        return None
    # PyTorch-Lightning / generic training checkpoints, arcface_torch's training checkpoint
    for key in ("state_dict", "state_dict_backbone", "model_state_dict"):
        inner = obj.get(key)
        if isinstance(inner, Mapping):
            obj = inner
            break
    sd = {str(k): v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    return sd or None


def _strip_prefixes(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Drop a training head (``head.*``) and any prefix every remaining key shares."""
    sd = {k: v for k, v in sd.items() if not k.startswith("head.")}
    changed = True
    while changed and sd:
        changed = False
        for prefix in ("model.", "module.", "backbone.", "_orig_mod."):
            if all(k.startswith(prefix) for k in sd):
                sd = {k[len(prefix):]: v for k, v in sd.items()}
                changed = True
    return sd


def _count_indices(sd: Mapping[str, torch.Tensor], prefix: str) -> int:
    pat = re.compile(re.escape(prefix) + r"(\d+)\.")
    idx = {int(m.group(1)) for k in sd if (m := pat.match(k))}
    return max(idx) + 1 if idx else 0


def _guess_layout(sd: Mapping[str, torch.Tensor]) -> tuple[str | None, str]:
    """(famegui arch name or None, a short description of what the file looks like)."""
    if "input_layer.0.weight" in sd and any(k.startswith("body.") for k in sd):
        n = _count_indices(sd, "body.")
        if any(".se_block." in k for k in sd):
            return None, f"an AdaFace IR-SE checkpoint with {n} blocks (SE variants are not supported)"
        for name, spec in _SPECS.items():
            if spec.family == "adaface" and sum(spec.blocks) == n:
                return name, f"an AdaFace checkpoint ({spec.title})"
        return None, f"an AdaFace checkpoint with {n} blocks (not a supported depth)"
    if "conv1.weight" in sd and "layer1.0.conv1.weight" in sd:
        counts = tuple(_count_indices(sd, f"layer{i}.") for i in range(1, 5))
        if "prelu.weight" in sd or "features.running_mean" in sd:
            for name, spec in _SPECS.items():
                if spec.family == "arcface" and spec.blocks == counts:
                    return name, f"an arcface_torch checkpoint ({spec.title})"
            return None, f"an arcface_torch IResNet with blocks {list(counts)} (not a supported depth)"
        if sd["conv1.weight"].ndim == 4 and sd["conv1.weight"].shape[-1] == 7:
            kind = {(2, 2, 2, 2): "ResNet-18", (3, 4, 6, 3): "ResNet-34/50",
                    (3, 4, 23, 3): "ResNet-101", (3, 8, 36, 3): "ResNet-152"}.get(counts, "ResNet")
            return None, f"a torchvision-style ImageNet {kind} classifier, not a face-recognition backbone"
        return None, "a ResNet of unknown kind"
    first = next(iter(sd), "")
    return None, f"an unrecognised layout (first key {first!r})"


def _hint(guess: str | None, desc: str) -> str:
    return f"it looks like {desc}" + (f"; use {guess}" if guess else "")


def _read_checkpoint(p: Path, spec: _Spec):
    """The object in a weights file (``.safetensors``, or torch with ``weights_only``: no code runs)."""
    try:
        return read_weights_file(p)
    except UnsafeWeightsError as e:
        raise ModelLoadError(f"{e} (expected {spec.title} weights)") from None
    except ModelLoadError:
        raise ModelLoadError(
            f"{p.name} is not a PyTorch checkpoint (expected {spec.title} weights); {_WHERE[spec.family]}"
        ) from None


def load_face_checkpoint(arch: str, path: str | os.PathLike) -> ModelWrapper:
    """Load face weights from ``path`` into architecture ``arch``; every failure is a one-line ModelLoadError."""
    spec = _spec(arch)
    name = str(arch).strip().lower()
    p = Path(path).expanduser()
    if not p.is_file():
        raise ModelLoadError(f"{name} weights not found: {p}; {_WHERE[spec.family]}")
    obj = _read_checkpoint(p, spec)
    sd = _tensor_dict(obj)
    if sd is None:
        raise ModelLoadError(f"{p.name} holds no weight tensors (expected {spec.title} weights)")
    sd = _strip_prefixes(sd)
    guess, desc = _guess_layout(sd)
    if guess is not None and guess != name:
        raise ModelLoadError(f"{p.name} does not fit {name} ({spec.title}): {_hint(guess, desc)}")

    # built on the meta device: no memory and no time spent on a random init that is overwritten
    with torch.device("meta"):
        module = build_face_network(name)
    expected = module.state_dict()
    missing = [k for k in expected if k not in sd and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in sd if k not in expected]
    wrong = [k for k in expected if k in sd and tuple(sd[k].shape) != tuple(expected[k].shape)]
    if missing or unexpected or wrong:
        if wrong:
            k = wrong[0]
            example = f"e.g. {k} is {tuple(sd[k].shape)}, expected {tuple(expected[k].shape)}"
        elif missing:
            example = f"e.g. {missing[0]} is missing"
        else:
            example = f"e.g. {unexpected[0]} is unexpected"
        raise ModelLoadError(_one_line(
            f"{p.name} does not fit {name} ({spec.title}): {len(missing)} missing, {len(unexpected)} "
            f"unexpected and {len(wrong)} wrongly shaped tensors, {example}; {_hint(guess, desc)}"
        ))
    full: dict[str, torch.Tensor] = {}
    for k, ref in expected.items():
        if k in sd:  # float32 on the CPU, whatever precision the file was saved in
            v = sd[k]
            full[k] = v.to(torch.float32) if v.is_floating_point() else v.to(ref.dtype)
        else:  # only BatchNorm's num_batches_tracked counters can get here; unused in eval mode
            full[k] = torch.zeros((), dtype=ref.dtype)
    try:
        module.load_state_dict(full, strict=True, assign=True)
    except Exception as e:  # noqa: BLE001 - anything else that does not fit
        raise ModelLoadError(_one_line(f"{p.name} could not be loaded into {name}: {e}"[:300])) from None
    return wrap_face_network(name, module, file_sha256(p))


# ----------------------------------------------------------------------------- structure for rule-based methods
register_block(_Flatten)(lambda m: NonNegative(lambda t: t.reshape(t.shape[0], -1)))


@register_block(IBasicBlock)
def _ibasic_structure(m: IBasicBlock) -> ResidualBlock:
    branch = children(m, ("bn1", "conv1", "bn2", "prelu", "conv2", "bn3"))
    return ResidualBlock(branch, [] if m.downsample is None else [("", m.downsample)])


@register_block(AdaFaceBlock)
def _adaface_block_structure(m: AdaFaceBlock) -> ResidualBlock:
    return ResidualBlock([("", m.res_layer)], [("", m.shortcut_layer)])


@register_network(IResNet)
def _iresnet_structure(m: IResNet) -> Network:
    # dropout is left out: a no-op in eval mode
    parts = children(m, ("conv1", "bn1", "prelu", "layer1", "layer2", "layer3", "layer4", "bn2"))
    return Network(parts + [("", NonNegative(lambda t: torch.flatten(t, 1)))] + children(m, ("fc", "features")))


@register_network(AdaFaceIR)
def _adaface_structure(m: AdaFaceIR) -> Network:
    # its forward divides by the norm at the end: the rebuilt output matches in direction
    return Network(children(m, ("input_layer", "body", "output_layer")), relation="direction")
