"""The built-in target kinds: a feature-map cell, a class, and a pair's similarity (e+) / dissimilarity (e-)."""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from . import CliFlag, GuiChoice, RunTarget, Target, TargetKind, register_kind, whole_number
from .losses import cell_loss, class_logit_loss, verification_loss


class CellKind(TargetKind):
    """One cell (row, col) of a layer's feature map: L = sum_c |a_c[i, j]| (FAME Eq. 5)."""

    name = "cell"
    task = "cell"
    loss_name = "cell L1 activation"
    cli = CliFlag("--cell", metavar="LAYER:ROW,COL")  # in the window: the Feature map view's clicks

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

    def check_cli(self, text: str) -> None:
        Target.parse_cell(text)

    def from_cli(self, text, model, x) -> Target:
        t = Target.parse_cell(text)
        model.layer_info(t.layer)  # unknown layer -> KeyError with a hint
        return t

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
    loss_name = "logit"
    cli = CliFlag("--class", metavar="K|NAME|top1", dest="class_")
    gui = GuiChoice("class logit", "the raw logit (score) of the class")
    run = RunTarget("class", default=True)

    def validate(self, target: Target) -> None:
        if target.class_index is None:
            raise ValueError("a class target needs a class index")
        whole_number(target.class_index, "a class index")

    def label(self, target: Target) -> str:
        return f"class {target.class_index}"

    def check_cli(self, text: str) -> None:
        top_rank(text, self.cli.flag)

    def from_cli(self, text, model, x) -> Target:
        if model.task != "classification":
            raise ValueError(f"{model.name} is an embedding model; use --reference IMG --target similar|dissimilar")
        return Target(self.name, class_index=class_from_text(model, text, x, self.cli.flag))

    def from_item(self, model, label: str) -> Target:
        return Target(self.name, class_index=class_from_label(model, label))

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


def top_rank(text: str, flag: str = "--class") -> int | None:
    """K of ``topK`` (None when ``text`` is not of that form); ValueError for top0 or a non-number."""
    if not text.lower().startswith("top"):
        return None
    rest = text[3:]
    if not rest:
        return 1
    if not rest.isdigit() or int(rest) < 1:
        raise ValueError(f"{flag} {text}: topK needs K >= 1 (top1 is the highest-scoring class)")
    return int(rest)


def class_from_text(model, text: str, x: torch.Tensor, flag: str = "--class") -> int:
    """A class given on the command line (an index, a class name, or ``topK`` of ``model`` on the input ``x``)
    as a class index; ValueError (one line) when ``model`` has no such class."""
    names = model.class_names or []
    k = top_rank(text, flag)
    if k is not None:
        with torch.no_grad():
            logits = model(x.to(model.device))
        n = int(logits.shape[-1])
        if k > n:
            raise ValueError(f"{flag} {text}: {model.name} has only {n} classes (top1 to top{n})")
        return int(logits[0].argsort(descending=True)[k - 1])
    if text.lstrip("-").isdigit():
        idx = int(text)
        if not 0 <= idx < (len(names) or 10**9):
            raise ValueError(f"class {idx} is out of range ({len(names)} classes)")
        return idx
    lowered = [n.lower() for n in names]
    if text.lower() in lowered:
        return lowered.index(text.lower())
    raise ValueError(f"unknown class {text!r}: give an index, a class name or top1")


def class_from_label(model, label: str) -> int:
    """The class index of a protocol item's label (a class name of ``model`` or an index)."""
    names = [n.lower() for n in (model.class_names or [])]
    if label.lower() in names:
        return names.index(label.lower())
    if label.lstrip("-").isdigit() and 0 <= int(label) < (len(names) or 10**9):
        return int(label)
    raise ValueError(f"class {label!r} is neither a class name of {model.name} nor a class index")


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

    def __init__(self, name: str, dissimilar: bool, gui: GuiChoice, run: str) -> None:
        self.name = name
        self.dissimilar = dissimilar
        self.loss_name = "1 - cosine" if dissimilar else "cosine"
        self.cli = CliFlag(choice=name, in_both=True)
        self.gui = gui
        self.run = RunTarget(run, default=True)

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
register_kind(SimilarityKind("similar", dissimilar=False, run="e+",
                             gui=GuiChoice("e+ (similar)", "e+: what makes the two photos similar")))
register_kind(SimilarityKind("dissimilar", dissimilar=True, run="e-",
                             gui=GuiChoice("e- (dissimilar)", "e-: what makes the two photos dissimilar")))
