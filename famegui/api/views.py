"""Looking at explanations from Python: a grid of methods x targets, faithfulness metrics, and the window on
a model that lives in your script or notebook."""
from __future__ import annotations

import os
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from ..core import threads
from ..explanation import Explanation
from .core import _inputs, _model, _progress, explain

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from ..gui.main_window import MainWindow


# long: most of it is the public docstring (Parameters, Returns, Examples)
def compare(model: Any, image: Any, targets: Any, methods: Sequence[str] | None = None, *, reference: Any = None,
            panel: float = 2.4, **params) -> Figure:
    """The maps of several methods for several targets of one image, as one figure (targets in rows,
    methods in columns).

    Parameters
    ----------
    model, image, reference
        As in :func:`famegui.explain`.
    targets : target or list of targets
        The rows (for a face pair: ``[famegui.similar(b), famegui.dissimilar(b)]``).
    methods : list of str, optional
        The columns (default: FAME and the cheap methods of the targets' task, as the Compare tab shows).
    panel : float
        Size of one panel in inches.
    **params
        Method parameters; each method takes the ones it knows (``iterations`` goes to FAME only).

    Returns
    -------
    matplotlib.figure.Figure
        Its attribute ``explanations`` holds the grid (a list per target, one Explanation per method; None
        where a method does not explain that kind of target, e.g. Grad-CAM for a cell, drawn as an empty
        panel).

    Examples
    --------
    >>> import famegui
    >>> a, b = famegui.sample_image("london_001"), famegui.sample_image("london_001", "smiling.jpg")
    >>> fig = famegui.compare("dlib-resnet", a, [famegui.similar(b), famegui.dissimilar(b)],
    ...                       ["fame", "gradcam"], iterations=5)
    >>> len(fig.axes), fig.explanations[1][0].label
    (4, 'FAME e- (dissimilar)')
    """
    from matplotlib.figure import Figure

    from ..methods import get_method
    from ..methods import methods as registered
    from ..targets import get_kind
    from .core import _as_request

    rows = list(targets) if isinstance(targets, (list, tuple)) else [targets]
    m = _model(model, None)
    x, _ = _inputs(image, m, 0, True)
    x = x[0]
    tasks = [get_kind(_as_request(r).kind).task for r in rows]
    names = list(methods) if methods else [s.name for s in registered(tasks[0])
                                           if s.cost == "cheap" or s.name == "fame"]
    grid: list[list[Explanation | None]] = [[None] * len(names) for _ in rows]
    for j, name in enumerate(names):
        spec = get_method(name)
        known = {p.name for p in spec.params}
        fits = [i for i, task in enumerate(tasks) if task in spec.tasks]  # a Grad-CAM column has no cell rows
        if not fits:
            continue
        made = explain(m, x, [rows[i] for i in fits], name, reference=reference,
                       **{k: v for k, v in params.items() if k in known})
        for i, e in zip(fits, made):
            grid[i][j] = e
    fig = Figure(figsize=(panel * len(names), panel * len(rows) + 0.3), layout="constrained")
    axes = np.atleast_2d(fig.subplots(len(rows), len(names), squeeze=False))
    for i, row in enumerate(grid):
        for j, e in enumerate(row):
            ax = axes[i, j]
            title = get_method(names[j]).label if i == 0 else ""
            if e is None:
                ax.set_title(title, fontsize=9)
                ax.text(0.5, 0.5, f"not for {tasks[i]}\ntargets", ha="center", va="center", fontsize=8,
                        color="0.4", transform=ax.transAxes)
                ax.axis("off")
            else:
                e.show(ax, title=title)
        label = next(e for e in row if e is not None).target.label() if any(row) else str(rows[i])
        axes[i, 0].axis("on")
        axes[i, 0].set_xticks([])
        axes[i, 0].set_yticks([])
        for side in axes[i, 0].spines.values():
            side.set_visible(False)
        axes[i, 0].set_ylabel(label, fontsize=9)
    fig.explanations = grid
    return fig


