"""famegui from Python: explain your own model in a script or a notebook, in a few lines.

>>> import famegui
>>> e = famegui.explain("dlib-resnet", famegui.sample_image("london_001"), famegui.cell("stage4", 2, 2),
...                     iterations=5)
>>> e.map.shape
(150, 150)

Everything here goes through :func:`famegui.explanation.explain_rows`, the path the window, the command line
and protocol runs take, so a map made here equals the same map made there.
"""
from __future__ import annotations

import functools
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from ..core import threads
from ..explanation import Explanation, Row, explain_rows
from ..models.wrapper import ModelWrapper
from ..models.zoo import IMAGENET_MEAN, IMAGENET_STD, MEMORY_PREFIX, load_model, module_sha256, wrap_module
from ..targets import Target

if TYPE_CHECKING:

    from ..data.pipeline import ModelInput

SAMPLE_PEOPLE = ("london_001", "london_005", "london_006", "london_021", "london_024", "joe_biden", "barack_obama",
                 "lisa_debruine")


# --------------------------------------------------------------------------------------------- models
def wrap(module: nn.Module, input_size: int | tuple[int, int] = 224, mean: Sequence[float] = IMAGENET_MEAN,
         std: Sequence[float] = IMAGENET_STD, task: str | None = None, *, channel_order: str = "RGB",
         class_names: Sequence[str] | None = None, name: str | None = None,
         entry_point: str | None = None) -> ModelWrapper:
    """Your own ``torch.nn.Module`` with its preprocessing, ready for every famegui method.

    The module receives ``(x[:, order] - mean) / std`` for an RGB image ``x`` in [0, 1] at ``input_size``.
    It is put in eval mode and its parameters stop requiring gradients (famegui only reads them).

    Parameters
    ----------
    module : torch.nn.Module
        Returns class scores (B, classes) or an embedding (B, D) for a (B, 3, H, W) input.
    input_size : int or (int, int)
        The (height, width) it takes; one number for a square.
    mean, std : three floats
        Per-channel normalisation (default: ImageNet's).
    task : {"classification", "embedding"}, optional
        Guessed from one forward pass when not given (1000, 100 or 10 outputs: a classifier).
    channel_order : {"RGB", "BGR"}
        The channel order the module expects.
    class_names : sequence of str, optional
        One per output of a classifier (default: ImageNet's names for 1000 outputs, else ``class K``).
    name : str, optional
        Shown in the window and recorded (default: the module's class name).
    entry_point : str, optional
        ``package.module:callable`` that builds the same module: recorded as the source, so that
        ``famegui reproduce --trust-entry-point`` can load it again. Without it the sidecar records that the
        model was in memory, with its class and a hash of its weights.

    Returns
    -------
    famegui.models.wrapper.ModelWrapper

    Examples
    --------
    >>> import torch, famegui
    >>> net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(),
    ...                           torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(8, 10))
    >>> model = famegui.wrap(net, input_size=64, task="classification")
    >>> model.task, model.input_size, [l.name for l in model.spatial_layers()]
    ('classification', (64, 64), ['0', '1', '2'])
    """
    cls = type(module)
    w = wrap_module(module, name=name or cls.__name__, source=entry_point or f"{MEMORY_PREFIX}{cls.__module__}."
                    f"{cls.__qualname__}", weights_id=module_sha256(module), input_size=input_size, mean=mean,
                    std=std, task=task, channel_order=channel_order, class_names=class_names)
    return w


def load(spec: str = "dlib-resnet", weights: str | os.PathLike | None = None, **options) -> ModelWrapper:
    """A model by name or file, as ``famegui --model`` takes it.

    Parameters
    ----------
    spec : str
        A zoo name (``famegui models`` lists them: ``dlib-resnet``, ``resnet18``, ``iresnet50`` ...), an ONNX or
        TorchScript file, ``timm:NAME``, an insightface model, or ``package.module:callable``.
    weights : str or path, optional
        A weights file, ``"random"``, or None for the model's own (the embedded face model, a local cache).
    **options
        ``input_size``, ``task``, ``mean``, ``std``, ``channel_order`` for files and entry points.

    Returns
    -------
    famegui.models.wrapper.ModelWrapper

    Examples
    --------
    >>> import famegui
    >>> famegui.load("dlib-resnet").task
    'embedding'
    """
    w = load_model(str(spec), None if weights is None else str(weights), **options)
    if weights not in (None, "random"):
        w.extras["weights_path"] = str(weights)  # recorded in sidecars
    return w


@functools.lru_cache(maxsize=4)
def _load_cached(spec: str) -> ModelWrapper:
    return load_model(spec)


