"""The weights catalogue: where each downloadable model's weights come from, and where they go.

The shipped catalogue is ``resources/weights_catalogue.json`` (written by ``scripts/make_weights_catalogue.py``).
A user's file of the same format (``FAMEGUI_WEIGHTS_INDEX`` or ``--index FILE``) adds models or overrides
fields of listed ones: a mirror lists only ``{"models": {"resnet18": {"url": "https://lab/resnet18.pth"}}}``
and keeps the shipped checksum. A URL may be ``https://``, ``http://``, ``file://`` or a path relative to
the index file (a folder made by ``famegui fetch --all --to DIR``).

Fields of one model (all but a way to get it optional):

- ``url``: where to download it; or ``manual``: what the user must do instead (no direct, licensed URL);
- ``sha256`` (64 hex digits) or ``hash_prefix`` (torchvision's: the first hex digits of the SHA-256, part of
  its file names): checked before the file is put in place; a user's ``sha256`` replaces a shipped prefix;
- ``size``: bytes, shown before the download (approximate for torchvision's, which documents MiB);
- ``cache``: ``torchvision`` (``$TORCH_HOME/hub/checkpoints``), ``insightface``
  (``~/.insightface/models/PACK``) or ``huggingface`` (the Hugging Face hub cache timm reads), the folders the
  loaders already read; ``file``: the name there (for ``huggingface``: the file in the repository);
- ``repo`` (``owner/name``), ``revision`` (default ``main``) and ``endpoint`` (a Hub mirror; else
  ``$HF_ENDPOINT``, else huggingface.co): a Hugging Face repository, fetched with huggingface_hub and
  checked against ``sha256`` or, without one, against the SHA-256 the Hub declares for the file (its ETag);
- ``unpack``: ``zip`` for a pack; ``licence``, ``page``, ``description``: shown to the user.

Nothing here touches the network (that is :mod:`.download`, on request only).
"""
from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from ..data.files import regular_file
from ..paths import resource_path
from .wrapper import ModelLoadError

ENV = "FAMEGUI_WEIGHTS_INDEX"
CACHES = ("torchvision", "insightface", "huggingface")
_TEXT = ("url", "manual", "file", "licence", "page", "description", "revision")
_REPO = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,95}/[A-Za-z0-9][A-Za-z0-9._-]{0,95}")
_SHA = re.compile(r"[0-9a-f]{64}")
_PREFIX = re.compile(r"[0-9a-f]{6,64}")
_SAFE_FILE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,200}")


def insightface_root() -> Path:
    """Where insightface keeps its model packs (``~/.insightface/models``)."""
    return Path.home() / ".insightface" / "models"


