"""Where famegui keeps things: the user's cache and the shipped resources."""
from __future__ import annotations

import hashlib
import os
from importlib import resources as _res
from pathlib import Path


def cache_dir() -> Path:
    """The per-user cache (parsed networks, results): platformdirs' user cache folder (``~/.cache/famegui``
    on Linux); ``FAMEGUI_CACHE_DIR`` overrides it."""
    from platformdirs import user_cache_dir

    env = os.environ.get("FAMEGUI_CACHE_DIR")
    base = Path(env) if env else Path(user_cache_dir("famegui", appauthor=False))
    base.mkdir(parents=True, exist_ok=True)
    return base


def log_dir() -> Path:
    """Where famegui writes its log (failed GUI jobs with their tracebacks): platformdirs' user log folder
    (``~/.local/state/famegui/log`` on Linux); ``FAMEGUI_LOG_DIR`` overrides it. Not created here."""
    from platformdirs import user_log_dir

    env = os.environ.get("FAMEGUI_LOG_DIR")
    return Path(env) if env else Path(user_log_dir("famegui", appauthor=False))


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
