"""Signal emission that keeps Python's reference counts right on every PySide6 release.

PySide6 6.12.0's ``SignalInstance.emit`` returns ``True`` without taking a reference to it: every emit from
Python code drops one reference to ``True``. A session of mouse moves and jobs then drives the count to zero
and the interpreter aborts ("Fatal Python error: bool_dealloc"), at the latest when it exits. :func:`emit`
measures once whether this PySide6 does that and, if so, gives the reference back after each emit. On a
release without the bug (or a Python whose ``True`` is immortal) it is a plain emit.

Libraries emit from Python too (pyqtgraph's ``sigRangeChanged`` and friends, on every pan and zoom), and
famegui cannot route those through :func:`emit`; for them, on an affected PySide6 and a Python before 3.12
(where ``True`` is not immortal), ``True`` gets a reserve of references once (:data:`RESERVE`). ``True`` is
a static object that is never freed, so the extra count costs nothing; it only keeps the count from reaching
zero (seen in test runs as an abort while the interpreter exits).
"""
from __future__ import annotations

import ctypes
import sys


def _probe() -> bool:
    from PySide6.QtCore import QObject, Signal

    class _Probe(QObject):
        fired = Signal()

    p = _Probe()
    p.fired.connect(lambda: None)
    before = sys.getrefcount(True)
    for _ in range(8):
        p.fired.emit()
    return sys.getrefcount(True) - before <= -8


def give_back(n: int) -> None:
    for _ in range(n):
        ctypes.pythonapi.Py_IncRef(ctypes.py_object(True))


RESERVE = 1 << 32  # references to True for emits famegui does not own (far more than any session makes)


def _reserve() -> bool:
    if sys.version_info >= (3, 12) or sys.implementation.name != "cpython":
        return False  # True is immortal there (or the count is not ours to touch)
    ctypes.c_ssize_t.from_address(id(True)).value += RESERVE  # ob_refcnt, the first field of every object
    return True


DROPS_TRUE = _probe()  # once, when the GUI is imported (in the GUI thread)
if DROPS_TRUE:
    give_back(8)  # what the probe itself dropped
    RESERVED = _reserve()
else:
    RESERVED = False


def emit(signal, *args) -> None:
    """``signal.emit(*args)``, with PySide6 6.12.0's lost reference to True given back."""
    signal.emit(*args)
    if DROPS_TRUE:
        give_back(1)
