"""Writing results to disk: atomic PNG / .npy / JSON sidecar files, and atomic sets of them.

Every file is written to a temporary name in the target folder and renamed
into place, so a failure (full disk, permission, crash) never leaves half a file.

An export is several files (overlay PNG, raw map .npy, JSON sidecar) that must
belong together. :func:`write_set` writes all of them to temporary names first,
then commits a small journal (``.STEM.famegui-export`` next to the overlay,
itself written atomically) listing the renames, then renames the files in
order and deletes the journal. Killed before the journal exists, the old set is
untouched (the temporary files are removed by the next export of that name or
on Ctrl+C); killed after, :func:`recover_set` (run by the next export of that
name and when its sidecar is read) finishes the renames: the whole new set.
The sidecar also records the sha256 of the PNG, so a picture that does not
belong to it is recognised.
"""
from __future__ import annotations

import glob
import io
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


class ExportError(OSError):
    """A file could not be written; the message is one line."""


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    p = Path(path)
    tmp = None
    try:
        tmp = _write_temp(p, data)
        os.replace(tmp, p)
    except BaseException as e:  # also Ctrl+C: never leave the temporary file behind
        if tmp is not None:
            tmp.unlink(missing_ok=True)
        if isinstance(e, OSError) and not isinstance(e, ExportError):
            raise ExportError(f"cannot write {p}: {e.strerror or e}") from None
        raise
    return p


def _file_mode() -> int:
    """The mode a plain ``open(path, "w")`` would give (0o666 less the umask), for files made by mkstemp (0o600)."""
    try:
        with open("/proc/self/status") as f:
            umask = next(int(line.split()[1], 8) for line in f if line.startswith("Umask:"))
    except (OSError, StopIteration, ValueError, IndexError):
        umask = 0o022
    return 0o666 & ~umask


def _temp_prefix(final: Path) -> str:
    """Temporary files are ``.NAME.XXXXXX.part`` beside their file (NAME cut so that the name stays short)."""
    return f".{final.name[:120]}."


def png_bytes(rgb: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(rgb)).save(buf, format="PNG")
    return buf.getvalue()


def npy_bytes(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(array))
    return buf.getvalue()


def json_bytes(obj: dict) -> bytes:
    return (json.dumps(obj, indent=2, sort_keys=False) + "\n").encode()


def write_png(path: str | os.PathLike, rgb: np.ndarray) -> Path:
    return atomic_write_bytes(path, png_bytes(rgb))


def write_npy(path: str | os.PathLike, array: np.ndarray) -> Path:
    return atomic_write_bytes(path, npy_bytes(array))


def write_json(path: str | os.PathLike, obj: dict) -> Path:
    return atomic_write_bytes(path, json_bytes(obj))


# --------------------------------------------------------------------------- sets of files
JOURNAL_SUFFIX = ".famegui-export"
STEP_DELAY_ENV = "FAMEGUI_TEST_EXPORT_STEP_DELAY"  # tests: seconds to wait before each rename (to kill there)


def journal_path(anchor: str | os.PathLike) -> Path:
    """The journal of the set whose overlay (or sidecar) is ``anchor``: ``.STEM.famegui-export`` beside it."""
    a = Path(anchor)
    return a.with_name(f".{a.stem}{JOURNAL_SUFFIX}")


def _temp_name_ok(tmp: Path, final: Path) -> bool:
    """A journal only renames famegui's own temporary files onto their file, in one folder."""
    return (tmp.parent == final.parent and tmp.name.startswith(_temp_prefix(final)) and tmp.name.endswith(".part")
            and final.suffix.lower() in (".png", ".npy", ".json"))