def evaluate(explanations: Explanation | Sequence[Explanation], metrics: Sequence[str] = ("deletion", "insertion"),
             *, fractions: Sequence[float] | None = None, fill: str = "mean",
             progress: Callable[[float], None] | None = None) -> list:
    """Faithfulness of explanations: each metric of the evaluation registry that applies to each map.

    Parameters
    ----------
    explanations : Explanation or list of Explanation
        Maps from :func:`famegui.explain`.
    metrics : list of str
        Registered metric names (``famegui metrics`` lists them): ``deletion``, ``insertion``, ``hiding`` ...
    fractions : list of float, optional
        The shares of pixels removed or inserted (default: 0 to 1 in steps of 0.05).
    fill : str
        What a removed pixel becomes (``mean``, ``black``, ``blur`` ...).
    progress : callable, optional
        Gets the fraction of explanations done.

    Returns
    -------
    list of famegui.evaluation.curves.Curve
        One per (explanation, metric that applies), in order; ``.fractions``, ``.scores``, ``.auc``, ``.gain``
        (how much better than the reversed ranking), ``.metric``, ``.score_name``.

    Examples
    --------
    >>> import famegui
    >>> e = famegui.explain("dlib-resnet", famegui.sample_image("london_001"),
    ...                     famegui.similar(famegui.sample_image("london_001", "smiling.jpg")), "gradcam")
    >>> [(c.metric, len(c.scores)) for c in famegui.evaluate(e, ["deletion"], fractions=[0, 0.5, 1])]
    [('deletion', 3)]
    """
    from ..evaluation import curves as C
    from ..evaluation.experiment import evaluate as run_metrics
    from ..evaluation.metrics import Sample

    items = [explanations] if isinstance(explanations, Explanation) else list(explanations)

    def tensor(inp):
        return None if inp is None else inp.tensor

    samples = [Sample(e.model, e.probe.tensor, e.target, amap=e.map, method=e.method, params=e.params,
                      reference=tensor(e.reference), non_mate=tensor(e.non_mate), threshold=e.threshold)
               for e in items]
    with threads.for_call():  # the cores other processes leave free; the caller's count afterwards
        return run_metrics(samples, list(metrics), fractions=C.DEFAULT_FRACTIONS if fractions is None else fractions,
                           fill=fill, progress=progress)


# long: most of it is the public docstring (Parameters, Returns, Examples)
def locality(model: Any, images: Any = None, layers: str | Sequence[str] | None = None, cells: int | str = 16,
             iterations: int = 100, *, blur: tuple[int, float] | None = None, seed: int = 0,
             out: str | os.PathLike | None = None, device: str | None = None, progress: Any = None,
             engine: str | None = None, workers: int = 1, address: str | None = None):
    """How local each layer's cells are: FAME for a sample of cells per layer and image, and the share of each
    map's mass under the cell (and in 2x / 4x the cell), with the radius that holds 50 % / 90 % of it.

    Parameters
    ----------
    model : torch.nn.Module, wrapped model or str
        As for :func:`famegui.explain`.
    images : path or list of paths, optional
        Default: one bundled sample photo per person.
    layers : "stages", "all" or list of str, optional
        Default: the model's stages (or its top-level feature maps).
    cells : int or "all"
        Cells per layer (drawn once, seeded, the same for every image).
    iterations : int
        FAME iterations per map.
    blur : (kernel, sigma), optional
        Measure the map after FAME's Gaussian blur (default: before, as the network makes it).
    seed : int
        The cells' draw.
    out : folder, optional
        Writes parts as they are done (a rerun resumes) and the table, plot and JSON at the end.
    device : str, optional
        Moves the model there first.
    progress : bool or callable, optional
        True: a progress bar; a callable gets the fraction done.
    engine : {"local", "ray"}, optional
        Compute in ``workers`` worker processes or Ray actors (``address``: a running cluster), as a
        protocol run does; ``model`` must then be a name or a file the workers can load.
    workers : int
        Workers of the engine.
    address : str, optional
        Ray: the cluster to join.

    Returns
    -------
    famegui.evaluation.locality.LocalityResult
        ``.layers`` (per layer: mean and sd of each measure), ``.cells`` (every map's numbers),
        ``.table("md" | "csv" | "latex")``, ``.figure()``, ``.save(folder)``.

    Examples
    --------
    >>> import famegui
    >>> r = famegui.locality("dlib-resnet", famegui.sample_image("london_001"), ["stage1", "stage4"], cells=1,
    ...                      iterations=3)
    >>> [row["layer"] for row in r.layers]
    ['stage1', 'stage4']
    """
    from ..data.pairs import sample_identities
    from ..evaluation.locality import locality as measure

    if engine is not None and not isinstance(model, (str, os.PathLike)):
        raise ValueError("an engine loads the model in its workers: give the model's name or file, not an object")
    m = _model(model, device)
    if images is None:
        images = [str(photos[0]) for photos in sample_identities().values()]
    elif isinstance(images, (str, os.PathLike)):
        images = [images]
    spec = {"model": str(model), "weights": None, "device": device or "cpu"} if engine is not None else None
    report, close = _progress(progress, len(images))
    try:
        result = measure(m, [str(i) for i in images], layers, cells, iterations, blur=blur, seed=seed, out=out,
                         progress=report, engine=engine, workers=workers, address=address, spec=spec)
    finally:
        close()
    if out is not None:
        result.save(out)
    return result


