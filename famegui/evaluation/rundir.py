"""The run directory: ``run.json``, ``results/part-*.parquet`` and ``maps/<item_index>/<method>_<target>.npy``.

Layout (``famegui report`` reads it)::

    RUN_DIR/run.json                         the configuration (see :func:`check_or_write_config`)
    RUN_DIR/items.parquet                    one row per item: index, key, label, the list's extra columns
    RUN_DIR/results/part-000007.parquet      the rows of item 7 (every method x target x metric)
    RUN_DIR/maps/7/fame_e+.npy               one float32 map

Why one parquet part file per item rather than one ``results.parquet``:
parquet files cannot be appended to, so a single table would be rewritten after
every item (quadratic I/O over a long run) and a crash during the rewrite would
need extra care. A part file per finished item is written to a hidden temporary
name in the same folder and then ``os.replace``-d into place, which is atomic on
POSIX and Windows: a SIGKILL leaves either the whole part or none of it (a
stray ``.part-*.tmp`` is ignored and overwritten), so the table is never corrupt
and the finished items are exactly the part files present. Readers open the
folder as one dataset (``pyarrow.parquet.read_table(RUN_DIR / "results")``,
which skips names starting with ``.``), or use :func:`read_results`.

Why ``.npy`` per map rather than zarr: one map is one small array read whole;
a ``.npy`` is one file, so temp file + ``os.replace`` makes it atomic, it needs
no extra dependency and every numpy reads it. A zarr store is many files (chunks
and metadata) with no atomic commit of a whole array, which is what crash safety
needs here. Maps are written before the item's part file, so a part file never
points at a missing map.

Only the parent process writes here; workers return rows and maps.
"""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import numpy as np

RUN_FORMAT = 2  # 2: gain and reverse columns, masks and preset in run.json
# configuration fields that may differ between runs into the same directory
_FREE = ("engine", "created", "versions")

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


def read_items(out_dir: str | os.PathLike) -> list[dict] | None:
    """The rows of ``items.parquet`` (None for a run made before it existed); ValueError if unreadable."""
    import pyarrow.parquet as pq

    path = Path(out_dir) / ITEMS
    if not path.is_file():
        return None
    try:
        return pq.read_table(path).to_pylist()
    except Exception as e:  # noqa: BLE001 - pyarrow's own errors for a truncated or foreign file
        raise ValueError(f"{path} is not a readable parquet file: {str(e).splitlines()[0] if str(e) else e!r}"
                         ) from None


def map_path(index: int, method: str, target: str) -> str:
    """The map's path relative to the run directory."""
    return f"maps/{index}/{method}_{target}.npy"


def write_item(out_dir: str | os.PathLike, index: int, rows: list[dict], maps: dict[str, np.ndarray]) -> Path:
    """Write one finished item: its maps (``relative path -> array``), then its part file (atomic)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    out = Path(out_dir)
    for rel, arr in maps.items():
        p = out / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        data = np.ascontiguousarray(arr, dtype=np.float32)
        _atomic_write(p, lambda f, d=data: np.save(f, d))
    table = pa.Table.from_pylist(rows, schema=schema())
    return _atomic_write(out / "results" / f"part-{index:06d}.parquet", lambda f: pq.write_table(table, f))


def part_files(out_dir: str | os.PathLike) -> list[Path]:
    return sorted((Path(out_dir) / "results").glob("part-*.parquet"))


def finished_keys(out_dir: str | os.PathLike) -> set[str]:
    """The item keys that have a part file."""
    import pyarrow.parquet as pq

    keys: set[str] = set()
    for p in part_files(out_dir):
        keys.update(pq.read_table(p, columns=["item"]).column("item").to_pylist())
    return keys


def read_results(out_dir: str | os.PathLike):
    """Every row of the run as one arrow table, sorted by item_index, method, target, metric."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    parts = [pq.read_table(p, schema=schema()) for p in part_files(out_dir)]
    table = pa.concat_tables(parts) if parts else schema().empty_table()
    return table.sort_by([("item_index", "ascending"), ("method", "ascending"), ("target", "ascending"),
                          ("metric", "ascending")])
