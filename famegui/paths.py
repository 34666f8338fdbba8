"""Where famegui keeps things: the user's cache and the shipped resources."""
from __future__ import annotations

import hashlib
import os
from importlib import resources as _res
from pathlib import Path


def cache_dir() -> Path:
    """The per-user cache (parsed networks, results). ``FAMEGUI_CACHE_DIR`` overrides it."""
    env = os.environ.get("FAMEGUI_CACHE_DIR")
    if env:
        base = Path(env)
    else:
        xdg = os.environ.get("XDG_CACHE_HOME")
        base = Path(xdg) / "famegui" if xdg else Path.home() / ".cache" / "famegui"
    base.mkdir(parents=True, exist_ok=True)
    return base


def resource_path(*parts: str) -> Path:
    """A file shipped with the package (the top-level ``resources/`` folder)."""
    return Path(str(_res.files("famegui.resources").joinpath(*parts)))


def file_sha256(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            b = f.read(chunk)
            if not b:
                break
            h.update(b)
    return h.hexdigest()
