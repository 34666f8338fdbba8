"""FAME in the method registry, and :func:`explain_fame`, the entry point the Session and bench share.

The optimisation loop itself is :mod:`famegui.core.fame`; the loss comes from the
target's kind (:meth:`famegui.targets.TargetKind.loss`).
"""
from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

from ..core.fame import FameParams, FameResult, FameStep, Window, run_fame
from ..targets import Target, build_loss
from .registry import MethodContext, MethodSpec, Param, register

if TYPE_CHECKING:
    from ..models.wrapper import ModelWrapper

X_FINAL = "_x_final"  # info key of the perturbed image x_T (taken out by explanation.py, never in a sidecar)
MAP_INTERVAL_S = 0.2  # shortest time between two intermediate maps sent to a viewer
# the fast settings the GUI starts with (gui/params.py) and `famegui bench --against-reference` measures:
# stop when the map correlates >= 0.999 with the map 20 iterations before (README, Speed: e- maps then
# correlate >= 0.99 with the 500-iteration map, e+ maps 0.94-0.97); cells on their receptive field's crop
FAST_PARAMS = {"converge_tol": 0.999, "converge_every": 20, "crop": True}

FAME_PARAMS = (
    Param("iterations", int, 500, "optimisation steps T", 1, 100000),
    Param("step", float, 1.0 / 255.0, "step size eta", 1e-6, 1.0),
    Param("epsilon", float, None, "early stop when the loss drops below it", 0.0, None),
    Param("clamp", bool, False, "keep the perturbed image in [0,1]"),
    Param("space", str, "pixel", "where the step is taken", choices=("pixel", "normalized")),
    Param("blur_kernel", int, None, "Gaussian blur kernel (odd; default 49 for classifiers, 25 for faces)", 0, 301),
    Param("blur_sigma", float, None, "Gaussian blur sigma (default 7.7 for classifiers, 5 for faces)", 0.0, 100.0),
    Param("normalization", str, "minmax", "how the map is scaled to [0,1]", choices=("minmax", "max")),
    Param("progress_every", int, 5, "report an intermediate map every N iterations", 1, 10000),
    Param("converge_tol", float, None, "stop when the map correlates this well with the map converge_every "
          "iterations before (unset: off, all iterations run)", 0.5, 1.0),
    Param("converge_every", int, 20, "iterations between two convergence checks", 1, 10000),
    Param("crop", bool, False, "cells: run on the crop holding the cell's receptive field (equal maps, faster)"),
    Param("precision", str, "fp32", "arithmetic of the network passes (bf16: autocast, faster on CPUs with "
          "AMX and on GPUs; fp16: GPUs)", choices=("fp32", "bf16", "fp16")),
)


@torch.no_grad()
def reference_embedding(model: ModelWrapper, reference: torch.Tensor) -> torch.Tensor:
    """Embedding of a reference image (1,3,H,W), or an embedding (D,) / (1,D) passed through."""
    if reference.ndim == 4:
        return model(reference).detach()
    return reference.detach().reshape(1, -1)


def explain_fame(
    model: ModelWrapper,
    x: torch.Tensor,
    targets: Target | Sequence[Target],
    params: FameParams | None = None,
    *,
    reference: torch.Tensor | None = None,
    callback: Callable[[FameStep], None] | None = None,
    cancel: Callable[[], bool] | None = None,
    every: int = 10,
) -> FameResult:
    """FAME maps for ``x`` (1 or B images in [0,1]) and one target per batch element.

    A single image with several targets (e.g. all cells of a layer) is run as one
    batch; its rows are independent, so the maps equal one-by-one runs.
    """
    targets = [targets] if isinstance(targets, Target) else list(targets)
    if not targets:
        raise ValueError("nothing to explain: no target given")
    x = x.to(model.device)
    if x.shape[0] == 1 and len(targets) > 1:
        x = x.expand(len(targets), -1, -1, -1)
    elif len(targets) == 1 and x.shape[0] > 1:
        targets = targets * x.shape[0]
    if x.shape[0] != len(targets):
        raise ValueError(f"{x.shape[0]} images but {len(targets)} targets")
    ref = reference_embedding(model, reference.to(model.device)) if reference is not None else None
    window, run_targets = None, targets
    if params is not None and params.crop and all(t.kind == "cell" for t in targets):
        window, run_targets = cell_window(model, x, targets) or (None, targets)
    loss = build_loss(model, run_targets, ref)

    def loss_for(rows: list[int]):  # the samples still running once others stopped
        return build_loss(model, [run_targets[i] for i in rows], ref)

    return run_fame(x, loss, params, callback=callback, every=every, cancel=cancel,
                    normalize=model.normalize, denormalize=model.denormalize, window=window, loss_for=loss_for)