def _model(model: Any, device: str | torch.device | None) -> ModelWrapper:
    if isinstance(model, ModelWrapper):
        w = model
    elif isinstance(model, nn.Module):
        w = wrap(model)
    elif isinstance(model, (str, os.PathLike)):
        w = _load_cached(str(model))
    else:
        raise TypeError(f"model must be a torch.nn.Module, a wrapped model, a zoo name or a file; got "
                        f"{type(model).__name__}")
    if device is not None and torch.device(device) != w.device:
        w.to(device)
    return w


# --------------------------------------------------------------------------------------------- images
def sample_image(person: str = "london_001", file: str | None = None) -> str:
    """The path of a bundled sample photo (CC-licensed, see ``resources/faces/ATTRIBUTION.md``).

    Parameters
    ----------
    person : str
        A folder of ``resources/faces``: ``london_001``, ``london_005``, ``joe_biden``, ``barack_obama`` ...
    file : str, optional
        A file in it (default: the first in name order, e.g. ``neutral.jpg``).

    Returns
    -------
    str

    Examples
    --------
    >>> import famegui, os
    >>> os.path.basename(famegui.sample_image("london_001", "smiling.jpg"))
    'smiling.jpg'
    """
    from ..paths import resource_path

    folder = resource_path("faces", person)
    if not folder.is_dir() or person.startswith((".", "/")) or os.sep in person:
        raise ValueError(f"no sample person {person!r}; try one of {', '.join(SAMPLE_PEOPLE)}")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    if file is None:
        return str(files[0])
    found = [p for p in files if p.name == file]
    if not found:
        raise ValueError(f"{person} has no {file!r}; it has {', '.join(p.name for p in files)}")
    return str(found[0])


def _tensor_input(t: torch.Tensor, model: ModelWrapper, name: str) -> ModelInput:
    """A (1,3,H,W) float tensor in [0,1]: at the model's input size it is the input as it is."""
    from ..data.images import Prepared, image_from_array
    from ..data.pipeline import ModelInput, prepare_for_model

    t = t.detach().to("cpu", torch.float32)
    if not torch.isfinite(t).all():
        raise ValueError(f"{name} holds NaN or infinite values")
    if float(t.min()) < 0 or float(t.max()) > 1:
        raise ValueError(f"{name}: a float tensor must hold an RGB image in [0, 1] (got values from "
                         f"{float(t.min()):.3g} to {float(t.max()):.3g}); famegui normalises it for the model")
    rgb = t[0].permute(1, 2, 0).numpy()
    image = image_from_array(rgb, name)
    if tuple(t.shape[-2:]) != tuple(model.input_size):
        return prepare_for_model(model, image, align=False)
    identity = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    return ModelInput(image, Prepared(t.contiguous(), identity, image.shape, "as-is"), note="used as given")


def _one_input(item: Any, model: ModelWrapper, face: int, align: bool, name: str) -> ModelInput:
    from ..data.images import LoadedImage, image_from_array
    from ..data.pipeline import ModelInput, prepare_for_model

    if isinstance(item, ModelInput):
        return item
    if isinstance(item, (str, os.PathLike, LoadedImage)):
        return prepare_for_model(model, item if isinstance(item, LoadedImage) else str(item), face_index=face,
                                 align=align)
    if type(item).__module__.startswith("PIL."):
        label = getattr(item, "filename", "") or name
        return prepare_for_model(model, image_from_array(np.asarray(item.convert("RGB")), label), face_index=face,
                                 align=align)
    if isinstance(item, torch.Tensor):
        if item.ndim == 3:
            item = item.unsqueeze(0)
        if item.ndim != 4 or item.shape[:2] != (1, 3):
            raise ValueError(f"{name}: a tensor must be (3,H,W) or (N,3,H,W) RGB, got {tuple(item.shape)}")
        return _tensor_input(item, model, name)
    if isinstance(item, np.ndarray):
        if item.ndim not in (2, 3) or (item.ndim == 3 and item.shape[2] not in (3, 4)):
            raise ValueError(f"{name}: an array must be (H,W,3) RGB (uint8, or float in [0,1]), got {item.shape}")
        return prepare_for_model(model, image_from_array(item, name), face_index=face, align=align)
    raise TypeError(f"{name}: give a path, a PIL image, an (H,W,3) array or a (3,H,W) tensor, "
                    f"not {type(item).__name__}")


def _inputs(images: Any, model: ModelWrapper, face: int, align: bool, name: str = "image") -> tuple[list, bool]:
    """(the prepared inputs, whether ``images`` was a batch)."""
    if isinstance(images, (list, tuple)):
        return [_one_input(im, model, face, align, f"{name} {i}") for i, im in enumerate(images)], True
    if isinstance(images, (torch.Tensor, np.ndarray)) and images.ndim == 4 and images.shape[0] != 1:
        return [_one_input(im, model, face, align, f"{name} {i}") for i, im in enumerate(images)], True
    if isinstance(images, np.ndarray) and images.ndim == 4:
        images = images[0]
    return [_one_input(images, model, face, align, name)], False


