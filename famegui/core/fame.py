"""The FAME / LOTS optimisation loop (FAME Eq. 3), one loop for every task.

    x_{t+1} = x_t - eta * g_t / max|g_t|,   g_t = dL(x_t)/dx_t,  max per sample over (C,H,W)

Tasks are loss callables ``x -> (B,)`` (see :mod:`famegui.targets`). Batch
elements never influence each other, so a batch gives the same result as
running its elements one by one. :func:`fame_steps` is a generator that
yields progress every ``every`` iterations (current loss and perturbed input)
so a GUI can draw while it runs; it can be cancelled between iterations.

Speed (all opt-in, the defaults are the paper's loop):

- ``converge_tol``: a sample stops when the correlation between its maps
  ``converge_every`` iterations apart reaches the tolerance (the iteration cap
  stays); ``FameResult.iterations`` records the steps each sample took, so the
  same parameters give the same map again;
- ``precision="bf16"`` (or ``"fp16"`` on a GPU): the loss runs under autocast,
  the image and the step stay float32;
- a :class:`Window`: each sample runs on a crop of its image (the receptive
  field of a cell, see :mod:`famegui.methods.fame`) and the loop pastes the
  perturbation back, so steps and maps are those of the full image;
- nothing is copied to the host inside the loop: loss, active mask and step
  counts stay on the model's device and are read every ``every`` iterations
  (and at the convergence checks) only.
"""
from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field

import numpy as np
import torch

from .attribution import NORMALIZATIONS, perturbation_map

SPACES = ("pixel", "normalized")
PRECISIONS = ("fp32", "bf16", "fp16")
_AUTOCAST = {"bf16": torch.bfloat16, "fp16": torch.float16}


class Cancelled(Exception):
    """The run was cancelled between two iterations."""


@dataclass
class FameParams:
    iterations: int = 500
    step: float = 1.0 / 255.0
    epsilon: float | None = None  # early stop when a sample's loss drops below it
    clamp: bool = False  # clamp the perturbed image to [0,1] after each step
    space: str = "pixel"  # "pixel": step in [0,1] RGB; "normalized": in the model's mean/std space
    blur_kernel: int = 49
    blur_sigma: float = 7.7
    normalization: str = "minmax"
    converge_tol: float | None = None  # stop a sample when corr(map_t, map_{t-k}) >= tol (None: off)
    converge_every: int = 20  # k, iterations between two convergence checks
    precision: str = "fp32"  # "bf16" / "fp16": autocast of the loss (forward and backward)
    crop: bool = False  # cell targets: run on the receptive field's crop (methods.fame decides the window)

    def validate(self) -> FameParams:
        if int(self.iterations) < 1:
            raise ValueError(f"iterations must be >= 1, got {self.iterations}")
        if not (self.step > 0 and np.isfinite(self.step)):
            raise ValueError(f"step must be a positive number, got {self.step}")
        if self.space not in SPACES:
            raise ValueError(f"space must be one of {SPACES}, not {self.space!r}")
        if self.normalization not in NORMALIZATIONS:
            raise ValueError(f"normalization must be one of {NORMALIZATIONS}, not {self.normalization!r}")
        if self.blur_kernel and self.blur_kernel > 1 and self.blur_kernel % 2 == 0:
            raise ValueError(f"blur kernel must be odd, got {self.blur_kernel}")
        if self.blur_sigma < 0:
            raise ValueError(f"blur sigma must be >= 0, got {self.blur_sigma}")
        if self.converge_tol is not None and not 0.0 < float(self.converge_tol) <= 1.0:
            raise ValueError(f"converge tol must be in (0, 1], got {self.converge_tol}")
        if int(self.converge_every) < 1:
            raise ValueError(f"converge every must be >= 1, got {self.converge_every}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, not {self.precision!r}")
        return self

    def to_dict(self) -> dict:
        return asdict(self)


def default_params(task: str, **overrides) -> FameParams:
    """Paper defaults: blur 49/7.7 for classification, 25/5 for faces."""
    base = FameParams(blur_kernel=25, blur_sigma=5.0) if task == "embedding" else FameParams()
    for k, v in overrides.items():
        if v is not None:
            setattr(base, k, v)
    return base.validate()


