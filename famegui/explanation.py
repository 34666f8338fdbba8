"""The one owner of "explain one map": parameters and task resolved, the model's decision threshold, the method
run (FAME batched), the map checked, and an :class:`Explanation` that knows how to show and save itself.

Every caller goes through :func:`explain_rows`: the public :func:`famegui.explain`, the Session (the GUI's
views), ``famegui explain``, ``famegui reproduce``, the evaluation experiment and protocol runs. Nothing else
looks up a threshold, calls :func:`famegui.methods.run_method` for a user's map or checks a map.

A :class:`Row` is one request (an input, a target, the other images of a pair); rows of one call share a
method and its parameters. FAME runs a list of rows as batches (cells of one image, classes of several
images, pairs with their own references, e+ and e- together): the rows never influence each other, so each
map equals its own run up to float rounding.
"""
from __future__ import annotations

import io
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from .methods import get_method, run_method
from .methods.fame import X_FINAL
from .records import EmptyMapError, check_map, explain_record, write_outputs
from .targets import Target

if TYPE_CHECKING:
    from .models.wrapper import ModelWrapper

FATAL = ("raise", "keep")  # what a meaningless map (NaN input or weights) does: raise EmptyMapError, or is kept


@dataclass(frozen=True)
class RunInfo:
    """What a method reported about one run, typed (the sidecar's ``info`` is :meth:`to_dict`).

    Attributes
    ----------
    seconds : float
        Wall time of the map (a batch's time shared equally by its rows).
    iterations : int or None
        FAME: optimisation steps taken (fewer than the cap when it stopped early).
    initial_loss, final_loss : float or None
        FAME: the loss before the first and after the last step.
    threads : int or None
        torch's CPU thread count the map was made with (``famegui reproduce`` uses it again).
    crop : tuple of int or None
        FAME on a cell: the (height, width) of the receptive-field crop the loop ran on.
    batch : int
        How many rows shared the computation (1: on its own).
    non_finite_values : int
        Values of the map the method made NaN or infinite (set to 0).
    problem : str or None
        Why the map is empty or was not finite (None: a map with content).
    fatal : bool
        True when the map is meaningless (NaN input or weights).
    extra : dict
        Anything else the method reported (gweEBP's gain, a note).
    """

    seconds: float = 0.0
    iterations: int | None = None
    initial_loss: float | None = None
    final_loss: float | None = None
    threads: int | None = None
    crop: tuple[int, int] | None = None
    batch: int = 1
    non_finite_values: int = 0
    problem: str | None = None
    fatal: bool = False
    extra: dict = field(default_factory=dict)

    _TYPED = ("iterations", "initial_loss", "final_loss", "threads", "crop", "non_finite_values")

    @classmethod
    def from_dict(cls, info: dict, seconds: float = 0.0, batch: int = 1, problem=None) -> RunInfo:
        """A RunInfo from a method's free ``info`` dict (what :func:`famegui.methods.run_method` fills)."""
        info = dict(info or {})
        crop = info.pop("crop", None)
        typed = {k: info.pop(k) for k in cls._TYPED if k in info and k != "crop"}
        info.pop("problem", None)
        return cls(seconds=float(seconds), crop=tuple(crop) if crop else None, batch=int(batch),
                   problem=None if problem is None else problem.text, fatal=bool(problem and problem.fatal),
                   extra=info, **typed)

    def to_dict(self) -> dict:
        """The free form a sidecar records (keys as before: ``iterations``, ``threads``, ``crop``, ...)."""
        out: dict[str, Any] = dict(self.extra)
        for k in self._TYPED:
            v = getattr(self, k)
            if v is not None and not (k == "non_finite_values" and v == 0):
                out[k] = list(v) if k == "crop" else v
        if self.batch > 1:
            out["batch"] = self.batch
        if self.problem is not None:
            out["problem"] = self.problem
        return out


@dataclass
class Row:
    """One explanation request: an input (a prepared :class:`~famegui.data.pipeline.ModelInput` or a
    (1,3,H,W) tensor in [0, 1]), its target, and for a pair the reference (and a non-mate for triplet gains)."""

    x: Any
    target: Target
    reference: Any = None
    non_mate: Any = None

    def tensor(self, which: str = "x") -> torch.Tensor | None:
        v = getattr(self, which)
        return None if v is None else v if isinstance(v, torch.Tensor) else v.tensor

    def prepared(self, which: str = "x"):
        v = getattr(self, which)
        return None if v is None or isinstance(v, torch.Tensor) else v


