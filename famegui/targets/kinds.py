"""The built-in target kinds: a feature-map cell, a class, and a pair's similarity (e+) / dissimilarity (e-)."""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from . import Target, TargetKind, register_kind, whole_number
from .losses import cell_loss, class_logit_loss, verification_loss


class CellKind(TargetKind):
    """One cell (row, col) of a layer's feature map: L = sum_c |a_c[i, j]| (FAME Eq. 5)."""

    name = "cell"
    task = "cell"

    def validate(self, target: Target) -> None:
        if target.layer is None or target.cell is None:
            raise ValueError("a cell target needs a layer and a (row, col) cell")
        if not isinstance(target.layer, str) or not target.layer:
            raise ValueError(f"a cell target's layer must be a layer name, got {target.layer!r}")
        if len(target.cell) != 2:
            raise ValueError(f"a cell is (row, col), got {target.cell!r}")
        for v in target.cell:
            whole_number(v, "a cell's row and column")

    def label(self, target: Target) -> str:
        return f"{target.layer}[{target.cell[0]},{target.cell[1]}]"

    def loss(self, model, targets: Sequence[Target], reference=None):
        if len({t.layer for t in targets}) != 1:
            raise ValueError("a batch of cells must share one layer")
        return cell_loss(model, targets[0].layer, [t.cell for t in targets])

    def explained_score(self, model, target: Target, reference=None):
        i, j = target.cell

        def cell(xs):
            a = model.activation(xs, target.layer)
            return a[:, :, i, j].abs().sum(dim=1)
        return cell, "cell L1 activation"


class ClassKind(TargetKind):
    """The raw logit (or class score) of one class of a classifier."""

    name = "class"
    task = "classification"
    model_task = "classification"

    def validate(self, target: Target) -> None:
        if target.class_index is None:
            raise ValueError("a class target needs a class index")
        whole_number(target.class_index, "a class index")

    def label(self, target: Target) -> str:
        return f"class {target.class_index}"

    def check_model(self, model) -> None:
        if model.task != "classification":
            raise ValueError(f"{model.name} is a {model.task} model: a class target needs class scores "
                             "(for a face model, use identification mode with a gallery)")

    def loss(self, model, targets: Sequence[Target], reference=None):
        self.check_model(model)
        return class_logit_loss(model, [t.class_index for t in targets])

    def cam_target(self, model, target: Target, reference, params: dict):
        from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

        self.check_model(model)
        return ClassifierOutputTarget(int(target.class_index))

    def probe_score(self, model, target: Target, reference=None):
        self.check_model(model)
        c = int(target.class_index)
        return lambda xb: torch.softmax(model(xb), dim=1)[:, c]

    def explained_score(self, model, target: Target, reference=None):
        k = int(target.class_index)
        if model.extras.get("scores") == "cosine":
            return (lambda xs: model(xs)[:, k]), "class cosine"
        return (lambda xs: torch.softmax(model(xs), dim=1)[:, k]), "class probability"


class CosineTarget:
    """A pytorch-grad-cam target on an embedding: cos(f(x), r) (e+) or 1 - cos (e-).

    The FAME authors detached the norms inside the cosine for their CAM baselines; ``detach_norms``
    does the same with the norm of f(x) (r is frozen anyway). ``scale`` turns the cosine into a face
    logit s * cos (only Score-CAM's softmax sees it).
    """

    def __init__(self, reference: torch.Tensor, dissimilar: bool = False, detach_norms: bool = True,
                 scale: float = 1.0) -> None:
        self.reference = reference.detach().reshape(-1)
        self.dissimilar = dissimilar
        self.detach_norms = detach_norms
        self.scale = float(scale)

    def __call__(self, output: torch.Tensor) -> torch.Tensor:
        r = self.reference.to(output.device, output.dtype)
        norm = output.norm(dim=-1)
        if self.detach_norms:
            norm = norm.detach()
        cos = (output * r).sum(-1) / (norm * r.norm()).clamp_min(1e-12)
        return self.scale * (1.0 - cos if self.dissimilar else cos)


class SimilarityKind(TargetKind):
    """A face pair: L+ = cos(f(x), r) gives e+ ("similar"), L- = 1 - cos gives e- ("dissimilar") (FAME Eq. 6)."""

    task = "verification"
    needs_reference = True
    model_task = "embedding"

    def __init__(self, name: str, dissimilar: bool) -> None:
        self.name = name
        self.dissimilar = dissimilar

    def label(self, target: Target) -> str:
        return "e- (dissimilar)" if self.dissimilar else "e+ (similar)"

    def check_model(self, model) -> None:
        if model.task != "embedding":
            raise ValueError(f"{model.name} is a {model.task} model: e+/e- need an embedding model")

    @staticmethod
    def _need(reference):
        if reference is None:
            raise ValueError("a similarity target needs a reference image or embedding")
        return reference

    def loss(self, model, targets: Sequence[Target], reference=None):
        self.check_model(model)
        return verification_loss(model, self._need(reference), self.name)

    def cam_target(self, model, target: Target, reference, params: dict):
        self.check_model(model)
        return CosineTarget(self._need(reference), self.dissimilar, bool(params.get("detach_norms", True)),
                            float(params.get("cos_scale") or 1.0))

    def probe_score(self, model, target: Target, reference=None):
        """The pair's cosine (for both signs: the method turns it into e+ or e- weights)."""
        self.check_model(model)
        r = self._need(reference).reshape(1, -1)
        return lambda xb: F.cosine_similarity(model(xb), r.to(xb.device, xb.dtype), dim=1)

    def explained_score(self, model, target: Target, reference=None):
        """cos to the reference for e+, 1 - cos for e- (each map explains its own output)."""
        r = self._need(reference).reshape(1, -1)

        def cos(xs):
            return F.cosine_similarity(model(xs), r.expand(xs.shape[0], -1), dim=1)
        if self.dissimilar:
            return (lambda xs: 1.0 - cos(xs)), "1 - cosine"
        return cos, "cosine"


register_kind(CellKind())
register_kind(ClassKind())
register_kind(SimilarityKind("similar", dissimilar=False))
register_kind(SimilarityKind("dissimilar", dissimilar=True))
