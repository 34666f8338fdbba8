"""ONNX models, converted to differentiable torch modules with onnx2torch.

``load_model("model.onnx")`` reads the graph with ``onnx``, converts it with
``onnx2torch.convert`` into a ``torch.fx.GraphModule`` (one submodule per ONNX
node, named after the node: ``layer1/layer1/0/Add``, ``Conv_12`` ...), and wraps
it in a :class:`ModelWrapper`. FAME, the CAMs and every gradient method then
work as on a native network; :meth:`ModelWrapper.layers` lists the node outputs
with their shapes. Excitation Backprop needs to know how blocks are wired and
refuses converted graphs.

What the file says is used; the rest follows insightface's conventions for its
recognition models, and can be overridden through ``load_model`` options:

* **input size** (``input_size=``): the input's fixed height and width when the
  file gives them, else 112x112 (224x224 for a 1000-class classifier).
* **normalisation** (``mean=``/``std=`` in [0, 1] units, or ``normalize=`` one of
  ``insightface``, ``imagenet``, ``half``, ``none``): insightface's ArcFaceONNX
  feeds ``(pixel - 127.5) / 127.5``, i.e. mean 0.5 and std 0.5 here -- unless,
  like insightface, we find a ``Sub`` and a ``Mul`` among the first eight nodes
  (an MXNet export that normalises inside the graph): then the graph gets raw
  0..255 pixels (mean 0, std 1/255). A 1000-class classifier gets ImageNet's
  mean/std instead.
* **channel order** (``channel_order=`` ``RGB``/``BGR``): RGB. insightface reads
  images with OpenCV (BGR) and builds the network input with
  ``cv2.dnn.blobFromImages(..., swapRB=True)``, which swaps them to RGB: its
  recognition models take RGB, as famegui's input already is.
* **task** (``task=``): ``classification`` for an output of 10, 100 or 1000
  values, else ``embedding``. An embedding model at 112x112 is a face model:
  ArcFace five-point alignment (``arcface112``) and the default face threshold.

Layers: ``extras['stages']`` names the ends of the last four resolution stages
(``stage1``..``stage4``: the last residual ``Add`` -- or the activation right after
it -- of each run of layers at one resolution), i.e. the outputs of ``layer1``..
``layer4`` of an exported (I)ResNet; the default layer is ``stage4``. Exporters
fold batch norms into convolutions, so some native layers have no node of their
own. A file exported with a fixed batch size of 1 may fail on batched methods
(all cells at once); export with a dynamic batch axis.

A graph using an op onnx2torch cannot convert fails with a one-line
:class:`ModelLoadError` naming the op(s). ``weights_id`` is the file's sha256.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import fx, nn

from ..paths import file_sha256
from .extras import needs
from .iresnet import DEFAULT_FACE_THRESHOLD
from .wrapper import LayerInfo, ModelLoadError, ModelWrapper

ONNX_SUFFIX = ".onnx"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
NAMED_NORMALISATIONS = {
    "insightface": ((0.5,) * 3, (0.5,) * 3),
    "half": ((0.5,) * 3, (0.5,) * 3),
    "imagenet": (IMAGENET_MEAN, IMAGENET_STD),
    "none": ((0.0,) * 3, (1.0,) * 3),
}
INSIGHTFACE_SIZE = (112, 112)
CLASS_COUNTS = (10, 100, 1000)
GRAPH_CLASS_NAME = "OnnxGraph"  # the converted module's type name, e.g. in "... does not support OnnxGraph"


class OnnxGraph(fx.GraphModule):
    """A graph converted from ONNX (its type tells famegui, and error messages, where it came from)."""

    def __deepcopy__(self, memo):
        copied = super().__deepcopy__(memo)
        type(copied).__name__ = GRAPH_CLASS_NAME  # fx renames every copy "GraphModule"; each has its own class
        return copied


def looks_like_onnx(path: Path) -> bool:
    return path.suffix.lower() == ONNX_SUFFIX


def _modules():
    try:
        import onnx
        from onnx2torch import convert
        from onnx2torch.node_converters import get_converter
    except ImportError:
        raise ModelLoadError(needs("an ONNX model", "onnx", "onnx2torch")) from None
    return onnx, convert, get_converter


def _first_line(e: BaseException) -> str:
    from .weights import short_reason

    return short_reason(e, limit=160)


def read_onnx(path: Path):
    """The ModelProto in ``path`` (external data included); one-line errors."""
    onnx, _, _ = _modules()
    try:
        return onnx.load(str(path))
    except MemoryError:
        raise ModelLoadError(f"not enough memory to load {path}") from None
    except Exception as e:  # protobuf and onnx raise many types on foreign files
        raise ModelLoadError(f"{path} is not an ONNX model ({_first_line(e)})") from None


def unsupported_ops(proto) -> list[str]:
    """Ops of the graph that onnx2torch has no converter for, as ``Op`` or ``domain.Op``, in graph order."""
    _, _, get_converter = _modules()
    opsets = {(d.domain if d.domain != "ai.onnx" else ""): d.version for d in proto.opset_import}
    out: list[str] = []
    seen = set()
    for node in proto.graph.node:
        domain = node.domain if node.domain != "ai.onnx" else ""
        key = (domain, node.op_type)
        if key in seen:
            continue
        seen.add(key)
        label = f"{domain}.{node.op_type}" if domain else node.op_type
        if domain not in opsets:
            out.append(label)
            continue
        try:
            get_converter(operation_type=node.op_type, version=opsets[domain], domain=domain)
        except NotImplementedError:
            out.append(label)
    return out


def inline_constant_identities(proto) -> int:
    """Replace ``Identity`` nodes of initializers by initializers (exporters share equal tensors that way,
    and onnx2torch wants conv / linear weights as initializers). Returns how many were replaced."""
    onnx, _, _ = _modules()
    graph = proto.graph
    consts = {t.name: t for t in graph.initializer}
    outputs = {o.name for o in graph.output}
    keep, n = [], 0
    for node in graph.node:
        if node.op_type == "Identity" and node.input and node.input[0] in consts and node.output[0] not in outputs:
            t = onnx.TensorProto()
            t.CopyFrom(consts[node.input[0]])
            t.name = node.output[0]
            graph.initializer.append(t)
            consts[t.name] = t
            n += 1
            continue
        keep.append(node)
    if n:
        del graph.node[:]
        graph.node.extend(keep)
    return n


@dataclass(frozen=True)
class InputSpec:
    name: str
    batch: int | None  # a fixed batch size, or None when dynamic
    size: tuple[int, int] | None  # fixed (H, W), or None when dynamic


def read_input(proto, source: str) -> InputSpec:
    """The single image input of the graph: NCHW with 3 channels."""
    inits = {t.name for t in proto.graph.initializer}
    inputs = [i for i in proto.graph.input if i.name not in inits]
    if len(inputs) != 1:
        raise ModelLoadError(f"{source} has {len(inputs)} inputs ({', '.join(i.name for i in inputs)}); "
                             "famegui explains networks with one image input")
    inp = inputs[0]
    ttype = inp.type.tensor_type
    if ttype.elem_type not in (1, 10, 11, 16):  # float, float16, double, bfloat16
        raise ModelLoadError(f"{source}: input {inp.name} is not a float tensor; famegui feeds float images")
    dims = [d.dim_value if d.HasField("dim_value") else None for d in ttype.shape.dim]
    if len(dims) != 4:
        raise ModelLoadError(f"{source}: input {inp.name} has {len(dims)} dimensions; famegui needs (N, 3, H, W)")
    if dims[1] not in (3, None):
        layout = " (channels last: re-export it channels first)" if dims[3] == 3 else ""
        raise ModelLoadError(f"{source}: input {inp.name} has shape {dims}; famegui needs (N, 3, H, W){layout}")
    size = (dims[2], dims[3]) if dims[2] and dims[3] else None
    return InputSpec(inp.name, dims[0] or None, size)


def normalises_inside(proto) -> bool:
    """insightface's test for MXNet exports that subtract and scale the input in the graph itself."""
    first = proto.graph.node[:8]
    has_sub = any(n.name.startswith(("Sub", "_minus")) for n in first)
    has_mul = any(n.name.startswith(("Mul", "_mul")) for n in first)
    return has_sub and has_mul