@dataclass
class Explanation:
    """One map of one method for one target, with what made it.

    Attributes
    ----------
    map : numpy.ndarray
        (H, W) float32 at the model's input size: in [0, 1], or in [-1, 1] when :attr:`signed`.
    method : str
        The method's registry name (``famegui methods`` lists them).
    target : famegui.targets.Target
        What was explained (a cell, a class, a pair's similarity).
    params : dict
        The method's parameters as resolved (defaults filled in).
    output : str
        What the method gives for this task: ``"pair"`` (e+ / e-), ``"signed"`` or ``"single"``.
    info : RunInfo
        What the run reported (time, iterations, threads, why a map is empty).
    model : famegui.models.wrapper.ModelWrapper
        The network explained.
    probe, reference, non_mate : ModelInput or None
        The prepared images (None for a reference given as a bare tensor).
    weights : str or None
        The weights file the model was loaded from (recorded in the sidecar).
    threshold : float or None
        Pair targets: the cosine decision threshold the map was made with (the model's default unless given).
    counterfactual : numpy.ndarray or None
        FAME: the perturbed image x_T (H, W, 3) in [0, 1] at the model's input size, i.e. the change of the
        probe that suppresses the target ("what change makes this a non-match"); None for other methods
        and for cells run on a crop.
    scores : dict or None
        With a counterfactual: FAME's loss before and after it, ``{"score": "cosine", "before": 0.95,
        "after": 0.41}`` (a class's logit, a pair's cosine or 1 - cosine, a cell's L1 activation).

    Examples
    --------
    >>> import famegui
    >>> e = famegui.explain("dlib-resnet", famegui.sample_image("london_001"), famegui.cell("stage4", 2, 2),
    ...                     iterations=5)
    >>> e.map.shape, e.target.label()
    ((150, 150), 'stage4[2,2]')
    """

    map: np.ndarray
    method: str
    target: Target
    params: dict
    output: str
    info: RunInfo
    model: Any = field(repr=False, default=None)
    probe: Any = field(repr=False, default=None)
    reference: Any = field(repr=False, default=None)
    non_mate: Any = field(repr=False, default=None)
    weights: str | None = field(repr=False, default=None)
    threshold: float | None = field(repr=False, default=None)
    counterfactual: np.ndarray | None = field(repr=False, default=None)
    scores: dict | None = field(repr=False, default=None)

    @property
    def signed(self) -> bool:
        """Whether the map is signed (in [-1, 1]), as the method declares for this task and parameters."""
        return get_method(self.method).signed(self.target.task, self.params)

    @property
    def label(self) -> str:
        """A caption: method and target, e.g. ``FAME stage4[2,2]``."""
        return f"{get_method(self.method).label} {self.target.label()}"

    def record(self) -> dict:
        """The sidecar record (everything ``famegui reproduce`` needs), as a JSON-able dict."""
        return explain_record(self.model, self.weights, self.probe, self.reference, self.target, self.method,
                              self.params, self.info.seconds, extra={"info": self.info.to_dict()},
                              non_mate=self.non_mate)

    def _boxes(self):
        if self.target.kind != "cell" or self.model is None:
            return None
        from .core.render import FOOTPRINT_COLOR, RF_COLOR
        from .models.receptive import footprint, receptive_field

        shape = self.model.layer_info(self.target.layer).shape
        return [(footprint(self.model.input_size, shape[1:], self.target.cell).as_tuple(), FOOTPRINT_COLOR),
                (receptive_field(self.model, self.target.layer, self.target.cell).as_tuple(), RF_COLOR)]

    def overlay(self, *, opacity: float = 0.5, cmap: str = "jet", on_photo: bool = False, size: int | None = None,
                boxes: bool = True) -> np.ndarray:
        """The picture of the map over its image, (h, w, 3) uint8.

        Parameters
        ----------
        opacity : float
            Of the map over the image, 0 to 1.
        cmap : str
            A colormap of :data:`famegui.core.render.COLORMAPS` (signed maps use blue-white-red).
        on_photo : bool
            Draw on the whole photo instead of the model input.
        size : int, optional
            Long side in pixels (the input is cut from the photo again at that size).
        boxes : bool
            For a cell: its footprint (white) and theoretical receptive field (cyan).

        Returns
        -------
        numpy.ndarray
            RGB uint8.
        """
        from .records import render_overlay

        if self.probe is None:
            raise ValueError("this explanation has no prepared image to draw on (its input was a bare tensor)")
        return render_overlay(self.map, self.probe, on_photo=on_photo, opacity=opacity, cmap=cmap,
                              boxes=self._boxes() if boxes else None, signed=self.signed, long_side=size)

    def save(self, path: str | Path, *, save_map: str | Path | None | bool = True, on_photo: bool = False,
             opacity: float = 0.5, cmap: str = "jet", size: int | None = 800, boxes=True,
             sidecar: bool = True) -> list[Path]:
        """Write the export set: the overlay PNG, the map (.npy) and the JSON sidecar ``famegui reproduce``
        reads, as one atomic set.

        Parameters
        ----------
        path : str or Path
            The overlay PNG; the sidecar is written next to it with ``.json``.
        save_map : str, Path, bool or None
            The raw map as float32 .npy: True (default) next to the PNG with ``.npy``, a path, or
            False/None for none.
        on_photo, opacity, cmap
            As in :meth:`overlay`.
        size : int or None
            Long side of the PNG in pixels (default 800; None: the model input's size).
        boxes : bool or list
            True: a cell's footprint and receptive field; a list of ((x0, y0, x1, y1), rgb) boxes; False: none.
        sidecar : bool
            Write the sidecar.

        Returns
        -------
        list of Path
            The files written: PNG, map (when saved), sidecar.

        Examples
        --------
        >>> import famegui, tempfile, os
        >>> e = famegui.explain("dlib-resnet", famegui.sample_image("london_001"), famegui.cell("stage4", 2, 2),
        ...                     iterations=5)
        >>> folder = tempfile.mkdtemp()
        >>> [p.suffix for p in e.save(os.path.join(folder, "cell.png"))]
        ['.png', '.npy', '.json']
        """
        if self.probe is None:
            raise ValueError("this explanation has no prepared image to save (its input was a bare tensor)")
        path = Path(path)
        if save_map is True:
            save_map = path.with_suffix(".npy")
        box_list = self._boxes() if boxes is True else (boxes or None)
        return write_outputs(self.map, self.probe, self.record(), str(path), str(save_map) if save_map else None,
                             on_photo=on_photo, opacity=opacity, cmap=cmap, sidecar=sidecar, boxes=box_list,
                             long_side=size)

    def show(self, ax=None, *, opacity: float = 0.5, cmap: str = "jet", title: str | None = None):
        """Draw the overlay with matplotlib (on ``ax``, or a new figure); returns the axes."""
        import matplotlib.pyplot as plt

        if ax is None:
            _, ax = plt.subplots(figsize=(4, 4))
        ax.imshow(self.overlay(opacity=opacity, cmap=cmap))
        ax.set_title(self.label if title is None else title, fontsize=9)
        ax.axis("off")
        return ax

    def _repr_png_(self) -> bytes:
        """PNG bytes of the overlay (a notebook shows an Explanation as its picture)."""
        from PIL import Image

        buf = io.BytesIO()
        Image.fromarray(self.overlay(size=300)).save(buf, format="PNG")
        return buf.getvalue()


