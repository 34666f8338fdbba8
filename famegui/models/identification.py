"""Identification mode: a face embedder plus a gallery becomes a classifier over identities.

A gallery is a folder with one sub-folder per identity, photos inside::

    gallery/
        alice/  a1.jpg a2.png
        bob/    b.jpg

Each photo is aligned and embedded once; an identity's template is the mean of
its photos' L2-normalised embeddings, normalised again. The class score of a
probe for identity k is the cosine between the probe's embedding and template
k, so FAME's class-logit loss, Grad-CAM and the rest of the classification
tools work on a face network. The embedder's layers stay reachable under the
prefix ``embedder.`` (e.g. ``embedder.stage4`` for dlib's ResNet).
"""
from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..core.structure import Elementwise, Nested, Network, register_network
from .wrapper import ModelWrapper

__all__ = [
    "DEFAULT_EXCLUDE",
    "PREFIX",
    "IdentificationHead",
    "build_identification_model",
    "gallery_identities",
    "identify",
    "parse_identification_spec",
]

#: Sub-folders never taken as identities: ``hard_cases`` of the bundled photos
#: mixes degraded copies of other folders' photos and a two-person photo.
#: Folders whose name starts with '.' or '_' are skipped as well.
DEFAULT_EXCLUDE = ("hard_cases",)

#: Name under which the embedder's module sits in the identification module.
PREFIX = "embedder"

_IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


class IdentificationHead(nn.Module):
    """``embedder`` (takes normalised input), then cosine to each row of a fixed gallery matrix.

    ``gallery`` (K, D) holds L2-normalised identity templates; it is a buffer,
    not a parameter, so it is never trained and moves with ``.to(device)``.
    """

    def __init__(self, embedder: nn.Module, gallery: torch.Tensor) -> None:
        super().__init__()
        self.embedder = embedder
        self.register_buffer("gallery", F.normalize(gallery.detach().float(), dim=1))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        e = F.normalize(self.embedder(z), dim=1)
        return e @ self.gallery.t()


@register_network(IdentificationHead)
def _head_structure(m: IdentificationHead) -> Network:
    """The embedder, a normalisation (a positive scale per sample), then a linear map to the templates."""
    head = nn.Linear(m.gallery.shape[1], m.gallery.shape[0], bias=False, device="meta")  # no RNG use
    head.weight = nn.Parameter(m.gallery.detach().float(), requires_grad=False)
    return Network([("", Nested(m.embedder, "embedder.")), ("", Elementwise(lambda t: F.normalize(t, dim=1))),
                    ("", head)])


def _visible(p: Path) -> bool:
    return not p.name.startswith((".", "_"))


def gallery_identities(gallery_dir: str | os.PathLike,
                       exclude: Iterable[str] = DEFAULT_EXCLUDE) -> dict[str, list[Path]]:
    """Identity name -> its image files (searched recursively, sorted), for a gallery folder."""
    root = Path(gallery_dir)
    if not root.exists():
        raise ValueError(f"gallery folder not found: {root}")
    if not root.is_dir():
        raise ValueError(f"gallery {root} is not a folder (expected one sub-folder per identity)")
    skip = set(exclude or ())
    out: dict[str, list[Path]] = {}
    for d in sorted(p for p in root.iterdir() if p.is_dir() and _visible(p) and p.name not in skip):
        files = sorted(
            f for f in d.rglob("*")
            if f.is_file() and f.suffix.lower() in _IMAGE_SUFFIXES
            and not any(part.startswith(".") for part in f.relative_to(d).parts)
        )
        out[d.name] = files
    if not out:
        raise ValueError(f"gallery {root} has no identity sub-folders (expected one sub-folder of photos per "
                         "person)")
    return out


def _one_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


@torch.no_grad()
def build_identification_model(embedder: ModelWrapper, gallery_dir: str | os.PathLike, align: bool = True, *,
                               exclude: Iterable[str] = DEFAULT_EXCLUDE, batch: int = 32) -> ModelWrapper:
    """A classifier over the identities of ``gallery_dir`` built on the face ``embedder``.

    Class names are the identity folder names (sorted); class scores are cosines
    in [-1, 1]. Photos that cannot be read or show no face are skipped and
    listed in ``extras["skipped"]`` (one line each); an identity left with no
    usable photo is an error (``ValueError``). The largest face is used when a
    photo shows several (noted in ``extras["notes"]``). The returned model shares
    the embedder's module (and so its device). Input size, normalisation,
    channel order and alignment are the embedder's.
    """
    if embedder.task != "embedding":
        raise ValueError(f"{embedder.name} is a {embedder.task} model; identification needs a face (embedding) "
                         "model")
    root = Path(gallery_dir).expanduser().resolve()
    g = _read_gallery(embedder, root, gallery_identities(root, exclude), align)
    templates = _templates(embedder, g, batch)
    head = IdentificationHead(embedder.module, templates.to(embedder.device))
    if embedder.is_scripted:
        try:  # keep a TorchScript embedder scripted, so the wrapper treats the whole model as such
            head = torch.jit.script(head)
        except Exception:  # pragma: no cover - depends on the scripted module
            pass
    return _wrap(embedder, head, g, root, align)


@dataclass
class _Gallery:
    names: list[str]
    tensors: list[torch.Tensor] = field(default_factory=list)  # model inputs, one per usable photo
    owner: list[int] = field(default_factory=list)  # identity index of each
    skipped: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    digest: hashlib._Hash = field(default_factory=hashlib.sha256)


