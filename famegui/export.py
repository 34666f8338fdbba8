"""Writing results to disk: atomic PNG / .npy / JSON sidecar files.

Every file is written to a temporary name in the target folder and renamed
into place, so a failure (full disk, permission, crash) never leaves half a file.
"""
from __future__ import annotations

import io
import json
import os
import platform
import tempfile
from pathlib import Path

import numpy as np


class ExportError(OSError):
    """A file could not be written; the message is one line."""


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    p = Path(path)
    if p.parent and not p.parent.exists():
        raise ExportError(f"cannot write {p}: folder {p.parent} does not exist")
    fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", suffix=".part", dir=str(p.parent or "."))
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, p)
    except OSError as e:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise ExportError(f"cannot write {p}: {e.strerror or e}") from None
    return p


def write_png(path: str | os.PathLike, rgb: np.ndarray) -> Path:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(rgb)).save(buf, format="PNG")
    return atomic_write_bytes(path, buf.getvalue())


def write_npy(path: str | os.PathLike, array: np.ndarray) -> Path:
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(array))
    return atomic_write_bytes(path, buf.getvalue())


def write_json(path: str | os.PathLike, obj: dict) -> Path:
    return atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=False) + "\n").encode())


def package_versions() -> dict:
    import torch
    import torchvision

    import famegui

    versions = {"famegui": famegui.__version__, "torch": torch.__version__,
                "torchvision": torchvision.__version__, "numpy": np.__version__,
                "python": platform.python_version()}
    from importlib.metadata import PackageNotFoundError, version

    for dist in ("grad-cam", "dlib-bin", "PySide6-Essentials"):
        try:
            versions[dist] = version(dist)
        except PackageNotFoundError:
            pass
    return versions
