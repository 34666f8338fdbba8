"""What famegui agrees to read: regular files only, within size limits, checked before opening.

Opening a FIFO blocks until someone writes to it, and a device such as
``/dev/zero`` never ends, so every file a user names (an image, a weights file,
a sidecar, a pair list or protocol) is first checked with ``os.stat``:
it must exist, be a regular file, and be no larger than the limit for its kind.
Images are also limited in pixels, read from the header before anything is
decoded (:func:`max_pixels`).

The limits are settings: environment variables, read at each check, so a GUI
setting (or a test) can change them with ``os.environ`` or :func:`set_limit`.

============================  ===========================  ==========
limit                         environment variable          default
============================  ===========================  ==========
pixels of an image            ``FAMEGUI_MAX_PIXELS``        50,000,000
bytes of an image file        ``FAMEGUI_MAX_IMAGE_MB``      512 MB
bytes of a weights/model file ``FAMEGUI_MAX_WEIGHTS_MB``    16,384 MB
bytes of a sidecar / list     ``FAMEGUI_MAX_TEXT_MB``       64 MB
============================  ===========================  ==========
"""
from __future__ import annotations

import errno
import math
import os
import stat
from pathlib import Path

MB = 1 << 20
DEFAULTS = {
    "FAMEGUI_MAX_PIXELS": 50_000_000,
    "FAMEGUI_MAX_IMAGE_MB": 512,
    "FAMEGUI_MAX_WEIGHTS_MB": 16_384,
    "FAMEGUI_MAX_TEXT_MB": 64,
}
KINDS = {"image": "FAMEGUI_MAX_IMAGE_MB", "weights": "FAMEGUI_MAX_WEIGHTS_MB", "text": "FAMEGUI_MAX_TEXT_MB"}


class InputFileError(ValueError):
    """A named input file cannot be used (missing, not a regular file, too large); the message is one line."""


def limit(name: str) -> float:
    """The current value of one limit (a positive number): the environment variable, else the default."""
    text = os.environ.get(name, "").strip()
    if not text:
        return DEFAULTS[name]
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not (value > 0 and math.isfinite(value)):
        raise InputFileError(f"{name} must be a positive number, got {text!r}")
    return value


def set_limit(name: str, value: float | None) -> None:
    """Set one limit for this process (None: back to the default)."""
    if name not in DEFAULTS:
        raise KeyError(f"unknown limit {name!r} (one of {', '.join(DEFAULTS)})")
    if value is None:
        os.environ.pop(name, None)
    else:
        os.environ[name] = str(value)


def max_pixels() -> int:
    return int(limit("FAMEGUI_MAX_PIXELS"))


def max_bytes(kind: str) -> int:
    """The size limit for ``kind`` ("image", "weights" or "text") in bytes."""
    return int(limit(KINDS[kind]) * MB)


def human_size(n: float) -> str:
    for unit in ("bytes", "KB", "MB", "GB", "TB"):
        if n < 1024 or unit == "TB":
            return f"{n:,.0f} {unit}" if unit == "bytes" else f"{n:,.1f} {unit}"
        n /= 1024
    return f"{n} bytes"


def regular_file(path: str | os.PathLike, what: str = "file", kind: str | None = None,
                 error: type[Exception] = InputFileError) -> Path:
    """``path`` if it is an existing regular file within the size limit of ``kind``; else ``error`` (one line).

    ``what`` names the file in messages ("image", "weights file", "sidecar"). Nothing is opened: a FIFO,
    a device, a socket or a folder is refused from ``os.stat`` alone.
    """
    p = Path(path).expanduser()
    if not str(path):
        raise error(f"no {what} given (an empty path)")
    try:
        st = os.stat(p)
    except FileNotFoundError:
        raise error(f"{what} not found: {p}") from None
    except ValueError:  # a NUL character in the name
        raise error(f"cannot read {what} {str(p)!r}: the name holds a NUL character") from None
    except OSError as e:
        if e.errno == errno.ENAMETOOLONG:
            raise error(f"cannot read {what} {str(p)[:60]}...: the file name is too long") from None
        raise error(f"cannot read {what} {p}: {e.strerror or e}") from None
    mode = st.st_mode
    if stat.S_ISDIR(mode):
        raise error(f"{p} is a folder, not {_article(what)}")
    if not stat.S_ISREG(mode):
        sort = ("a FIFO (named pipe)" if stat.S_ISFIFO(mode) else "a device" if stat.S_ISCHR(mode) or
                stat.S_ISBLK(mode) else "a socket" if stat.S_ISSOCK(mode) else "not a regular file")
        raise error(f"{p} is {sort}, not {_article(what)}: famegui reads only regular files")
    if kind is not None:
        cap = max_bytes(kind)
        if st.st_size > cap:
            raise error(f"{p} is {human_size(st.st_size)}, over the {human_size(cap)} limit for {what}s "
                        f"(set {KINDS[kind]} to raise it)")
    return p


def _article(what: str) -> str:
    return ("an " if what[:1] in "aeiou" else "a ") + what


def read_text_file(path: str | os.PathLike, what: str, error: type[Exception] = InputFileError,
                   encoding: str = "utf-8") -> str:
    """The text of a regular file within the text limit (sidecars, pair lists, protocols)."""
    p = regular_file(path, what, "text", error)
    try:
        return p.read_text(encoding=encoding)
    except UnicodeDecodeError:
        raise error(f"{p} is not a text file ({what}s are UTF-8 text)") from None
    except OSError as e:
        raise error(f"cannot read {what} {p}: {e.strerror or e}") from None
