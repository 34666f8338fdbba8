"""A result cache bounded by bytes: the least recently used entries go first.

The Session keeps every map it computed so that clicking back to a cell or a
method is instant; unbounded, that is ~91 KB per dlib map and ~200 KB per
224 px map, gigabytes after a long session. :class:`ByteLRU` is a mapping
with a byte budget: reading an entry (``get``, ``[]``) makes it the most
recently used, storing one evicts the least recently used until the total fits,
and an entry larger than the whole budget is simply not kept.

An entry's size is what :func:`nbytes` finds in it: the buffers of the numpy
arrays and torch tensors it holds (directly, in a dataclass's fields, or in
dicts, lists and tuples), plus a fixed overhead per entry for the key and the
Python objects around them.

The budget is a setting: ``FAMEGUI_CACHE_MB`` (default 512), or
:meth:`ByteLRU.set_limit` at run time (the GUI's setting).
"""
from __future__ import annotations

import dataclasses
import os
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator, MutableMapping
from typing import Any

MB = 1 << 20
DEFAULT_CACHE_MB = 512
ENTRY_OVERHEAD = 2048  # bytes per entry beyond its arrays: the key, the dataclass, small dicts


def cache_limit_bytes() -> int:
    """The result cache budget: ``FAMEGUI_CACHE_MB`` (a number >= 0, in MB) or 512 MB."""
    text = os.environ.get("FAMEGUI_CACHE_MB", "").strip()
    if not text:
        return DEFAULT_CACHE_MB * MB
    try:
        mb = float(text)
    except ValueError:
        raise ValueError(f"FAMEGUI_CACHE_MB must be a number of megabytes, got {text!r}") from None
    if not (mb >= 0 and mb < 1 << 40):
        raise ValueError(f"FAMEGUI_CACHE_MB must be a number of megabytes >= 0, got {text!r}")
    return int(mb * MB)


def nbytes(obj: Any, _depth: int = 0) -> int:
    """The bytes of the array buffers held by ``obj`` (numpy arrays, torch tensors), found recursively
    through dataclass fields, dicts, lists and tuples (to a depth of 4). A dataclass field whose metadata says
    ``{"shared": True}`` is not counted: it refers to buffers that something else owns (and counts)."""
    if _depth > 4 or obj is None or isinstance(obj, (str, bytes, int, float, bool)):
        return len(obj) if isinstance(obj, bytes) else 0
    size = getattr(obj, "nbytes", None)  # numpy arrays
    if isinstance(size, int):
        return size
    if hasattr(obj, "element_size") and hasattr(obj, "numel"):  # torch tensors
        return int(obj.element_size() * obj.numel())
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return sum(nbytes(getattr(obj, f.name), _depth + 1) for f in dataclasses.fields(obj)
                   if not f.metadata.get("shared"))
    if isinstance(obj, dict):
        return sum(nbytes(v, _depth + 1) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(nbytes(v, _depth + 1) for v in obj)
    return 0


class ByteLRU(MutableMapping):
    """A thread-safe mapping that keeps at most ``max_bytes`` of entries, evicting the least recently used.

    ``sizeof(value)`` gives an entry's size (default: :func:`nbytes` plus :data:`ENTRY_OVERHEAD`).
    ``max_bytes=None`` reads :func:`cache_limit_bytes`; 0 keeps nothing.
    """

    def __init__(self, max_bytes: int | None = None, sizeof: Callable[[Any], int] | None = None) -> None:
        self._data: OrderedDict[Any, tuple[Any, int]] = OrderedDict()
        self._lock = threading.RLock()
        self._sizeof = sizeof or (lambda v: nbytes(v) + ENTRY_OVERHEAD)
        self.nbytes = 0
        self.evictions = 0
        self.max_bytes = cache_limit_bytes() if max_bytes is None else self._checked(max_bytes)

    @staticmethod
    def _checked(max_bytes: int) -> int:
        if max_bytes < 0:
            raise ValueError(f"a cache limit must be >= 0 bytes, got {max_bytes}")
        return int(max_bytes)

    def set_limit(self, max_bytes: int) -> None:
        """Change the budget; entries beyond it are evicted now (least recently used first)."""
        with self._lock:
            self.max_bytes = self._checked(max_bytes)
            self._shrink()

    def _shrink(self) -> None:
        while self._data and self.nbytes > self.max_bytes:
            _, (_, size) = self._data.popitem(last=False)
            self.nbytes -= size
            self.evictions += 1

    def __getitem__(self, key):
        with self._lock:
            value, _ = self._data[key]
            self._data.move_to_end(key)
            return value

    def get(self, key, default=None):
        with self._lock:
            try:
                return self[key]
            except KeyError:
                return default

    def peek(self, key, default=None):
        """An entry without making it recently used."""
        with self._lock:
            item = self._data.get(key)
            return default if item is None else item[0]

    def __setitem__(self, key, value) -> None:
        size = int(self._sizeof(value))
        with self._lock:
            old = self._data.pop(key, None)
            if old is not None:
                self.nbytes -= old[1]
            if size > self.max_bytes:  # larger than the whole budget: not kept
                return
            self._data[key] = (value, size)
            self.nbytes += size
            self._shrink()

    def __delitem__(self, key) -> None:
        with self._lock:
            _, size = self._data.pop(key)
            self.nbytes -= size

    def __contains__(self, key) -> bool:
        with self._lock:
            return key in self._data

    def __iter__(self) -> Iterator:
        with self._lock:
            return iter(list(self._data))

    def __len__(self) -> int:
        return len(self._data)

    def clear(self) -> None:
        with self._lock:
            self._data.clear()
            self.nbytes = 0

    def values_list(self) -> list:
        """The entries, least recently used first (a snapshot)."""
        with self._lock:
            return [v for v, _ in self._data.values()]

    def __repr__(self) -> str:
        return (f"ByteLRU({len(self)} entries, {self.nbytes / MB:.1f} of {self.max_bytes / MB:.1f} MB, "
                f"{self.evictions} evicted)")
