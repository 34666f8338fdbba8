"""Where a protocol run's numbers came from: the command, the code, the packages, the machine and its workers.

:func:`session` describes one call of the runner (the command line, famegui's version and git commit when
it runs from a checkout, package versions, device, CPU and GPU model, thread counts, start time);
:func:`worker_stamp` is what each engine worker reports with every block (which process on which host,
when it started and ended the block); :func:`workers` sums those up per worker. ``run.json`` keeps a list
of sessions (a resumed run adds one), and ``famegui report`` prints them under the table
(:func:`lines`).
"""
from __future__ import annotations

import os
import platform
import shlex
import socket
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, timezone.utc).isoformat(timespec="seconds")


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo`` on Linux, else what :mod:`platform` says)."""
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace").splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def gpu_models() -> list[str]:
    """The names of the CUDA devices torch sees (empty without one)."""
    import torch

    if not torch.cuda.is_available():
        return []
    return [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]


def git_commit() -> dict | None:
    """{"commit", "dirty"} of the checkout famegui runs from; None when installed from a wheel (no ``.git``)
    or when git is not there."""
    root = Path(__file__).resolve().parents[2]
    if not (root / ".git").exists():
        return None
    try:
        head = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                              timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return {"commit": head, "dirty": bool(dirty)} if head else None


def session(device: str, engine: dict, argv: list[str] | None = None) -> dict:
    """The provenance of one runner call, started now (``ended`` and ``workers`` are filled in at its end)."""
    import torch

    from ..export import package_versions
    from ..version import VERSION

    command = getattr(sys, "orig_argv", sys.argv) if argv is None else argv
    return {"command": shlex.join(command), "famegui": VERSION, "git": git_commit(),
            "packages": package_versions(), "host": socket.gethostname(), "platform": platform.platform(),
            "device": device, "cpu": cpu_model(), "cores": os.cpu_count(), "gpu": gpu_models(),
            "threads": {"torch_parent": torch.get_num_threads(), "per_worker": 1,
                        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS")},
            "engine": engine, "started": _iso(time.time()), "ended": None, "items": 0, "workers": []}


def worker_stamp(started: float, ended: float) -> dict:
    """What a worker reports with a block: itself (host and process), its torch threads, when the block ran."""
    import torch

    host = socket.gethostname()
    return {"worker": f"{host}:{os.getpid()}", "host": host, "threads": torch.get_num_threads(),
            "started": started, "ended": ended}


def workers(stamps: list[dict]) -> list[dict]:
    """One entry per worker: first start and last end of its blocks, blocks done, seconds busy."""
    out: dict[str, dict] = {}
    for s in stamps:
        w = out.setdefault(s["worker"], {"worker": s["worker"], "host": s["host"], "threads": s["threads"],
                                         "first": s["started"], "last": s["ended"], "blocks": 0, "busy_s": 0.0})
        w["first"], w["last"] = min(w["first"], s["started"]), max(w["last"], s["ended"])
        w["blocks"] += 1
        w["busy_s"] += s["ended"] - s["started"]
    return [{**{k: v for k, v in w.items() if k not in ("first", "last")}, "started": _iso(w["first"]),
             "ended": _iso(w["last"]), "busy_s": round(w["busy_s"], 1)} for w in out.values()]


def finish(record: dict, items: int, stamps: list[dict]) -> dict:
    """``record`` (a :func:`session`) at its end: when, how many items it wrote, its workers."""
    return {**record, "ended": _iso(time.time()), "items": int(items), "workers": workers(stamps)}


def lines(meta: dict) -> list[str]:
    """The provenance of a run (``run.json``) as plain lines, one session after another; none for a run made
    before sessions were recorded."""
    out = []
    for k, s in enumerate(meta.get("provenance") or [], 1):
        if not isinstance(s, dict):
            continue
        git = s.get("git") or {}
        code = f"famegui {s.get('famegui', '?')}"
        if git.get("commit"):
            code += f" (git {str(git['commit'])[:12]}{', with local changes' if git.get('dirty') else ''})"
        pk = s.get("packages") or {}
        packages = ", ".join(f"{n} {v}" for n, v in pk.items() if n != "famegui")
        eng = s.get("engine") or {}
        gpu = ", ".join(s.get("gpu") or []) or "no GPU"
        out.append(f"session {k}: {s.get('started', '?')} to {s.get('ended') or 'not finished'}, "
                   f"{s.get('items', 0)} items written")
        out.append(f"  command: {s.get('command', '?')}")
        out.append(f"  code: {code}; {packages}")
        out.append(f"  machine: {s.get('host', '?')}, {s.get('cpu', '?')} ({s.get('cores', '?')} cores), {gpu}, "
                   f"device {s.get('device', '?')}; engine {eng.get('name', '?')} with {eng.get('workers', '?')} "
                   f"worker(s), {(s.get('threads') or {}).get('per_worker', '?')} torch thread(s) each")
        for w in s.get("workers") or []:
            out.append(f"  worker {w.get('worker')}: {w.get('started')} to {w.get('ended')}, {w.get('blocks')} "
                       f"blocks, {w.get('busy_s')} s busy, {w.get('threads')} thread(s)")
    return out
