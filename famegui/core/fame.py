"""The FAME / LOTS optimisation loop (FAME Eq. 3), one loop for every task.

    x_{t+1} = x_t - eta * g_t / max|g_t|,   g_t = dL(x_t)/dx_t,  max per sample over (C,H,W)

Tasks are loss callables ``x -> (B,)`` (see :mod:`famegui.targets`). Batch
elements never influence each other, so a batch gives the same result as
running its elements one by one. :func:`fame_steps` is a generator that
yields progress every ``every`` iterations (current loss and perturbed input)
so a GUI can draw while it runs; it can be cancelled between iterations.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field

import numpy as np
import torch

from .attribution import NORMALIZATIONS, perturbation_map

SPACES = ("pixel", "normalized")


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


def fame_steps(
    x0: torch.Tensor,
    loss_fn: Callable[[torch.Tensor], torch.Tensor],
    params: FameParams | None = None,
    *,
    every: int = 10,
    cancel: Callable[[], bool] | None = None,
    normalize: Callable[[torch.Tensor], torch.Tensor] | None = None,
    denormalize: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> Iterator[FameStep]:
    """Run the loop, yielding a :class:`FameStep` every ``every`` iterations and at the end.

    ``x0``: (B,3,H,W) float RGB in [0,1]. ``cancel()`` is polled between iterations;
    when it returns True, :class:`Cancelled` is raised.
    """
    params = (params or FameParams()).validate()
    if x0.ndim != 4 or x0.shape[1] != 3:
        raise ValueError(f"expected (B,3,H,W) images, got {tuple(x0.shape)}")
    to_z, to_x = _space(params, normalize, denormalize)
    x0 = x0.detach().float()
    z = to_z(x0).detach().clone()
    batch = x0.shape[0]
    active = torch.ones(batch, dtype=torch.bool, device=x0.device)
    taken = torch.zeros(batch, dtype=torch.long)
    every = max(1, int(every))
    total = int(params.iterations)
    initial = None
    loss_val = None
    for t in range(total):
        if cancel is not None and cancel():
            raise Cancelled(f"cancelled after {t} of {total} iterations")
        z.requires_grad_(True)
        loss = loss_fn(to_x(z))
        if loss.shape != (batch,):
            raise ValueError(f"loss must have shape ({batch},), got {tuple(loss.shape)}")
        (grad,) = torch.autograd.grad(loss.sum(), z)
        loss_val = loss.detach()
        if initial is None:
            initial = loss_val.cpu().numpy().copy()
        with torch.no_grad():
            if params.epsilon is not None:
                active &= loss_val >= params.epsilon
            peak = grad.abs().flatten(1).amax(1)
            scale = torch.where(active & (peak > 0), params.step / peak.clamp_min(1e-30),
                                torch.zeros_like(peak))
            z = z.detach() - scale.view(-1, 1, 1, 1) * grad
            taken += active.cpu().long()
            if params.clamp:
                z = to_z(to_x(z).clamp(0.0, 1.0))
        done = t + 1 == total or not bool(active.any())
        if (t + 1) % every == 0 or done:
            step = FameStep(t + 1, total, loss_val.cpu().numpy(), x0, to_x(z).detach(),
                            active.cpu().numpy(), done=done, initial_loss=initial,
                            steps=taken.numpy().copy())
            yield step
        if done:
            return


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
) -> FameResult:
    """Run FAME to the end and return the maps; ``callback`` sees every progress step."""
    params = (params or FameParams()).validate()
    history: list[np.ndarray] = []
    last: FameStep | None = None
    for step in fame_steps(x0, loss_fn, params, every=every, cancel=cancel,
                           normalize=normalize, denormalize=denormalize):
        history.append(step.loss)
        last = step
        if callback is not None:
            callback(step)
    assert last is not None
    with torch.no_grad():
        final = loss_fn(last.x).detach().cpu().numpy()
    return FameResult(
        maps=last.maps(params).astype(np.float32),
        x_final=last.x,
        initial_loss=last.initial_loss,
        final_loss=final,
        iterations=last.steps,
        params=params,
        loss_history=history,
    )
