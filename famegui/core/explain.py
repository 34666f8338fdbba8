"""What to explain, and FAME on it: the one entry point the CLI and the GUI share."""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Callable, Sequence

import torch

from ..models.wrapper import ModelWrapper
from .fame import FameParams, FameResult, FameStep, run_fame
from .losses import LossFn, cell_loss, class_logit_loss, embed, verification_loss

TARGET_KINDS = ("cell", "class", "similar", "dissimilar")


@dataclass(frozen=True)
class Target:
    """A thing to suppress: a feature-map cell, a class logit, or a pair's (dis)similarity."""

    kind: str
    layer: str | None = None
    cell: tuple[int, int] | None = None
    class_index: int | None = None

    def __post_init__(self) -> None:
        if self.kind not in TARGET_KINDS:
            raise ValueError(f"target kind must be one of {TARGET_KINDS}, not {self.kind!r}")
        if self.kind == "cell" and (self.layer is None or self.cell is None):
            raise ValueError("a cell target needs a layer and a (row, col) cell")
        if self.kind == "class" and self.class_index is None:
            raise ValueError("a class target needs a class index")

    @classmethod
    def parse_cell(cls, text: str) -> "Target":
        """``LAYER:ROW,COL`` -> a cell target (the layer name may itself contain dots)."""
        layer, sep, rc = text.rpartition(":")
        try:
            r, c = (int(v) for v in rc.split(","))
        except ValueError:
            raise ValueError(f"--cell must look like LAYER:ROW,COL (e.g. layer4:3,3), got {text!r}") from None
        if not sep or not layer:
            raise ValueError(f"--cell must look like LAYER:ROW,COL (e.g. layer4:3,3), got {text!r}")
        return cls("cell", layer=layer, cell=(r, c))

    def label(self) -> str:
        if self.kind == "cell":
            return f"{self.layer}[{self.cell[0]},{self.cell[1]}]"
        if self.kind == "class":
            return f"class {self.class_index}"
        return "e+ (similar)" if self.kind == "similar" else "e- (dissimilar)"

    def to_dict(self) -> dict:
        d = asdict(self)
        if d["cell"] is not None:
            d["cell"] = list(d["cell"])
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "Target":
        cell = d.get("cell")
        return cls(d["kind"], d.get("layer"), tuple(cell) if cell is not None else None, d.get("class_index"))


def build_loss(model: ModelWrapper, targets: Sequence[Target], reference: torch.Tensor | None = None) -> LossFn:
    """One loss for a batch: ``targets`` are all of one kind (one per batch element, or one for all)."""
    kinds = {t.kind for t in targets}
    if len(kinds) != 1:
        raise ValueError("a batch must share one target kind")
    kind = kinds.pop()
    if kind == "cell":
        layers = {t.layer for t in targets}
        if len(layers) != 1:
            raise ValueError("a batch of cells must share one layer")
        return cell_loss(model, targets[0].layer, [t.cell for t in targets])
    if kind == "class":
        if model.task != "classification":
            raise ValueError(f"{model.name} is a {model.task} model: a class target needs class scores "
                             "(for a face model, use identification mode with a gallery)")
        return class_logit_loss(model, [t.class_index for t in targets])
    if model.task != "embedding":
        raise ValueError(f"{model.name} is a {model.task} model: e+/e- need an embedding model")
    if reference is None:
        raise ValueError("a similarity target needs a reference image or embedding")
    return verification_loss(model, reference, kind)


def reference_embedding(model: ModelWrapper, reference: torch.Tensor) -> torch.Tensor:
    """Embedding of a reference image (1,3,H,W) or pass an embedding (D,) / (1,D) through."""
    if reference.ndim == 4:
        return embed(model, reference)
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
    loss = build_loss(model, targets, ref)
    return run_fame(x, loss, params, callback=callback, every=every, cancel=cancel,
                    normalize=model.normalize, denormalize=model.denormalize)
