"""The app's state without Qt: the model, the images in their slots, and computations on them.

The GUI calls these methods from its worker threads; nothing here touches Qt,
so the same code runs headless (and is tested without a display).
"""
from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import torch

from .core.cache import ByteLRU
from .data.images import LoadedImage, load_image
from .data.pipeline import ModelInput, prepare_for_model
from .methods import get_method
from .models.receptive import Box, footprint, receptive_field
from .models.wrapper import ModelWrapper
from .targets import Target, task_of

if TYPE_CHECKING:
    from .explanation import Explanation

SLOTS = ("probe", "reference", "third")
FMAP_CACHE_BYTES = 64 << 20  # feature maps for the layer view: small, a separate budget


@dataclass
class MapResult:
    """One computed explanation, with what is needed to show and export it."""

    map: np.ndarray  # (H,W) float32 at model input resolution
    method: str
    target: Target
    params: dict
    slot: str  # which image was explained
    other: str | None  # the image it was compared with (pairs)
    seconds: float
    info: dict = field(default_factory=dict)
    key: tuple = ()
    non_mate: str | None = None  # a third image of another identity, for triplet methods
    # what the one explain path gave: its map is ``map``, its images the session's (not counted by the cache)
    explanation: Explanation | None = field(default=None, repr=False, metadata={"shared": True})
    counterfactual: np.ndarray | None = field(default=None, repr=False)  # FAME's x_T (counted by the cache)
    scores: dict | None = None  # the explained output before and after x_T

    @classmethod
    def of(cls, e: Explanation, slot: str, other: str | None, key: tuple = (), non_mate: str | None = None
           ) -> MapResult:
        """The Session's record of an :class:`~famegui.explanation.Explanation` (``info`` as a dict)."""
        return cls(e.map, e.method, e.target, e.params, slot, other, e.info.seconds, e.info.to_dict(), key,
                   non_mate if e.non_mate is not None else None, e, e.counterfactual, e.scores)

    @property
    def signed(self) -> bool:
        """Whether the map is signed, as its method declares (never guessed from the values)."""
        return get_method(self.method).signed(self.target.task, self.params)


@dataclass
class PairScores:
    cosine: float
    distance: float
    rule: str  # human-readable rule, e.g. "distance < 0.6"
    same: bool | None

    @property
    def decision(self) -> str:
        return "undecided" if self.same is None else ("same" if self.same else "different")


