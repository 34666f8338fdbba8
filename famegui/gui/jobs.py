"""Background jobs for the GUI: lanes of requests served by one worker thread.

A job is a callable ``fn(job) -> result``; it may call ``job.progress(fraction,
payload)`` and passes ``job.cancelled`` to the computation as its cancel check.

- A "latest wins" lane (explanations): submitting a job cancels the running one
  at its next check and drops any job still waiting.
- A queue lane (loading, feature maps, scores) runs its jobs in order.

All lanes that run the network share ONE worker thread, so torch runs in a
single thread (two threads each with their own OpenMP team made every FAME
iteration about 1.8x slower on 2 cores). Downloads, which wait on a server and
never run torch, have a scheduler of their own (``torch=False``). Quick jobs of a higher-priority lane do not wait for a
long one: a running job's cancel check, called between iterations, first runs
whatever higher-priority jobs are waiting. Signals arrive in the GUI thread.
"""
from __future__ import annotations

import itertools
import threading
import time
import traceback
from collections.abc import Callable
from typing import Any

from PySide6.QtCore import QObject, QThread, Signal

from ..core import threads


class Job:
    _ids = itertools.count(1)

    def __init__(self, fn: Callable[[Job], Any], label: str, lane: Lane) -> None:
        self.id = next(Job._ids)
        self.fn = fn
        self.label = label
        self.lane = lane
        self._cancel = threading.Event()
        self._last_progress = 0.0

    def cancel(self) -> None:
        self._cancel.set()

    @property
    def cancel_requested(self) -> bool:
        """Whether the job was cancelled (a plain look, unlike :meth:`cancelled`)."""
        return self._cancel.is_set()

    def cancelled(self) -> bool:
        """The cancel check; also a point where waiting higher-priority jobs get to run."""
        self.lane.scheduler.run_urgent(below=self.lane.priority)
        return self._cancel.is_set()

    def progress(self, fraction: float, payload: Any = None) -> None:
        """Report progress; payload-free updates are throttled to ~30 Hz."""
        now = time.perf_counter()
        if payload is None and fraction < 1 and now - self._last_progress < 0.03:
            return
        self._last_progress = now
        self.lane.progress.emit(self.id, float(fraction), payload)


class Scheduler(QThread):
    """The one worker thread; serves lanes by priority (lower number first)."""

    def __init__(self, torch: bool = True) -> None:
        super().__init__()
        self.torch = torch  # whether its jobs run the network (then each job adapts torch's thread count)
        self.cond = threading.Condition()
        self.lanes: list[Lane] = []
        self.closing = False
        self._inline = False
        self.start()

    def add(self, lane: Lane) -> None:
        with self.cond:
            self.lanes.append(lane)
            self.lanes.sort(key=lambda ln: ln.priority)

    def _next(self, below: int | None = None) -> Job | None:
        for lane in self.lanes:
            if below is not None and lane.priority >= below:
                break
            if lane.pending:
                job = lane.pending.pop(0)
                lane.running.append(job)
                return job
        return None

    def run(self) -> None:  # the worker thread
        while True:
            with self.cond:
                job = self._next()
                while job is None and not self.closing:
                    self.cond.wait(1.0)
                    threads.METER.sample()  # a recent load reading, so a job's start need not wait for one
                    job = self._next()
                if self.closing:
                    return
            self._execute(job)

    def run_urgent(self, below: int) -> None:
        """Run waiting jobs of lanes with priority < ``below`` now (from inside a running job)."""
        if self._inline or QThread.currentThread() is not self:
            return
        self._inline = True
        try:
            while True:
                with self.cond:
                    job = None if self.closing else self._next(below=below)
                if job is None:
                    return
                self._execute(job)
        finally:
            self._inline = False

    def _execute(self, job: Job) -> None:
        from ..core.fame import Cancelled

        lane = job.lane
        if self.torch and not self._inline:  # an urgent job run inside another keeps that job's count
            threads.adapt()  # the cores other processes leave free now (fixed for the job: maps reproduce)
        lane.started.emit(job.id, job.label)
        outcome: tuple = ("cancelled", job.id)
        try:
            if job.cancel_requested:
                raise Cancelled("cancelled before start")
            result = job.fn(job)
        except Cancelled:
            pass
        except MemoryError:
            outcome = ("failed", job.id, f"{job.label}: out of memory")
        except Exception as e:  # noqa: BLE001 - every error becomes a message in the window
            msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            lane.last_traceback = lane.tracebacks[job.id] = traceback.format_exc()
            outcome = ("failed", job.id, f"{job.label}: {msg}")
        else:
            if not job.cancel_requested:
                outcome = ("finished", job.id, result)
        finally:
            # the job leaves the lane before anyone hears of its end: handlers see an idle lane
            with self.cond:
                if job in lane.running:
                    lane.running.remove(job)
        getattr(lane, outcome[0]).emit(*outcome[1:])

    def shutdown(self, timeout_ms: int = 10000) -> bool:
        with self.cond:
            self.closing = True
            for lane in self.lanes:
                for job in lane.running + lane.pending:
                    job.cancel()
                lane.pending.clear()
            self.cond.notify_all()
        return self.wait(timeout_ms)


class Lane(QObject):
    """A stream of requests with its own signals, served by the shared :class:`Scheduler`."""

    started = Signal(int, str)
    progress = Signal(int, float, object)
    finished = Signal(int, object)
    failed = Signal(int, str)
    cancelled = Signal(int)

    def __init__(self, name: str, scheduler: Scheduler, priority: int, latest_wins: bool = True,
                 parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.name = name
        self.scheduler = scheduler
        self.priority = priority
        self.latest_wins = latest_wins
        self.pending: list[Job] = []
        self.running: list[Job] = []
        self.last_traceback = ""
        self.tracebacks: dict[int, str] = {}  # job id -> traceback of a failed job, until the window logs it
        scheduler.add(self)

    def submit(self, fn: Callable[[Job], Any], label: str = "job") -> Job:
        job = Job(fn, label, self)
        with self.scheduler.cond:
            if self.latest_wins:
                self._cancel_locked()
            self.pending.append(job)
            self.scheduler.cond.notify_all()
        return job

    def _cancel_locked(self) -> None:
        for job in self.running:
            job.cancel()
        for old in self.pending:
            old.cancel()
            self.cancelled.emit(old.id)
        self.pending.clear()

    def cancel_all(self) -> None:
        with self.scheduler.cond:
            self._cancel_locked()

    @property
    def busy(self) -> bool:
        with self.scheduler.cond:
            return bool(self.running or self.pending)

    @property
    def current(self) -> Job | None:
        """The job of this lane that is running now (None if idle)."""
        with self.scheduler.cond:
            return self.running[-1] if self.running else None
