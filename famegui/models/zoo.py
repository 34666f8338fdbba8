"""The model zoo and loaders: every network comes back as a :class:`ModelWrapper`.

``load_model(spec, weights)`` accepts
- a zoo name: torchvision classifiers (``resnet18`` ...), ``dlib-resnet`` (embedded
  face model), ArcFace ``iresnet*`` and AdaFace ``adaface_ir*`` checkpoints;
- ``timm:NAME`` (``timm:convnext_tiny``): a timm architecture with a local checkpoint
  (:mod:`.timm_models`);
- an ONNX file (``.onnx``), converted to torch with onnx2torch (:mod:`.onnx_models`);
- an insightface recognition model already on this machine, by name:
  ``insightface:buffalo_l`` or ``buffalo_l/w600k_r50`` (:mod:`.discovery`);
- a TorchScript file (``.pt``/``.ts``/``.torchscript`` saved with ``torch.jit.save``);
- a Python entry point ``package.module:callable`` returning an ``nn.Module``
  (or a ready :class:`ModelWrapper`).

Weights: a file (``.safetensors``, or a ``.pth``/``.pt`` state dict or checkpoint dict
holding one, read with ``weights_only``: see :mod:`.weights`), ``"random"`` for an
untrained network, or ``None`` to use torchvision's (timm's: Hugging Face's) cache when
present. Nothing is downloaded here (only :mod:`.download`, when the user asks: `famegui fetch`).
Missing weights give a one-line :class:`ModelLoadError` naming the file expected.
"""
from __future__ import annotations

import importlib
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ..data.files import regular_file
from ..paths import file_sha256
from .discovery import TIMM_PREFIX
from .weights import load_state_dict_strict, read_state_dict, short_reason
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


def zoo_names(discover: bool = True) -> list[str]:
    """Every name ``load_model`` understands without a path; ``discover`` adds the models found on this
    machine (insightface recognition models, timm checkpoints in the Hugging Face cache)."""
    from .iresnet import FACE_ARCHS

    names = [EMBEDDED_DEFAULT, *FACE_ARCHS, *TORCHVISION_CLASSIFIERS]
    if discover:
        from .discovery import cached_timm_names, insightface_names

        names += insightface_names() + cached_timm_names()
    return names


@dataclass(frozen=True)
class CatalogueEntry:
    """One line of ``famegui models``: a name ``load_model`` opens, and what it needs."""

    name: str
    family: str  # "embedded", "face", "torchvision", "insightface", "timm"
    note: str
    ready: bool  # opens by name alone (weights embedded or found on this machine)
    explainable: bool = True  # False for insightface detectors, landmark and attribute models
    state: str = ""  # "ready", "fetch" (famegui fetch NAME gets it), "manual" (a file from the user), "" (n/a)
    size: int | None = None  # bytes to download, when it can be fetched


def model_catalogue(index: str | None = None, *, user: bool = True) -> list[CatalogueEntry]:
    """Every model by name, with what it needs: ready, can be fetched (the weights catalogue, with the user's
    ``index`` over it), or a file the user must get; insightface packs and cached timm weights as discovered."""
    from .discovery import cached_timm_names, insightface_models, insightface_names
    from .iresnet import FACE_ARCHS
    from .weights_index import catalogue, describe_state, state

    weights = catalogue(index, user=user)

    def row(name: str, family: str, ready: bool, ready_note: str) -> CatalogueEntry:
        w = weights.get(name)
        if ready or w is None:
            return CatalogueEntry(name, family, ready_note if ready else "needs --weights FILE", ready,
                                  state="ready" if ready else "manual")
        return CatalogueEntry(name, family, describe_state(w), False, state=state(w), size=w.size)

    rows = [CatalogueEntry(EMBEDDED_DEFAULT, "embedded", "embedded default: dlib face ResNet, weights shipped", True,
                           state="ready")]
    rows += [row(n, "face", False, title) for n, title in FACE_ARCHS.items()]
    for n in TORCHVISION_CLASSIFIERS:
        cached = torchvision_cache_file(n)
        rows.append(row(n, "torchvision", cached is not None and cached.exists(), "weights in torchvision's cache"))
    found = sorted(insightface_models(), key=lambda m: (not m.is_recognition, m.pack, m.name))
    short = dict(zip([m.spec for m in found if m.is_recognition], insightface_names(found)))
    packs = {m.pack for m in found}
    for m in found:
        if m.is_recognition:
            rows.append(CatalogueEntry(short[m.spec], "insightface", f"{m.detail}: {m.path}", True, state="ready"))
        else:
            rows.append(CatalogueEntry(m.spec, "insightface", f"{m.detail}: not explained ({m.path.name})",
                                       False, explainable=False))
    rows += [row(n, "insightface", False, "") for n, w in weights.items()
             if w.cache == "insightface" and n.split(":", 1)[-1] not in packs]
    cached = cached_timm_names()
    rows += [CatalogueEntry(n, "timm", "weights in the Hugging Face cache", True, state="ready") for n in cached]
    rows += [row(n, "timm", False, "") for n, w in weights.items() if w.cache == "huggingface" and n not in cached]
    return rows


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
                f"no weights for {name} in torchvision's cache ({cached}): run `famegui fetch {name}` to download "
                f"them (verified; or copy {wenum.url} there), or pass --weights FILE (or --weights random for "
                f"an untrained network)"
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
        state = read_state_dict(path)
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
        raise ModelLoadError(f"{path} is not a TorchScript model ({short_reason(e)})") from None
    if weights not in (None, "random"):
        state = read_state_dict(Path(weights))
        load_state_dict_strict(module, state, str(path), weights)
    return _wrap_generic(module, path.stem, str(path), file_sha256(path), options)


