"""The CAM family in the method registry, through the ``grad-cam`` package (pytorch_grad_cam).

Every map is computed by the package itself; this module only supplies
- the network with its normalisation folded in (the package is fed [0,1] RGB,
  like every other famegui method, so Score-CAM's masking goes towards black and
  FullGrad's ``input x gradient`` is taken in [0,1] pixel space);
- the target, from the target's kind (:meth:`famegui.targets.TargetKind.cam_target`):
  a class logit (``ClassifierOutputTarget``) or, for a face pair, a callable on
  the embedding: ``cos(f(x), r)`` for e+ and ``1 - cos(f(x), r)`` for e-. The
  FAME authors detached the norms inside the cosine for their CAM baselines;
  ``detach_norms`` (default True) does the same with the norm of ``f(x)``;
- the target layer: the ``layer`` parameter, by default :func:`cam_layer` of
  the model (ResNet ``layer4``; a model may name its own in ``extras['cam_layer']``, e.g. ``stage3``
  for dlib's face ResNet).

The package returns ReLU'd, min-max scaled maps in [0, 1] at the input size;
the sign is lost, so e+ and e- are two runs with opposite targets. The package's
context manager releases its hooks after every run (also on errors or cancel).

Face pairs (output "pair"): Grad-CAM, Grad-CAM++, Grad-CAM-EW, HiResCAM, LayerCAM,
XGradCAM and Score-CAM. Classification only (output "single"): FullGrad (it takes
absolute values of every gradient term, so cos and 1 - cos give the same map),
EigenCAM (ignores the target) and SDD-CAM (Shadman et al., built on the package's
Grad-CAM maps of several classes, see :func:`sdd_combine`).

Score-CAM runs one forward pass per channel of the layer; its ``batch_size`` is
handed to the package, and progress and cancellation are reported from every
forward pass of the network (so between batches). For a face pair the channel
scores are cosines, which vary little between channels, and the package's
softmax over plain cosines gives nearly uniform weights: e+ and e- come out
almost alike (Pearson 0.9996 on the genuine sample pair). A face network's
class logits are scaled cosines (ArcFace: s * cos with s = 64), so the target
here is ``cos_scale * cos`` (default 64; 1 = plain cosine). The scale changes
nothing for the gradient CAMs (their maps are min-max scaled).

The ``cell`` task is not offered: a cell target only has gradients at layers
*before* the cell's layer, and at the cell's own layer Grad-CAM degenerates to
a feature-similarity map of that cell; the FAME feature-map view covers cells.
"""
from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from contextlib import contextmanager, nullcontext
from types import SimpleNamespace

import numpy as np
import torch
from torch import nn

from ..models.wrapper import ModelWrapper
from .registry import MethodContext, MethodSpec, Param, register


def cam_layer(model: ModelWrapper) -> str:
    """The default CAM target layer of ``model``: the model's own choice (``extras['cam_layer']``), else its
    default layer; for a vision transformer (a layer of patch tokens) the first token layer inside that
    block, the input of its attention: the patch tokens a last block puts out reach the output only through
    the class token computed inside it, so their gradient is zero (pytorch-grad-cam's advice too)."""
    layer = model.extras.get("cam_layer") or model.default_layer  # a model may name a better CAM layer
    if not layer:
        raise ValueError(f"{model.name} has no default layer for CAM methods; pass --layer NAME "
                         f"(`famegui layers --model {model.source or model.name}` lists them)")
    if not model.extras.get("cam_layer") and not model.is_scripted:
        try:
            info = model.layer_info(layer)
        except KeyError:
            return layer
        if info.layout == "tokens":
            inner = [i.name for i in model.layers() if i.name.startswith(layer + ".") and i.layout == "tokens"]
            return inner[0] if inner else layer
    return layer


class FoldedNetwork(nn.Module):
    """``model.module`` with the normalisation folded in: takes [0,1] RGB like :class:`ModelWrapper`.

    ``on_forward(batch_size)`` is called before every forward pass (Score-CAM's
    progress and cancellation hook into it).
    """

    def __init__(self, model: ModelWrapper, on_forward=None) -> None:
        super().__init__()
        self.net = model.module  # a registered child: FullGrad finds its bias layers
        self._normalize = model.normalize
        self._on_forward = on_forward

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self._on_forward is not None:
            self._on_forward(x.shape[0])
        return self.net(self._normalize(x))