def hf_hub_cache() -> Path:
    """The Hugging Face hub cache folder, as huggingface_hub resolves it from the environment."""
    for var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if os.environ.get(var):
            return Path(os.environ[var]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "huggingface" / "hub"


HF_FILES = ("model.safetensors", "pytorch_model.bin")


def hf_cached_file(repo_id: str) -> Path | None:
    """The newest cached weights file of a hub repository (e.g. ``timm/convnext_tiny.in12k_ft_in1k``)."""
    folder = hf_hub_cache() / ("models--" + repo_id.replace("/", "--")) / "snapshots"
    try:
        snaps = sorted((p for p in folder.iterdir() if p.is_dir()), key=lambda p: p.stat().st_mtime, reverse=True)
    except OSError:
        return None
    for snap in snaps:
        for fname in HF_FILES:
            if (snap / fname).is_file():
                return snap / fname
    return None


class IndexError_(ModelLoadError):  # noqa: N801 - not the builtin IndexError
    """A weights index that cannot be read (one line naming the file and the key)."""


@dataclass(frozen=True)
class WeightsEntry:
    """Where one model's weights come from and go."""

    name: str
    url: str | None = None
    manual: str | None = None
    file: str | None = None
    sha256: str | None = None
    hash_prefix: str | None = None
    size: int | None = None
    cache: str | None = None
    unpack: str | None = None
    repo: str | None = None
    revision: str | None = None
    endpoint: str | None = None
    licence: str = ""
    page: str = ""
    description: str = ""

    @property
    def fetchable(self) -> bool:
        """A URL, a checksum and a place to put it (or a Hub repository and file): famegui can fetch it when
        asked."""
        if self.cache == "huggingface":
            return bool(self.repo and self.file)
        return bool(self.url and (self.sha256 or self.hash_prefix) and self.cache and self.file)

    @property
    def source(self) -> str:
        """Where it comes from, in words: the URL, or the Hub repository and file."""
        if self.cache == "huggingface":
            return f"{self.endpoint or 'the Hugging Face Hub'} ({self.repo}/{self.file})"
        return str(self.url or self.manual or "nowhere")

    def destination(self) -> Path:
        """Where the loaders look for it: the file (torchvision), the pack's folder (insightface) or the
        repository's folder in the Hugging Face cache."""
        if self.cache == "huggingface" and self.repo:
            return hf_hub_cache() / ("models--" + self.repo.replace("/", "--"))
        if self.cache == "torchvision":
            import torch

            return Path(torch.hub.get_dir()) / "checkpoints" / str(self.file)
        if self.cache == "insightface":
            return insightface_root() / self.name.split(":", 1)[-1]
        raise ModelLoadError(f"{self.name}: the catalogue names no cache to put it in")

    def on_disk(self) -> bool:
        if self.cache == "huggingface":
            return bool(self.repo) and hf_cached_file(str(self.repo)) is not None
        dest = self.destination()
        if self.unpack == "zip":
            return dest.is_dir() and any(dest.rglob("*.onnx"))
        return dest.is_file()

    def size_text(self) -> str:
        if not self.size:
            return "size unknown"
        mb = self.size / 1e6
        return f"{mb:.0f} MB" if mb >= 10 else f"{mb:.1f} MB"


def _check_entry(name: str, raw, where: str) -> dict:
    if not isinstance(raw, dict):
        raise IndexError_(f"{where}: models.{name} must be an object")
    out = {}
    for key, value in raw.items():
        if key in _TEXT:
            if not isinstance(value, str) or not value or len(value) > 4000:
                raise IndexError_(f"{where}: models.{name}.{key} must be a non-empty string")
        elif key == "sha256":
            if not isinstance(value, str) or not _SHA.fullmatch(value.lower()):
                raise IndexError_(f"{where}: models.{name}.sha256 must be 64 hex digits")
            value = value.lower()
        elif key == "hash_prefix":
            if not isinstance(value, str) or not _PREFIX.fullmatch(value.lower()):
                raise IndexError_(f"{where}: models.{name}.hash_prefix must be 6 to 64 hex digits")
            value = value.lower()
        elif key == "size":
            if isinstance(value, bool) or not isinstance(value, int) or not 0 < value < 2**40:
                raise IndexError_(f"{where}: models.{name}.size must be a positive whole number of bytes")
        elif key == "cache":
            if value not in CACHES:
                raise IndexError_(f"{where}: models.{name}.cache must be one of {', '.join(CACHES)}")
        elif key == "repo":
            if not isinstance(value, str) or not _REPO.fullmatch(value) or ".." in value:
                raise IndexError_(f"{where}: models.{name}.repo must be a Hugging Face repository, owner/name")
        elif key == "endpoint":
            if not isinstance(value, str) or urlsplit(value).scheme.lower() not in ("http", "https"):
                raise IndexError_(f"{where}: models.{name}.endpoint must be an http(s) URL")
        elif key == "unpack":
            if value != "zip":
                raise IndexError_(f"{where}: models.{name}.unpack must be \"zip\"")
        else:
            continue  # other fields are the writer's notes
        out[key] = value
    if "file" in out and not _SAFE_FILE.fullmatch(out["file"]):
        raise IndexError_(f"{where}: models.{name}.file must be a plain file name")
    if "url" in out:
        out["url"] = _absolute_url(out["url"], where, name)
    return out


def _absolute_url(url: str, where: str, name: str) -> str:
    scheme = urlsplit(url).scheme.lower()
    if scheme in ("http", "https", "file"):
        return url
    if scheme and len(scheme) > 1:
        raise IndexError_(f"{where}: models.{name}.url: {scheme}:// is not supported (http, https, file)")
    base = Path(where).resolve().parent if where != "catalogue" else None
    if base is None:
        raise IndexError_(f"{where}: models.{name}.url must be absolute")
    return (base / url).resolve().as_uri()  # a path relative to the index file


def read_index(path: str | os.PathLike, where: str | None = None) -> dict[str, dict]:
    """The checked ``models`` of one index file (one-line :class:`IndexError_` naming file and key)."""
    where = where or str(path)
    try:
        p = regular_file(path, "weights index", "text", IndexError_)
        doc = json.loads(p.read_text(encoding="utf-8"))
    except IndexError_:
        raise
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise IndexError_(f"{where}: not a readable JSON weights index ({str(e).splitlines()[0][:120]})") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("models"), dict):
        raise IndexError_(f"{where}: a weights index is an object with \"models\": {{name: {{...}}}}")
    return {str(n): _check_entry(str(n), e, where) for n, e in doc["models"].items()}


