"""The model zoo and loaders: every network comes back as a :class:`ModelWrapper`.

``load_model(spec, weights)`` accepts
- a zoo name: torchvision classifiers (``resnet18`` ...), ``dlib-resnet`` (embedded
  face model), ArcFace ``iresnet*`` and AdaFace ``adaface_ir*`` checkpoints;
- a TorchScript file (``.pt``/``.ts``/``.torchscript`` saved with ``torch.jit.save``);
- a Python entry point ``package.module:callable`` returning an ``nn.Module``
  (or a ready :class:`ModelWrapper`).

Weights: a file (a state dict or a checkpoint dict holding one), ``"random"``
for an untrained network, or ``None`` to use torchvision's cache when present.
Missing weights give a one-line :class:`ModelLoadError` naming the file expected.
"""
from __future__ import annotations

import importlib
import os
import sys
import zipfile
from pathlib import Path

import torch
from torch import nn

from ..paths import file_sha256
from .wrapper import ModelLoadError, ModelWrapper

TORCHVISION_CLASSIFIERS = (
    "resnet18", "resnet34", "resnet50", "resnet101", "resnet152",
    "vgg11", "vgg13", "vgg16", "vgg19", "vgg16_bn", "vgg19_bn",
    "densenet121", "densenet169", "densenet201",
    "convnext_tiny", "convnext_small",
    "mobilenet_v2", "mobilenet_v3_large", "mobilenet_v3_small",
    "efficientnet_b0", "efficientnet_b1",
    "regnet_y_400mf", "shufflenet_v2_x1_0", "squeezenet1_1", "googlenet", "alexnet",
)
DEFAULT_LAYERS = {
    "resnet": "layer4", "vgg": "features.29", "densenet": "features.denseblock4",
    "convnext": "features.7", "mobilenet": "features.12", "efficientnet": "features.7",
}
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
EMBEDDED_DEFAULT = "dlib-resnet"