def recover_set(anchor: str | os.PathLike) -> bool:
    """Finish an export of ``anchor``'s set that was interrupted after its journal was committed (rename the
    remaining temporary files into place) and forget the journal. True if there was one to finish."""
    j = journal_path(anchor)
    try:
        if not j.is_file():
            return False
        renames = json.loads(j.read_text(encoding="utf-8"))["renames"]
        pairs = [(Path(t), Path(f)) for t, f in renames]
    except (OSError, ValueError, KeyError, TypeError):
        raise ExportError(f"cannot finish the interrupted export recorded in {j} (the journal is unreadable); "
                          "delete it and export again") from None
    for tmp, final in pairs:
        if not _temp_name_ok(tmp, final):
            raise ExportError(f"{j} is not a famegui export journal (it names {final.name}); delete it")
    for tmp, final in pairs:
        if tmp.exists():
            os.replace(tmp, final)
    _fsync_dirs({final.parent for _, final in pairs})
    j.unlink(missing_ok=True)
    return True


def _fsync_dirs(folders) -> None:
    for d in folders:
        try:
            fd = os.open(d, os.O_RDONLY)
        except OSError:
            continue
        try:
            os.fsync(fd)
        except OSError:
            pass
        finally:
            os.close(fd)


def _write_temp(final: Path, data: bytes) -> Path:
    if final.parent and not final.parent.is_dir():
        raise ExportError(f"cannot write {final}: folder {final.parent} does not exist")
    try:
        fd, tmp = tempfile.mkstemp(prefix=_temp_prefix(final), suffix=".part", dir=str(final.parent or "."))
    except OSError as e:
        raise ExportError(f"cannot write {final}: {e.strerror or e}") from None
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), _file_mode())
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return Path(tmp)


def _remove_stale_temps(finals) -> None:
    """Temporary files of an earlier export of these names that was killed before its journal."""
    for final in finals:
        for stale in final.parent.glob(f"{glob.escape(_temp_prefix(final))}*.part"):
            stale.unlink(missing_ok=True)


def write_set(files: list[tuple[str | os.PathLike, bytes]], anchor: str | os.PathLike | None = None) -> list[Path]:
    """Write ``files`` ((path, bytes), renamed in this order; put the sidecar last) as one set: afterwards
    either all are new or, if the process dies before the journal is committed, all are as before.

    ``anchor`` (default: the first path) names the set's journal. A KeyboardInterrupt removes the temporary
    files (before the commit) or finishes the renames (after it), then propagates.
    """
    finals = [Path(p) for p, _ in files]
    if len({f.resolve() for f in finals}) != len(finals):
        raise ExportError("an export cannot write two of its files to the same path: "
                          + ", ".join(str(f) for f in finals))
    anchor = Path(anchor) if anchor is not None else finals[0]
    recover_set(anchor)
    _remove_stale_temps([*finals, journal_path(anchor)])
    temps: list[Path] = []
    committed = False
    try:
        for final, (_, data) in zip(finals, files):
            temps.append(_write_temp(final, data))
        journal = {"renames": [[str(t), str(f)] for t, f in zip(temps, finals)]}
        atomic_write_bytes(journal_path(anchor), json_bytes(journal))
        committed = True
        delay = float(os.environ.get(STEP_DELAY_ENV) or 0)
        for i, (tmp, final) in enumerate(zip(temps, finals)):
            if delay:
                print(f"famegui-test: rename {i}", file=sys.stderr, flush=True)
                time.sleep(delay)
            os.replace(tmp, final)
    except BaseException as e:
        if committed:
            try:
                recover_set(anchor)  # the set is complete on disk: finish it
            except OSError:
                pass  # the journal stays; the next export of this name or reading its sidecar finishes it
        else:
            for t in temps:
                t.unlink(missing_ok=True)
        if isinstance(e, OSError) and not isinstance(e, ExportError):
            raise ExportError(f"cannot write {finals[0]}: {e.strerror or e}") from None
        raise
    _fsync_dirs({f.parent for f in finals})
    journal_path(anchor).unlink(missing_ok=True)
    return finals


def package_versions() -> dict:
    import torch
    import torchvision

    from .version import VERSION

    versions = {"famegui": VERSION, "torch": torch.__version__,
                "torchvision": torchvision.__version__, "numpy": np.__version__,
                "python": platform.python_version()}
    from importlib.metadata import PackageNotFoundError, version

    for dist in ("grad-cam", "dlib-bin", "PySide6-Essentials"):
        try:
            versions[dist] = version(dist)
        except PackageNotFoundError:
            pass
    return versions