def runs_code(spec: str) -> bool:
    """Whether ``load_model(spec)`` would import and run Python code (a ``package.module:callable`` entry
    point, also inside ``identify:``). Opening a sidecar must not do that unasked."""
    if spec.startswith("identify:"):
        from .identification import parse_identification_spec

        try:
            return runs_code(parse_identification_spec(spec)[0])
        except ValueError:
            return False
    if ":" not in spec or spec.startswith(("/", ".", "~", TIMM_PREFIX, "insightface:", MEMORY_PREFIX)):
        return False
    return not _exists(spec)


def _exists(spec: str) -> bool:
    """Whether ``spec`` names something on disk (False for a name the system cannot even look up)."""
    try:
        return Path(spec).expanduser().exists()
    except (OSError, ValueError):  # a name too long, or with a NUL byte
        return False


def _load_entry_point(spec: str, weights: str | None, options: dict) -> ModelWrapper:
    mod_name, _, attr = spec.partition(":")
    try:  # the current folder is not searched unless it is on sys.path already (PYTHONPATH=.)
        mod = importlib.import_module(mod_name)
    except ModuleNotFoundError as e:
        raise ModelLoadError(f"cannot import {mod_name!r} for {spec}: {e}; famegui does not search the current "
                             "folder: install the package or set PYTHONPATH") from None
    except SystemExit as e:  # the module exits while imported: an error, not a silent success
        raise ModelLoadError(f"importing {mod_name!r} for {spec} exited (code {e.code!r})") from None
    except Exception as e:
        raise ModelLoadError(f"cannot import {mod_name!r} for {spec}: {type(e).__name__}: {e}") from None
    fn = mod
    for part in attr.split("."):
        fn = getattr(fn, part, None)
        if fn is None:
            raise ModelLoadError(f"{mod_name} has no attribute {attr!r}")
    try:
        obj = fn() if callable(fn) and not isinstance(fn, nn.Module) else fn
    except SystemExit as e:
        raise ModelLoadError(f"{spec} exited (code {e.code!r}) instead of returning a model") from None
    except Exception as e:
        raise ModelLoadError(f"{spec} failed: {type(e).__name__}: {e}") from None
    if isinstance(obj, ModelWrapper):
        return obj
    if not isinstance(obj, nn.Module):
        raise ModelLoadError(f"{spec} returned {type(obj).__name__}, not a torch.nn.Module")
    weights_id = module_sha256(obj)  # what ``famegui.wrap`` records for the same module in memory
    if weights not in (None, "random"):
        state = read_state_dict(Path(weights))
        load_state_dict_strict(obj, state, spec, weights)
        weights_id = file_sha256(weights)
    return _wrap_generic(obj, spec, spec, weights_id, options)


NORMALIZATIONS = {"imagenet": (IMAGENET_MEAN, IMAGENET_STD), "none": ((0.0,) * 3, (1.0,) * 3),
                  "half": ((0.5,) * 3, (0.5,) * 3)}


MEMORY_PREFIX = "memory:"  # the source of a module wrapped in memory (famegui.wrap): it cannot be loaded again


