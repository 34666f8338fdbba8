"""The one place that decides torch's thread count.

- a worker process of a protocol run (``evaluation/engines.py``) gets one thread; the workers
  share the cores;
- a call of the Python API (``famegui.explain``, ``famegui.evaluate``: a script or a notebook) runs with
  the cores other processes leave free, at most the count the caller's torch has, which it gets back after
  the call (:func:`for_call`): the library changes no setting of its caller;
- the GUI runs every network pass on one worker thread, the command line on its main thread:
  they get the physical cores that other processes leave free, decided before each job (GUI) or
  command (CLI) by :func:`adapt`, and kept for it: float sums depend on the thread count, so a map is
  recomputed exactly only with the count it was made with (FAME records it; ``famegui reproduce``
  uses it again).

Why not a fixed count: OpenMP threads that finish their share of a parallel region spin for a
while, waiting for the next one, and each region waits for its slowest thread. With another
CPU-bound process on the machine, a thread that was descheduled holds up all the others: on the
2-core machine FAME became 7-10x slower with one ``python -c "while 1: pass"`` next to it.
``OMP_WAIT_POLICY=PASSIVE`` (waiting threads sleep at once) removed the slow-down but halved the
speed on a quiet machine (every region pays a wake-up). Fewer threads than busy cores avoids the
fight altogether, and a quiet machine keeps the full speed: measured in ``scripts/bench_threads.py``.

The load of other processes comes from the kernel's CPU counters (``/proc/stat``) minus this
process's own CPU time (``/proc/self/stat``) over the last fraction of a second; where those files
do not exist (not Linux) the count stays at the physical cores. A user's ``OMP_NUM_THREADS`` wins
over all of it, and an ``OMP_WAIT_POLICY`` of the user is left to the OpenMP runtime.

This module imports torch only inside :func:`configure` and :func:`adapt`.
"""
from __future__ import annotations

import os
import threading
import time
from collections import deque
from contextlib import contextmanager
from functools import lru_cache

ROLES = ("gui", "worker", "cli")
MIN_WINDOW_S = 0.15  # the shortest window a load reading is taken over (the kernel counts in 10 ms ticks)
MAX_AGE_S = 5.0  # an older reading says nothing about the load now
KEEP_EVERY_S = 0.05  # readings closer together than this are not all kept
ADAPT_EVERY_S = 0.5  # the thread count is decided at most this often


@lru_cache(maxsize=1)
def physical_cores() -> int:
    """Physical cores of this machine (hyper-threads not counted); the logical count if unknown."""
    logical = os.cpu_count() or 1
    try:
        with open("/proc/cpuinfo") as f:
            text = f.read()
    except OSError:
        return logical
    cores = set()
    phys = core = None
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "physical id":
            phys = value.strip()
        elif key == "core id":
            core = value.strip()
        elif not line.strip():
            if core is not None:
                cores.add((phys, core))
            phys = core = None
    if core is not None:
        cores.add((phys, core))
    return max(1, min(len(cores) or logical, usable_cpus()))


