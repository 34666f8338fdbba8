"""Where the items of a protocol run are computed: ``local`` (a process pool) or ``ray`` (Ray actors).

Both load the model once per worker (one torch thread each), call the work
function (:func:`famegui.evaluation.runner.explain_block`) per block of items and hand the results
back to the parent, which alone writes files; the order in which items finish
does not matter (each is written under its own index). There is no scheduler
here beyond handing items to the pool / the actors.

- ``local``: ``multiprocessing`` with the spawn context (no fork of a process
  holding torch threads); the initializer loads the model.
- ``ray``: one actor per worker, each holding a model (``num_gpus=1`` when the
  device is cuda), fed through ``ray.util.ActorPool``. Ray is imported only
  here; ``ray.init(num_cpus=workers)`` starts a local Ray, ``address`` joins a
  cluster, and an already initialised Ray (e.g. by a test) is used as it is.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator

ENGINES = ("local", "ray")

_WORKER: dict = {}  # this worker process's model and work function (local engine)


def _init_worker(load: Callable, work: Callable, spec: dict) -> None:
    from ..core.threads import configure

    configure("worker")  # one torch thread per worker
    _WORKER.update(model=load(spec), work=work)


def _work(args: tuple):
    job, cfg = args
    return _WORKER["work"](_WORKER["model"], job, cfg)


def local_items(jobs: list, spec: dict, cfg: dict, workers: int, load: Callable, work: Callable) -> Iterator:
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    with ctx.Pool(workers, initializer=_init_worker, initargs=(load, work, spec)) as pool:
        yield from pool.imap_unordered(_work, [(job, cfg) for job in jobs], chunksize=1)


class Explainer:
    """A Ray actor's body: one model, items explained one at a time."""

    def __init__(self, load: Callable, work: Callable, spec: dict) -> None:
        _init_worker(load, work, spec)

    def explain(self, job: tuple, cfg: dict):
        return _work((job, cfg))


def ray_items(jobs: list, spec: dict, cfg: dict, workers: int, load: Callable, work: Callable,
              address: str | None = None) -> Iterator:
    import ray
    from ray.util import ActorPool

    started = False
    if not ray.is_initialized():
        if address:
            ray.init(address=address, log_to_driver=False)
        else:
            ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=False)
        started = True
    gpus = 1 if str(spec.get("device", "cpu")).startswith("cuda") else 0
    actor = ray.remote(num_cpus=1, num_gpus=gpus)(Explainer)
    actors = [actor.remote(load, work, spec) for _ in range(workers)]
    cfg_ref = ray.put(cfg)
    try:
        pool = ActorPool(actors)
        yield from pool.map_unordered(lambda a, job: a.explain.remote(job, cfg_ref), jobs)
    finally:
        for a in actors:
            ray.kill(a)
        if started:
            ray.shutdown()


def run_items(engine: str, jobs: list, spec: dict, cfg: dict, *, load: Callable, work: Callable, workers: int = 1,
              address: str | None = None):
    """Results of ``jobs`` as they finish: ``work(model, job, cfg)`` in workers whose model is ``load(spec)``.

    ``load`` and ``work`` are module-level functions (they are pickled by reference), so this module
    needs nothing from the runner that calls it.
    """
    if engine == "local":
        return local_items(jobs, spec, cfg, workers, load, work)
    if engine == "ray":
        return ray_items(jobs, spec, cfg, workers, load, work, address)
    raise ValueError(f"engine must be one of {', '.join(ENGINES)}, got {engine!r}")