# --------------------------------------------------------------------------------------------- targets
@dataclass(frozen=True)
class _Request:
    """A target that needs the model or the image to become a :class:`Target` (a class by name or rank, a
    pair target with its own reference)."""

    kind: str
    value: Any = None
    reference: Any = None
    non_mate: Any = None

    def target(self, model: ModelWrapper, x: torch.Tensor) -> Target:
        if self.kind == "class":
            from ..targets.kinds import class_from_text

            return Target("class", class_index=class_from_text(model, str(self.value), x, "class_target"))
        return Target(self.kind)


def cell(layer: str, row: int, col: int) -> Target:
    """A feature-map cell: what the network computes at (``row``, ``col``) of ``layer``.

    Parameters
    ----------
    layer : str
        A layer name (``famegui layers --model M``, or ``model.spatial_layers()``).
    row, col : int
        The cell's position in the layer's output.

    Returns
    -------
    famegui.targets.Target

    Examples
    --------
    >>> import famegui
    >>> famegui.cell("layer4", 3, 3).label()
    'layer4[3,3]'
    """
    return Target("cell", layer=str(layer), cell=(row, col))


def class_target(which: int | str = "top1") -> Target | _Request:
    """A class logit of a classifier: an index, a class name, or ``"top1"`` (``"topK"``) of each image.

    Examples
    --------
    >>> import famegui
    >>> famegui.class_target(281).label()
    'class 281'
    """
    if isinstance(which, (int, np.integer)) and not isinstance(which, bool):
        return Target("class", class_index=int(which))
    if not isinstance(which, str) or not which:
        raise TypeError(f"a class is an index, a class name or 'top1', got {which!r}")
    return _Request("class", which)


def similar(reference: Any = None, *, non_mate: Any = None) -> _Request:
    """e+ of a face pair: what makes the image similar to ``reference`` (a path, array, tensor or PIL image;
    None: the ``reference=`` given to :func:`explain`).

    Examples
    --------
    >>> import famegui
    >>> famegui.similar(famegui.sample_image("london_001", "smiling.jpg")).kind
    'similar'
    """
    return _Request("similar", reference=reference, non_mate=non_mate)


def dissimilar(reference: Any = None, *, non_mate: Any = None) -> _Request:
    """e- of a face pair: what makes the image different from ``reference`` (see :func:`similar`).

    Examples
    --------
    >>> import famegui
    >>> famegui.dissimilar().kind
    'dissimilar'
    """
    return _Request("dissimilar", reference=reference, non_mate=non_mate)


_WORDS = {"similar": "similar", "e+": "similar", "dissimilar": "dissimilar", "e-": "dissimilar"}


def _as_request(target: Any) -> Target | _Request:
    if isinstance(target, (Target, _Request)):
        return target
    if isinstance(target, (int, np.integer)) and not isinstance(target, bool):
        return class_target(int(target))
    if isinstance(target, str):
        if target.lower() in _WORDS:
            return _Request(_WORDS[target.lower()])
        if ":" in target:
            return Target.parse_cell(target)
        return class_target(target)
    raise TypeError(f"a target is famegui.cell(...), famegui.class_target(...), famegui.similar(...), "
                    f"a class index or 'layer:row,col'; got {type(target).__name__}")


# --------------------------------------------------------------------------------------------- explain
def _progress(progress: Any, total: int) -> tuple[Callable | None, Callable[[], None]]:
    """(a callback for fractions of the whole call, a closer): True draws a tqdm bar."""
    if progress is None or progress is False:
        return None, lambda: None
    if progress is True:
        from tqdm.auto import tqdm

        bar = tqdm(total=100, desc=f"explaining {total} map{'s' if total != 1 else ''}", unit="%")

        def tick(f: float) -> None:
            bar.update(max(0, round(100 * f) - bar.n))

        return tick, bar.close
    if not callable(progress):
        raise TypeError("progress is True (a progress bar), a callable taking a fraction, or None")
    return progress, lambda: None


def _rows(m: ModelWrapper, xs: list, requests: list, reference, non_mate, face: int, align: bool) -> list[Row]:
    refs, _ = _inputs(reference, m, face, align, "reference") if reference is not None else ([None], False)
    mates, _ = _inputs(non_mate, m, face, align, "non_mate") if non_mate is not None else ([None], False)
    for what, given in (("reference", refs), ("non_mate", mates)):
        if len(given) not in (1, len(xs)):
            raise ValueError(f"{len(given)} {what} images for {len(xs)} images: give one, or one per image")
    own = {id(r): (_inputs(r.reference, m, face, align, "reference")[0][0] if r.reference is not None else None,
                   _inputs(r.non_mate, m, face, align, "non_mate")[0][0] if r.non_mate is not None else None)
           for r in requests if isinstance(r, _Request)}
    rows = []
    for i, x in enumerate(xs):
        for r in requests:
            t = r if isinstance(r, Target) else r.target(m, x.tensor)
            ref, nm = own.get(id(r), (None, None))
            ref = ref if ref is not None else refs[i if len(refs) > 1 else 0]
            nm = nm if nm is not None else mates[i if len(mates) > 1 else 0]
            if t.needs_reference and ref is None:
                raise ValueError(f"{t.label()} explains a pair: give famegui.{t.kind}(reference_image) or reference=")
            t.spec.check_model(m)
            rows.append(Row(x, t, ref if t.needs_reference else None, nm if t.needs_reference else None))
    return rows


