"""The method registry: one declaration per explanation method.

Every module of the :mod:`famegui.methods` package registers its methods with
:func:`register` when imported; the registry imports them all on first use, so
a new method is one new file. Each method declares the tasks it supports, whether it gives e+/e- (``"pair"``),
one signed map (``"signed"``) or one unsigned map (``"single"``), its
parameters with defaults and ranges, and a cost hint. The CLI flags, the GUI
controls and the export sidecars are all generated from these declarations.

A method is a function ``fn(ctx: MethodContext) -> np.ndarray`` returning an
(H, W) float32 map at the model's input resolution: in [0, 1] for unsigned
maps, in [-1, 1] for signed ones. Whether a map is signed is declared here
(:meth:`MethodSpec.signed`), never guessed from its values. Tasks (the target's
``task``, see :mod:`famegui.targets`):

- ``"classification"``: target kind ``class`` (``ctx.target.class_index``);
- ``"verification"``: target kind ``similar`` (e+) or ``dissimilar`` (e-), with a
  reference image (``ctx.reference``) and its frozen embedding (``ctx.reference_embedding``);
- ``"cell"``: target kind ``cell`` (``ctx.target.layer``, ``ctx.target.cell``).
"""
from __future__ import annotations

import importlib
import math
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from ..targets import TASKS, Target

if TYPE_CHECKING:
    from ..models.wrapper import ModelWrapper

OUTPUTS = ("pair", "signed", "single")
COSTS = ("cheap", "iterative", "sampling")


@dataclass(frozen=True)
class Param:
    name: str  # python identifier; the CLI flag is --name-with-dashes
    type: type  # int, float, str or bool
    default: Any
    help: str = ""
    min: float | None = None
    max: float | None = None
    choices: tuple | None = None

    def coerce(self, value: Any) -> Any:
        """``value`` as this parameter's type, checked: finite, integral for an int, in range, among the
        choices. Raises ValueError (one line naming the parameter) otherwise."""
        if value is None:
            return None
        v = self._convert(value)
        if self.choices is not None and v not in self.choices:
            raise ValueError(f"{self.name} must be one of {', '.join(map(str, self.choices))}, got {v!r}")
        if self.min is not None and v < self.min:
            raise ValueError(f"{self.name} must be >= {_num(self.min)}, got {v}")
        if self.max is not None and v > self.max:
            raise ValueError(f"{self.name} must be <= {_num(self.max)}, got {v}")
        return v

    def _convert(self, value: Any) -> Any:
        bad = ValueError(f"{self.name} must be {_TYPE_WORDS.get(self.type, self.type.__name__)}, got {value!r}")
        if self.type is bool:
            if isinstance(value, bool):
                return value
            if isinstance(value, str) and value.strip().lower() in _BOOL_WORDS:
                return _BOOL_WORDS[value.strip().lower()]
            if isinstance(value, (int, float)) and value in (0, 1):
                return bool(value)
            raise bad
        if self.type is str:
            if not isinstance(value, (str, int, float)) or isinstance(value, bool):
                raise bad
            return str(value)
        if isinstance(value, bool) or not isinstance(value, (str, int, float, np.integer, np.floating)):
            raise bad  # a list, a dict, None inside JSON, True for a number
        if self.type is int and isinstance(value, (int, np.integer)):
            return _bounded(self.name, int(value))
        try:
            f = float(value)
        except (TypeError, ValueError, OverflowError):
            raise bad from None
        if not math.isfinite(f):
            raise ValueError(f"{self.name} must be a finite number, got {value!r}")
        if self.type is int:
            if isinstance(value, str):
                text = value.strip()
                try:
                    return _bounded(self.name, int(text))
                except ValueError as e:
                    if "too large" in str(e):
                        raise
            if f != int(f):
                raise ValueError(f"{self.name} must be a whole number, got {value!r}")
            return _bounded(self.name, int(f))
        return f


def _bounded(name: str, v: int) -> int:
    if abs(v) > 2 ** 62:
        raise ValueError(f"{name} is too large: {v}")
    return v


