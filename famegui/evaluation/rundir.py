"""The run directory: ``run.json``, ``items.parquet``, ``results/*.parquet`` and one map store ``maps/``.

Layout (``famegui report``, the run browser and :func:`.runfiles.read_map` read it)::

    RUN_DIR/run.json                      the configuration and each session's provenance
    RUN_DIR/.famegui-run.lock             held by the one run writing here (:func:`writer_lock`)
    RUN_DIR/items.parquet                 one row per item: index, key, label, the list's extra columns
    RUN_DIR/results/part-000007-<t>.parquet  the rows of one finished item (every method x target x metric)
    RUN_DIR/results/part-m000002.parquet  compacted rows of many items (names its sources in its metadata)
    RUN_DIR/maps/7/fame_e+.npy            one finished item's map, until it is compacted
    RUN_DIR/maps/block-000002.npz         compacted maps, one ``.npy`` member per map, deflated

Every finished item is written at once, crash-safe, as before: its maps as ``.npy`` files, then its
part file, each to a hidden temporary name and ``os.replace``-d into place (atomic on POSIX and
Windows), so a SIGKILL loses at most the items in flight and the finished items are exactly the rows
present. Parquet files cannot be appended to, and one file per map and per item means tens of
thousands of files for an LFW-sized run, so the writer (:class:`RunWriter`) compacts: every
:data:`COMPACT_EVERY` items and at the end of a run it moves the loose maps into one new ``.npz``
block and the loose parts into one merged part, then deletes what it moved. The merged part lists the
parts it replaces in its schema metadata, so a reader that finds both (a crash between writing the merge
and deleting its sources) counts each row once; a map found twice is the same array. At the end of a run
the blocks and merged parts are compacted again into one of each: a finished run is ``run.json``,
``items.parquet``, one parquet and one ``.npz``.

Why ``.npz`` blocks rather than zarr: a block is one file, so temp file + ``os.replace`` commits it
whole, which zarr (many chunk files, no atomic commit) cannot; every numpy reads it without another
dependency; its members are read one at a time (a zip's central directory), so a reader opens one map
of a large run without reading the rest, also while the run goes on. The ``map`` column keeps each
map's logical path (``maps/7/fame_e+.npy``) in either layout: :func:`.runfiles.read_map` looks for the loose
file first, then in the blocks, so runs written before the store existed read as they did.

Only the parent process writes here; workers return rows and maps.
"""
from __future__ import annotations

import contextlib
import errno
import io
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np

RUN_FORMAT = 2  # 2: gain and reverse columns, masks and preset in run.json
# configuration fields that may differ between runs into the same directory
_FREE = ("engine", "created", "versions", "provenance")
COMPACT_EVERY = 64  # loose items (part file + .npy maps) before the writer compacts them
ROW_ORDER = [(c, "ascending") for c in ("item_index", "method", "target", "metric")]  # of every table read or merged
MERGED = "famegui_sources"  # a merged part's schema metadata: the JSON list of the part files it replaces

_SCHEMA = None


def schema():
    """The results table's arrow schema (one row per item x method x target x metric)."""
    global _SCHEMA
    if _SCHEMA is None:
        import pyarrow as pa

        _SCHEMA = pa.schema([
            ("item", pa.string()), ("item_index", pa.int64()), ("label", pa.string()),
            ("method", pa.string()), ("target", pa.string()), ("metric", pa.string()),
            ("auc", pa.float64()), ("gain", pa.float64()), ("flip", pa.float64()),
            ("curve", pa.list_(pa.float64())), ("reverse", pa.list_(pa.float64())),
            ("fractions", pa.list_(pa.float64())), ("score", pa.string()), ("seconds", pa.float64()),
            ("error", pa.string()), ("map", pa.string()),
        ])
    return _SCHEMA


class ConfigMismatch(ValueError):
    """A run directory already holds a run with another configuration."""


class RunLocked(ValueError):
    """Another famegui run is writing into the run directory."""


LOCK = ".famegui-run.lock"


@contextlib.contextmanager
def writer_lock(out_dir: str | os.PathLike):
    """Hold the run folder's writer lock (``.famegui-run.lock``, an OS file lock: released when the process
    ends, however it ends), or raise :class:`RunLocked` at once when another process holds it: two runs
    into one folder would write the same items twice and compact each other's files."""
    from filelock import FileLock, Timeout

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(out / LOCK))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        raise RunLocked(f"{out} is being written by another famegui run; wait for it to end or use another "
                        "--out") from None
    try:
        yield
    finally:
        lock.release()