# ----------------------------------------------------------------------------------------------- the owner
# long: most of it is the public docstring (Parameters, Returns, Examples)
def explain_rows(model: ModelWrapper, rows: Sequence[Row], method: str = "fame", params: dict | None = None, *,
                 threshold: float | None = None, weights: str | None = None, batch: int | None = None,
                 progress: Callable[[float, np.ndarray | None], None] | None = None,
                 cancel: Callable[[], bool] | None = None, on_batch: Callable[[list], None] | None = None,
                 fatal: str = "raise", seed: int = 0) -> list[Explanation]:
    """Explanations of ``rows`` by ``method``: the one path every caller takes.

    Parameters
    ----------
    model : ModelWrapper
        The network.
    rows : sequence of Row
        The requests; all of one task (the method's parameters are resolved for it).
    method : str
        A registered method (``famegui methods``).
    params : dict, optional
        The method's parameters; defaults for the task fill the rest, each value is checked.
    threshold : float, optional
        The cosine decision threshold for pair targets; None: the model's default.
    weights : str, optional
        The weights file, recorded in the sidecar.
    batch : int, optional
        FAME: rows per batch (None: sized to memory and the model).
    progress : callable, optional
        ``progress(fraction, partial_map or None)``; a partial map only for a single row.
    cancel : callable, optional
        Polled during the work; True raises :class:`famegui.core.fame.Cancelled`.
    on_batch : callable, optional
        Called with the explanations of each finished batch (a sheet fills in as they come).
    fatal : {"raise", "keep"}
        A meaningless map (NaN input or weights): raise :class:`famegui.records.EmptyMapError`, or keep it
        with ``info.fatal`` set (protocol runs, ``reproduce``).
    seed : int
        For sampling methods.

    Returns
    -------
    list of Explanation
        One per row, in order.
    """
    if fatal not in FATAL:
        raise ValueError(f"fatal must be one of {FATAL}, got {fatal!r}")
    rows = list(rows)
    if not rows:
        return []
    spec, resolved, threshold = _resolve(model, rows, method, params, threshold)
    if spec.name == "fame" and len(rows) > 1:
        from .methods.fame import explain_fame_rows

        runs = explain_fame_rows(model, [(r.tensor(), r.target, r.tensor("reference")) for r in rows], resolved,
                                 batch=batch, progress=progress, cancel=cancel,
                                 on_batch=None if on_batch is None else
                                 (lambda idx, made: on_batch(_finish(model, rows, idx, made, spec, resolved,
                                                                     weights, fatal, threshold))))
    else:
        runs = []
        for i, r in enumerate(rows):
            runs.append(_one(model, r, spec.name, resolved, threshold, _part(progress, i, len(rows)), cancel, seed))
            if on_batch is not None:
                on_batch(_finish(model, rows, [i], runs[-1:], spec, resolved, weights, fatal, threshold))
    return _finish(model, rows, range(len(rows)), runs, spec, resolved, weights, fatal, threshold)


