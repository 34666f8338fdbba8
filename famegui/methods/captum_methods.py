"""Gradient and occlusion baselines through captum (Kokhlikyan et al. 2020): IG, Saliency, SmoothGrad,
Occlusion and Guided Backprop.

Every attribution is computed by the library itself; this module only supplies
- the network with its normalisation folded in (:class:`famegui.methods.cam.FoldedNetwork`): captum is fed
  [0,1] RGB like every other famegui method, so IG's baselines, SmoothGrad's noise and Occlusion's fill are
  in pixel space;
- the explained output, from the target's kind: for a class or a face pair the kind's
  :meth:`~famegui.targets.TargetKind.cam_target` read on the network's output (the class logit;
  ``cos(f(x), r)`` for e+, ``1 - cos(f(x), r)`` for e-, the true cosine: the norm of f(x) is not
  detached); for a cell (the ``cell`` task: ``ctx.target.layer``, ``ctx.target.cell``) captum's
  ``Neuron*`` variants with a selector of ``sum_c |a_c[i, j]|`` on the layer's output (FAME Eq. 5), and for
  Occlusion the kind's :meth:`~famegui.targets.TargetKind.explained_score` (the cell's value);
- progress and cancellation from every forward pass of the network (``batch_size`` images at most per pass:
  IG's internal batches, SmoothGrad's noisy samples, Occlusion's windows).

:func:`captum_attribution` returns captum's raw attribution (1, 3, H, W); :func:`attribution_map` turns it
into the registry's (H, W) map:
- signed methods (IG, Occlusion): the sum over the colour channels (IG's attributions add up to
  ``F(x) - F(baseline)``), divided by its largest magnitude: in [-1, 1], positive = evidence for the
  target. With ``signed`` off: the positive part only, divided by its maximum, in [0, 1]. Face pairs
  default to that (output ``pair``): e+ is the part that raises the cosine, e- the part that raises
  1 - cos (the part that lowers the cosine), as FGGB's e+/e-;
- unsigned methods (Saliency, SmoothGrad, Guided Backprop): ``max_c |a_c|`` (Simonyan et al.'s reduction),
  divided by its maximum: in [0, 1].

Saliency and SmoothGrad take absolute gradients, so cos and 1 - cos give the very same map: on a face pair
they are declared ``single`` (one map for e+ and e-). Guided Backprop's ReLU rule is not linear in the
gradient, so its e+ and e- differ (``pair``). Guided Backprop overrides the backward pass of ``nn.ReLU``
modules only: a network without them (``F.relu``, GELU, TorchScript) is refused rather than given the
plain gradient.
"""
from __future__ import annotations

import math
import threading
import warnings
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from ..models.extras import missing, needs
from ..models.wrapper import to_grid
from .cam import FoldedNetwork
from .face_common import scale_absmax, scale_max, to_numpy
from .registry import MethodContext, MethodSpec, Param, register

BASELINES = ("black", "white", "gray", "blur")


@dataclass(frozen=True)
class CaptumMethod:
    """One captum method as famegui runs it: its registry name, whether its raw attribution is signed
    (reduced by a sum over colour) or unsigned (``max_c |a_c|``)."""

    name: str
    signed: bool


CAPTUM_METHODS = {m.name: m for m in (CaptumMethod("ig", True), CaptumMethod("saliency", False),
                                      CaptumMethod("smoothgrad", False), CaptumMethod("occlusion", True),
                                      CaptumMethod("gbp", False))}


# ----------------------------------------------------------------------------- what is explained
class ExplainedOutput(nn.Module):
    """Images (B,3,H,W) in [0,1] -> (B,) the output a class or pair target explains: the folded network and
    the target kind's reading of its output (a module, so that Guided Backprop finds the ReLUs)."""

    def __init__(self, folded: FoldedNetwork, read: Callable[[torch.Tensor], torch.Tensor]) -> None:
        super().__init__()
        self.folded = folded
        self._read = read

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._read(self.folded(x))


def _read_output(ctx: MethodContext) -> Callable[[torch.Tensor], torch.Tensor]:
    """The target kind's reading of the network output: a class logit, or cos / 1 - cos to the reference
    (the true cosine: ``detach_norms`` off, no scale)."""
    return ctx.target.spec.cam_target(ctx.model, ctx.target, ctx.reference_embedding, {"detach_norms": False})