def _atomic_write(path: Path, write) -> Path:
    """``write(file_object)`` into a hidden temp file next to ``path``, then rename it over ``path``."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=str(path.parent))
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    return path


def _comparable(config: dict) -> dict:
    return {k: v for k, v in config.items() if k not in _FREE}


def check_or_write_config(out_dir: str | os.PathLike, config: dict) -> dict:
    """Write ``run.json`` (a new run) or check that the one there has the same configuration.

    ``engine`` (engine and workers), ``created`` and ``versions`` may differ: a
    run may be resumed on another engine. Anything else differing raises
    :class:`ConfigMismatch` with a one-line message.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results").mkdir(exist_ok=True)
    (out / "maps").mkdir(exist_ok=True)
    path = out / "run.json"
    new = json.loads(json.dumps(config))  # what would be written, as JSON gives it back
    if path.exists():
        old = json.loads(path.read_text(encoding="utf-8"))
        a, b = _comparable(old), _comparable(new)
        if a != b:
            diff = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
            raise ConfigMismatch(f"{out} holds a run with another configuration (differs in: {', '.join(diff)}); "
                                 "use another --out")
        new = {**old, "engine": new.get("engine")}
    text = (json.dumps(new, indent=2) + "\n").encode()
    _atomic_write(path, lambda f: f.write(text))
    return new


def record_session(out_dir: str | os.PathLike, record: dict, index: int | None = None) -> int:
    """Append ``record`` to ``run.json``'s ``provenance`` list (or replace entry ``index``); its index."""
    path = Path(out_dir) / "run.json"
    meta = json.loads(path.read_text(encoding="utf-8"))
    sessions = list(meta.get("provenance") or [])
    if index is None or not 0 <= index < len(sessions):
        sessions.append(record)
        index = len(sessions) - 1
    else:
        sessions[index] = record
    meta["provenance"] = sessions
    text = (json.dumps(meta, indent=2) + "\n").encode()
    _atomic_write(path, lambda f: f.write(text))
    return index


ITEMS = "items.parquet"


def write_items(out_dir: str | os.PathLike, protocol) -> Path:
    """``items.parquet``: one row per item of ``protocol`` (``item_index``, ``item`` key, ``label`` and one
    string column per extra column of its list, e.g. ``group``), so that a report can split its tables by
    them without the list. Written whole (atomically) at the start of every run into the folder."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    columns = list(protocol.columns)
    data: dict[str, list] = {"item_index": list(range(len(protocol))),
                             "item": [protocol.key(i) for i in range(len(protocol))],
                             "label": [it.label for it in protocol.items]}
    for name in columns:
        data[name] = [dict(it.attrs).get(name, "") for it in protocol.items]
    table = pa.table(data, schema=pa.schema([("item_index", pa.int64()), ("item", pa.string()),
                                             ("label", pa.string()), *((n, pa.string()) for n in columns)]))
    return _atomic_write(Path(out_dir) / ITEMS, lambda f: pq.write_table(table, f))


def _one_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def outside(out_dir: str | os.PathLike, path: str | os.PathLike) -> bool:
    """Whether ``path`` (a file of the run folder) resolves outside the folder: a symlink out, never read."""
    return not Path(path).resolve().is_relative_to(Path(out_dir).resolve())


def _refuse_outside(out_dir, path: Path) -> None:
    if outside(out_dir, path):
        raise ValueError(f"{path} points outside the run folder (to {Path(path).resolve()}); not read")


def read_items(out_dir: str | os.PathLike) -> list[dict] | None:
    """The rows of ``items.parquet`` (None for a run made before it existed); ValueError if unreadable."""
    import pyarrow.parquet as pq

    path = Path(out_dir) / ITEMS
    if not path.is_file():
        return None
    _refuse_outside(out_dir, path)
    try:
        return pq.read_table(path).to_pylist()
    except Exception as e:  # noqa: BLE001 - pyarrow's own errors for a truncated or foreign file
        raise ValueError(f"{path} is not a readable parquet file: {_one_line(e)}") from None


def map_path(index: int, method: str, target: str) -> str:
    """The map's logical path relative to the run directory (a loose file, or a member of a block)."""
    return f"maps/{index}/{method}_{target}.npy"


def _write_parquet(path: Path, table) -> Path:
    import pyarrow.parquet as pq

    return _atomic_write(path, lambda f: pq.write_table(table, f))


def write_item(out_dir: str | os.PathLike, index: int, rows: list[dict], maps: dict[str, np.ndarray]) -> Path:
    """Write one finished item: its maps (``relative path -> array``), then its part file (atomic)."""
    import pyarrow as pa

    out = Path(out_dir)
    for rel, arr in maps.items():
        p = out / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        buf = io.BytesIO()  # numpy's own short write to a file says so without an errno: Python's write has one
        np.save(buf, np.ascontiguousarray(arr, dtype=np.float32))
        _atomic_write(p, lambda f, b=buf: f.write(b.getvalue()))
    # a name never used before in this folder (an item lost and computed again gets a new one), so that a
    # merged part's list of the parts it replaces never names a later file
    name = f"part-{index:06d}-{time.time_ns():x}.parquet"
    return _write_parquet(out / "results" / name, pa.Table.from_pylist(rows, schema=schema()))