class Session:
    """Model + images + a result cache, shared by the GUI's threads."""

    def __init__(self) -> None:
        self.model: ModelWrapper | None = None  # used by explanations (the compute thread)
        self.io_model: ModelWrapper | None = None  # a copy for quick forward passes in another thread
        self.weights: str | None = None
        self.model_spec: str | None = None
        self.images: dict[str, LoadedImage] = {}
        self.inputs: dict[str, ModelInput] = {}
        self.face_index: dict[str, int] = {}
        self.input_errors: dict[str, str] = {}  # why a loaded photo cannot be used with the current model
        self.align = True
        self._lock = threading.RLock()
        # results and feature maps, bounded in bytes (least recently used evicted first; FAMEGUI_CACHE_MB)
        self.cache: ByteLRU = ByteLRU()
        self._fmap_cache: ByteLRU = ByteLRU(FMAP_CACHE_BYTES)

    def set_cache_limit(self, megabytes: float) -> None:
        """The result cache's budget in MB (the GUI's setting); entries beyond it are evicted now."""
        self.cache.set_limit(int(float(megabytes) * (1 << 20)))

    # ----------------------------------------------------------------- model and images
    def load_model(self, spec: str, weights: str | None = None, device: str = "cpu") -> ModelWrapper:
        from .models.zoo import load_model

        model = load_model(spec, weights)
        if device != "cpu":
            model.to(device)
        self.set_model(model, spec, weights)
        return model

    def set_model(self, model: ModelWrapper, spec: str | None = None, weights: str | None = None) -> None:
        """Use ``model`` from now on; images already loaded are prepared for it."""
        model.layers()  # the dummy pass, here in the worker rather than later in the GUI thread
        io_model = model.clone()
        with self._lock:
            self.model, self.io_model = model, io_model
            self.weights, self.model_spec = weights, spec or model.source
            self.inputs.clear()
            self._fmap_cache.clear()
        self.input_errors = {}
        for slot in list(self.images):
            try:
                self.prepare(slot)
            except (ValueError, OSError) as e:  # e.g. no face for a face model: the photo stays loaded
                self.inputs.pop(slot, None)
                self.input_errors[slot] = f"{slot} image: {str(e).strip().splitlines()[0]}"

    def model_key(self) -> tuple:
        m = self.model
        return (m.source or m.name, m.weights_id, str(m.device)) if m else ()

    def set_image(self, slot: str, image: str | LoadedImage, face_index: int = 0) -> ModelInput | None:
        if slot not in SLOTS:
            raise ValueError(f"unknown image slot {slot!r}")
        img = image if isinstance(image, LoadedImage) else load_image(image)
        with self._lock:
            self.images[slot] = img
            self.face_index[slot] = face_index
            self.inputs.pop(slot, None)
        return self.prepare(slot) if self.model is not None else None

    def prepare(self, slot: str) -> ModelInput:
        if self.model is None:
            raise ValueError("no model loaded")
        if slot not in self.images:
            raise ValueError(f"no {slot} image loaded")
        inp = prepare_for_model(self.model, self.images[slot], face_index=self.face_index.get(slot, 0),
                                align=self.align)
        with self._lock:
            self.inputs[slot] = inp
        return inp

    def clear_image(self, slot: str) -> None:
        with self._lock:
            self.images.pop(slot, None)
            self.inputs.pop(slot, None)

    def input(self, slot: str) -> ModelInput:
        inp = self.inputs.get(slot)
        if inp is None:
            if slot in self.images:
                return self.prepare(slot)
            raise ValueError(f"no {slot} image loaded")
        return inp

    def input_rgb(self, slot: str) -> np.ndarray:
        return self.input(slot).tensor[0].permute(1, 2, 0).cpu().numpy()

    # ----------------------------------------------------------------- feature maps and geometry
    def feature_map(self, layer: str, slot: str = "probe") -> np.ndarray:
        """sum_c |a_c| of ``layer`` for an image: (fh, fw) float32."""
        inp = self.input(slot)
        key = (self.model_key(), inp.image.sha256, self.face_index.get(slot, 0), layer)
        fmap = self._fmap_cache.get(key)
        if fmap is None:
            m = self.io_model
            with torch.no_grad():
                a = m.activation(inp.tensor.to(m.device), layer)
            if a.ndim != 4:
                raise ValueError(f"layer {layer} has output shape {tuple(a.shape[1:])}, not a (C,H,W) feature map")
            fmap = a[0].abs().sum(0).cpu().numpy().astype(np.float32)
            self._fmap_cache[key] = fmap
        return fmap

    def cell_geometry(self, layer: str, cell: tuple[int, int], io: bool = False) -> tuple[Box, Box]:
        """(footprint, receptive field); ``io=True`` from the io thread (uses the model copy)."""
        m = self.io_model if io else self.model
        shape = m.layer_info(layer).shape
        return footprint(m.input_size, shape[1:], cell), receptive_field(m, layer, cell)

    # ----------------------------------------------------------------- classification and pairs
    def top_classes(self, k: int = 5, slot: str = "probe") -> list[tuple[int, str, float]]:
        m = self.io_model
        if m.task != "classification":
            raise ValueError(f"{m.name} is not a classifier")
        with torch.no_grad():
            out = m(self.input(slot).tensor.to(m.device))[0]
        probs = out if m.extras.get("scores") == "cosine" else torch.softmax(out, 0)
        idx = out.argsort(descending=True)[:k].tolist()
        names = m.class_names or [f"class {i}" for i in range(out.numel())]
        return [(i, names[i], float(probs[i])) for i in idx]

    def pair_scores(self, a: str = "probe", b: str = "reference") -> PairScores:
        m = self.io_model
        with torch.no_grad():
            ea = m(self.input(a).tensor.to(m.device))
            eb = m(self.input(b).tensor.to(m.device))
        cos = float(torch.nn.functional.cosine_similarity(ea, eb)[0])
        dist = float((ea - eb).norm())
        from .models.thresholds import decision_rule

        try:
            rule = decision_rule(m)
        except ValueError:  # an embedder without a threshold: show the numbers, no decision
            return PairScores(cos, dist, "no threshold (verify --pairs LIST gives one)", None)
        return PairScores(cos, dist, rule.describe(), rule.is_same(cos, dist))

    # ----------------------------------------------------------------- explanations
    def request_key(self, method: str, target: Target, params: dict, slot: str, other: str | None,
                    non_mate: str | None = None) -> tuple:
        inp = self.input(slot)
        other_sha = self.input(other).image.sha256 if other else None
        p = json.dumps(params, sort_keys=True, default=str)
        key = (self.model_key(), inp.image.sha256, self.face_index.get(slot, 0), other_sha,
               json.dumps(target.to_dict(), sort_keys=True), method, p, self.align)
        if non_mate:
            key += ("non-mate", self.input(non_mate).image.sha256, self.face_index.get(non_mate, 0))
        return key

    def _resolve(self, method: str, target: Target, params: dict | None, slot: str, other: str | None,
                 non_mate: str | None = None):
        """(resolved params, the other slot of a pair, the non-mate slot if used, cache key) of a request."""
        spec = get_method(method)
        resolved = spec.resolve(params, task_of(target))
        pair = target.needs_reference
        if pair and other is None:
            other = "reference" if slot != "reference" else "probe"
        if not (pair and spec.uses_non_mate) or non_mate in (slot, other):
            non_mate = None  # only triplet methods take one, and never one of the pair itself
        return resolved, other, non_mate, self.request_key(method, target, resolved, slot, other, non_mate)

    def explain(self, method: str, target: Target, params: dict | None = None, slot: str = "probe",
                other: str | None = None, progress=None, cancel=None, non_mate: str | None = None) -> MapResult:
        """Compute (or fetch from the cache) one map; ``other`` is the reference slot for pair targets,
        ``non_mate`` an optional third slot for methods that use a non-mate (gweEBP's triplet gain).

        An empty or non-finite map: :class:`famegui.records.EmptyMapError` when it means nothing (NaN input or
        weights), else the reason in ``info["problem"]`` (e.g. the loss was below epsilon at the start)."""
        from .explanation import Row, explain_rows

        resolved, other, non_mate, key = self._resolve(method, target, params, slot, other, non_mate)
        hit = self.cache.get(key)
        if hit is not None:
            return hit
        row = Row(self.input(slot), target, self.input(other) if other else None,
                  self.input(non_mate) if non_mate else None)
        [e] = explain_rows(self.model, [row], method, resolved, weights=self.weights, progress=progress,
                           cancel=cancel)
        res = MapResult.of(e, slot, other, key, non_mate)
        with self._lock:
            self.cache[key] = res
        return res

    def cached(self, method: str, target: Target, params: dict | None, slot: str = "probe",
               other: str | None = None, non_mate: str | None = None) -> MapResult | None:
        try:
            return self.cache.get(self._resolve(method, target, params, slot, other, non_mate)[3])
        except ValueError:
            return None

    def explain_cells(self, layer: str, params: dict | None = None, slot: str = "probe", batch: int | None = None,
                      progress=None, cancel=None) -> list[MapResult]:
        """FAME for every cell of ``layer``, batched (``batch`` None: sized to memory and the model, see
        :func:`famegui.methods.fame.cells_batch_size`); progress(fraction, done_results)."""
        from .explanation import Row, explain_rows

        resolved = get_method("fame").resolve(params, "cell")
        _, fh, fw = self.model.layer_info(layer).shape
        targets = [Target("cell", layer=layer, cell=(r, c)) for r in range(fh) for c in range(fw)]
        keys = [self.request_key("fame", t, resolved, slot, None) for t in targets]
        results: list[MapResult | None] = [self.cache.get(k) for k in keys]
        todo = [i for i, r in enumerate(results) if r is None]
        inp = self.input(slot)

        def finished(made: list) -> None:  # one batch of the cells still to do
            for e in made:
                i = targets.index(e.target)
                results[i] = MapResult.of(e, slot, None, keys[i])
                self.cache[keys[i]] = results[i]
            if progress is not None:
                progress(sum(r is not None for r in results) / len(targets), list(results))

        skipped = len(targets) - len(todo)

        def fraction(f, _partial=None):
            if progress is not None:
                progress((skipped + f * len(todo)) / len(targets), None)

        explain_rows(self.model, [Row(inp, targets[i]) for i in todo], "fame", resolved, weights=self.weights,
                     batch=batch, progress=fraction, cancel=cancel, on_batch=finished, fatal="keep")
        return results

    # ----------------------------------------------------------------- export
    def export(self, result: MapResult, out: str, save_map: str | None = None, *, on_photo: bool = False,
               opacity: float = 0.5, cmap: str = "jet", boxes=None, long_side: int | None = None):
        """Write ``result``'s export set (PNG, optional .npy, sidecar): see :meth:`famegui.Explanation.save`."""
        return result.explanation.save(out, save_map=save_map, on_photo=on_photo, opacity=opacity, cmap=cmap,
                                       size=long_side, boxes=boxes or False)