def cell_selector(ctx: MethodContext) -> Callable[[torch.Tensor], torch.Tensor]:
    """The neuron selector of a cell target for captum's ``Neuron*`` methods: the layer's output ->
    (B,) ``sum_c |a_c[i, j]|``, whatever the layer's layout (channels last, transformer tokens)."""
    model, target = ctx.model, ctx.target
    info = model.layer_info(target.layer)
    if not info.is_spatial:
        raise ValueError(f"layer {target.layer!r} of {model.name} has output shape {info.shape}, not a feature map")
    i, j = target.cell

    def select(out):
        grid = to_grid(out[0] if isinstance(out, tuple) else out, info)
        if not (i < grid.shape[2] and j < grid.shape[3]):
            raise ValueError(f"cell ({i}, {j}) is outside the {grid.shape[2]}x{grid.shape[3]} grid of "
                             f"{target.layer}")
        return grid[:, :, i, j].abs().sum(dim=1)

    return select


class _Counter:
    """Called before each forward pass with its batch size: reports done / total and honours cancel."""

    def __init__(self, ctx: MethodContext, total: int) -> None:
        self.ctx, self.total, self.done = ctx, max(int(total), 1), 0

    def __call__(self, batch: int) -> None:
        self.ctx.report(min(1.0, self.done / self.total))
        self.done += int(batch)


# ----------------------------------------------------------------------------- inputs of the methods
def ig_baseline(x: torch.Tensor, kind: str, sigma: float = 10.0) -> torch.Tensor:
    """IG's starting image for ``x`` (1,3,H,W) in [0,1]: black, white, mid gray, or ``x`` blurred by a
    Gaussian of ``sigma`` pixels (Sturmfels et al. 2020)."""
    if kind == "black":
        return torch.zeros_like(x)
    if kind == "white":
        return torch.ones_like(x)
    if kind == "gray":
        return torch.full_like(x, 0.5)
    if kind == "blur":
        from torchvision.transforms.functional import gaussian_blur

        kernel = min(2 * math.ceil(3 * sigma) + 1, 2 * min(x.shape[-2:]) - 1)
        kernel -= 1 - kernel % 2  # odd
        return gaussian_blur(x, [kernel, kernel], [float(sigma), float(sigma)])
    raise ValueError(f"baseline must be one of {', '.join(BASELINES)}, got {kind!r}")