def module_sha256(module: nn.Module) -> str:
    """A hash of a module's state (every parameter and buffer by name, dtype, shape and value): the weights
    id of a module wrapped in memory or made by an entry point, so a sidecar can tell whether the module that
    reproduces a map has the same weights."""
    import hashlib

    h = hashlib.sha256()
    for name, t in sorted(module.state_dict().items()):
        t = t.detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return "module-sha256:" + h.hexdigest()


def _wrap_generic(module: nn.Module, name: str, source: str, weights_id: str, options: dict) -> ModelWrapper:
    """A loaded module with the preprocessing the options give (``input_size``, ``normalize`` or explicit
    ``mean``/``std``, ``channel_order``, ``task``, ``class_names``)."""
    mean, std = NORMALIZATIONS[options.get("normalize") or "imagenet"]
    return wrap_module(module, name=name, source=source, weights_id=weights_id,
                       input_size=options.get("input_size") or 224, mean=options.get("mean") or mean,
                       std=options.get("std") or std, task=options.get("task"),
                       channel_order=options.get("channel_order") or "RGB", class_names=options.get("class_names"))


def _triple(values, what: str) -> tuple[float, float, float]:
    try:
        out = tuple(float(v) for v in values)
    except (TypeError, ValueError):
        raise ModelLoadError(f"{what} must be three numbers (R, G, B), got {values!r}") from None
    if len(out) != 3 or not all(torch.isfinite(torch.tensor(out))):
        raise ModelLoadError(f"{what} must be three finite numbers (R, G, B), got {values!r}")
    return out  # type: ignore[return-value]


def wrap_module(module: nn.Module, *, name: str, source: str, weights_id: str, input_size=224,
                mean=IMAGENET_MEAN, std=IMAGENET_STD, task: str | None = None, channel_order: str = "RGB",
                class_names=None) -> ModelWrapper:
    """Any ``nn.Module`` behind the common interface: its preprocessing as given, its task (classification or
    embedding) given or guessed from one forward pass on a grey image, its last spatial layer the default.

    Raises :class:`ModelLoadError` (one line) when the module fails on an input of that size, returns more
    than one tensor, or a value is out of range."""
    if not isinstance(module, nn.Module):
        raise ModelLoadError(f"{source} is a {type(module).__name__}, not a torch.nn.Module")
    size = (input_size, input_size) if isinstance(input_size, int) else tuple(input_size)
    if len(size) != 2 or not all(isinstance(v, int) and not isinstance(v, bool) and 8 <= v <= 4096 for v in size):
        raise ModelLoadError(f"input size must be a whole number of pixels from 8 to 4096, got {input_size!r}")
    mean, std = _triple(mean, "mean"), _triple(std, "std")
    if min(std) <= 0:
        raise ModelLoadError(f"std must be positive, got {std}")
    if channel_order not in ("RGB", "BGR"):
        raise ModelLoadError(f"channel order must be RGB or BGR, got {channel_order!r}")
    if task not in (None, "classification", "embedding"):
        raise ModelLoadError(f"task must be classification or embedding, got {task!r}")
    module.eval()
    device = next((p.device for p in module.parameters()), torch.device("cpu"))
    probe = torch.full((1, 3, *size), 0.5, device=device)
    with torch.no_grad():
        try:
            out = module((probe - torch.tensor(mean, device=device).view(1, 3, 1, 1))
                         / torch.tensor(std, device=device).view(1, 3, 1, 1))
        except Exception as e:
            raise ModelLoadError(f"{source} fails on a 1x3x{size[0]}x{size[1]} input ({type(e).__name__}); "
                                 "set the input size (--input-size; input_size= in famegui.wrap)") from None
    if isinstance(out, (tuple, list)) or not isinstance(out, torch.Tensor):
        raise ModelLoadError(f"{source} returns a {type(out).__name__}; famegui needs one output tensor")
    looks_like_classes = out.ndim == 2 and out.shape[1] in (1000, 10, 100)
    task = task or ("classification" if looks_like_classes else "embedding")
    classes = None if class_names is None else [str(c) for c in class_names]
    if classes is not None and (task != "classification" or len(classes) != out.shape[1]):
        raise ModelLoadError(f"{len(classes)} class names for a {task} model with {out.shape[1]} outputs")
    if classes is None and task == "classification" and out.shape[1] == 1000:
        import torchvision

        classes = list(torchvision.models.ResNet18_Weights.DEFAULT.meta["categories"])
    elif classes is None and task == "classification":
        classes = [f"class {i}" for i in range(out.shape[1])]
    w = ModelWrapper(name=name, module=module, input_size=size, mean=mean, std=std, task=task,
                     class_names=classes, channel_order=channel_order, weights_id=weights_id, source=source)
    w.extras["module_class"] = f"{type(module).__module__}.{type(module).__qualname__}"
    if source.startswith(MEMORY_PREFIX):
        w.extras["in_memory"] = True
    spatial = w.spatial_layers()
    grids = [info for info in spatial if info.shape[1] * info.shape[2] > 1]  # a 1x1 pooling output has no cells
    w.default_layer = _outermost((grids or spatial)[-1], spatial) if spatial else None
    return w