def _sources(path: Path) -> list[str]:
    """The part files a merged part replaces (none for an item's own part)."""
    import pyarrow.parquet as pq

    meta = pq.read_schema(path).metadata or {}
    raw = meta.get(MERGED.encode())
    return [str(n) for n in json.loads(raw)] if raw else []


def part_files(out_dir: str | os.PathLike, problems: list[str] | None = None) -> list[Path]:
    """The run's part files, less those a merged part replaces (left by a crash during compaction).

    A part that points outside the folder (a symlink) or a merged part that cannot be read raises a one-line
    ValueError; with a ``problems`` list, its line goes there instead and the part is left out."""
    found = sorted((Path(out_dir) / "results").glob("part-*.parquet"))
    covered: set[str] = set()
    bad: set[Path] = set()
    for p in found:
        try:
            _refuse_outside(out_dir, p)
            if p.name.startswith("part-m"):
                try:
                    covered.update(_sources(p))
                except Exception as e:  # noqa: BLE001 - pyarrow's own errors for a truncated or foreign file
                    raise ValueError(f"{p} is not a readable parquet file: {_one_line(e)}") from None
        except ValueError as e:
            if problems is None:
                raise
            problems.append(str(e))
            bad.add(p)
    return [p for p in found if p.name not in covered and p not in bad]


def read_part(path: Path):
    """One part file as an arrow table of the results' schema; a one-line ValueError if it is not one."""
    import pyarrow.parquet as pq

    try:
        return pq.read_table(path, schema=schema())
    except Exception as e:  # noqa: BLE001 - pyarrow's own errors for a truncated, foreign or mismatched file
        raise ValueError(f"{path} is not a readable parquet file of results: {_one_line(e)}") from None


def finished_keys(out_dir: str | os.PathLike) -> set[str]:
    """The item keys that have rows."""
    import pyarrow.parquet as pq

    keys: set[str] = set()
    for p in part_files(out_dir):
        keys.update(pq.read_table(p, columns=["item"]).column("item").to_pylist())
    return keys


def read_results(out_dir: str | os.PathLike, problems: list[str] | None = None):
    """Every row of the run as one arrow table, sorted by item_index, method, target, metric.

    An unreadable part raises a one-line ValueError; with a ``problems`` list its line goes there and the
    other parts are read."""
    import pyarrow as pa

    parts = []
    for p in part_files(out_dir, problems):
        try:
            parts.append(read_part(p))
        except ValueError as e:
            if problems is None:
                raise
            problems.append(str(e))
    table = pa.concat_tables(parts) if parts else schema().empty_table()
    return table.sort_by(ROW_ORDER)


# --------------------------------------------------------------------------- the map store
def _blocks(out: Path) -> list[Path]:
    return sorted((out / "maps").glob("block-*.npz"))


def _next_name(folder: Path, prefix: str, suffix: str) -> Path:
    taken = [int(p.name[len(prefix):-len(suffix)]) for p in folder.glob(f"{prefix}*{suffix}")
             if p.name[len(prefix):-len(suffix)].isdigit()]
    return folder / f"{prefix}{max(taken, default=0) + 1:06d}{suffix}"


_INDEX: dict[str, tuple[tuple, dict[str, Path]]] = {}  # run folder -> (its blocks' state, {map: block})


def _block_index(out: Path) -> dict[str, Path]:
    """{logical map path: the newest block that holds it}, cached while the blocks stay as they are. A block
    that is not a zip file or points outside the folder is left out (:func:`block_problems` says which)."""
    import zipfile

    blocks = _blocks(out)
    state = tuple((p.name, p.stat().st_mtime_ns) for p in blocks if p.exists())
    cached = _INDEX.get(str(out))
    if cached is not None and cached[0] == state:
        return cached[1]
    index: dict[str, Path] = {}
    for p in blocks:  # oldest first: a newer block's copy wins (the same array)
        if outside(out, p):
            continue
        try:
            with zipfile.ZipFile(p) as z:
                index.update((name, p) for name in z.namelist())
        except (OSError, zipfile.BadZipFile):
            continue
    _INDEX[str(out)] = (state, index)
    return index