def explain_fame_pair(
    model: ModelWrapper,
    x: torch.Tensor,
    reference: torch.Tensor,
    params: FameParams | None = None,
    *,
    callback: Callable[[FameStep], None] | None = None,
    cancel: Callable[[], bool] | None = None,
    every: int = 10,
) -> FameResult:
    """e+ and e- of one pair in one batch of two: row 0 suppresses L+ = cos, row 1 L- = 1 - cos.

    One forward and backward pass per iteration serves both maps; the rows are independent,
    so each equals its own run (``maps[0]`` = e+, ``maps[1]`` = e-).
    """
    x = x.to(model.device)
    if x.shape[0] != 1:
        raise ValueError(f"one probe image expected, got {x.shape[0]}")
    return explain_fame_pairs(model, x.expand(2, -1, -1, -1), reference, ["similar", "dissimilar"], params,
                              callback=callback, cancel=cancel, every=every)


def explain_fame_pairs(
    model: ModelWrapper,
    x: torch.Tensor,
    reference: torch.Tensor,
    kinds: Sequence[str],
    params: FameParams | None = None,
    *,
    callback: Callable[[FameStep], None] | None = None,
    cancel: Callable[[], bool] | None = None,
    every: int = 10,
) -> FameResult:
    """FAME maps of B probes against their references in one batch: row i suppresses L+ = cos
    (``kinds[i] == "similar"``, e+) or L- = 1 - cos (``"dissimilar"``, e-) of probe i and reference i.

    ``x``: (B,3,H,W) probes; ``reference``: (B,3,H,W) images, (B,D) embeddings, or one of either for all
    rows. Rows never influence each other; rows that stopped (early stop, convergence) leave the batch.
    """
    x = x.to(model.device)
    n = x.shape[0]
    if len(kinds) != n or any(k not in ("similar", "dissimilar") for k in kinds):
        raise ValueError(f"one kind per probe, each 'similar' or 'dissimilar': got {list(kinds)} for {n} probes")
    ref = reference.to(model.device)
    with torch.no_grad():
        ref = model(ref).detach() if ref.ndim == 4 else ref.detach().reshape(-1, ref.shape[-1])
    if ref.shape[0] == 1:
        ref = ref.expand(n, -1)
    if ref.shape[0] != n:
        raise ValueError(f"{ref.shape[0]} references for {n} probes")
    minus_all = torch.tensor([k == "dissimilar" for k in kinds], device=model.device)

    def loss_for(rows: list[int]):
        idx = torch.as_tensor(rows, dtype=torch.long, device=model.device)
        similarity = build_loss(model, [Target("similar")], ref.index_select(0, idx))  # L+ = cos, row by row
        minus = minus_all.index_select(0, idx)

        def loss(z: torch.Tensor) -> torch.Tensor:
            s = similarity(z)
            return torch.where(minus, 1.0 - s, s)  # L- = 1 - L+ (FAME Eq. 6)

        return loss

    return run_fame(x, loss_for(list(range(n))), params, callback=callback, every=every, cancel=cancel,
                    normalize=model.normalize, denormalize=model.denormalize, loss_for=loss_for)


# ----------------------------------------------------------------------------- receptive-field crops
CROP_MAX_AREA = 0.6  # crop only where the window is at most this share of the image


@dataclass(frozen=True)
class CellGrid:
    """Where each cell of a layer runs: one window size, one (aligned) offset per row and column."""

    stride: tuple[int, int]  # input pixels between two neighbouring cells
    size: tuple[int, int]  # (h, w) of every window of the layer
    rows: tuple[int, ...]  # window y offset per cell row
    cols: tuple[int, ...]  # window x offset per cell column