@dataclass(frozen=True)
class Window:
    """Sample ``b`` runs on the crop ``[y, y+h) x [x, x+w)`` of its image, ``(y, x) = offsets[b]``."""

    offsets: tuple[tuple[int, int], ...]
    size: tuple[int, int]

    def take(self, x: torch.Tensor) -> torch.Tensor:
        """(B,3,h,w) crops of (B,3,H,W) images."""
        h, w = self.size
        return torch.stack([x[b, :, y:y + h, x_:x_ + w] for b, (y, x_) in enumerate(self.offsets)])

    def paste(self, full: torch.Tensor, crops: torch.Tensor) -> torch.Tensor:
        """A copy of ``full`` (B,3,H,W) with each crop written back at its offset."""
        out = full.clone()
        h, w = self.size
        for b, (y, x_) in enumerate(self.offsets):
            out[b, :, y:y + h, x_:x_ + w] = crops[b]
        return out


@dataclass
class FameStep:
    """Progress of a run after ``iteration`` steps."""

    iteration: int
    total: int
    loss: np.ndarray  # (B,) loss at the current image
    x0: torch.Tensor
    x: torch.Tensor  # (B,3,H,W) current perturbed image in [0,1] RGB space
    active: np.ndarray  # (B,) still being optimised
    done: bool = False
    initial_loss: np.ndarray | None = None
    steps: np.ndarray | None = None  # (B,) steps taken per sample

    def maps(self, params: FameParams) -> np.ndarray:
        """Attribution maps (B,H,W) in [0,1] of the perturbation so far."""
        return perturbation_map(self.x0, self.x, params.blur_kernel, params.blur_sigma,
                                params.normalization).cpu().numpy()


@dataclass
class FameResult:
    maps: np.ndarray  # (B,H,W) float32 in [0,1]
    x_final: torch.Tensor
    initial_loss: np.ndarray
    final_loss: np.ndarray
    iterations: np.ndarray  # steps taken per sample (< T when stopped early)
    params: FameParams
    loss_history: list[np.ndarray] = field(default_factory=list)
    window: Window | None = None  # the crops the loop ran on (None: whole images)

    @property
    def empty(self) -> np.ndarray:
        """Samples whose map is all zero (e.g. loss already below epsilon at the start)."""
        return self.maps.reshape(len(self.maps), -1).max(1) <= 0


def _space(params: FameParams, normalize, denormalize):
    if params.space == "pixel":
        return (lambda x: x), (lambda z: z)
    if normalize is None or denormalize is None:
        raise ValueError("stepping in normalised space needs the model's normalisation")
    return normalize, denormalize