_TYPE_WORDS = {int: "a whole number", float: "a number", bool: "true or false", str: "text"}
_BOOL_WORDS = {"1": True, "true": True, "yes": True, "on": True, "0": False, "false": False, "no": False,
               "off": False}


def _num(x: float) -> str:
    return f"{x:g}" if isinstance(x, float) else str(x)


@dataclass
class MethodContext:
    model: ModelWrapper
    x: torch.Tensor  # (1,3,H,W) probe in [0,1]
    target: Target
    params: dict
    reference: torch.Tensor | None = None  # (1,3,H,W) the other image of a pair
    reference_embedding: torch.Tensor | None = None  # (1,D), frozen
    non_mate: torch.Tensor | None = None  # (1,3,H,W) a third face, another identity (triplet methods)
    non_mate_embedding: torch.Tensor | None = None  # (1,D), frozen
    threshold: float | None = None  # cosine decision threshold (model default or EER)
    progress: Callable[[float, np.ndarray | None], None] | None = None  # (fraction done, partial map)
    cancel: Callable[[], bool] | None = None
    seed: int = 0
    info: dict = field(default_factory=dict)  # extra facts a method reports (losses, iterations, ...)

    @property
    def task(self) -> str:
        return self.target.task

    def report(self, fraction: float, partial: np.ndarray | None = None) -> None:
        """Report progress and honour a pending cancel (raises :class:`Cancelled`)."""
        from ..core.fame import Cancelled

        if self.cancel is not None and self.cancel():
            raise Cancelled("cancelled")
        if self.progress is not None:
            self.progress(float(fraction), partial)


@dataclass(frozen=True)
class MethodSpec:
    name: str
    label: str
    tasks: frozenset
    output: str
    cost: str
    fn: Callable[[MethodContext], np.ndarray]
    params: tuple[Param, ...] = ()
    description: str = ""
    gradient_based: bool = True  # for the randomisation sanity check
    per_task_defaults: dict = field(default_factory=dict)  # task -> {param: default}
    task_outputs: dict = field(default_factory=dict)  # task -> output where it differs from ``output``
    uses_non_mate: bool = False  # verification: takes an optional non-mate image (triplet gain)
    signed_when: Callable[[dict], bool] | None = None  # a parameter that switches signed output on or off
    unavailable: str = ""  # why it cannot run here, one line (a missing extra); "" when it can

    def check_available(self) -> None:
        """Raises ValueError with :attr:`unavailable` (e.g. which extra to install) if the method cannot run."""
        if self.unavailable:
            raise ValueError(self.unavailable)

    def output_for(self, task: str) -> str:
        """What the method gives for ``task``: e+/e- ("pair"), one "signed" map, or one "single" map."""
        return self.task_outputs.get(task, self.output)

    def signed(self, task: str, params: dict | None = None) -> bool:
        """Whether the map for ``task`` with ``params`` is signed (in [-1, 1], 0 = no evidence)."""
        if self.signed_when is not None:
            return bool(self.signed_when(self._resolve(params, task)))
        return self.output_for(task) == "signed"

    def defaults(self, task: str | None = None) -> dict:
        d = {p.name: p.default for p in self.params}
        if task is not None:
            d.update(self.per_task_defaults.get(task, {}))
        return d

    def resolve(self, given: dict | None, task: str | None = None) -> dict:
        """Defaults overridden by ``given`` (unknown names are an error), coerced and range-checked; the
        parameters of a run, so a method that cannot run here (:attr:`unavailable`) says why."""
        self.check_available()
        return self._resolve(given, task)

    def _resolve(self, given: dict | None, task: str | None) -> dict:
        out = self.defaults(task)
        by_name = {p.name: p for p in self.params}
        for k, v in (given or {}).items():
            if v is None:
                continue
            if k not in by_name:
                raise ValueError(f"{self.name} has no parameter {k!r} (it has: {', '.join(by_name) or 'none'})")
            out[k] = by_name[k].coerce(v)
        return out


REGISTRY: dict[str, MethodSpec] = {}
_loaded = False
_NOT_PROVIDERS = ("registry",)  # modules of the package that register nothing


