"""What the tabs and docks share: the session, the background lanes and the window's services.

Tabs and docks never reach into the window or into each other's internals; they
get one :class:`AppContext` and use only its public methods:

- ``session``: the Qt-free state and computations (:class:`~famegui.session.Session`);
- ``io`` / ``compute`` lanes and :meth:`AppContext.submit` (every network call runs on
  the one worker thread, never in the GUI thread); ``downloads``: a lane on a thread of
  its own for fetching weights (it waits on a server, not on torch; its progress is the
  caller's to show, not the window's progress bar);
- ``current_params()`` (the FAME settings), ``display`` (opacity, colormap, boxes);
- :meth:`show_error` (in the window's words, see ``messages.py``), :meth:`show_status`,
  :meth:`announce` (a map is on screen); ``error_cleared`` when a later job succeeds;
- :meth:`show_tab`, :meth:`is_current`, :meth:`enable_tab` (tabs by their widget, never by index).
"""
from __future__ import annotations

import time
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import Any

from PySide6.QtCore import QObject, Qt, Signal
from PySide6.QtWidgets import QTabWidget, QWidget

from ..session import Session
from .display import DisplaySettings
from .jobs import Job, Lane, Scheduler
from .messages import gui_message

LOG_NAME = "famegui-gui.log"
LOG_MAX_BYTES = 1 << 20


def log_dir() -> Path:
    """The user's log folder (:func:`famegui.paths.log_dir`: platformdirs, or ``FAMEGUI_LOG_DIR``)."""
    from ..paths import log_dir as user_log_dir

    return user_log_dir()


def log_failure(message: str, trace: str) -> Path | None:
    """Append a failed job's message and traceback to the log (None if it cannot be written)."""
    path = log_dir() / LOG_NAME
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.exists() and path.stat().st_size > LOG_MAX_BYTES:
            path.replace(path.with_suffix(".log.1"))
        with path.open("a", encoding="utf-8") as f:
            f.write(f"--- {time.strftime('%Y-%m-%d %H:%M:%S')} {message}\n{trace or '(no traceback)'}\n")
    except OSError:
        return None
    return path


