"""What the tabs and docks share: the session, the background lanes and the window's services.

Tabs and docks never reach into the window or into each other's internals; they
get one :class:`AppContext` and use only its public methods:

- ``session``: the Qt-free state and computations (:class:`~famegui.session.Session`);
- ``io`` / ``compute`` lanes and :meth:`AppContext.submit` (every network call runs on
  the one worker thread, never in the GUI thread);
- ``current_params()`` (the FAME settings), ``display`` (opacity, colormap, boxes);
- :meth:`show_error`, :meth:`show_status`, :meth:`announce` (a map is on screen);
- :meth:`show_tab`, :meth:`is_current`, :meth:`enable_tab` (tabs by their widget, never by index).
"""
from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from PySide6.QtCore import QObject, Signal
from PySide6.QtWidgets import QTabWidget, QWidget

from ..session import Session
from .display import DisplaySettings
from .jobs import Job, Lane, Scheduler


class AppContext(QObject):
    """Session, job lanes, settings and window services for the tabs and docks."""

    result_shown = Signal(object)  # a MapResult drawn in a view (tests and scripts wait on it)
    error_shown = Signal(str)
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
        self.last_error = ""
        self._params = params
        self.scheduler = Scheduler()  # one worker thread for all network work
        self.io = Lane("io", self.scheduler, priority=0, latest_wins=False, parent=self)
        self.compute = Lane("compute", self.scheduler, priority=1, latest_wins=True, parent=self)
        self._handlers: dict[int, tuple] = {}
        self._started: dict[int, float] = {}
        for lane in self.lanes:
            lane.started.connect(lambda job_id, label, lane=lane: self._on_started(lane, job_id, label))
            lane.progress.connect(self._on_progress)
            lane.finished.connect(lambda job_id, result, lane=lane: self._on_finished(lane, job_id, result))
            lane.failed.connect(self._on_failed)
            lane.cancelled.connect(self._on_cancelled)

    # ------------------------------------------------------------------ jobs
    @property
    def lanes(self) -> tuple[Lane, Lane]:
        return self.io, self.compute

    def submit(self, lane: Lane, fn: Callable[[Job], Any], label: str, done: Callable | None = None,
               progress: Callable | None = None, failed: Callable | None = None) -> Job:
        """Run ``fn(job)`` on ``lane``; ``done(result)``, ``progress(fraction, payload)`` and
        ``failed(message)`` are called in the GUI thread."""
        job = lane.submit(fn, label)
        self._handlers[job.id] = (done, progress, failed)
        return job

    def cancel_jobs(self) -> None:
        """Cancel the explanations (the compute lane); loading and scores go on."""
        self.compute.cancel_all()

    def shutdown(self) -> bool:
        return self.scheduler.shutdown()

    def _on_started(self, lane: Lane, job_id: int, label: str) -> None:
        self._started[job_id] = time.perf_counter()
        if lane is self.compute:  # the progress bar and Cancel belong to the explanations
            self.show_status(label + "...")
            self.busy_changed.emit(True)
            self.progress_changed.emit(0.0)

    def _on_progress(self, job_id: int, fraction: float, payload) -> None:
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
            if started is not None:
                self.show_status(f"done in {time.perf_counter() - started:.2f} s")
        if h and h[0]:
            try:
                h[0](result)
            except Exception as e:  # a display error must not take the app down
                self.show_error(f"display failed: {e}")

    def _on_failed(self, job_id: int, message: str) -> None:
        h = self._job_over(job_id)
        self.show_error(message)
        if h and h[2]:
            h[2](message)

    def _on_cancelled(self, job_id: int) -> None:
        self._job_over(job_id)
        self.show_status("cancelled")

    # ------------------------------------------------------------------ settings and messages
    def current_params(self) -> dict:
        """The FAME settings of the Settings dock (what a FAME request uses)."""
        return self._params()

    def show_error(self, message: str) -> None:
        self.last_error = message
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