def convert_graph(proto, source: str) -> nn.Module:
    """onnx2torch's conversion; unsupported ops and conversion failures give one-line errors."""
    _, convert, _ = _modules()
    missing = unsupported_ops(proto)
    if missing:
        shown = ", ".join(missing[:5]) + (" ..." if len(missing) > 5 else "")
        raise ModelLoadError(f"{source} uses ONNX op{'s' if len(missing) > 1 else ''} {shown}, which onnx2torch "
                             "cannot convert to torch; famegui cannot explain this graph")
    inline_constant_identities(proto)
    try:
        module = convert(proto)
    except NotImplementedError as e:
        raise ModelLoadError(f"{source}: onnx2torch cannot convert it ({_first_line(e)})") from None
    except Exception as e:  # noqa: BLE001 - any conversion failure, one line
        raise ModelLoadError(f"{source} could not be converted to torch ({type(e).__name__}: "
                             f"{_first_line(e)})") from None
    # float32 whatever the file stores (float16 exports): famegui feeds float32 images
    return OnnxGraph(module, module.graph, class_name=GRAPH_CLASS_NAME).float().eval()


def _normalisation(options: dict, proto, task: str) -> tuple[tuple, tuple, str]:
    """(mean, std, where they come from)."""
    if options.get("mean") is not None or options.get("std") is not None:
        mean = tuple(float(v) for v in (options.get("mean") or (0.0,) * 3))
        std = tuple(float(v) for v in (options.get("std") or (1.0,) * 3))
        if len(mean) == 1:
            mean = mean * 3
        if len(std) == 1:
            std = std * 3
        return mean, std, "options"
    named = options.get("normalize")
    if named:
        if named not in NAMED_NORMALISATIONS:
            raise ModelLoadError(f"unknown normalisation {named!r}; choose one of {', '.join(NAMED_NORMALISATIONS)}")
        return (*NAMED_NORMALISATIONS[named], f"options ({named})")
    if normalises_inside(proto):
        return (0.0,) * 3, (1.0 / 255.0,) * 3, "insightface rule: the graph normalises, it gets 0..255 pixels"
    if task == "classification":
        return IMAGENET_MEAN, IMAGENET_STD, "ImageNet convention (a classifier)"
    return (0.5,) * 3, (0.5,) * 3, "insightface convention: (pixel - 127.5) / 127.5"