def _axis(start: float, end: float, mid: int, n: int, stride: int, length: int) -> tuple[int, tuple[int, ...]]:
    """Window length and offsets along one axis for cells 0..n-1 whose receptive field is
    [start, end) at cell ``mid``: offsets are multiples of the stride (the network's grids stay
    aligned) and the length is congruent to the input's modulo the stride (its sizes round alike)."""
    idx = np.arange(n) - mid
    lo = np.clip(start + stride * idx, 0, length).astype(int)
    hi = np.clip(end + stride * idx, 0, length).astype(int)
    off = (lo // stride) * stride
    size = int((hi - off).max())
    size += (length - size) % stride
    size = min(size, length)
    return size, tuple(int(v) for v in np.minimum(off, length - size))


def cell_grid(model: ModelWrapper, layer: str) -> CellGrid | None:
    """The crop windows of ``layer``'s cells, or None when cropping would not pay (or the stride is unclear).

    Measured on the network's receptive fields (:func:`famegui.models.receptive.receptive_field`)
    of a middle cell and its diagonal neighbour; cached in the model.
    """
    cache = model.extras.setdefault("_fame_grid", {})
    if layer not in cache:
        cache[layer] = _measure_grid(model, layer)
    return cache[layer]


def _measure_grid(model: ModelWrapper, layer: str) -> CellGrid | None:
    from ..models.receptive import receptive_field

    shape = model.layer_info(layer).shape
    if len(shape) != 3 or shape[1] < 3 or shape[2] < 3:
        return None
    _, fh, fw = shape
    h, w = model.input_size
    r, c = (fh - 1) // 2, (fw - 1) // 2
    a = receptive_field(model, layer, (r, c))
    if a.width * a.height > CROP_MAX_AREA * h * w:  # the middle cell sees (nearly) everything already
        return None
    b = receptive_field(model, layer, (r + 1, c + 1))
    sy, sx = int(b.y0 - a.y0), int(b.x0 - a.x0)
    inside = a.y0 > 0 and a.x0 > 0 and b.y1 < h and b.x1 < w
    if not inside or sy < 1 or sx < 1 or a.height != b.height or a.width != b.width:
        return None
    size_y, rows = _axis(a.y0, a.y1, r, fh, sy, h)
    size_x, cols = _axis(a.x0, a.x1, c, fw, sx, w)
    if size_y * size_x > CROP_MAX_AREA * h * w:
        return None
    return CellGrid((sy, sx), (size_y, size_x), rows, cols)


def cell_window(model: ModelWrapper, x: torch.Tensor, targets: Sequence[Target]):
    """(window, targets on the crops) for cell targets of one layer, or None to run on the whole image.

    The crop holds the cell's whole receptive field, so the cell's activation, and with it the
    loss and its gradient, are those of the full image; this is checked here on ``x`` (the cell
    activations on the crops must equal those on the full images), else None.
    """
    layers = {t.layer for t in targets}
    grid = cell_grid(model, layers.pop()) if len(layers) == 1 else None
    if grid is None:
        return None
    layer = targets[0].layer
    sy, sx = grid.stride
    offsets = tuple((grid.rows[t.cell[0]], grid.cols[t.cell[1]]) for t in targets)
    moved = [Target("cell", layer=layer, cell=(t.cell[0] - oy // sy, t.cell[1] - ox // sx))
             for t, (oy, ox) in zip(targets, offsets)]
    window = Window(offsets, grid.size)
    one = x.shape[0] > 1 and x.stride(0) == 0  # one image expanded over the cells
    with torch.no_grad():
        full = model.activation(x[:1] if one else x, layer)
        try:
            crop = model.activation(window.take(x), layer)
        except (RuntimeError, AssertionError, ValueError):  # a network that takes only its own input size
            return None  # (a vision transformer's patch embedding): the whole image
    b = torch.arange(len(targets))
    want = full[torch.zeros_like(b) if one else b, :, [t.cell[0] for t in targets], [t.cell[1] for t in targets]]
    got = crop[b, :, [t.cell[0] for t in moved], [t.cell[1] for t in moved]]
    if not torch.allclose(got, want, rtol=1e-4, atol=1e-5 * float(want.abs().max().clamp_min(1.0))):
        return None
    return window, moved


def cells_batch_size(model: ModelWrapper, layer: str, crop: bool = False, budget_bytes: float | None = None) -> int:
    """How many cells of ``layer`` to run per batch: activations of a forward and backward pass
    (to the layer, on the crop when cropping) within a memory budget, at most 32 (more gains
    nothing on a CPU)."""
    names = [info.name for info in model.layers()]
    upto = names[:names.index(layer) + 1] if layer in names else names
    numel = sum(int(np.prod(model.layer_info(n).shape)) for n in upto)
    grid = cell_grid(model, layer) if crop else None
    if grid is not None:
        numel *= grid.size[0] * grid.size[1] / float(np.prod(model.input_size))
    per_sample = 3 * 4 * max(numel, 1)  # activation, its gradient and a temporary, float32
    if budget_bytes is None:
        budget_bytes = _free_memory(model.device) / 4
    return int(max(1, min(32, budget_bytes // per_sample)))


def _free_memory(device: torch.device) -> float:
    if device.type == "cuda":
        return float(torch.cuda.mem_get_info(device)[0])
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return float(line.split()[1]) * 1024
    except OSError:
        pass
    return 4e9


def fame_params_for(model, params: dict) -> FameParams:
    """FameParams from registry params; blur defaults follow the model (faces 25/5, else 49/7.7)."""
    face = model.alignment is not None or model.task == "embedding"
    k = params.get("blur_kernel")
    s = params.get("blur_sigma")
    fp = FameParams(
        iterations=params["iterations"], step=params["step"], epsilon=params.get("epsilon"),
        clamp=bool(params.get("clamp")), space=params.get("space", "pixel"),
        blur_kernel=(25 if face else 49) if k is None else k,
        blur_sigma=(5.0 if face else 7.7) if s is None else s,
        normalization=params.get("normalization", "minmax"),
        converge_tol=params.get("converge_tol"), converge_every=int(params.get("converge_every") or 20),
        crop=bool(params.get("crop")), precision=params.get("precision") or "fp32",
    )
    return fp.validate()


def _fame(ctx: MethodContext) -> np.ndarray:
    fp = fame_params_for(ctx.model, ctx.params)
    every = int(ctx.params.get("progress_every") or 5)
    last_map = [-1.0]

    def progress(step):
        # the first intermediate map at once, then at most ~5 per second: drawing is not free
        now = time.perf_counter()
        want_map = ctx.progress is not None and (last_map[0] < 0 or now - last_map[0] >= MAP_INTERVAL_S)
        if want_map:
            last_map[0] = now
        fraction = 1.0 if step.done else step.iteration / step.total  # a converged run is done early
        ctx.report(fraction, step.maps(fp)[0] if want_map else None)

    res = explain_fame(ctx.model, ctx.x, ctx.target, fp, reference=ctx.reference_embedding,
                       callback=progress, cancel=ctx.cancel, every=every)
    if ctx.model.device.type == "cpu":  # float sums follow the thread count: `reproduce` uses it again
        ctx.info["threads"] = torch.get_num_threads()
    ctx.info.update(initial_loss=float(res.initial_loss[0]), final_loss=float(res.final_loss[0]),
                    iterations=int(res.iterations[0]), empty=bool(res.empty[0]))
    if res.window is not None:
        ctx.info["crop"] = list(res.window.size)
    else:  # the perturbed image x_T, FAME's counterfactual (not for a crop: it is not the whole image)
        ctx.info[X_FINAL] = res.x_final[0].detach()
    return res.maps[0]


register(MethodSpec(
    name="fame", label="FAME", tasks=frozenset({"classification", "verification", "cell"}), output="pair",
    cost="iterative", fn=_fame, params=FAME_PARAMS, task_outputs={"classification": "single", "cell": "single"},
    description="Feature Activation Map Explanation: accumulated normalised-gradient perturbation",
))


# ----------------------------------------------------------------------------- many rows, in batches
PAIR_KINDS = ("similar", "dissimilar")  # the kinds explain_fame_pairs runs with their own references per row


def explain_fame_rows(model: ModelWrapper, rows: Sequence[tuple[torch.Tensor, Target, torch.Tensor | None]],
                      params: dict, *, batch: int | None = None, progress=None, cancel=None, on_batch=None
                      ) -> list[tuple[np.ndarray, dict, float, int]]:
    """FAME for many (input, target, reference) rows in batches; per row (map, info, seconds, batch size).

    Rows are grouped so that a batch shares one loss: pairs (e+ and e- mixed, each row its own reference,
    :func:`explain_fame_pairs`), cells of one layer, or one other kind. ``batch``: rows per batch (None:
    :func:`cells_batch_size` of the layer a group reaches). ``on_batch(indices, runs)`` after each batch;
    ``progress(fraction, None)`` during the work. Used by :func:`famegui.explanation.explain_rows` only.
    """
    from ..core.attribution import check_blur

    fp = fame_params_for(model, params)
    check_blur(fp.blur_kernel, fp.blur_sigma, tuple(rows[0][0].shape[-2:]))
    groups: dict[tuple, list[int]] = {}
    for i, (_x, t, _r) in enumerate(rows):
        key = ("pair",) if t.kind in PAIR_KINDS else (t.kind, t.layer, None if _r is None else id(_r))
        groups.setdefault(key, []).append(i)
    out: list = [None] * len(rows)
    done = 0
    for key, members in groups.items():
        size = int(batch) if batch else _auto_batch(model, rows[members[0]][1], fp.crop)
        for start in range(0, len(members), size):
            chunk = members[start:start + size]
            n = len(chunk)

            def inner(step, _done=done, _n=n):
                if progress is not None:
                    progress((_done + _n * step.iteration / step.total) / len(rows), None)

            runs = _fame_chunk(model, [rows[i] for i in chunk], key == ("pair",), fp, inner, cancel)
            for i, run in zip(chunk, runs):
                out[i] = run
            done += len(chunk)
            if on_batch is not None:
                on_batch(chunk, runs)
            if progress is not None:
                progress(done / len(rows), None)
    return out


def _auto_batch(model: ModelWrapper, target: Target, crop: bool) -> int:
    if target.kind == "cell":
        return cells_batch_size(model, target.layer, crop)
    layers = model.layers()
    return cells_batch_size(model, layers[-1].name) if layers else 1


def _fame_chunk(model, rows, pairs: bool, fp: FameParams, callback, cancel) -> list[tuple]:
    """One batch: the maps and what each row's run reported."""
    t0 = time.perf_counter()
    xs = [x.to(model.device) for x, _t, _r in rows]
    same = all(x is xs[0] or torch.equal(x, xs[0]) for x in xs[1:])
    x = xs[0].expand(len(xs), -1, -1, -1) if same and len(xs) > 1 else torch.cat(xs)
    every = max(1, fp.iterations // 10)
    if pairs:
        refs = torch.cat([r.to(model.device) for _x, _t, r in rows])
        res = explain_fame_pairs(model, x, refs, [t.kind for _x, t, _r in rows], fp, callback=callback,
                                 cancel=cancel, every=every)
    else:
        refs = rows[0][2]
        res = explain_fame(model, x, [t for _x, t, _r in rows], fp, reference=refs, callback=callback,
                           cancel=cancel, every=every)
    seconds = (time.perf_counter() - t0) / len(rows)
    out = []
    for j in range(len(rows)):
        amap = np.asarray(res.maps[j], dtype=np.float32)
        info = {"initial_loss": float(res.initial_loss[j]), "final_loss": float(res.final_loss[j]),
                "iterations": int(res.iterations[j]), "empty": bool(res.empty[j])}
        if model.device.type == "cpu":
            info["threads"] = torch.get_num_threads()
        if res.window is not None:
            info["crop"] = list(res.window.size)
        else:
            info[X_FINAL] = res.x_final[j].detach()
        finite = np.isfinite(amap)
        if not finite.all():
            info["non_finite_values"] = int(amap.size - finite.sum())
            amap = np.nan_to_num(amap, nan=0.0, posinf=0.0, neginf=0.0)
        out.append((amap, info, seconds, len(rows)))
    return out