def catalogue(index: str | os.PathLike | None = None, *, user: bool = True) -> dict[str, WeightsEntry]:
    """The shipped catalogue, with the user's index (``index``, else ``$FAMEGUI_WEIGHTS_INDEX``) over it
    (``user=False``: the shipped one alone, e.g. for a window whose user index is broken)."""
    merged = read_index(resource_path("weights_catalogue.json"), "catalogue")
    index = (index or os.environ.get(ENV) or None) if user else None
    if index:
        for name, fields in read_index(index).items():
            base = dict(merged.get(name, {}))
            if "sha256" in fields or "hash_prefix" in fields:  # a new checksum replaces both shipped ones
                base.pop("sha256", None)
                base.pop("hash_prefix", None)
            if "url" in fields:
                base.pop("manual", None)
            merged[name] = {**base, **fields}
    return {name: WeightsEntry(name=name, **fields) for name, fields in merged.items()}


def timm_entry(name: str) -> WeightsEntry | None:
    """A catalogue entry for any ``timm:ARCH[.TAG]`` whose pretrained config names a Hub repository (timm's
    own table, no network): ``famegui fetch`` takes timm names the shipped catalogue does not list."""
    if not name.startswith("timm:"):
        return None
    try:
        import timm
    except ImportError:
        return None
    try:
        cfg = timm.models.get_pretrained_cfg(name[len("timm:"):], allow_unregistered=False)
    except Exception:  # noqa: BLE001 - not a timm model or tag
        return None
    repo = getattr(cfg, "hf_hub_id", None) if cfg is not None else None
    if not repo or not _REPO.fullmatch(repo):
        return None
    return WeightsEntry(name=name, repo=repo, file=getattr(cfg, "hf_hub_filename", None) or "model.safetensors",
                        cache="huggingface", licence=getattr(cfg, "license", None) or "",
                        page=f"https://huggingface.co/{repo}")


def state(entry: WeightsEntry) -> str:
    """``ready``, ``fetch`` (can be fetched) or ``manual`` (needs a file from the user)."""
    if entry.cache and entry.file and entry.on_disk():
        return "ready"
    return "fetch" if entry.fetchable else "manual"


def describe_state(entry: WeightsEntry) -> str:
    """One line for ``famegui models`` and the window's list."""
    s = state(entry)
    if s == "ready":
        return f"ready ({entry.destination()})"
    if s == "fetch":
        return f"can be fetched ({entry.size_text()}): famegui fetch {entry.name}"
    if entry.manual:
        return f"needs a file from you: {entry.manual} ({entry.page})" if entry.page else entry.manual
    return "needs a file from you (the catalogue has no checksum for it: add sha256 in your index)"