class AppContext(QObject):
    """Session, job lanes, settings and window services for the tabs and docks."""

    result_shown = Signal(object)  # a MapResult drawn in a view (tests and scripts wait on it)
    error_shown = Signal(str)
    error_cleared = Signal()  # a job asked for after the last error succeeded: the error is history
    status_changed = Signal(str)  # a line for the status bar
    progress_changed = Signal(float)  # progress of the running job, 0..1
    busy_changed = Signal(bool)  # whether the compute lane has work (the Cancel button)

    def __init__(self, session: Session, tabs: QTabWidget, params: Callable[[], dict],
                 display: DisplaySettings, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.session = session
        self.tabs = tabs
        self.display = display
        self.device = "cpu"  # the device models are loaded on (the Settings dock sets it)
        # the model the window shows (its layers, classes, task), set when the window adopts it; the session's
        # is already the next one while a load ends in the worker
        self.model = None
        self.last_error = ""
        self.error_log: Path | None = None  # where the traceback of the error shown was written (a failed job)
        self._params = params
        self.scheduler = Scheduler()  # one worker thread for all network work
        self.io = Lane("io", self.scheduler, priority=0, latest_wins=False, parent=self)
        self.compute = Lane("compute", self.scheduler, priority=1, latest_wins=True, parent=self)
        self.download_scheduler = Scheduler(torch=False)  # fetching weights: never blocks the network's thread
        self.downloads = Lane("download", self.download_scheduler, priority=0, latest_wins=False, parent=self)
        self._handlers: dict[int, tuple] = {}
        self._started: dict[int, float] = {}
        self._clears: set[int] = set()  # jobs whose success clears the error shown before they were asked for
        self._last_job = 0  # the newest job id
        self._io_status = False  # whether the status line shows an io job's label
        for lane in self.lanes:
            lane.started.connect(lambda job_id, label, lane=lane: self._on_started(lane, job_id, label))
            lane.progress.connect(lambda job_id, f, payload, lane=lane: self._on_progress(lane, job_id, f, payload))
            lane.finished.connect(lambda job_id, result, lane=lane: self._on_finished(lane, job_id, result))
            lane.failed.connect(lambda job_id, message, lane=lane: self._on_failed(lane, job_id, message))
            # queued, also from the GUI thread: a job cancelled by a newer request's submit() reports after
            # that request is in place, so the tab does not take the old job's 'cancelled' for the new one
            lane.cancelled.connect(self._on_cancelled, Qt.QueuedConnection)

    # ------------------------------------------------------------------ jobs
    @property
    def lanes(self) -> tuple[Lane, Lane, Lane]:
        return self.io, self.compute, self.downloads

    def submit(self, lane: Lane, fn: Callable[[Job], Any], label: str, done: Callable | None = None,
               progress: Callable | None = None, failed: Callable | None = None,
               cancelled: Callable | None = None, clears_error: bool | None = None, any_model: bool = False) -> Job:
        """Run ``fn(job)`` on ``lane``; ``done(result)``, ``progress(fraction, payload)``, ``failed(message)``
        and ``cancelled()`` are called in the GUI thread. ``clears_error`` (default: explanations, i.e. the
        compute lane): its success dismisses an error shown before it was asked for. A request is made for the
        model the window shows (a layer, a cell, a class of it): if another model has come in by the time the
        job starts, the job is cancelled; ``any_model``: jobs that load a model or images, for whichever is in."""
        if lane.scheduler.torch and not any_model:
            fn = self._for_model(fn, self.model)
        job = lane.submit(fn, label)
        self._handlers[job.id] = (done, progress, failed, cancelled)
        self._last_job = max(self._last_job, job.id)
        if clears_error if clears_error is not None else lane is self.compute:
            self._clears.add(job.id)
        return job

    def _for_model(self, fn: Callable[[Job], Any], model) -> Callable[[Job], Any]:
        asked_for = weakref.ref(model) if model is not None else lambda: None  # a job kept by a tab keeps no model

        def run(job: Job):
            if self.session.model is not asked_for():
                from ..core.fame import Cancelled

                raise Cancelled("asked for another model")
            return fn(job)

        return run

    def cancel_jobs(self) -> None:
        """Cancel the explanations (the compute lane); loading and scores go on."""
        self.compute.cancel_all()

    def shutdown(self) -> bool:
        downloads = self.download_scheduler.shutdown()  # a running download stops at its next block
        return self.scheduler.shutdown() and downloads

    def _on_started(self, lane: Lane, job_id: int, label: str) -> None:
        self._started[job_id] = time.perf_counter()
        if lane is self.compute:  # the progress bar and Cancel belong to the explanations
            self.show_status(label + "...")
            self.busy_changed.emit(True)
            self.progress_changed.emit(0.0)
        elif not self.compute.busy:  # loading and scores say so while no explanation runs
            self.show_status(label + "...")
            self._io_status = True

    def _on_progress(self, lane: Lane, job_id: int, fraction: float, payload) -> None:
        if lane is not self.downloads:  # a download has its own bar, next to its Cancel button
            self.progress_changed.emit(min(max(fraction, 0.0), 1.0))
        h = self._handlers.get(job_id)
        if h and h[1]:
            h[1](fraction, payload)

    def _job_over(self, job_id: int):
        self._started.pop(job_id, None)
        h = self._handlers.pop(job_id, None)
        if not self.compute.busy:
            self.busy_changed.emit(False)
        return h

    def _on_finished(self, lane: Lane, job_id: int, result) -> None:
        started = self._started.get(job_id)
        h = self._job_over(job_id)
        if lane is self.compute:
            self.progress_changed.emit(1.0)
            self._io_status = False
            if started is not None:
                self.show_status(f"done in {time.perf_counter() - started:.2f} s")
        elif self._io_status and not (self.io.busy or self.compute.busy):
            self.show_status("ready")
            self._io_status = False
        if job_id in self._clears:
            self._clears.discard(job_id)
            if self.last_error and job_id > self._error_mark:
                self.last_error = ""
                self.error_cleared.emit()
        if h and h[0]:
            try:
                h[0](result)
            except Exception as e:  # a display error must not take the app down
                self.show_error(f"display failed: {e}")

    def _on_failed(self, lane: Lane, job_id: int, message: str) -> None:
        h = self._job_over(job_id)
        self._clears.discard(job_id)
        log = log_failure(message, lane.tracebacks.pop(job_id, ""))
        if lane is self.compute and not self.compute.busy:
            self.progress_changed.emit(0.0)
        self.show_error(message, log)
        if h and h[2]:
            h[2](message)

    def _on_cancelled(self, job_id: int) -> None:
        h = self._job_over(job_id)
        self._clears.discard(job_id)
        if not self.compute.busy:  # no progress of a job that is gone
            self.progress_changed.emit(0.0)
            self.show_status("cancelled")
        if h and h[3]:
            h[3]()

    # ------------------------------------------------------------------ settings and messages
    def current_params(self) -> dict:
        """The FAME settings of the Settings dock (what a FAME request uses)."""
        return self._params()

    _error_mark = 0  # the newest job id when the error was shown: later jobs' success clears it

    def show_error(self, message: str, log: Path | None = None) -> None:
        """An error line in the window's words (the banner and the status bar); ``log``: its traceback's file."""
        message = gui_message(message)
        self.last_error = message
        self.error_log = log
        self._error_mark = self._last_job
        self.error_shown.emit(message)

    def show_status(self, text: str) -> None:
        self.status_changed.emit(text)

    def announce(self, result) -> None:
        """Tell listeners (tests, scripts) that ``result`` is on screen now."""
        self.result_shown.emit(result)

    # ------------------------------------------------------------------ tabs
    def show_tab(self, tab: QWidget, quietly: bool = False) -> None:
        """Bring ``tab`` to the front; ``quietly``: without the tab starting work of its own when shown."""
        self.tabs.blockSignals(quietly)
        try:
            self.tabs.setCurrentWidget(tab)
        finally:
            self.tabs.blockSignals(False)

    def is_current(self, tab: QWidget) -> bool:
        return self.tabs.currentWidget() is tab

    def enable_tab(self, tab: QWidget, on: bool) -> None:
        self.tabs.setTabEnabled(self.tabs.indexOf(tab), on)