def reshape_for(model: ModelWrapper, layer: str):
    """pytorch-grad-cam's ``reshape_transform`` for ``layer``, from its output's layout: None for a (C, H, W)
    map, the token grid (a vision transformer's patch tokens without the class token) or a channels-last map
    turned into (B, C, H, W) otherwise."""
    info = model.layer_info(layer)
    if not info.is_spatial:
        raise ValueError(f"layer {layer!r} of {model.name} gives {info.grid_text}, not a grid of cells: CAM "
                         f"methods need a feature map (`famegui layers --model {model.source or model.name}`)")
    if info.layout == "chw":
        return None
    return functools.partial(_grid_copy, info=info)


def _grid_copy(t: torch.Tensor, info) -> torch.Tensor:
    """The grid as a tensor of its own (the package detaches what it keeps in place: no views)."""
    from ..models.wrapper import to_grid

    return to_grid(t, info).clone()


def _layers_and_options(ctx: MethodContext, cam_class: str) -> tuple[list, dict]:
    """(target layers, the CAM class's options): the layer's reshape from its layout; Ablation-CAM's batch and,
    on tokens, its ablation of a channel of every token."""
    if cam_class == "FullGrad":
        return [], {}  # FullGrad uses every bias layer itself
    model = ctx.model
    layer_name = ctx.params.get("layer") or cam_layer(model)
    kwargs: dict = {"reshape_transform": reshape_for(model, layer_name)}
    if cam_class == "AblationCAM":
        kwargs["batch_size"] = int(ctx.params.get("batch_size") or 32)
        if kwargs["reshape_transform"] is not None:
            from pytorch_grad_cam.ablation_layer import AblationLayerVit

            kwargs["ablation_layer"] = AblationLayerVit()
    return [model.get_layer(layer_name)], kwargs


def _targets(ctx: MethodContext) -> list:
    """The package target of ``ctx.target``, from its kind (a class logit, or cos / 1 - cos to the reference)."""
    return [ctx.target.spec.cam_target(ctx.model, ctx.target, ctx.reference_embedding, ctx.params)]


_quiet_lock = threading.Lock()


@contextmanager
def _quiet(cam_class: str):
    """Silence the tqdm bar of Score-CAM or Ablation-CAM for the duration of one run (one run at a time)."""
    import tqdm as _tqdm
    from pytorch_grad_cam import ablation_cam, score_cam

    module = score_cam if cam_class == "ScoreCAM" else ablation_cam
    with _quiet_lock:
        saved = module.tqdm
        module.tqdm = SimpleNamespace(tqdm=functools.partial(_tqdm.tqdm, disable=True))
        try:
            yield
        finally:
            module.tqdm = saved


