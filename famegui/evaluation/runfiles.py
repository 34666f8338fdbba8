"""Reading a run folder that may hold hostile files: one line per file that is not read (a broken part, a
map block that is not a zip, a pickled or outside map), the rest read (``famegui report``, the run browser)."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .rundir import _INDEX, _block_index, _blocks, _one_line, outside


def read_parts(path: Path, problems: list[str], columns) -> list[dict]:
    """The rows of every readable part; one line in ``problems`` per part that is not."""
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise ValueError("reading a run directory needs pyarrow (pip install pyarrow)") from None

    from .rundir import part_files

    parts = part_files(path, problems)
    if not parts and not problems:
        raise ValueError(f"no results in {path}: results/part-*.parquet is missing")
    rows: list[dict] = []
    for p in parts:
        try:
            table = pq.read_table(p)  # no schema: runs of older formats lack some columns
        except Exception as e:  # noqa: BLE001 - pyarrow's own errors for truncated or foreign files
            problems.append(f"{p} is not a readable parquet file: {(str(e).splitlines() or [type(e).__name__])[0]}")
            continue
        missing = {"item", "method", "target", "metric", "auc"} - set(table.column_names)
        if missing:
            problems.append(f"{p} lacks the column(s) {', '.join(sorted(missing))}; not read")
            continue
        rows.extend(table.select([c for c in columns if c in table.column_names]).to_pylist())
    if not rows and problems:
        raise ValueError(f"no readable results in {path}: {problems[0]}"
                         + (f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""))
    return rows


def block_problems(out_dir: str | os.PathLike) -> list[str]:
    """One line per map block that cannot be read (not a zip file, or a symlink out of the folder)."""
    import zipfile

    out = Path(out_dir)
    lines = []
    for p in _blocks(out):
        if outside(out, p):
            lines.append(f"{p} points outside the run folder (to {p.resolve()}); not read")
            continue
        try:
            with zipfile.ZipFile(p):
                pass
        except (OSError, zipfile.BadZipFile) as e:
            lines.append(f"{p} is not a readable map block: {_one_line(e)}")
    return lines


def _checked(rel: str, a) -> np.ndarray | str:
    if not isinstance(a, np.ndarray) or a.ndim != 2 or a.dtype.kind not in "fiu":
        return f"{rel} is not a 2-D map (shape {getattr(a, 'shape', '?')}, dtype {getattr(a, 'dtype', '?')})"
    return a


def map_or_reason(out_dir: str | os.PathLike, rel) -> np.ndarray | str | None:
    """The map recorded as ``rel`` (the results' ``map`` column, e.g. ``maps/7/fame_e+.npy``): the loose
    file if there is one, else its member of a block; None when there is none; a one-line reason when the
    file is there but is not read: outside the run folder (a symlink or ``..``), Python objects (a pickle,
    never loaded), not a 2-D numeric array, truncated."""
    import zipfile

    if not isinstance(rel, str) or not rel.startswith("maps/") or not rel.endswith(".npy"):
        return None if rel is None else f"{rel!r} is not a map path of a run folder"
    root = Path(out_dir).resolve()
    path = (root / rel).resolve()
    if not path.is_relative_to(root / "maps"):
        return f"{rel} points outside the run folder (to {path}); not read"
    try:
        if path.is_file():
            return _checked(rel, np.load(path, allow_pickle=False))
        for _attempt in range(2):  # a block compacted away while we looked: index again
            block = _block_index(root).get(rel)
            if block is None:
                return None
            try:
                with zipfile.ZipFile(block) as z, z.open(rel) as f:
                    return _checked(rel, np.lib.format.read_array(f, allow_pickle=False))
            except FileNotFoundError:
                _INDEX.pop(str(root), None)
    except ValueError as e:
        if "allow_pickle" in str(e):
            return f"{rel} holds Python objects (a pickle); famegui never loads those"
        return f"{rel} is not a readable map: {_one_line(e)}"
    except (OSError, KeyError, EOFError, zipfile.BadZipFile) as e:
        return f"{rel} is not a readable map: {_one_line(e)}"
    return None


def read_map(out_dir: str | os.PathLike, rel) -> np.ndarray | None:
    """The map recorded as ``rel`` (:func:`map_or_reason`); None when absent, broken or outside the folder."""
    got = map_or_reason(out_dir, rel)
    return got if isinstance(got, np.ndarray) else None