def usable_cpus() -> int:
    """Logical CPUs this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def threads_for(role: str) -> int:
    """The thread count of ``role`` on a quiet machine."""
    if role not in ROLES:
        raise ValueError(f"thread role must be one of {ROLES}, not {role!r}")
    return 1 if role == "worker" else physical_cores()


def threads_under_load(physical: int, logical: int, others_busy: float | None) -> int:
    """Threads for the physical cores that other processes leave free: ``others_busy`` is the number
    of logical CPUs they keep busy (None: unknown, all cores). At least one thread, at most ``physical``;
    a CPU counts as taken from half a CPU of load on."""
    if others_busy is None:
        return physical
    free = max(0.0, logical - others_busy) * physical / max(1, logical)
    return max(1, min(physical, int(free + 0.5)))


class LoadMeter:
    """CPU time taken by other processes, from the kernel's counters (Linux)."""

    def __init__(self) -> None:
        self._readings: deque = deque(maxlen=16)
        self._lock = threading.Lock()
        self._hz = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100

    @staticmethod
    def read() -> tuple[float, int, int] | None:
        """(monotonic time, busy ticks of all CPUs, this process's ticks), or None without /proc."""
        try:
            with open("/proc/stat") as f:
                cpu = f.readline().split()
            with open("/proc/self/stat") as f:
                own = f.read().rsplit(")", 1)[1].split()
            ticks = [int(v) for v in cpu[1:9]]  # user nice system idle iowait irq softirq steal
            busy = sum(ticks) - ticks[3] - ticks[4]
            mine = int(own[11]) + int(own[12])  # utime and stime (fields 14 and 15 of proc(5))
        except (OSError, IndexError, ValueError):
            return None
        return time.monotonic(), busy, mine

    def sample(self) -> None:
        """Keep a reading, so that a later :meth:`others_busy` need not wait for its window."""
        now = self.read()
        if now is not None:
            self._keep(now)

    def _keep(self, reading: tuple[float, int, int]) -> None:
        """Store a reading unless one was stored a moment ago: frequent calls must not push out the older
        readings a window needs."""
        with self._lock:
            if not self._readings or reading[0] - self._readings[-1][0] >= KEEP_EVERY_S:
                self._readings.append(reading)

    def others_busy(self, block: bool = True) -> float | None:
        """Logical CPUs kept busy by other processes since a reading at least ``MIN_WINDOW_S`` old.
        Without one: waits that long (``block``) or returns None. None also without /proc."""
        now = self.read()
        if now is None:
            return None
        with self._lock:
            base = next((r for r in reversed(self._readings) if MIN_WINDOW_S <= now[0] - r[0] <= MAX_AGE_S), None)
        self._keep(now)
        if base is None:
            if not block:
                return None
            time.sleep(MIN_WINDOW_S)
            base, now = now, self.read()
            if now is None:
                return None
            self._keep(now)
        seconds = now[0] - base[0]
        others = (now[1] - base[1]) - (now[2] - base[2])
        return max(0.0, others / self._hz / seconds)


METER = LoadMeter()
_state = {"role": None, "last": 0.0, "threads": None, "others": None}


def _user_threads() -> int | None:
    text = os.environ.get("OMP_NUM_THREADS", "")
    return max(1, int(text)) if text.isdigit() else None


def configure(role: str) -> int:
    """Torch's intra-op thread count for ``role`` (see the module's text); returns the count. The GUI and
    the command line then call :func:`adapt` before their work."""
    import torch

    n = threads_for(role)
    if role != "worker" and _user_threads() is not None:
        n = _user_threads()
    _state.update(role=role, last=0.0, threads=n, others=None)
    METER.sample()
    torch.set_num_threads(n)
    return n


def adapt(block: bool = False) -> int | None:
    """Decide the thread count again for the load of other processes now, in the thread that runs the
    network (torch's OpenMP count is per thread), before a job. At most every ``ADAPT_EVERY_S``; nothing
    for a worker, before :func:`configure`, or when the user set ``OMP_NUM_THREADS``. ``block``: wait for a load
    reading if there is no recent one (the command line, once). Returns the count now in use, or None."""
    role = _state["role"]
    if role in (None, "worker") or _user_threads() is not None:
        return None
    now = time.monotonic()
    if now - _state["last"] < ADAPT_EVERY_S:
        return _state["threads"]
    others = METER.others_busy(block=block)
    if others is None and not block:
        return _state["threads"]  # no window yet: keep the count, and decide at the next call
    _state["last"] = now
    import torch

    n = threads_under_load(physical_cores(), usable_cpus(), others)
    _state.update(others=others, threads=n)
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)
    return n


def state() -> dict:
    """The last decision (for the benchmark and the tests): role, threads, others' busy CPUs."""
    return {k: _state[k] for k in ("role", "threads", "others")}


@contextmanager
def for_call():
    """Torch's thread count for one call of the Python API: the physical cores other processes leave free
    now, never more than the caller's own count, which is put back afterwards. Nothing changes when the GUI
    or the command line decides already (:func:`configure`), or the user set ``OMP_NUM_THREADS``. The first
    call waits for a load reading (a fraction of a second); calls close together reuse the readings."""
    import torch

    if _state["role"] is not None or _user_threads() is not None:
        yield
        return
    before = torch.get_num_threads()
    n = min(before, threads_under_load(physical_cores(), usable_cpus(), METER.others_busy(block=True)))
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)