def run_cam(ctx: MethodContext, cam_class: str, targets: list | None = None) -> np.ndarray:
    """The package's ``cam_class`` on ``ctx``: (B,H,W) float32 maps in [0,1] (B = len(targets))."""
    import pytorch_grad_cam

    model = ctx.model
    if model.is_scripted:
        raise ValueError(f"{model.name} is a TorchScript model: CAM methods need layer hooks; "
                         "load it as a Python model (zoo name or package.module:callable)")
    cls = getattr(pytorch_grad_cam, cam_class)
    targets = _targets(ctx) if targets is None else targets
    x = ctx.x
    if x.shape[0] != len(targets):
        x = x[:1].expand(len(targets), -1, -1, -1)
    x = x.detach().to(model.device).clone()
    scorecam = cam_class in ("ScoreCAM", "AblationCAM")  # one forward pass per channel, with a tqdm bar
    progress_hook: Callable[[int], None] | None = None
    if scorecam:  # report progress from each forward pass of the channel-masked (ablated) images
        layer_name = ctx.params.get("layer") or cam_layer(model)
        total = model.layer_info(layer_name).shape[0] * len(targets)  # one masked image per channel
        state = {"first": True, "done": 0}

        def on_batch(batch: int) -> None:
            if state["first"]:  # the activation pass
                state["first"] = False
            else:
                state["done"] += batch
            ctx.report(min(1.0, state["done"] / max(total, 1)))

        progress_hook = on_batch

    folded = FoldedNetwork(model, progress_hook)
    layers, kwargs = _layers_and_options(ctx, cam_class)
    if cam_class not in ("ScoreCAM", "EigenCAM", "KPCA_CAM"):
        x.requires_grad_(True)  # the weights are frozen: gradients reach the layer through the input
    call: dict = {}  # Finer-CAM has its own call: the targets carry the comparison classes
    if cam_class != "FinerCAM":
        call = {"aug_smooth": bool(ctx.params.get("aug_smooth")), "eigen_smooth": bool(ctx.params.get("eigen_smooth"))}
    ctx.report(0.0)
    result = None
    with torch.enable_grad():
        with (_quiet(cam_class) if scorecam else nullcontext()):
            with cls(model=folded, target_layers=layers, **kwargs) as cam:
                if cam_class == "ScoreCAM":
                    cam.batch_size = int(ctx.params.get("batch_size") or 32)
                result = cam(input_tensor=x, targets=targets, **call)
                if hasattr(cam, "outputs"):
                    cam.outputs = None  # drop the retained graph now
    if result is None:  # the package swallows IndexError in __exit__
        raise RuntimeError(f"{cam_class} failed on layer {ctx.params.get('layer') or cam_layer(model)!r}")
    return np.asarray(result, dtype=np.float32)


def _finish(ctx: MethodContext, amap: np.ndarray) -> np.ndarray:
    amap = np.clip(np.nan_to_num(amap, nan=0.0, posinf=0.0, neginf=0.0), 0.0, 1.0).astype(np.float32)
    ctx.report(1.0, amap)
    return amap


def _cam_fn(cam_class: str):
    def fn(ctx: MethodContext) -> np.ndarray:
        if cam_class == "ShapleyCAM":
            return _finish(ctx, _shapley(ctx))
        return _finish(ctx, run_cam(ctx, cam_class, _finer_targets(ctx) if cam_class == "FinerCAM" else None)[0])

    fn.__name__ = f"_{cam_class.lower()}"
    return fn


def _shapley(ctx: MethodContext) -> np.ndarray:
    """ShapleyCAM; where the target is linear in the layer's activations (a ResNet's last stage under average
    pooling and a linear classifier) its Hessian term is zero and the package's autograd call fails: the
    weights are then the mean gradients, i.e. the map is Grad-CAM's, and ``ctx.info`` says so."""
    layer = ctx.params.get("layer") or cam_layer(ctx.model)
    if reshape_for(ctx.model, layer) is not None:
        raise ValueError("ShapleyCAM runs on (C, H, W) feature maps only: the package detaches a transformer's "
                         "reshaped tokens in place, which torch refuses, and torch's fused attention has no "
                         "second derivative; use Grad-CAM or another CAM method here")
    try:
        return run_cam(ctx, "ShapleyCAM")[0]
    except RuntimeError as e:
        if "does not require grad" not in str(e):
            raise
    ctx.info["note"] = "the target is linear in this layer: the Hessian term is zero, ShapleyCAM = Grad-CAM"
    return run_cam(ctx, "GradCAM")[0]


def _finer_targets(ctx: MethodContext) -> list:
    """Finer-CAM's target: the class logit minus ``alpha`` times those of the classes whose logits are
    nearest to it (the package's FinerWeightedTarget)."""
    from pytorch_grad_cam.utils.model_targets import FinerWeightedTarget

    model = ctx.model
    if ctx.target.kind != "class" or model.task != "classification":
        raise ValueError("Finer-CAM explains a class of a classifier")
    t = int(ctx.target.class_index)
    with torch.no_grad():
        logits = model(ctx.x[:1].to(model.device))[0]
    near = [int(k) for k in torch.argsort((logits - logits[t]).abs()) if int(k) != t]
    return [FinerWeightedTarget(t, near[: int(ctx.params["finer_classes"])], float(ctx.params["finer_alpha"]))]