# long: most of it is the public docstring (Parameters, Returns, Examples)
def explain(model: Any, images: Any, target: Any = "top1", method: str = "fame", *, reference: Any = None,
            non_mate: Any = None, device: str | torch.device | None = None, progress: Any = None, face: int = 0,
            align: bool = True, batch: int | None = None, threshold: float | None = None, seed: int = 0,
            **params) -> Explanation | list:
    """Explain what ``model`` looks at in ``images`` for ``target``, with ``method``.

    Parameters
    ----------
    model : torch.nn.Module, wrapped model, str or path
        Your module (wrapped with ImageNet preprocessing at 224 pixels unless you :func:`wrap` it yourself), a
        :func:`wrap` or :func:`load` result, a zoo name (``"dlib-resnet"``, ``"resnet18"``) or a model file.
    images : path, PIL image, array, tensor, or a list of them
        One image or a batch: an (H,W,3) uint8 or float array, a (3,H,W) or (N,3,H,W) float tensor in [0, 1]
        (a tensor at the model's input size is used as it is; anything else is cropped, or for a face model
        aligned, as the window does).
    target : target or list of targets
        :func:`cell`, :func:`class_target`, :func:`similar` / :func:`dissimilar`, a class index,
        ``"top1"``, ``"layer4:3,3"``, ``"e+"`` / ``"e-"``. A list explains each image for each target.
    method : str
        A registered method: ``"fame"`` (default), ``"gradcam"``, ``"corrrise"`` ... (``famegui methods``).
    reference : image or list, optional
        The other photo of a pair for e+/e- (one for all images, or one per image).
    non_mate : image or list, optional
        A photo of another identity (methods that use a triplet).
    device : str or torch.device, optional
        Moves the model there first (``"cuda"``).
    progress : bool or callable, optional
        True: a progress bar; a callable gets the fraction done.
    face : int
        Which face of a face photo (0: the largest).
    align : bool
        Face models: align the face (False: a centre crop).
    batch : int, optional
        FAME: maps per batch (None: sized to memory).
    threshold : float, optional
        Pair targets: the cosine decision threshold (None: the model's).
    seed : int
        For sampling methods.
    **params
        The method's parameters (``iterations=100``, ``blur_sigma=2`` ...); unknown names are an error.

    Returns
    -------
    Explanation or list
        One :class:`Explanation` for one image and one target; a list for a batch of images or a list of
        targets (a list of lists, per image, when both are lists).

    Examples
    --------
    >>> import famegui
    >>> a, b = famegui.sample_image("london_001"), famegui.sample_image("london_001", "smiling.jpg")
    >>> e = famegui.explain("dlib-resnet", a, famegui.similar(b), iterations=5)
    >>> e.label, e.map.shape, e.signed
    ('FAME e+ (similar)', (150, 150), False)
    """
    m = _model(model, device)
    xs, many_images = _inputs(images, m, face, align)
    many_targets = isinstance(target, (list, tuple))
    requests = [_as_request(t) for t in (target if many_targets else [target])]
    if not requests:
        raise ValueError("no target given")
    rows = _rows(m, xs, requests, reference, non_mate, face, align)
    out: list = [None] * len(rows)
    tasks = list(dict.fromkeys(r.target.task for r in rows))
    tick, close = _progress(progress, len(rows))
    try:
        for k, task in enumerate(tasks):  # one call per task (rows of one task share resolved parameters)
            idx = [i for i, r in enumerate(rows) if r.target.task == task]
            part = None if tick is None else (lambda f, _p=None, k=k: tick((k + f) / len(tasks)))
            with threads.for_call():  # the cores other processes leave free; the caller's count after
                made = explain_rows(m, [rows[i] for i in idx], method, params, threshold=threshold, batch=batch,
                                    weights=m.extras.get("weights_path"), progress=part, seed=seed)
            for i, e in zip(idx, made):
                out[i] = e
    finally:
        close()
    if many_images and many_targets:
        return [out[i * len(requests):(i + 1) * len(requests)] for i in range(len(xs))]
    return out if many_images or many_targets else out[0]