def map_correlation(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Pearson correlation per sample of two (B,H,W) map batches; NaN where a map is constant."""
    a = a.flatten(1).double()
    b = b.flatten(1).double()
    a = a - a.mean(1, keepdim=True)
    b = b - b.mean(1, keepdim=True)
    den = (a.norm(dim=1) * b.norm(dim=1))
    return torch.where(den > 0, (a * b).sum(1) / den.clamp_min(1e-300), torch.full_like(den, float("nan")))


class _Convergence:
    """The convergence rule: corr(map_t, map_{t-k}) >= tol ends a sample (on the device, no host copy)."""

    def __init__(self, params: FameParams, x0_full: torch.Tensor):
        self.params, self.x0 = params, x0_full
        self.previous: torch.Tensor | None = None

    def converged(self, x_full: torch.Tensor) -> torch.Tensor:
        p = self.params
        with torch.no_grad():
            m = perturbation_map(self.x0, x_full, p.blur_kernel, p.blur_sigma, p.normalization)
            prev, self.previous = self.previous, m
            if prev is None:
                return torch.zeros(m.shape[0], dtype=torch.bool, device=m.device)
            return map_correlation(m, prev) >= float(p.converge_tol)  # NaN (constant map) compares False


def _loss_and_grad(loss_fn, x_of_z, z, params: FameParams, batch: int):
    z.requires_grad_(True)
    dtype = _AUTOCAST.get(params.precision)
    with torch.autocast(z.device.type, dtype=dtype) if dtype is not None else contextlib.nullcontext():
        loss = loss_fn(x_of_z(z))
    if loss.shape != (batch,):
        raise ValueError(f"loss must have shape ({batch},), got {tuple(loss.shape)}")
    (grad,) = torch.autograd.grad(loss.sum(), z)
    return loss.detach().float(), grad.float()


# long: the loop and its bookkeeping (cancel, early stop, convergence, progress) read best in one place
def fame_steps(
    x0: torch.Tensor,
    loss_fn: Callable[[torch.Tensor], torch.Tensor],
    params: FameParams | None = None,
    *,
    every: int = 10,
    cancel: Callable[[], bool] | None = None,
    normalize: Callable[[torch.Tensor], torch.Tensor] | None = None,
    denormalize: Callable[[torch.Tensor], torch.Tensor] | None = None,
    window: Window | None = None,
    loss_for: Callable[[list[int]], Callable[[torch.Tensor], torch.Tensor]] | None = None,
) -> Iterator[FameStep]:
    """Run the loop, yielding a :class:`FameStep` every ``every`` iterations and at the end.

    ``x0``: (B,3,H,W) float RGB in [0,1]. ``cancel()`` is polled between iterations;
    when it returns True, :class:`Cancelled` is raised. With a ``window``, ``loss_fn``
    takes the crops and every yielded ``x`` is the full image with the crops pasted back.
    ``loss_for(rows)``, if given, is the loss of those rows of the batch alone: once samples
    have stopped (early stop, convergence), the loop computes only the others.
    """
    params = (params or FameParams()).validate()
    if x0.ndim != 4 or x0.shape[1] != 3:
        raise ValueError(f"expected (B,3,H,W) images, got {tuple(x0.shape)}")
    to_z, to_x = _space(params, normalize, denormalize)
    x0 = x0.detach().float()
    full = (lambda xc: window.paste(x0, xc)) if window is not None else (lambda xc: xc)
    z = to_z(window.take(x0) if window is not None else x0).detach().clone()
    batch = x0.shape[0]
    active = torch.ones(batch, dtype=torch.bool, device=x0.device)
    taken = torch.zeros(batch, dtype=torch.long, device=x0.device)
    conv = _Convergence(params, x0) if params.converge_tol is not None else None
    every, total = max(1, int(every)), int(params.iterations)
    initial = None
    rows, run_loss = None, loss_fn  # rows: the samples still computed once finished ones were dropped
    for t in range(total):
        if cancel is not None and cancel():
            raise Cancelled(f"cancelled after {t} of {total} iterations")
        if rows is None:
            loss_val, grad = _loss_and_grad(loss_fn, to_x, z, params, batch)
        else:
            loss_run, grad = _loss_and_grad(run_loss, to_x, z[rows], params, len(rows))
            loss_val = loss_val.index_copy(0, rows, loss_run)
        if initial is None:
            initial = loss_val.clone()
        with torch.no_grad():
            if params.epsilon is not None:
                active &= loss_val >= params.epsilon
            run_active = active if rows is None else active[rows]
            peak = grad.abs().flatten(1).amax(1)
            scale = torch.where(run_active & (peak > 0), params.step / peak.clamp_min(1e-30),
                                torch.zeros_like(peak))
            if rows is None:
                z = z.detach() - scale.view(-1, 1, 1, 1) * grad
            else:
                z = z.index_copy(0, rows, z[rows] - scale.view(-1, 1, 1, 1) * grad)
            taken += active.long()
            if params.clamp:
                z = to_z(to_x(z).clamp(0.0, 1.0))
            check = conv is not None and (t + 1) % int(params.converge_every) == 0
            if check:
                active &= ~conv.converged(full(to_x(z)))
        report = (t + 1) % every == 0 or t + 1 == total
        running = int(active.sum()) if report or check else batch  # the only host reads
        done = t + 1 == total or running == 0
        if report or done:
            yield FameStep(t + 1, total, loss_val.cpu().numpy(), x0, full(to_x(z).detach()),
                           active.cpu().numpy().copy(), done=done, initial_loss=initial.cpu().numpy(),
                           steps=taken.cpu().numpy().copy())
        if done:
            return
        if loss_for is not None and 0 < running < (batch if rows is None else len(rows)):
            rows = active.nonzero().flatten()
            run_loss = loss_for(rows.tolist())


def run_fame(
    x0: torch.Tensor,
    loss_fn: Callable[[torch.Tensor], torch.Tensor],
    params: FameParams | None = None,
    *,
    callback: Callable[[FameStep], None] | None = None,
    every: int = 10,
    cancel: Callable[[], bool] | None = None,
    normalize=None,
    denormalize=None,
    window: Window | None = None,
    loss_for=None,
) -> FameResult:
    """Run FAME to the end and return the maps; ``callback`` sees every progress step."""
    params = (params or FameParams()).validate()
    history: list[np.ndarray] = []
    last: FameStep | None = None
    for step in fame_steps(x0, loss_fn, params, every=every, cancel=cancel,
                           normalize=normalize, denormalize=denormalize, window=window, loss_for=loss_for):
        history.append(step.loss)
        last = step
        if callback is not None:
            callback(step)
    assert last is not None
    with torch.no_grad():
        final = loss_fn(window.take(last.x) if window is not None else last.x).detach().float().cpu().numpy()
    return FameResult(
        maps=last.maps(params).astype(np.float32),
        x_final=last.x,
        initial_loss=last.initial_loss,
        final_loss=final,
        iterations=last.steps,
        params=params,
        loss_history=history,
        window=window,
    )