def _read_gallery(embedder: ModelWrapper, root: Path, identities: dict, align: bool) -> _Gallery:
    """Every usable photo of every identity as a model input; an identity with none is an error."""
    from ..data.images import load_image
    from ..data.pipeline import prepare_for_model

    g = _Gallery(list(identities))
    g.digest.update(f"align={bool(align)};alignment={embedder.alignment};input={embedder.input_size}\n".encode())
    for k, name in enumerate(g.names):
        files = identities[name]
        if not files:
            raise ValueError(f"identity {name!r} in gallery {root} has no images")
        used, first_reason = 0, ""
        for f in files:
            rel = f.relative_to(root).as_posix()
            try:
                img = load_image(f)
                mi = prepare_for_model(embedder, img, align=align)
            except (ValueError, OSError) as e:  # ImageLoadError and FaceNotFoundError are ValueErrors
                reason = f"{rel}: {_one_line(e).replace(str(f), f.name)}"
                g.skipped.append(reason)
                first_reason = first_reason or reason
                continue
            if mi.n_faces is not None and mi.n_faces > 1:
                g.notes.append(f"{rel}: {mi.n_faces} faces, used the largest")
            g.tensors.append(mi.tensor)
            g.owner.append(k)
            used += 1
            g.digest.update(f"{name}/{rel}:{img.sha256}\n".encode())
        if used == 0:
            raise ValueError(f"identity {name!r} in gallery {root} has no usable photo ({first_reason})")
    return g


def _templates(embedder: ModelWrapper, g: _Gallery, batch: int) -> torch.Tensor:
    """(K, D): each identity's mean normalised embedding."""
    emb = []
    for i in range(0, len(g.tensors), batch):
        x = torch.cat(g.tensors[i:i + batch]).to(embedder.device)
        emb.append(F.normalize(embedder(x).float(), dim=1))
    emb_t = torch.cat(emb)
    owner_t = torch.tensor(g.owner, device=emb_t.device)
    return torch.stack([emb_t[owner_t == k].mean(0) for k in range(len(g.names))])


def _wrap(embedder: ModelWrapper, head: nn.Module, g: _Gallery, root: Path, align: bool) -> ModelWrapper:
    gallery_hash = g.digest.hexdigest()
    extras = {
        "skipped": g.skipped,
        "notes": g.notes,
        "gallery": str(root),
        "gallery_sha256": gallery_hash,
        "identity_counts": {n: g.owner.count(k) for k, n in enumerate(g.names)},
        "embedder": embedder.source or embedder.name,
        "embedder_weights": embedder.weights_id,
        "align": bool(align),
        "prefix": PREFIX,
        "scores": "cosine",  # class scores are cosines, not logits: no softmax when shown
    }
    if embedder.extras.get("cam_layer"):
        extras["cam_layer"] = f"{PREFIX}.{embedder.extras['cam_layer']}"
    if "crop_ratio" in embedder.extras:
        extras["crop_ratio"] = embedder.extras["crop_ratio"]
    return ModelWrapper(
        name=f"{embedder.name} identification ({len(g.names)} identities)",
        module=head,
        input_size=tuple(embedder.input_size),
        mean=tuple(embedder.mean),
        std=tuple(embedder.std),
        task="classification",
        class_names=g.names,
        channel_order=embedder.channel_order,
        weights_id=f"{embedder.weights_id}+gallery-sha256:{gallery_hash}",
        alignment=embedder.alignment,
        default_layer=f"{PREFIX}.{embedder.default_layer}" if embedder.default_layer else None,
        source=f"identify:{embedder.source or embedder.name}:{root}",
        extras=extras,
    )


@torch.no_grad()
def identify(model: ModelWrapper, x: torch.Tensor, top: int = 5) -> list[tuple[str, float]]:
    """The ``top`` identities (name, cosine) for one probe input (1,3,H,W) in [0,1], best first."""
    scores = model(x.to(model.device))[0].float().cpu()
    order = scores.argsort(descending=True)[: max(1, int(top))]
    names = model.class_names or [str(i) for i in range(scores.numel())]
    return [(names[int(i)], float(scores[i])) for i in order]


def parse_identification_spec(spec: str) -> tuple[str, Path]:
    """``identify:EMBEDDER:GALLERY`` -> (embedder spec, gallery folder).

    The embedder spec may itself contain ':' (``package.module:callable``) and
    so may the gallery path (``C:\\faces``): the first split whose right-hand
    side is an existing folder wins; without one, the split is at the first ':'.
    """
    prefix = "identify:"
    if not spec.startswith(prefix):
        raise ValueError(f"not an identification spec (expected identify:EMBEDDER:GALLERY): {spec!r}")
    rest = spec[len(prefix):]
    cuts = [i for i, ch in enumerate(rest) if ch == ":"]
    for i in cuts:
        if rest[:i] and Path(rest[i + 1:]).expanduser().is_dir():
            return rest[:i], Path(rest[i + 1:]).expanduser()
    if not cuts or not rest[:cuts[0]] or not rest[cuts[0] + 1:]:
        raise ValueError(f"expected identify:EMBEDDER:GALLERY, got {spec!r}")
    return rest[:cuts[0]], Path(rest[cuts[0] + 1:]).expanduser()