# ----------------------------------------------------------------------------- SDD-CAM
def sdd_combine(cams: np.ndarray, target_index: int = 0, f_max: float = 50.0) -> tuple[np.ndarray, dict]:
    """Scaled Directed Divergence of a stack of CAMs (S, H, W); ``cams[target_index]`` is the target's.

    F = |S| * mean_{k!=t} mean|x_k| / mean|x_t|, clipped to [|S|, f_max];
    D = F x_t - sum_{k!=t} x_k; alpha = 0.2 + 0.2 std(D) / (std(D) + 1);
    SDD = exp(alpha D), min-max scaled to [0, 1].
    The paper takes std of the SDD map itself for alpha, which depends on alpha;
    std(D) breaks that circle (methods.md).
    """
    cams = np.asarray(cams, dtype=np.float64)
    s = cams.shape[0]
    xt = cams[target_index]
    others = np.delete(cams, target_index, axis=0)
    mt = float(np.abs(xt).mean())
    mo = float(np.abs(others).mean(axis=(1, 2)).mean()) if len(others) else 0.0
    factor = s * mo / mt if mt > 0 else f_max
    factor = float(np.clip(factor, s, max(f_max, s)))
    d = factor * xt - others.sum(axis=0)
    sd = float(d.std())
    alpha = 0.2 + 0.2 * sd / (sd + 1.0)
    z = alpha * d
    sdd = np.exp(z - z.max())  # same map after min-max, no overflow
    lo, hi = sdd.min(), sdd.max()
    out = (sdd - lo) / (hi - lo) if hi > lo else np.zeros_like(sdd)
    return out.astype(np.float32), {"factor": factor, "alpha": alpha}


def _sddcam(ctx: MethodContext) -> np.ndarray:
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    model = ctx.model
    if ctx.target.kind != "class" or model.task != "classification":
        raise ValueError("SDD-CAM explains a class of a classifier")
    t = int(ctx.target.class_index)
    n = int(ctx.params["sdd_classes"])
    with torch.no_grad():
        logits = model(ctx.x[:1].to(model.device))[0]
    order = [int(k) for k in torch.argsort(logits, descending=True) if int(k) != t]
    classes = [t] + order[: max(0, n - 1)]
    cams = run_cam(ctx, "GradCAM", targets=[ClassifierOutputTarget(k) for k in classes])
    sdd, _ = sdd_combine(cams, 0, float(ctx.params["sdd_max_factor"]))
    return _finish(ctx, sdd)


# ----------------------------------------------------------------------------- registration
def _layer_param() -> Param:
    return Param("layer", str, None, "CAM target layer (default: the model's CAM layer: ResNet layer4, "
                                     "dlib stage3)")


DETACH = Param("detach_norms", bool, True, "face pairs: detach the embedding norm in the cosine target "
                                           "(as the FAME authors did)")

_PAIR = frozenset({"classification", "verification"})
_CLS = frozenset({"classification"})

