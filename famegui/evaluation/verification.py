"""Face verification: compare two photos, decide same / different, and calibrate a threshold.

No Qt here: the CLI (``famegui verify``) and the GUI share it.

* :func:`cosine`, :func:`euclidean`: similarity and distance of embeddings.
* :func:`eer_threshold`: the equal-error-rate threshold of labelled scores.
* :func:`decision_rule`: the rule a model decides with (dlib: Euclidean
  distance < 0.6; others: cosine >= ``model.threshold``; an EER threshold from
  a labelled pair list overrides both).
* :func:`default_cosine_threshold`: a cosine threshold for methods that need
  one (FGGB / xSSAB ``theta``), also for dlib, whose own rule is a distance.
* :func:`compare_pair`: two photos in, a :class:`PairResult` out.
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..models.thresholds import DLIB_COSINE_THRESHOLD, DecisionRule, decision_rule, default_cosine_threshold
from ..models.wrapper import ModelWrapper

__all__ = [
    "DLIB_COSINE_THRESHOLD",
    "DecisionRule",
    "EerResult",
    "PairResult",
    "cosine",
    "euclidean",
    "eer_threshold",
    "decision_rule",
    "default_cosine_threshold",
    "embed_inputs",
    "pair_scores",
    "eer_from_pairs",
    "compare_pair",
]

def _as_2d(v) -> np.ndarray:
    if isinstance(v, torch.Tensor):
        v = v.detach().cpu().double().numpy()
    a = np.asarray(v, dtype=np.float64)
    if a.ndim == 1:
        a = a[None]
    if a.ndim != 2:
        raise ValueError(f"expected an embedding (D,) or a batch (N, D), got shape {a.shape}")
    return a


def _rowwise(a, b, fn):
    single = all((np.ndim(v) == 1 or (np.ndim(v) == 2 and np.shape(v)[0] == 1)) for v in (a, b))
    x, y = _as_2d(a), _as_2d(b)
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"embeddings differ in length: {x.shape[1]} vs {y.shape[1]}")
    out = fn(x, y)
    return float(out[0]) if single else out


def cosine(a, b) -> float | np.ndarray:
    """Cosine similarity of two embeddings (float), or row-wise for batches (N, D) (array)."""

    def fn(x, y):
        nx, ny = np.linalg.norm(x, axis=1), np.linalg.norm(y, axis=1)
        return (x * y).sum(1) / np.maximum(nx * ny, 1e-12)

    return _rowwise(a, b, fn)


def euclidean(a, b) -> float | np.ndarray:
    """Euclidean distance of two raw (unnormalised) embeddings, or row-wise for batches."""
    return _rowwise(a, b, lambda x, y: np.linalg.norm(x - y, axis=1))


def eer_threshold(scores: Sequence[float], labels: Sequence[int | bool]) -> tuple[float, float]:
    """(threshold, EER) of similarity ``scores`` with ``labels`` (1/True = same person).

    Decision: same if ``score >= t``. The candidate thresholds are the unique
    scores, swept from high to low; at each, FMR = impostor pairs accepted /
    impostor pairs and FNMR = genuine pairs rejected / genuine pairs. The
    threshold is the FIRST (highest) one where |FMR - FNMR| is smallest, and
    the EER returned is (FMR + FNMR) / 2 there. |FMR - FNMR| is compared in
    exact integer arithmetic (|FA * G - FR * I|), so ties are real ties.
    """
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    lab = np.asarray(labels).reshape(-1)
    if s.shape != lab.shape:
        raise ValueError(f"{s.size} scores but {lab.size} labels")
    if not np.all(np.isfinite(s)):
        raise ValueError("scores must be finite numbers")
    if not np.all(np.isin(lab, (0, 1))):
        raise ValueError("labels must be 1 (same person) or 0 (different people)")
    lab = lab.astype(bool)
    gen, imp = np.sort(s[lab]), np.sort(s[~lab])
    n_g, n_i = gen.size, imp.size
    if n_g == 0 or n_i == 0:
        raise ValueError(f"an EER needs genuine and impostor pairs (got {n_g} genuine, {n_i} impostor)")
    cand = np.unique(s)[::-1]  # high to low
    false_accepts = n_i - np.searchsorted(imp, cand, side="left")  # impostors with score >= t
    false_rejects = np.searchsorted(gen, cand, side="left")  # genuine with score < t
    gap = np.abs(false_accepts.astype(np.int64) * n_g - false_rejects.astype(np.int64) * n_i)
    k = int(np.argmin(gap))  # argmin returns the first minimum
    fmr, fnmr = false_accepts[k] / n_i, false_rejects[k] / n_g
    return float(cand[k]), float(0.5 * (fmr + fnmr))


# --------------------------------------------------------------------------- embedding
@torch.no_grad()
def embed_inputs(model: ModelWrapper, tensors: Sequence[torch.Tensor], batch: int = 32) -> torch.Tensor:
    """Embeddings (N, D) on the CPU of model inputs (each (1,3,H,W) or (3,H,W)), in batches."""
    if not tensors:
        raise ValueError("nothing to embed")
    out = []
    items = [t if t.ndim == 4 else t.unsqueeze(0) for t in tensors]
    for i in range(0, len(items), batch):
        x = torch.cat(items[i:i + batch]).to(model.device)
        out.append(model(x).detach().float().cpu())
    return torch.cat(out)


@dataclass
class EerResult:
    """EER calibration of a model on a labelled pair list."""

    threshold: float
    eer: float
    n_genuine: int
    n_impostor: int
    source: str
    skipped: list[str] = field(default_factory=list)
    scores: np.ndarray | None = None
    labels: np.ndarray | None = None

    def describe(self) -> str:
        s = (f"EER threshold of {self.source} (EER {100 * self.eer:.1f}% over {self.n_genuine} genuine / "
             f"{self.n_impostor} impostor pairs")
        if self.skipped:
            s += f"; {len(self.skipped)} pair{'s' if len(self.skipped) != 1 else ''} skipped"
        return s + ")"


def pair_scores(model: ModelWrapper, pairs, align: bool = True) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Cosine scores and labels of a pair list (each image embedded once); skipped pairs described.

    A pair is skipped (not an error) when one of its photos cannot be read or
    shows no face; the reasons are returned as one line each.
    """
    from ..data.pipeline import prepare_for_model

    pairs = list(pairs)
    index: dict[Path, int] = {}
    tensors: list[torch.Tensor] = []
    failed: dict[Path, str] = {}
    for p in pairs:
        for img in (p.a, p.b):
            key = Path(img)
            if key in index or key in failed:
                continue
            try:
                t = prepare_for_model(model, str(key), align=align).tensor
            except (ValueError, OSError) as e:  # ImageLoadError, FaceNotFoundError are ValueErrors
                failed[key] = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
                continue
            index[key] = len(tensors)
            tensors.append(t)
    skipped = []
    keep = []
    for p in pairs:
        bad = next((failed[Path(i)] for i in (p.a, p.b) if Path(i) in failed), None)
        if bad is not None:
            where = f"line {p.line}: " if getattr(p, "line", 0) else ""
            skipped.append(f"{where}{bad}")
        else:
            keep.append(p)
    if not keep:
        raise ValueError("no usable pair: " + (skipped[0] if skipped else "the list is empty"))
    emb = embed_inputs(model, tensors).double().numpy()
    ia = [index[Path(p.a)] for p in keep]
    ib = [index[Path(p.b)] for p in keep]
    scores = np.asarray(cosine(emb[ia], emb[ib]), dtype=np.float64).reshape(-1)
    labels = np.array([int(p.same) for p in keep])
    return scores, labels, skipped