def _outermost(last, spatial) -> str:
    """The outermost block that ends in ``last`` with its shape: ``layer4`` rather than ``layer4.1.bn2``
    (the block's output, after its residual sum, is what a user means by "the last layer")."""
    shapes = {info.name: info.shape for info in spatial}
    name, parts = last.name, last.name.split(".")
    for k in range(len(parts) - 1, 0, -1):
        parent = ".".join(parts[:k])
        if shapes.get(parent) != last.shape:
            break
        name = parent
    return name


def _load_file(path: Path, spec: str, weights: str | None, options: dict) -> ModelWrapper:
    """A model file: ONNX (converted with onnx2torch) or TorchScript."""
    path = regular_file(path, "model file", "weights", ModelLoadError)  # never a FIFO, device or folder
    if path.suffix.lower() == ".onnx":
        from .onnx_models import load_onnx

        return load_onnx(path, weights, **options)
    if looks_like_torchscript(path):
        return _load_torchscript(path, weights, options)
    raise ModelLoadError(
        f"{spec} is not a TorchScript file; a state dict needs an architecture: "
        f"--model NAME --weights {spec} (NAME from `famegui models`)"
    )


def _load_insightface(spec: str, weights: str | None, options: dict) -> ModelWrapper | None:
    """``insightface:pack[/model]`` or ``pack/model`` under ~/.insightface/models; None if not such a name."""
    from .discovery import find_insightface

    found = find_insightface(spec)
    if found is None:
        return None
    from .onnx_models import load_onnx

    return load_onnx(found.path, weights, name=f"{found.pack}/{found.name}", source=spec, **options)


def load_model(spec: str, weights: str | None = None, **options) -> ModelWrapper:
    """Load any supported network; raises :class:`ModelLoadError` with a one-line message."""
    if not spec:
        raise ModelLoadError("no model given")
    if weights not in (None, "random") and _exists(weights):  # a regular file within the size limit, before any
        regular_file(weights, "weights file", "weights", ModelLoadError)  # loader opens it (missing: said later)
    size = options.get("input_size")
    sides = (size,) if isinstance(size, int) else tuple(size) if isinstance(size, (tuple, list)) else (size,)
    if size is not None and not all(isinstance(v, int) and not isinstance(v, bool) and 8 <= v <= 4096
                                    for v in sides):
        raise ModelLoadError(f"input size must be a whole number of pixels from 8 to 4096, got {size!r}")
    if spec.startswith("identify:"):  # a classifier over a gallery folder, on a face embedder
        from .identification import build_identification_model, parse_identification_spec

        emb_spec, gallery = parse_identification_spec(spec)
        if not gallery.is_dir():
            raise ModelLoadError(f"gallery folder not found: {gallery}")
        return build_identification_model(load_model(emb_spec, None if weights == "random" else weights), gallery)
    if spec.startswith(MEMORY_PREFIX):
        raise ModelLoadError(f"the model was a module in memory ({spec[len(MEMORY_PREFIX):]}), which cannot be "
                             "loaded again: pass the module itself, or wrap it with entry_point='pkg.mod:fn'")
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
    if spec.startswith(TIMM_PREFIX):
        from .timm_models import load_timm

        return load_timm(spec, weights, **options)
    path = Path(spec).expanduser()
    if _exists(spec):
        return _load_file(path, spec, weights, options)
    found = _load_insightface(spec, weights, options)
    if found is not None:
        return found
    if ":" in spec and not spec.startswith(("/", ".")):
        return _load_entry_point(spec, weights, options)
    import difflib

    close = difflib.get_close_matches(spec, zoo_names(), n=1)
    hint = f"; did you mean {close[0]}?" if close else "; `famegui models` lists the zoo"
    raise ModelLoadError(f"unknown model {spec!r} (not a zoo name, file or package.module:callable){hint}")