def output_shape(proto, module: nn.Module, size: tuple[int, int], batch: int | None,
                 source: str) -> tuple[int, ...]:
    """The output shape without the batch: from the file when it says it, else from one forward pass."""
    dims = [d.dim_value if d.HasField("dim_value") else None for d in proto.graph.output[0].type.tensor_type.shape.dim]
    if len(dims) >= 2 and all(dims[1:]):
        return tuple(dims[1:])
    try:
        with torch.no_grad():
            out = module(torch.zeros(batch or 1, 3, *size))
    except Exception as e:  # noqa: BLE001 - the converted graph fails on this input
        raise ModelLoadError(f"{source} fails on a {batch or 1}x3x{size[0]}x{size[1]} input after conversion "
                             f"({type(e).__name__}: {_first_line(e)}); set the input size") from None
    if isinstance(out, (tuple, list)):
        raise ModelLoadError(f"{source} has {len(out)} outputs (a detector or landmark model?); famegui "
                             "explains networks with one output")
    return tuple(out.shape[1:])


def _layers(wrapper: ModelWrapper, source: str) -> list[LayerInfo]:
    """The layer list (one forward pass), with a one-line error when the converted graph fails."""
    try:
        return wrapper.layers()
    except Exception as e:  # noqa: BLE001 - the converted graph fails on this input
        h, w = wrapper.input_size
        raise ModelLoadError(f"{source} fails on a 1x3x{h}x{w} input after conversion "
                             f"({type(e).__name__}: {_first_line(e)}); set the input size") from None


_ACTIVATIONS = ("ReLU", "ReLU6", "PReLU", "OnnxPReLU", "LeakyReLU", "ELU", "SiLU", "GELU", "Hardswish")


def residual_ends(module: nn.Module) -> set[str]:
    """Submodules that end a residual block: an ``Add`` of two computed maps, or the one activation
    right after it when the sum feeds nothing else (a ResNet's ``relu`` after ``out += identity``)."""
    graph = getattr(module, "graph", None)
    if graph is None:
        return set()
    ends = set()
    for node in graph.nodes:
        if node.op != "call_module" or len(node.args) != 2:
            continue
        sub = module.get_submodule(node.target)
        if getattr(sub, "math_op_function", None) is not torch.add:
            continue
        if not all(getattr(a, "op", None) == "call_module" for a in node.args):
            continue  # a bias or constant added, not a join of two branches
        end = node
        if len(end.users) == 1:
            (user,) = end.users
            if user.op == "call_module" and type(module.get_submodule(user.target)).__name__ in _ACTIVATIONS:
                end = user
        ends.add(str(end.target))
    return ends