def _write_block(out: Path, members: list[tuple[str, Path, bool]]) -> Path | None:
    """One new block of ``members`` (logical path, the loose file or the block that holds it, whether it is
    loose), read and written one map at a time (a whole run's maps need not fit in memory); None if none."""
    import zipfile

    if not members:
        return None

    def write(f):
        with contextlib.ExitStack() as stack:
            z = stack.enter_context(zipfile.ZipFile(f, "w", compression=zipfile.ZIP_DEFLATED, allowZip64=True))
            opened: dict[Path, zipfile.ZipFile] = {}
            for name, source, loose in members:
                if loose:
                    z.writestr(name, source.read_bytes())
                    continue
                if source not in opened:
                    opened[source] = stack.enter_context(zipfile.ZipFile(source))
                z.writestr(name, opened[source].read(name))

    return _atomic_write(_next_name(out / "maps", "block-", ".npz"), write)


def compact(out_dir: str | os.PathLike, whole: bool = False) -> None:
    """Move the loose maps into one new block and the loose item parts into one merged part, then delete
    what was moved. ``whole``: also merge every block into one and every part into one (the end of a run).
    Crash-safe at every step: the new files are complete before anything is deleted, and readers count a
    row or a map that is in two places once."""
    import zipfile

    import pyarrow as pa
    import pyarrow.parquet as pq

    out = Path(out_dir)
    loose = sorted(p for p in (out / "maps").glob("*/*.npy") if p.parent.name.isdigit())
    blocks = _blocks(out) if whole else []
    members: dict[str, tuple[Path, bool]] = {p.relative_to(out).as_posix(): (p, True) for p in loose}
    if blocks and (len(blocks) > 1 or loose):
        for b in reversed(blocks):  # newest first: the first copy of a map is kept (a loose one before all)
            with zipfile.ZipFile(b) as z:
                for name in z.namelist():
                    members.setdefault(name, (b, False))
    else:
        blocks = []
    _write_block(out, [(name, *members[name]) for name in sorted(members, key=_map_order)])
    parts = part_files(out)
    for p in set((out / "results").glob("part-*.parquet")) - set(parts):
        p.unlink(missing_ok=True)  # left by a crash after a merge: its merged part holds the rows
    merge = parts if whole else [p for p in parts if not p.name.startswith("part-m")]
    if len(merge) > 1 or (merge and not merge[0].name.startswith("part-m")):
        table = pa.concat_tables([pq.read_table(p, schema=schema()) for p in merge])
        table = table.sort_by(ROW_ORDER)
        replaced = [p.name for p in merge] + [n for p in merge if p.name.startswith("part-m") for n in _sources(p)]
        names = json.dumps(replaced).encode()
        table = table.replace_schema_metadata({**(table.schema.metadata or {}), MERGED.encode(): names})
        _write_parquet(_next_name(out / "results", "part-m", ".parquet"), table)
        for p in merge:
            p.unlink(missing_ok=True)
    for p in loose:
        p.unlink(missing_ok=True)
    for d in {p.parent for p in loose}:
        try:
            d.rmdir()
        except OSError:
            pass
    for b in blocks:
        b.unlink(missing_ok=True)
    _INDEX.pop(str(out.resolve()), None)


def _map_order(name: str) -> tuple[int, str]:
    head = name.split("/")
    return (int(head[1]) if len(head) > 2 and head[1].isdigit() else -1, name)


class DiskFull(OSError):
    """The disk (or a quota, or a file size limit) ran out while a run wrote; what was written is whole."""

    def __str__(self) -> str:
        return str(self.strerror)


FULL = (errno.ENOSPC, errno.EFBIG, errno.EDQUOT)  # the errors of a full disk, a quota, a file size limit


@contextlib.contextmanager
def _space(out: Path):
    """A full disk while writing into ``out`` as :class:`DiskFull`, with what to do about it, in one line
    (every file is written to a temporary name and renamed, so nothing already there is broken)."""
    try:
        yield
    except DiskFull:
        raise
    except OSError as e:
        if e.errno not in FULL:
            raise
        raise DiskFull(e.errno, f"no space left to write into {out} ({e.strerror}); the items written so far "
                                "are whole: free some space and run the same command again to finish") from None


class RunWriter:
    """The parent's writer: each finished item at once (:func:`write_item`), compacted every
    :data:`COMPACT_EVERY` items and, by :meth:`close`, into one part and one block. A full disk raises
    :class:`DiskFull` (one line; the run can be resumed once there is space)."""

    def __init__(self, out_dir: str | os.PathLike, every: int = COMPACT_EVERY):
        self.out, self.every, self.loose = Path(out_dir), int(every), 0

    def add(self, index: int, rows: list[dict], maps: dict[str, np.ndarray]) -> None:
        with _space(self.out):
            write_item(self.out, index, rows, maps)
            self.loose += 1
            if self.loose >= self.every:
                compact(self.out)
                self.loose = 0

    def close(self) -> None:
        with _space(self.out):
            compact(self.out, whole=True)
        self.loose = 0