def occlusion_windows(size: tuple[int, int], window: int, stride: int) -> int:
    """How many window positions captum's Occlusion evaluates on an image of ``size`` (H, W)."""
    h, w = size
    if window > min(h, w):
        raise ValueError(f"occlusion window {window} does not fit a {h}x{w} image")
    if stride > window:  # captum refuses it; pixels between the windows would never be hidden
        raise ValueError(f"occlusion stride {stride} is larger than the window {window}: some pixels would "
                         "never be hidden; use a stride <= window")
    return ((h - window) // stride + 1) * ((w - window) // stride + 1)


_quiet_lock = threading.Lock()


@contextmanager
def _quiet_relu_hooks():
    """Silence captum's note that it sets backward hooks on ReLUs (Guided Backprop: every run)."""
    with _quiet_lock, warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Setting backward hooks on ReLU")
        yield


def _input(ctx: MethodContext) -> torch.Tensor:
    return ctx.x[:1].detach().to(ctx.model.device).clone().requires_grad_(True)


def _check_relus(ctx: MethodContext) -> None:
    model = ctx.model
    if model.is_scripted or not any(isinstance(m, nn.ReLU) for m in model.module.modules()):
        raise ValueError(f"Guided Backprop changes the backward pass of nn.ReLU modules, and {model.name} has none "
                         "(a TorchScript model, F.relu or another activation): the map would be the plain gradient")


# ----------------------------------------------------------------------------- captum's attribution
def captum_attribution(ctx: MethodContext, method: str) -> torch.Tensor:
    """captum's raw attribution of ``ctx.x`` for ``ctx.target`` by ``method`` (a name of
    :data:`CAPTUM_METHODS`): a (1, 3, H, W) tensor, before famegui's display post-processing.

    Parameters
    ----------
    ctx : MethodContext
        The input in [0,1], the target, the resolved parameters of ``method``, the reference embedding of a
        pair; its ``report`` is called before every forward pass (progress, cancel).
    method : str
        ``"ig"``, ``"saliency"``, ``"smoothgrad"``, ``"occlusion"`` or ``"gbp"``.

    Returns
    -------
    torch.Tensor
        (1, 3, H, W), detached, on the model's device.
    """
    if method not in CAPTUM_METHODS:
        raise ValueError(f"unknown captum method {method!r} (one of {', '.join(CAPTUM_METHODS)})")
    if method == "gbp":
        _check_relus(ctx)
    if method == "occlusion":
        run = _occlusion
    else:  # a cell through captum's Neuron* variant, a class or a pair through the explained output
        run = _NEURON[method] if ctx.task == "cell" else _OUTPUT[method]
    ctx.report(0.0)
    with torch.enable_grad():
        out = run(ctx)
    return out.detach()


def _total(ctx: MethodContext, method: str) -> int:
    p = ctx.params
    return {"ig": p.get("n_steps"), "smoothgrad": p.get("samples")}.get(method) or 1


def _output_net(ctx: MethodContext, method: str) -> ExplainedOutput:
    return ExplainedOutput(FoldedNetwork(ctx.model, _Counter(ctx, _total(ctx, method))), _read_output(ctx))


def _stdev(ctx: MethodContext, x: torch.Tensor) -> float:
    """SmoothGrad's noise: ``noise`` times the input's range x_max - x_min (Smilkov et al.)."""
    return float(ctx.params["noise"]) * float(x.detach().max() - x.detach().min())


@contextmanager
def _seeded(ctx: MethodContext, x: torch.Tensor):
    """torch's global generator seeded for SmoothGrad's noise (captum draws it with torch.normal), restored
    after."""
    seed = ctx.params.get("seed")
    devices = [x.device] if x.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(int(ctx.seed if seed is None else seed))
        yield


def _ig_output(ctx: MethodContext) -> torch.Tensor:
    from captum.attr import IntegratedGradients

    x, p = _input(ctx), ctx.params
    return IntegratedGradients(_output_net(ctx, "ig")).attribute(
        x, baselines=ig_baseline(x.detach(), p["baseline"], p["baseline_sigma"]), n_steps=p["n_steps"],
        internal_batch_size=p["batch_size"])


def _saliency_output(ctx: MethodContext) -> torch.Tensor:
    from captum.attr import Saliency

    return Saliency(_output_net(ctx, "saliency")).attribute(_input(ctx), abs=True)


def _smoothgrad_output(ctx: MethodContext) -> torch.Tensor:
    from captum.attr import NoiseTunnel, Saliency

    x, p = _input(ctx), ctx.params
    with _seeded(ctx, x):
        return NoiseTunnel(Saliency(_output_net(ctx, "smoothgrad"))).attribute(
            x, nt_type="smoothgrad", nt_samples=p["samples"], nt_samples_batch_size=p["batch_size"],
            stdevs=_stdev(ctx, x), abs=False)


def _gbp_output(ctx: MethodContext) -> torch.Tensor:
    from captum.attr import GuidedBackprop

    with _quiet_relu_hooks():
        return GuidedBackprop(_output_net(ctx, "gbp")).attribute(_input(ctx))


def _neuron_parts(ctx: MethodContext, method: str):
    folded = FoldedNetwork(ctx.model, _Counter(ctx, _total(ctx, method)))
    return folded, ctx.model.get_layer(ctx.target.layer), cell_selector(ctx)


def _ig_cell(ctx: MethodContext) -> torch.Tensor:
    from captum.attr import NeuronIntegratedGradients

    x, p = _input(ctx), ctx.params
    net, layer, select = _neuron_parts(ctx, "ig")
    return NeuronIntegratedGradients(net, layer).attribute(
        x, select, baselines=ig_baseline(x.detach(), p["baseline"], p["baseline_sigma"]), n_steps=p["n_steps"],
        internal_batch_size=p["batch_size"])


def _saliency_cell(ctx: MethodContext) -> torch.Tensor:
    from captum.attr import NeuronGradient

    net, layer, select = _neuron_parts(ctx, "saliency")
    return NeuronGradient(net, layer).attribute(_input(ctx), select)


def _smoothgrad_cell(ctx: MethodContext) -> torch.Tensor:
    from captum.attr import NeuronGradient, NoiseTunnel

    x, p = _input(ctx), ctx.params
    net, layer, select = _neuron_parts(ctx, "smoothgrad")
    with _seeded(ctx, x):
        return NoiseTunnel(NeuronGradient(net, layer)).attribute(
            x, nt_type="smoothgrad", nt_samples=p["samples"], nt_samples_batch_size=p["batch_size"],
            stdevs=_stdev(ctx, x), neuron_selector=select)


def _gbp_cell(ctx: MethodContext) -> torch.Tensor:
    from captum.attr import NeuronGuidedBackprop

    net, layer, select = _neuron_parts(ctx, "gbp")
    with _quiet_relu_hooks():
        return NeuronGuidedBackprop(net, layer).attribute(_input(ctx), select)


def _occlusion(ctx: MethodContext) -> torch.Tensor:
    """Occlusion of a class or pair target through the kind's reading of the output, of a cell through the
    kind's explained score (the cell's value); ``batch_size`` windows per forward pass."""
    from captum.attr import Occlusion

    x, p = ctx.x[:1].detach().to(ctx.model.device), ctx.params
    windows = occlusion_windows(tuple(x.shape[-2:]), p["window"], p["stride"])
    count = _Counter(ctx, windows + 1)  # the unoccluded input first
    if ctx.task == "cell":
        score = ctx.target.spec.explained_score(ctx.model, ctx.target, ctx.reference_embedding)[0]
    else:
        score = ExplainedOutput(FoldedNetwork(ctx.model), _read_output(ctx))

    def forward(xs: torch.Tensor) -> torch.Tensor:
        count(xs.shape[0])
        return score(xs)

    with torch.no_grad():
        return Occlusion(forward).attribute(x, sliding_window_shapes=(3, p["window"], p["window"]),
                                            strides=(3, p["stride"], p["stride"]), baselines=float(p["fill"]),
                                            perturbations_per_eval=p["batch_size"])


_OUTPUT = {"ig": _ig_output, "saliency": _saliency_output, "smoothgrad": _smoothgrad_output, "gbp": _gbp_output}
_NEURON = {"ig": _ig_cell, "saliency": _saliency_cell, "smoothgrad": _smoothgrad_cell, "gbp": _gbp_cell}


# ----------------------------------------------------------------------------- the map
def attribution_map(raw: torch.Tensor, method: str, signed: bool = True) -> np.ndarray:
    """The registry's (H, W) float32 map of captum's raw attribution ``raw`` (1, 3, H, W).

    Parameters
    ----------
    raw : torch.Tensor
        What :func:`captum_attribution` returned.
    method : str
        A name of :data:`CAPTUM_METHODS`: a signed method sums over colour, an unsigned one takes
        ``max_c |a_c|``.
    signed : bool
        Signed methods only: the map in [-1, 1] (divided by its largest magnitude), or its positive part
        in [0, 1] (divided by its maximum).

    Returns
    -------
    numpy.ndarray
        (H, W) float32: in [-1, 1] for a signed map, else in [0, 1]; an all-zero attribution stays zero, and a
        non-finite one stays non-finite (:func:`famegui.methods.run_method` records it for the diagnosis of the
        map).
    """
    a = raw.detach()[0].float()
    if CAPTUM_METHODS[method].signed:
        m = a.sum(dim=0)
        return to_numpy(scale_absmax(m) if signed else scale_max(m.clamp(min=0)))
    return to_numpy(scale_max(a.abs().amax(dim=0)))


def _method_fn(method: str) -> Callable[[MethodContext], np.ndarray]:
    def fn(ctx: MethodContext) -> np.ndarray:
        amap = attribution_map(captum_attribution(ctx, method), method, _signed(ctx.params))
        ctx.report(1.0, amap)
        return amap

    fn.__name__ = f"_{method}"
    return fn


# ----------------------------------------------------------------------------- registration
ALL_TASKS = frozenset({"classification", "verification", "cell"})
CAPTUM_MISSING = bool(missing("captum"))  # without the captum extra: left out of the lists, and asked for, say so


def _unavailable(label: str) -> str:
    return needs(label, "captum") if CAPTUM_MISSING else ""


def _batch(default: int, what: str) -> Param:
    return Param("batch_size", int, default, f"{what} per forward pass (progress and cancel between batches)",
                 1, 4096)


SIGNED = Param("signed", bool, None, "signed map in [-1,1] (positive = evidence for the target), or only the "
               "evidence for the target in [0,1]; IG and Occlusion default to signed for classes and cells and to "
               "the evidence only for face pairs (e+ and e- are then the two signs)")
# per task (the window's form and the CLI leave "signed" unset, so these apply)
SIGNED_BY_TASK = {"classification": {"signed": True}, "cell": {"signed": True}, "verification": {"signed": False}}


def _signed(p: dict) -> bool:
    """Whether ``p`` (resolved) asks for the signed map (unset: signed)."""
    return p.get("signed") is not False


register(MethodSpec(
    name="ig", label="Integrated Gradients", tasks=ALL_TASKS, output="signed", cost="iterative",
    fn=_method_fn("ig"), task_outputs={"verification": "pair"}, per_task_defaults=SIGNED_BY_TASK,
    unavailable=_unavailable("Integrated Gradients"),
    signed_when=_signed,
    params=(Param("n_steps", int, 50, "steps of the path integral from the baseline to the image", 1, 10000),
            Param("baseline", str, "black", "the image the path starts from", choices=BASELINES),
            Param("baseline_sigma", float, 10.0, "Gaussian sigma in pixels of the 'blur' baseline", 0.1, 1000.0),
            _batch(16, "path images"), SIGNED),
    description="Integrated Gradients (Sundararajan et al. 2017): (x - x') times the gradient averaged along "
                "the straight path from a baseline x' to x (captum)",
))

register(MethodSpec(
    name="saliency", label="Saliency", tasks=ALL_TASKS, output="single", cost="cheap",
    fn=_method_fn("saliency"),
    unavailable=_unavailable("Saliency"),
    description="Gradient saliency (Simonyan et al. 2014): max over colour of |d output / d x| (captum); "
                "one map for e+ and e- (the magnitude of the gradient of cos and 1 - cos is the same)",
))

register(MethodSpec(
    name="smoothgrad", label="SmoothGrad", tasks=ALL_TASKS, output="single", cost="sampling",
    fn=_method_fn("smoothgrad"),
    unavailable=_unavailable("SmoothGrad"),
    params=(Param("samples", int, 50, "noisy copies of the image averaged", 1, 100000),
            Param("noise", float, 0.15, "standard deviation of the Gaussian noise as a fraction of the image's "
                  "range x_max - x_min (the paper: 0.1 to 0.2)", 0.0, 10.0),
            _batch(16, "noisy images"),
            Param("seed", int, None, "seed of the noise (default: the run's seed)", 0, 2**31 - 1)),
    description="SmoothGrad (Smilkov et al. 2017): the gradient averaged over noisy copies of the image, then "
                "max over colour of its magnitude (captum NoiseTunnel over Saliency); one map for e+ and e-",
))

register(MethodSpec(
    name="occlusion", label="Occlusion", tasks=ALL_TASKS, output="signed", cost="sampling",
    fn=_method_fn("occlusion"), task_outputs={"verification": "pair"}, per_task_defaults=SIGNED_BY_TASK,
    unavailable=_unavailable("Occlusion"),
    signed_when=_signed, gradient_based=False,
    params=(Param("window", int, 16, "side of the occluding square in pixels", 1, 4096),
            Param("stride", int, 8, "step between window positions in pixels (a border the windows do not "
                  "reach stays 0)", 1, 4096),
            Param("fill", float, 0.5, "value of the occluded pixels in [0,1] (0.5 = the paper's gray square)",
                  0.0, 1.0),
            _batch(32, "occluded images"), SIGNED),
    description="Occlusion (Zeiler & Fergus 2014): the drop of the output when a sliding square hides each "
                "pixel, averaged over the windows covering it (captum)",
))

register(MethodSpec(
    name="gbp", label="Guided Backprop", tasks=ALL_TASKS, output="pair", cost="cheap",
    fn=_method_fn("gbp"), task_outputs={"classification": "single", "cell": "single"},
    unavailable=_unavailable("Guided Backprop"),
    description="Guided Backpropagation (Springenberg et al. 2015): the gradient with every ReLU passing back "
                "only positive signals; max over colour of its magnitude (captum; nn.ReLU modules only)",
))