def stage_ends(layers: list[LayerInfo], preferred: set[str] = frozenset(), count: int = 4) -> dict[str, str]:
    """``stage1``.. -> the end of each run of spatial layers at one resolution (more than 1x1), in graph
    order, for the last ``count`` runs (the runs before them are the stem). A run's end is its last
    ``preferred`` layer (a residual block's end, see :func:`residual_ends`), else its last layer: the
    outputs of ``layer1``..``layer4`` of a ResNet or IResNet."""
    runs: list[list] = []  # [(H, W), last layer, last preferred layer or None]
    for layer in layers:
        if not layer.is_spatial or layer.shape[1] * layer.shape[2] <= 1:
            continue
        hw = (layer.shape[1], layer.shape[2])
        if not runs or runs[-1][0] != hw:
            runs.append([hw, None, None])
        runs[-1][1] = layer.name
        if layer.name in preferred:
            runs[-1][2] = layer.name
    return {f"stage{i}": run[2] or run[1] for i, run in enumerate(runs[-count:], start=1)}


def _class_names(task: str, out: tuple[int, ...]) -> list[str] | None:
    if task != "classification":
        return None
    n = int(out[0])
    if n == 1000:
        import torchvision

        return list(torchvision.models.ResNet18_Weights.DEFAULT.meta["categories"])
    return [f"class {i}" for i in range(n)]


def _size_option(options: dict) -> tuple[int, int] | None:
    size = options.get("input_size")
    if not size:
        return None
    return (int(size), int(size)) if isinstance(size, int) else (int(size[0]), int(size[1]))


def check_options(options: dict) -> None:
    """One-line errors for options load_onnx does not understand, before any work is done."""
    known = {"input_size", "mean", "std", "normalize", "channel_order", "task"}
    unknown = sorted(set(options) - known)
    if unknown:
        raise ModelLoadError(f"unknown option(s) for an ONNX model: {', '.join(unknown)} "
                             f"(known: {', '.join(sorted(known))})")
    if str(options.get("channel_order") or "RGB").upper() not in ("RGB", "BGR"):
        raise ModelLoadError(f"channel order must be RGB or BGR, not {options['channel_order']!r}")
    if options.get("task") not in (None, "classification", "embedding"):
        raise ModelLoadError(f"task must be classification or embedding, not {options['task']!r}")
    for key in ("mean", "std"):
        if options.get(key) is not None and len(tuple(options[key])) not in (1, 3):
            raise ModelLoadError(f"{key} needs 1 or 3 values, got {options[key]!r}")


def load_onnx(path: str | Path, weights: str | None = None, *, name: str | None = None, source: str | None = None,
              **options) -> ModelWrapper:
    """An ONNX file as a :class:`ModelWrapper` (see the module docstring for the conventions)."""
    path = Path(path).expanduser()
    source = source or str(path)
    if weights is not None:
        raise ModelLoadError(f"{path.name} is an ONNX model and carries its own weights; drop --weights")
    check_options(options)
    started = time.perf_counter()
    proto = read_onnx(path)
    spec = read_input(proto, path.name)
    if len(proto.graph.output) != 1:
        raise ModelLoadError(f"{path.name} has {len(proto.graph.output)} outputs (a detector or landmark model?); "
                             "famegui explains networks with one output")
    module = convert_graph(proto, path.name)
    seconds = time.perf_counter() - started
    size = _size_option(options) or spec.size or INSIGHTFACE_SIZE
    out = output_shape(proto, module, size, spec.batch, path.name)
    looks_like_classes = len(out) == 1 and out[0] in CLASS_COUNTS
    task = options.get("task") or ("classification" if looks_like_classes else "embedding")
    if task == "classification" and spec.size is None and not _size_option(options) and out == (1000,):
        size = (224, 224)
    mean, std, norm_source = _normalisation(options, proto, task)
    face = task == "embedding" and tuple(size) == INSIGHTFACE_SIZE
    channel_order = str(options.get("channel_order") or "RGB").upper()
    wrapper = ModelWrapper(
        name=name or path.stem, module=module, input_size=tuple(size), mean=tuple(mean), std=tuple(std),
        task=task, class_names=_class_names(task, out), channel_order=channel_order,
        weights_id=file_sha256(path), threshold=DEFAULT_FACE_THRESHOLD if face else None,
        alignment="arcface112" if face else None, source=source,
        extras={"format": "onnx", "file": str(path), "opset": {d.domain or "ai.onnx": d.version
                                                                for d in proto.opset_import},
                "producer": f"{proto.producer_name} {proto.producer_version}".strip(),
                "input_name": spec.name, "batch": spec.batch, "normalisation": norm_source,
                "conversion_s": round(seconds, 3)},
    )
    if face:
        wrapper.extras["threshold_is_default"] = True
    stages = stage_ends(_layers(wrapper, path.name), residual_ends(module))
    wrapper.extras["stages"] = stages
    wrapper.default_layer = list(stages.values())[-1] if stages else None
    return wrapper