def register(spec: MethodSpec) -> MethodSpec:
    if spec.output not in OUTPUTS or spec.cost not in COSTS or not set(spec.tasks) <= set(TASKS):
        raise ValueError(f"bad declaration for {spec.name}")
    for p in spec.params:  # one flag name means one thing across methods
        for other in REGISTRY.values():
            for q in other.params:
                if q.name == p.name and q.type is not p.type:
                    raise ValueError(f"parameter {p.name} of {spec.name} clashes with {other.name}")
    REGISTRY[spec.name] = spec
    return spec


def _load_providers() -> None:
    global _loaded
    if _loaded:
        return
    _loaded = True
    package = importlib.import_module(__package__)
    for info in pkgutil.iter_modules(package.__path__):
        if info.name not in _NOT_PROVIDERS and not info.name.startswith("_"):
            importlib.import_module(f"{__package__}.{info.name}")


def methods(task: str | None = None) -> list[MethodSpec]:
    """The methods that can run here (a method whose extra is not installed is left out), cheapest first."""
    _load_providers()
    out = [m for m in REGISTRY.values() if not m.unavailable]
    if task is not None:
        out = [m for m in out if task in m.tasks]
    order = {c: i for i, c in enumerate(COSTS)}
    return sorted(out, key=lambda m: (order[m.cost], m.name != "fame", m.name))


def get_method(name: str) -> MethodSpec:
    _load_providers()
    if name not in REGISTRY:
        raise ValueError(f"unknown method {name!r}; `famegui methods` lists them ({', '.join(sorted(REGISTRY))})")
    return REGISTRY[name]


def all_params() -> dict[str, Param]:
    """Every parameter name across methods (for CLI flags)."""
    _load_providers()
    out: dict[str, Param] = {}
    for m in REGISTRY.values():
        for p in m.params:
            out.setdefault(p.name, p)
    return out


def run_method(name: str, model: ModelWrapper, x: torch.Tensor, target: Target, params: dict | None = None, *,
               reference: torch.Tensor | None = None, threshold: float | None = None,
               progress=None, cancel=None, seed: int = 0, info: dict | None = None,
               non_mate: torch.Tensor | None = None) -> np.ndarray:
    """Compute one map with a registered method; returns (H,W) float32.

    ``non_mate`` (verification only) is passed to methods that declare ``uses_non_mate``
    and ignored by the others.
    """
    spec = get_method(name)
    spec.check_available()
    task = target.task
    if task not in spec.tasks:
        raise ValueError(f"{spec.label} does not support {task} (it supports: {', '.join(sorted(spec.tasks))})")
    resolved = spec.resolve(params, task)
    if "blur_kernel" in resolved or "blur_sigma" in resolved:  # before the work, not after it
        from ..core.attribution import check_blur

        check_blur(resolved.get("blur_kernel"), resolved.get("blur_sigma"), tuple(x.shape[-2:]))
    ref_emb = None
    x = x.to(model.device)
    if target.needs_reference:
        if reference is None:
            raise ValueError(f"{spec.label} on a pair needs a reference image")
        reference = reference.to(model.device)
        with torch.no_grad():
            ref_emb = model(reference).detach()
    nm, nm_emb = None, None
    if non_mate is not None and target.needs_reference and spec.uses_non_mate:
        nm = non_mate.to(model.device)
        with torch.no_grad():
            nm_emb = model(nm).detach()
    ctx = MethodContext(model=model, x=x, target=target, params=resolved, reference=reference,
                        reference_embedding=ref_emb, non_mate=nm, non_mate_embedding=nm_emb, threshold=threshold,
                        progress=progress, cancel=cancel, seed=seed, info=info if info is not None else {})
    amap = np.asarray(spec.fn(ctx), dtype=np.float32)
    if amap.shape != tuple(x.shape[-2:]):
        raise RuntimeError(f"{spec.label} returned shape {amap.shape}, expected {tuple(x.shape[-2:])}")
    finite = np.isfinite(amap)
    if not finite.all():  # recorded for the diagnosis of an empty map (famegui.report.check_map)
        ctx.info["non_finite_values"] = int(amap.size - finite.sum())
    return np.nan_to_num(amap, nan=0.0, posinf=0.0, neginf=0.0)
