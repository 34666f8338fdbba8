"""The one place that decides torch's thread count and the OpenMP wait policy.

- the GUI runs every network pass on one compute thread: it gets all physical cores;
- a worker process of a protocol run (``evaluation/engines.py``) gets one thread, the
  workers share the cores;
- the command line keeps torch's own choice (its physical cores).

OpenMP threads that finish their share of a parallel region spin, waiting for the next one
(``OMP_WAIT_POLICY=ACTIVE``-like behaviour). With another CPU-bound process on the machine the
spinning threads and the other process fight over the cores, and each parallel region waits for
its slowest (descheduled) thread: FAME became 10-75x slower. ``PASSIVE`` makes waiting threads
sleep, so a competing load slows FAME in proportion. The OpenMP runtime reads the variable when
it starts (when torch is imported), so :func:`set_wait_policy` must run before the first
``import torch`` of the process: the CLI and the GUI call it first thing; a user's own
``OMP_WAIT_POLICY`` is left as it is. Spawned worker processes inherit the environment.

This module imports torch only inside :func:`configure`.
"""
from __future__ import annotations

import os
import sys

ROLES = ("gui", "worker", "cli")
WAIT_POLICY = "PASSIVE"


def set_wait_policy() -> bool:
    """Set ``OMP_WAIT_POLICY=PASSIVE`` unless the user chose one; True if it takes effect in this process
    (torch not imported yet)."""
    os.environ.setdefault("OMP_WAIT_POLICY", WAIT_POLICY)
    return "torch" not in sys.modules


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
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else logical
    return max(1, min(len(cores) or logical, usable))


def threads_for(role: str) -> int:
    if role not in ROLES:
        raise ValueError(f"thread role must be one of {ROLES}, not {role!r}")
    return 1 if role == "worker" else physical_cores()


def configure(role: str) -> int:
    """Set the wait policy (if still possible) and torch's intra-op thread count for ``role``;
    returns the thread count. An explicit ``OMP_NUM_THREADS`` of the user wins for the GUI and CLI."""
    set_wait_policy()
    import torch

    n = threads_for(role)
    if role != "worker" and os.environ.get("OMP_NUM_THREADS", "").isdigit():
        n = max(1, int(os.environ["OMP_NUM_THREADS"]))
    torch.set_num_threads(n)
    return n