# name, label, package class, tasks, gradient based, description
_CAMS = (
    ("gradcam", "Grad-CAM", "GradCAM", _PAIR, True,
     "channel weights = mean gradient over positions; map = ReLU(sum_c w_c A_c)"),
    ("gradcam-pp", "Grad-CAM++", "GradCAMPlusPlus", _PAIR, True,
     "Grad-CAM with higher-order gradient weights"),
    ("gradcam-ew", "Grad-CAM-EW", "GradCAMElementWise", _PAIR, True,
     "element-wise Grad-CAM: sum_c ReLU(grad_c * A_c)"),
    ("hirescam", "HiResCAM", "HiResCAM", _PAIR, True,
     "sum_c grad_c * A_c element-wise, ReLU'd (faithful to the target for the chosen layer)"),
    # FullGrad takes absolute values of every gradient term: the maps for cos and 1 - cos are identical,
    # so it offers no e+/e- and stays a classification method
    ("fullgrad", "FullGrad", "FullGrad", _CLS, True,
     "|input x gradient| plus |bias x gradient| of every conv/BN bias (ignores the layer)"),
    ("layercam", "LayerCAM", "LayerCAM", _PAIR, True,
     "sum_c ReLU(grad_c) * A_c"),
    ("xgradcam", "XGradCAM", "XGradCAM", _PAIR, True,
     "channel weights = activation-weighted gradient sums"),
    ("scorecam", "Score-CAM", "ScoreCAM", _PAIR, False,
     "channel weights = softmax of the target score of the input masked by each upsampled channel "
     "(one forward pass per channel)"),
    ("eigencam", "EigenCAM", "EigenCAM", _CLS, False,
     "first principal component of the layer's activations (ignores the target)"),
    # EigenGradCAM's principal component has no sign: cos and 1 - cos (opposite gradients) give the same map
    # (to 1e-7 on the demo pair), so like FullGrad it offers no e+/e- and stays a classification method
    ("eigengradcam", "EigenGradCAM", "EigenGradCAM", _CLS, True,
     "first principal component of the layer's activations times their gradients"),
    ("ablationcam", "Ablation-CAM", "AblationCAM", _PAIR, False,
     "channel weights = the drop of the target score when the channel is zeroed (Ramaswamy and Desai, "
     "WACV 2020; one forward pass per channel)"),
    ("kpcacam", "KPCA-CAM", "KPCA_CAM", _CLS, False,
     "first kernel principal component of the layer's activations (Karmani et al. 2024; ignores the target)"),
    ("shapleycam", "ShapleyCAM", "ShapleyCAM", _PAIR, True,
     "channel weights from gradients and a Hessian-vector product, a Shapley value approximation (Cai, 2024)"),
    ("finercam", "Finer-CAM", "FinerCAM", _CLS, True,
     "Grad-CAM of the class logit minus alpha times the logits of the nearest classes (Zhang et al., "
     "CVPR 2025): what sets the class apart from its look-alikes"),
)

SMOOTH = (Param("aug_smooth", bool, False, "average the map over flipped and rescaled copies of the input "
                                           "(the package's test-time augmentation: 6 more passes)"),
          Param("eigen_smooth", bool, False, "the first principal component of the weighted activations instead "
                                             "of their sum (less noise)"))

for _name, _label, _cls, _tasks, _grad, _desc in _CAMS:
    _params: tuple = ()
    if _cls != "FullGrad":
        _params += (_layer_param(),)
    if _cls not in ("FinerCAM",):
        _params += SMOOTH
    if "verification" in _tasks:
        _params += (DETACH,)
    if _cls == "FinerCAM":
        _params += (Param("finer_classes", int, 3, "the nearest classes compared against", 1, 100),
                    Param("finer_alpha", float, 1.0, "weight of the nearest classes' logits", 0.0, 100.0))
    if _cls == "AblationCAM":
        _params += (Param("batch_size", int, 32, "ablated copies per forward pass", 1, 4096),)
    if _cls == "ScoreCAM":
        _params += (Param("batch_size", int, 32, "images per forward pass (progress and cancel between batches)",
                          1, 4096),
                    Param("cos_scale", float, 64.0, "face pairs: the channel scores are s * cos (or s * (1 - cos)) "
                          "before the package's softmax, like a face-recognition logit (ArcFace s = 64); "
                          "1 = the plain cosine, which gives nearly uniform weights", 0.01, 1000.0))
    register(MethodSpec(
        name=_name, label=_label, tasks=_tasks, output="pair" if "verification" in _tasks else "single",
        cost="sampling" if _cls in ("ScoreCAM", "AblationCAM") else "cheap", fn=_cam_fn(_cls), params=_params,
        description=_desc + " (pytorch_grad_cam)", gradient_based=_grad,
        task_outputs={"classification": "single"},
    ))

register(MethodSpec(
    name="sddcam", label="SDD-CAM", tasks=_CLS, output="single", cost="cheap", fn=_sddcam,
    params=(_layer_param(),
            Param("sdd_classes", int, 5, "CAMs in the set S: the target plus the top-scoring other classes", 2, 1000),
            Param("sdd_max_factor", float, 50.0, "upper clip of the scale factor F", 1.0, 1e6)),
    description="Scaled Directed Divergence (SDD-CAM): exp(alpha (F x_t - sum_k x_k)) over Grad-CAM maps "
                "of the target and the top other classes",
    gradient_based=True,
))