def _resolve(model, rows: list[Row], method: str, params, threshold):
    """The method, its parameters resolved for the rows' one task, and the decision threshold (the model's
    default for pair targets when none is given: looked up here and nowhere else)."""
    spec = get_method(method)
    tasks = {r.target.task for r in rows}
    if len(tasks) != 1:
        raise ValueError(f"one call explains targets of one task, got {', '.join(sorted(tasks))}")
    task = tasks.pop()
    if task not in spec.tasks:
        raise ValueError(f"{spec.label} does not support {task} targets (it supports: {', '.join(sorted(spec.tasks))})")
    resolved = spec.resolve(params, task)
    if threshold is None and any(r.target.needs_reference for r in rows):
        threshold = decision_threshold(model)
    return spec, resolved, threshold


def decision_threshold(model: ModelWrapper, threshold: float | None = None) -> float | None:
    """The cosine decision threshold of a face model (same if cos >= it): ``threshold`` when given, else the
    model's own (:func:`famegui.models.thresholds.default_cosine_threshold`); None for an uncalibrated one.
    Every caller that needs the decision (maps, decision-flip metrics, protocol runs) asks here."""
    if threshold is not None:
        return float(threshold)
    from .models.thresholds import default_cosine_threshold

    return default_cosine_threshold(model)


def _part(progress, i: int, n: int):
    """Row ``i`` of ``n``'s progress as a share of the whole call (its partial map only when it is alone)."""
    if progress is None or n == 1:
        return progress
    return lambda f, _partial=None: progress((i + f) / n, None)


def _one(model, row: Row, method: str, params: dict, threshold, progress, cancel, seed):
    info: dict = {}
    t0 = time.perf_counter()
    amap = run_method(method, model, row.tensor(), row.target, params, reference=row.tensor("reference"),
                      threshold=threshold, progress=progress, cancel=cancel, info=info,
                      non_mate=row.tensor("non_mate"), seed=seed)
    return amap, info, time.perf_counter() - t0, 1


def _finish(model, rows: list[Row], indices, runs, spec, params: dict, weights, fatal: str,
            threshold: float | None = None) -> list[Explanation]:
    """Check each map (why it is empty) and wrap it: the rows ``indices`` with their runs (map, info, s, n)."""
    out = []
    for i, (amap, info, seconds, n) in zip(indices, runs):
        row = rows[i]
        x_final = info.pop(X_FINAL, None)
        counterfactual, scores = _counterfactual(row, x_final, info) if x_final is not None else (None, None)
        problem = check_map(amap, model, row.tensor(), row.target, info, params, row.tensor("reference"))
        if problem is not None and problem.fatal and fatal == "raise":
            raise EmptyMapError(problem.text)
        out.append(Explanation(
            map=np.asarray(amap, dtype=np.float32), method=spec.name, target=row.target, params=dict(params),
            output=spec.output_for(row.target.task),
            info=RunInfo.from_dict(info, seconds, n, problem), model=model, probe=row.prepared(),
            reference=row.prepared("reference"),
            non_mate=row.prepared("non_mate") if spec.uses_non_mate else None, weights=weights,
            threshold=threshold if row.target.needs_reference else None, counterfactual=counterfactual,
            scores=scores))
    return out


def _counterfactual(row: Row, x_final: torch.Tensor, info: dict) -> tuple[np.ndarray, dict | None]:
    """FAME's x_T as an (H, W, 3) image, and its loss before and after (what the target measures: a logit,
    a cosine, 1 - cosine, a cell's activation; no extra forward pass: the loop measured both)."""
    x0 = row.tensor()
    xt = x_final.reshape(x0.shape[1:]).clamp(0.0, 1.0)
    image = xt.permute(1, 2, 0).float().cpu().numpy()
    before, after = info.get("initial_loss"), info.get("final_loss")
    if before is None or after is None:
        return image, None
    return image, {"score": row.target.spec.loss_name, "before": float(before), "after": float(after)}
