"""Background jobs for the GUI: one QThread per lane, latest request wins.

A job is a callable ``fn(job) -> result``; it may call ``job.progress(fraction,
payload)`` and should pass ``job.cancelled`` to the computation as its cancel
check. In a "latest wins" lane, submitting a new job cancels the running one at
its next check and drops any job still waiting: only the latest request runs.
A queue lane runs its jobs in order. Signals arrive in the GUI thread (queued
connections), so slots may touch widgets.
"""
from __future__ import annotations

import itertools
import threading
import time
import traceback
from typing import Any, Callable

from PySide6.QtCore import QObject, QThread, Signal


class Job:
    _ids = itertools.count(1)

    def __init__(self, fn: Callable[["Job"], Any], label: str, lane: "Lane") -> None:
        self.id = next(Job._ids)
        self.fn = fn
        self.label = label
        self.lane = lane
        self._cancel = threading.Event()
        self.started_at: float | None = None
        self._last_progress = 0.0

    def cancel(self) -> None:
        self._cancel.set()

    def cancelled(self) -> bool:
        return self._cancel.is_set()

    def progress(self, fraction: float, payload: Any = None) -> None:
        """Report progress; throttled to ~30 Hz unless it carries a payload or finishes."""
        now = time.perf_counter()
        if payload is None and fraction < 1 and now - self._last_progress < 0.03:
            return
        self._last_progress = now
        self.lane.progress.emit(self.id, float(fraction), payload)


class _Worker(QThread):
    def __init__(self, lane: "Lane") -> None:
        super().__init__()
        self.lane = lane

    def run(self) -> None:  # runs in the worker thread
        from ..core.fame import Cancelled

        while True:
            job = self.lane._take()
            if job is None:
                return
            job.started_at = time.perf_counter()
            self.lane.started.emit(job.id, job.label)
            try:
                if job.cancelled():
                    raise Cancelled("cancelled before start")
                result = job.fn(job)
            except Cancelled:
                self.lane.cancelled.emit(job.id)
            except MemoryError:
                self.lane.failed.emit(job.id, f"{job.label}: out of memory")
            except Exception as e:  # noqa: BLE001 - every error becomes a message in the window
                msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
                self.lane.failed.emit(job.id, f"{job.label}: {msg}")
                self.lane.last_traceback = traceback.format_exc()
            else:
                if job.cancelled():
                    self.lane.cancelled.emit(job.id)
                else:
                    self.lane.finished.emit(job.id, result)
            finally:
                self.lane._done(job)


class Lane(QObject):
    """A queue of length one with a worker thread."""

    started = Signal(int, str)
    progress = Signal(int, float, object)
    finished = Signal(int, object)
    failed = Signal(int, str)
    cancelled = Signal(int)

    def __init__(self, name: str, parent: QObject | None = None, latest_wins: bool = True) -> None:
        super().__init__(parent)
        self.name = name
        self.latest_wins = latest_wins
        self._cond = threading.Condition()
        self._pending: list[Job] = []
        self._running: Job | None = None
        self._closing = False
        self._worker = _Worker(self)
        self._worker.start()
        self.last_traceback = ""

    def submit(self, fn: Callable[[Job], Any], label: str = "job") -> Job:
        job = Job(fn, label, self)
        with self._cond:
            if self.latest_wins:
                self._cancel_locked()
            self._pending.append(job)
            self._cond.notify_all()
        return job

    def _cancel_locked(self) -> None:
        if self._running is not None:
            self._running.cancel()
        for old in self._pending:
            old.cancel()
            self.cancelled.emit(old.id)
        self._pending.clear()

    def cancel_all(self) -> None:
        with self._cond:
            self._cancel_locked()

    @property
    def busy(self) -> bool:
        with self._cond:
            return self._running is not None or bool(self._pending)

    @property
    def running(self) -> Job | None:
        return self._running

    def _take(self) -> Job | None:
        with self._cond:
            while not self._pending and not self._closing:
                self._cond.wait()
            if self._closing:
                return None
            job = self._pending.pop(0)
            self._running = job
            return job

    def _done(self, job: Job) -> None:
        with self._cond:
            if self._running is job:
                self._running = None

    def shutdown(self, timeout_ms: int = 10000) -> bool:
        """Cancel everything and stop the thread; True if it stopped in time."""
        with self._cond:
            self._closing = True
            if self._running is not None:
                self._running.cancel()
            self._pending.clear()
            self._cond.notify_all()
        return self._worker.wait(timeout_ms)