def regions(explanation: Any, alignment: str | None = None) -> dict[str, float]:
    """Where on the face a map looks: the share of its mass in each region of the aligned face (eyes, brows,
    mouth, nose, cheeks, forehead, the rest of the face, outside it); the shares add up to 1.

    Parameters
    ----------
    explanation : Explanation or numpy.ndarray
        A map of a face model (its alignment is the model's), or a map of an aligned chip.
    alignment : {"dlib150", "arcface112"}, optional
        For a bare map: the alignment of its chip.

    Returns
    -------
    dict
        Region name -> share (NaN for an empty map).

    Examples
    --------
    >>> import famegui
    >>> e = famegui.explain("dlib-resnet", famegui.sample_image("london_001"),
    ...                     famegui.similar(famegui.sample_image("london_001", "smiling.jpg")), "gradcam")
    >>> shares = famegui.regions(e)
    >>> sorted(shares)[:3], round(sum(shares.values()), 6)
    (['brows', 'cheeks', 'eyes'], 1.0)
    """
    from ..evaluation.regions import region_shares

    if isinstance(explanation, Explanation):
        alignment = alignment or explanation.model.alignment
        amap = explanation.map
    else:
        amap = np.asarray(explanation)
    if not alignment:
        raise ValueError("face regions need a face model's map (or alignment='dlib150' / 'arcface112')")
    return region_shares(amap, alignment)


def _gui_image(item: Any, name: str):
    """A file path as it is; an array, tensor or PIL image as an image in memory."""
    import torch

    from ..data.images import image_from_array

    if isinstance(item, (str, os.PathLike)):
        return str(item)
    if isinstance(item, torch.Tensor):
        t = item[0] if item.ndim == 4 else item
        return image_from_array(t.detach().cpu().permute(1, 2, 0).numpy(), name)
    if type(item).__module__.startswith("PIL."):
        return image_from_array(np.asarray(item.convert("RGB")), getattr(item, "filename", "") or name)
    return image_from_array(np.asarray(item), name)


def _in_ipython():
    ip = sys.modules.get("IPython")
    return ip.get_ipython() if ip is not None and hasattr(ip, "get_ipython") else None


def open(model: Any = None, images: Any = None, reference: Any = None, third: Any = None, *, layer: str | None = None,
         block: bool | None = None) -> MainWindow:
    """The famegui window on your model: the layer tree, cells, pairs, classes, comparisons and exports work
    on it as on a zoo model.

    Parameters
    ----------
    model : torch.nn.Module, wrapped model or str, optional
        The model in memory (its sidecars record its class and a weights hash), or a spec (default: the
        embedded face model).
    images : image or list of up to 3 images, optional
        Paths, arrays, tensors or PIL images for the probe, reference and third slots (default: the demo's).
    reference, third : image, optional
        The reference (pairs) and third slot, when not in ``images``.
    layer : str, optional
        The layer the Feature map view opens on (default: the last feature-map layer).
    block : bool, optional
        Run the event loop until the window closes. Default: yes in a script, no in IPython / Jupyter, where
        ``%gui qt`` is switched on so that the kernel stays free while the window works.

    Returns
    -------
    famegui.gui.main_window.MainWindow
        The window (``.session`` holds the model and images; ``.close()`` closes it).

    Examples
    --------
    >>> import famegui, torchvision  # doctest: +SKIP
    >>> win = famegui.open(famegui.wrap(torchvision.models.resnet18()), layer="layer3")  # doctest: +SKIP
    """
    ip = _in_ipython()
    if ip is not None and block is not True:
        ip.enable_gui("qt")  # %gui qt: the kernel's loop runs Qt's events
    from PySide6.QtWidgets import QApplication

    from ..gui.main_window import MainWindow

    app = QApplication.instance() or QApplication(sys.argv[:1])
    wrapped = _model(model, None) if model is not None else None
    if layer is not None:
        if wrapped is None:
            raise ValueError("layer= needs a model")
        if not wrapped.layer_info(layer).is_spatial:
            raise ValueError(f"{layer} of {wrapped.name} is not a feature map (no rows and columns to click)")
        wrapped.default_layer = layer
    given = list(images) if isinstance(images, (list, tuple)) else ([] if images is None else [images])
    for i, extra in ((1, reference), (2, third)):
        if extra is not None:
            given += [None] * (i - len(given)) if len(given) < i else []
            given[i:i + 1] = [extra]
    if len(given) > 3:
        raise ValueError(f"the window has three image slots (probe, reference, third), got {len(given)} images")
    if any(g is None for g in given):
        raise ValueError("give the probe image too (images=) when you give a reference or third image")
    win = MainWindow(model=wrapped, images=[_gui_image(g, f"image {i}") for i, g in enumerate(given)])
    win.show()
    if block if block is not None else ip is None:
        app.exec()
    return win