_EER_CACHE: dict[tuple, EerResult] = {}


def eer_from_pairs(model: ModelWrapper, pairs: str | os.PathLike | Sequence, align: bool = True) -> EerResult:
    """EER threshold (cosine) of ``model`` on a labelled pair list (a file path or a list of pairs).

    Results for a file are kept in memory per (model weights, file, its
    modification time, ``align``), so repeated comparisons reuse them.
    """
    from ..data.pairs import PairList, read_pairs

    key = None
    if isinstance(pairs, (str, os.PathLike)):
        path = Path(pairs)
        try:
            st = path.stat()
            key = (model.name, model.weights_id, str(path.resolve()), st.st_mtime_ns, st.st_size, bool(align))
        except OSError:
            key = None
        if key is not None and key in _EER_CACHE:
            return _EER_CACHE[key]
        plist = read_pairs(path)
        source = path.name
    else:
        plist = pairs if isinstance(pairs, PairList) else PairList(pairs)
        source = getattr(plist, "source", "") or "the given pairs"
    scores, labels, skipped = pair_scores(model, plist, align=align)
    try:
        thr, eer = eer_threshold(scores, labels)
    except ValueError as e:
        raise ValueError(f"{source}: {e}") from None
    res = EerResult(thr, eer, int(labels.sum()), int((labels == 0).sum()), source, skipped, scores, labels)
    if key is not None:
        _EER_CACHE[key] = res
    return res