def zoo_names() -> list[str]:
    """Every name ``load_model`` understands without a path."""
    from .iresnet import FACE_ARCHS

    return [EMBEDDED_DEFAULT, *FACE_ARCHS, *TORCHVISION_CLASSIFIERS]


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """A state dict from a file holding either the dict itself or a checkpoint dict."""
    if not path.exists():
        raise ModelLoadError(f"weights file not found: {path}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except MemoryError:
        raise ModelLoadError(f"not enough memory to load {path}") from None
    except Exception as e:  # torch.load raises many types on foreign files
        first = str(e).strip().splitlines()[0][:120] if str(e).strip() else type(e).__name__
        raise ModelLoadError(f"{path} is not a PyTorch weights file ({first})") from None
    if isinstance(obj, nn.Module):
        obj = obj.state_dict()
    if isinstance(obj, dict):
        for key in ("state_dict", "model_state_dict", "model", "net", "params"):
            inner = obj.get(key)
            if isinstance(inner, dict) and inner and all(isinstance(v, torch.Tensor) for v in inner.values()):
                obj = inner
                break
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ModelLoadError(f"{path} holds no state dict "
                             "(expected a dict of tensors or a checkpoint with 'state_dict')")
    prefixes = ("module.", "model.")
    for pre in prefixes:
        if all(k.startswith(pre) for k in obj):
            obj = {k[len(pre):]: v for k, v in obj.items()}
    return obj


def load_state_dict_strict(module: nn.Module, state: dict[str, torch.Tensor], what: str, source: str) -> None:
    """``load_state_dict`` with a one-line error when keys or shapes do not fit."""
    own = module.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    wrong = [k for k in own if k in state and tuple(own[k].shape) != tuple(state[k].shape)]
    if missing or unexpected or wrong:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing (e.g. {missing[0]})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected (e.g. {unexpected[0]})")
        if wrong:
            k = wrong[0]
            parts.append(f"{len(wrong)} of wrong shape (e.g. {k}: file {tuple(state[k].shape)}, "
                         f"model {tuple(own[k].shape)})")
        raise ModelLoadError(f"{source} does not fit {what}: " + "; ".join(parts) + " keys")
    module.load_state_dict(state, strict=True)


def _classifier_out_features(state: dict[str, torch.Tensor], module: nn.Module) -> int | None:
    """Number of classes in a state dict whose last layer differs from the default model."""
    own = module.state_dict()
    for k in reversed(list(own)):
        if k.endswith("weight") and own[k].ndim == 2:
            if k in state and state[k].shape[0] != own[k].shape[0] and state[k].shape[1] == own[k].shape[1]:
                return int(state[k].shape[0])
            return None
    return None


def torchvision_cache_file(name: str) -> Path | None:
    """Where torchvision's downloader would keep ``name``'s default weights."""
    import torchvision

    try:
        w = torchvision.models.get_model_weights(name).DEFAULT
    except (ValueError, KeyError):
        return None
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(w.url)


def _load_torchvision(name: str, weights: str | None) -> ModelWrapper:
    import torchvision

    wenum = torchvision.models.get_model_weights(name).DEFAULT
    meta_tf = wenum.transforms()
    crop = int(meta_tf.crop_size[0])
    resize_size = int(meta_tf.resize_size[0])
    classes = list(wenum.meta.get("categories") or [])
    if weights is None:
        cached = torchvision_cache_file(name)
        if cached is None or not cached.exists():
            raise ModelLoadError(
                f"no weights for {name}: expected {cached} (torchvision's cache; download {wenum.url} "
                f"on a machine with internet and copy it there), or pass --weights FILE "
                f"(or --weights random for an untrained network)"
            )
        weights = str(cached)
    if weights == "random":
        with torch.random.fork_rng(devices=[]):  # seeded, without touching the caller's RNG
            torch.manual_seed(0)
            module = torchvision.models.get_model(name, weights=None)
        weights_id = "random"
    else:
        module = torchvision.models.get_model(name, weights=None)
        path = Path(weights)
        state = _read_state_dict(path)
        n = _classifier_out_features(state, module)
        if n is not None:
            module = torchvision.models.get_model(name, weights=None, num_classes=n)
            classes = [f"class {i}" for i in range(n)]
        load_state_dict_strict(module, state, name, str(path))
        weights_id = file_sha256(path)
    family = next((k for k in DEFAULT_LAYERS if name.startswith(k)), None)
    wrapper = ModelWrapper(
        name=name, module=module, input_size=(crop, crop), mean=tuple(meta_tf.mean), std=tuple(meta_tf.std),
        task="classification", class_names=classes or None, weights_id=weights_id,
        default_layer=DEFAULT_LAYERS.get(family) if family else None, source=name,
        extras={"resize_size": resize_size, "crop_ratio": crop / resize_size},
    )
    if wrapper.default_layer:
        try:
            wrapper.get_layer(wrapper.default_layer)
        except KeyError:
            wrapper.default_layer = None
    if wrapper.default_layer is None:
        spatial = wrapper.spatial_layers()
        wrapper.default_layer = spatial[-1].name if spatial else None
    return wrapper


def looks_like_torchscript(path: Path) -> bool:
    if path.suffix.lower() in (".ts", ".torchscript", ".ptc"):
        return True
    try:
        with zipfile.ZipFile(path) as z:
            return any(n.endswith("/code/__torch__.py") or "/code/" in n for n in z.namelist()[:200])
    except (zipfile.BadZipFile, OSError):
        return False


def _load_torchscript(path: Path, weights: str | None, options: dict) -> ModelWrapper:
    try:
        module = torch.jit.load(str(path), map_location="cpu")
    except Exception as e:  # torch raises many types here
        first = str(e).strip().splitlines()[0][:120] if str(e).strip() else type(e).__name__
        raise ModelLoadError(f"{path} is not a TorchScript model ({first})") from None
    if weights not in (None, "random"):
        state = _read_state_dict(Path(weights))
        load_state_dict_strict(module, state, str(path), weights)
    return _wrap_generic(module, path.stem, str(path), file_sha256(path), options)


def _load_entry_point(spec: str, weights: str | None, options: dict) -> ModelWrapper:
    mod_name, _, attr = spec.partition(":")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        mod = importlib.import_module(mod_name)
    except Exception as e:
        raise ModelLoadError(f"cannot import {mod_name!r} for {spec}: {type(e).__name__}: {e}") from None
    fn = mod
    for part in attr.split("."):
        fn = getattr(fn, part, None)
        if fn is None:
            raise ModelLoadError(f"{mod_name} has no attribute {attr!r}")
    try:
        obj = fn() if callable(fn) and not isinstance(fn, nn.Module) else fn
    except Exception as e:
        raise ModelLoadError(f"{spec} failed: {type(e).__name__}: {e}") from None
    if isinstance(obj, ModelWrapper):
        return obj
    if not isinstance(obj, nn.Module):
        raise ModelLoadError(f"{spec} returned {type(obj).__name__}, not a torch.nn.Module")
    weights_id = "entry-point"
    if weights not in (None, "random"):
        state = _read_state_dict(Path(weights))
        load_state_dict_strict(obj, state, spec, weights)
        weights_id = file_sha256(weights)
    return _wrap_generic(obj, spec, spec, weights_id, options)


def _wrap_generic(module: nn.Module, name: str, source: str, weights_id: str, options: dict) -> ModelWrapper:
    size = options.get("input_size") or 224
    size = (size, size) if isinstance(size, int) else tuple(size)
    norm = options.get("normalize", "imagenet")
    mean, std = {"imagenet": (IMAGENET_MEAN, IMAGENET_STD), "none": ((0.0,) * 3, (1.0,) * 3),
                 "half": ((0.5,) * 3, (0.5,) * 3)}[norm]
    module.eval()
    with torch.no_grad():
        try:
            out = module((torch.full((1, 3, *size), 0.5) - torch.tensor(mean).view(1, 3, 1, 1))
                         / torch.tensor(std).view(1, 3, 1, 1))
        except Exception as e:
            raise ModelLoadError(f"{source} fails on a 1x3x{size[0]}x{size[1]} input "
                                 f"({type(e).__name__}); set --input-size") from None
    if isinstance(out, (tuple, list)):
        raise ModelLoadError(f"{source} returns a {type(out).__name__}; famegui needs one output tensor")
    looks_like_classes = out.ndim == 2 and out.shape[1] in (1000, 10, 100)
    task = options.get("task") or ("classification" if looks_like_classes else "embedding")
    classes = None
    if task == "classification" and out.shape[1] == 1000:
        import torchvision

        classes = list(torchvision.models.ResNet18_Weights.DEFAULT.meta["categories"])
    elif task == "classification":
        classes = [f"class {i}" for i in range(out.shape[1])]
    w = ModelWrapper(name=name, module=module, input_size=size, mean=mean, std=std, task=task,
                     class_names=classes, weights_id=weights_id, source=source)
    spatial = w.spatial_layers()
    w.default_layer = spatial[-1].name if spatial else None
    return w


def load_model(spec: str, weights: str | None = None, **options) -> ModelWrapper:
    """Load any supported network; raises :class:`ModelLoadError` with a one-line message."""
    if not spec:
        raise ModelLoadError("no model given")
    if spec.startswith("identify:"):  # a classifier over a gallery folder, on a face embedder
        from .identification import build_identification_model, parse_identification_spec

        emb_spec, gallery = parse_identification_spec(spec)
        if not gallery.is_dir():
            raise ModelLoadError(f"gallery folder not found: {gallery}")
        return build_identification_model(load_model(emb_spec, None if weights == "random" else weights), gallery)
    if spec == EMBEDDED_DEFAULT:
        from .dlib_resnet import load_dlib_resnet

        return load_dlib_resnet(weights if weights not in (None, "random") else None)
    if spec in TORCHVISION_CLASSIFIERS:
        return _load_torchvision(spec, weights)
    from .iresnet import FACE_ARCHS

    if spec in FACE_ARCHS:
        from .iresnet import load_face_checkpoint, wrap_face_network

        if weights is None:
            raise ModelLoadError(f"{spec} needs a checkpoint: pass --weights FILE (see README: face models)")
        if weights == "random":
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(0)
                return wrap_face_network(spec)
        return load_face_checkpoint(spec, weights)
    path = Path(spec)
    if path.exists():
        if path.is_dir():
            raise ModelLoadError(f"{spec} is a folder, not a model file")
        if looks_like_torchscript(path):
            return _load_torchscript(path, weights, options)
        raise ModelLoadError(
            f"{spec} is not a TorchScript file; a state dict needs an architecture: "
            f"--model NAME --weights {spec} (NAME from `famegui models`)"
        )
    if ":" in spec and not spec.startswith(("/", ".")):
        return _load_entry_point(spec, weights, options)
    import difflib

    close = difflib.get_close_matches(spec, zoo_names(), n=1)
    hint = f"; did you mean {close[0]}?" if close else "; `famegui models` lists the zoo"
    raise ModelLoadError(f"unknown model {spec!r} (not a zoo name, file or package.module:callable){hint}")