# --------------------------------------------------------------------------- one pair
@dataclass
class PairResult:
    """The comparison of two face photos by one model."""

    cosine: float
    distance: float
    rule: DecisionRule
    decision: str  # "same" or "different"
    cosine_threshold: float | None = None  # what cosine-based methods (FGGB/xSSAB) use; None if unknown
    norm_a: float = float("nan")
    norm_b: float = float("nan")
    model: str = ""
    image_a: str = ""
    image_b: str = ""
    face_a: int | None = None
    face_b: int | None = None
    n_faces_a: int | None = None
    n_faces_b: int | None = None
    aligned: bool = True
    eer: EerResult | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def same(self) -> bool:
        return self.decision == "same"

    @property
    def threshold(self) -> float:
        return self.rule.threshold

    @property
    def metric(self) -> str:
        return self.rule.metric

    def _face(self, which: str) -> str:
        idx, n = (self.face_a, self.n_faces_a) if which == "a" else (self.face_b, self.n_faces_b)
        if not self.aligned or idx is None:
            return " (centre crop, not aligned)"
        if n is not None and n > 1:
            return f" (face {idx} of {n})"
        return ""

    def summary(self) -> str:
        """Human-readable lines; the last one is ``decision: same`` or ``decision: different``."""
        lines = []
        if self.model:
            lines.append(f"model: {self.model}")
        if self.image_a:
            lines.append(f"A: {self.image_a}{self._face('a')}")
        if self.image_b:
            lines.append(f"B: {self.image_b}{self._face('b')}")
        lines.append(f"cosine similarity: {self.cosine:.4f}")
        lines.append(f"euclidean distance: {self.distance:.4f} (embedding lengths {self.norm_a:.3f}, "
                     f"{self.norm_b:.3f})")
        lines.append(f"threshold: same if {self.rule.describe()} ({self.rule.source})")
        if self.rule.metric == "distance" and self.cosine_threshold is not None:
            lines.append(f"cosine threshold (for cosine-based methods): {self.cosine_threshold:.4g}")
        if self.eer is not None and self.eer.skipped:
            lines.append(f"note: {len(self.eer.skipped)} pair(s) of {self.eer.source} skipped, "
                         f"first: {self.eer.skipped[0]}")
        lines.extend(f"note: {n}" for n in self.notes if n)
        lines.append(f"decision: {self.decision}")
        return "\n".join(lines)

    def to_dict(self) -> dict:
        """Every field as plain JSON types (sidecars, ``famegui verify --json``)."""
        eer = None if self.eer is None else {"threshold": self.eer.threshold, "eer": self.eer.eer,
                                             "genuine": self.eer.n_genuine, "impostor": self.eer.n_impostor,
                                             "source": self.eer.source, "skipped": list(self.eer.skipped)}
        return {
            "cosine": self.cosine,
            "distance": self.distance,
            "metric": self.rule.metric,
            "threshold": self.rule.threshold,
            "threshold_source": self.rule.source,
            "cosine_threshold": self.cosine_threshold,
            "decision": self.decision,
            "norm_a": self.norm_a,
            "norm_b": self.norm_b,
            "model": self.model,
            "image_a": self.image_a,
            "image_b": self.image_b,
            "face_a": self.face_a,
            "face_b": self.face_b,
            "aligned": self.aligned,
            "same": self.same,
            "faces_in_a": self.n_faces_a,
            "faces_in_b": self.n_faces_b,
            "eer": eer,
            "notes": list(self.notes),
        }


def _image_notes(mi, which: str) -> list[str]:
    """Notes about one photo that the A:/B: lines do not already say (e.g. downscaling)."""
    parts = [n.strip() for n in (mi.note or "").split(";")]
    return [f"{which}: {n}" for n in parts if n and "faces found" not in n and not n.startswith("no alignment")]


def compare_pair(model: ModelWrapper, a, b, align: bool = True, face_a: int = 0, face_b: int = 0,
                 pairs: str | os.PathLike | Sequence | None = None) -> PairResult:
    """Compare two face photos (paths or :class:`~famegui.data.images.LoadedImage`).

    The decision follows :func:`decision_rule`; with ``pairs`` (a labelled pair
    list file, or a list of :class:`~famegui.data.pairs.Pair`) the EER threshold
    of the model on that list is used instead. No face in a photo raises
    :class:`~famegui.data.faces.FaceNotFoundError` (a ``ValueError``) unless
    ``align=False`` (centre crops).
    """
    from ..data.pipeline import prepare_for_model

    if model.task != "embedding":
        raise ValueError(f"{model.name} is a {model.task} model; verification needs a face (embedding) model")
    ia = prepare_for_model(model, a, face_index=face_a, align=align)
    ib = prepare_for_model(model, b, face_index=face_b, align=align)
    emb = embed_inputs(model, [ia.tensor, ib.tensor]).double().numpy()
    cos, dist = cosine(emb[0], emb[1]), euclidean(emb[0], emb[1])
    eer = eer_from_pairs(model, pairs, align=align) if pairs is not None else None
    rule = decision_rule(model, None if eer is None else eer.threshold,
                         source=None if eer is None else eer.describe())
    cos_thr = default_cosine_threshold(model, None if eer is None else eer.threshold)
    return PairResult(
        cosine=cos,
        distance=dist,
        rule=rule,
        decision="same" if rule.is_same(cos, dist) else "different",
        cosine_threshold=cos_thr,
        norm_a=float(np.linalg.norm(emb[0])),
        norm_b=float(np.linalg.norm(emb[1])),
        model=model.name,
        image_a=ia.image.path,
        image_b=ib.image.path,
        face_a=ia.face_index,
        face_b=ib.face_index,
        n_faces_a=ia.n_faces,
        n_faces_b=ib.n_faces,
        aligned=align,
        eer=eer,
        notes=_image_notes(ia, "A") + _image_notes(ib, "B"),
    )
