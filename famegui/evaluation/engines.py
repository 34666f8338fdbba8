"""Where the items of a protocol run are computed: ``local`` (a process pool) or ``ray`` (Ray actors).

Both load the model once per worker (one torch thread each), call the work
function (:func:`famegui.evaluation.runner.explain_block`) per block of items and hand the results
back to the parent, which alone writes files; the order in which items finish
does not matter (each is written under its own index). There is no scheduler
here beyond handing items to the pool / the actors.

- ``local``: a process pool (``concurrent.futures``, the spawn context: no fork of a process
  holding torch threads); the initializer loads the model. A worker that dies costs its block a rerun
  alone (:func:`local_items`), never a hung run.
- ``ray``: one actor per worker, each holding a model (``num_gpus=1`` when the
  device is cuda), spread over the cluster's nodes, one block each in flight; an actor whose process or
  node dies is started again by Ray (:data:`ACTOR_RESTARTS`) and its block tried once more (:func:`ray_items`).
  Ray is imported only
  here; ``ray.init(address="local", num_cpus=workers)`` starts a local Ray of its own (never one that
  ``ray start`` left running on this machine), ``address`` joins a
  cluster, and an already initialised Ray (e.g. by a test) is used as it is.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator

ENGINES = ("local", "ray")
ACTOR_RESTARTS = 3  # Ray: times an actor is started again after its process or node died (its block is retried)

_WORKER: dict = {}  # this worker process's model and work function (local engine)


def _init_worker(load: Callable, work: Callable, spec: dict) -> None:
    from ..core.threads import configure

    configure("worker")  # one torch thread per worker
    _WORKER.update(model=load(spec), work=work)


def _work(args: tuple):
    """(the work's result, the worker's stamp: which process, when the block started and ended)."""
    import time

    from .provenance import worker_stamp

    job, cfg = args
    started = time.time()
    result = _WORKER["work"](_WORKER["model"], job, cfg)
    return result, worker_stamp(started, time.time())


class WorkerDied(RuntimeError):
    """A block whose worker process died under it (killed, out of memory), also when it ran alone again."""


def _pool(workers: int, load: Callable, work: Callable, spec: dict):
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    return ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn"), initializer=_init_worker,
                               initargs=(load, work, spec))


def local_items(jobs: list, spec: dict, cfg: dict, workers: int, load: Callable, work: Callable,
                failed: Callable | None = None) -> Iterator:
    """Results of ``jobs`` from ``workers`` processes, as they finish (at most one block per worker in
    flight). A worker that dies (SIGKILL, the kernel's OOM killer) breaks the pool and the blocks in flight
    with it: each of those runs again alone in a fresh process, so the block that killed its worker is told
    from the ones that were only beside it, and the pool starts again for the rest. A block that kills its
    process when alone gives ``failed(job, message)`` (e.g. error rows) instead, or raises
    :class:`WorkerDied`."""
    from concurrent.futures import FIRST_COMPLETED, wait
    from concurrent.futures.process import BrokenProcessPool

    todo = list(jobs)[::-1]  # popped from the end: in order
    while todo:
        suspects: list = []
        with _pool(workers, load, work, spec) as pool:
            running = {}
            for _ in range(min(workers, len(todo))):
                job = todo.pop()
                running[pool.submit(_work, (job, cfg))] = job
            while running:
                done, _pending = wait(running, return_when=FIRST_COMPLETED)
                for f in done:
                    job = running.pop(f)
                    try:
                        result = f.result()
                    except BrokenProcessPool:
                        suspects.append(job)
                        continue
                    yield result
                    if todo and not suspects:
                        nxt = todo.pop()
                        running[pool.submit(_work, (nxt, cfg))] = nxt
        for job in suspects:  # each alone: a second death is the block's own
            yield _alone(job, spec, cfg, load, work, failed)


def _alone(job, spec: dict, cfg: dict, load: Callable, work: Callable, failed: Callable | None):
    from concurrent.futures.process import BrokenProcessPool

    with _pool(1, load, work, spec) as pool:
        try:
            return pool.submit(_work, (job, cfg)).result()
        except BrokenProcessPool:
            message = "the worker process died computing this block, also alone (killed, or out of memory)"
            if failed is None:
                raise WorkerDied(message) from None
            return failed(job, message), None


class Explainer:
    """A Ray actor's body: one model, items explained one at a time."""

    def __init__(self, load: Callable, work: Callable, spec: dict) -> None:
        _init_worker(load, work, spec)

    def explain(self, job: tuple, cfg: dict):
        return _work((job, cfg))


def ray_items(jobs: list, spec: dict, cfg: dict, workers: int, load: Callable, work: Callable,
              address: str | None = None, failed: Callable | None = None) -> Iterator:
    """Results of ``jobs`` from ``workers`` Ray actors, as they finish (one block per actor in flight).

    An actor whose process or node dies is started again by Ray (:data:`ACTOR_RESTARTS` times, then
    replaced by a new one); the block it held is tried once more, and a block that dies a second time gives
    ``failed(job, message)`` (e.g. error rows) or raises :class:`WorkerDied`, so a block that kills its
    worker every time (a poison item, the OOM killer) costs its own rows, never the run. An actor that
    cannot even be created (its model does not load) raises at once.
    """
    import ray

    started = False
    if not ray.is_initialized():
        if address:
            ray.init(address=address, log_to_driver=False)
        else:
            # "local": a new Ray of our own, never a cluster that `ray start` left on this machine
            ray.init(address="local", num_cpus=workers, include_dashboard=False, log_to_driver=False)
        started = True
    gpus = 1 if str(spec.get("device", "cpu")).startswith("cuda") else 0
    # a node lost mid-run (a machine switched off, a spot instance taken back): Ray starts its actors again
    # where there is room (SPREAD puts them on as many nodes as it can) and _ray_blocks sends the blocks
    # they held again (blocks are deterministic, so the table is the one an uninterrupted run writes). Ray
    # itself retries no call (max_task_retries=0): a block is retried there, once, so a block that kills its
    # actor every time cannot spend the actor's restarts and stop the run.
    actor = ray.remote(num_cpus=1, num_gpus=gpus, max_restarts=ACTOR_RESTARTS, max_task_retries=0,
                       scheduling_strategy="SPREAD")(Explainer)
    actors = [actor.remote(load, work, spec) for _ in range(workers)]
    try:
        yield from _ray_blocks(jobs, ray.put(cfg), actors, lambda: actor.remote(load, work, spec), failed)
    finally:
        for a in actors:
            ray.kill(a)
        if started:
            ray.shutdown()


def _ray_blocks(jobs: list, cfg_ref, actors: list, new_actor: Callable, failed: Callable | None) -> Iterator:
    """The loop of :func:`ray_items`: one block per actor in flight, each result as it comes; a block whose
    actor died is sent again once, then given to ``failed`` (``actors`` is updated in place when an actor
    that Ray gave up is replaced)."""
    import time

    import ray
    from ray.exceptions import ActorUnavailableError, OutOfMemoryError, RayActorError, WorkerCrashedError

    deaths = [0] * len(actors)  # per actor slot: deaths of the actor now in it
    tries: dict[int, int] = {}  # per job index: deaths under it
    todo = list(range(len(jobs)))[::-1]  # popped from the end: in order
    running: dict = {}  # the call's ObjectRef -> (actor slot, job index)

    def submit(slot: int) -> None:
        i = todo.pop()
        running[actors[slot].explain.remote(jobs[i], cfg_ref)] = (slot, i)

    for slot in range(min(len(actors), len(todo))):
        submit(slot)
    while running:
        [ref], _ = ray.wait(list(running), num_returns=1)
        slot, i = running.pop(ref)
        try:
            yield ray.get(ref)
        except ActorUnavailableError:  # unreachable for a moment (restarting, a network blip): not its fault
            time.sleep(0.5)
            todo.append(i)
        except (RayActorError, WorkerCrashedError, OutOfMemoryError) as e:
            if getattr(e, "actor_init_failed", False):
                raise  # the model does not load in the actor: no block can run
            deaths[slot] += 1
            if deaths[slot] > ACTOR_RESTARTS:  # Ray has given this actor up: a new one takes its place
                ray.kill(actors[slot])
                actors[slot], deaths[slot] = new_actor(), 0
            tries[i] = tries.get(i, 0) + 1
            if tries[i] < 2:
                todo.append(i)
            else:
                message = "the Ray actor died computing this block, twice (killed, or out of memory)"
                if failed is None:
                    raise WorkerDied(message) from None
                yield failed(jobs[i], message), None
        if todo:
            submit(slot)


def run_items(engine: str, jobs: list, spec: dict, cfg: dict, *, load: Callable, work: Callable, workers: int = 1,
              address: str | None = None, stamps: list | None = None, failed: Callable | None = None):
    """Results of ``jobs`` as they finish: ``work(model, job, cfg)`` in workers whose model is ``load(spec)``.

    ``load`` and ``work`` are module-level functions (they are pickled by reference), so this module
    needs nothing from the runner that calls it. ``stamps``, if given, receives each block's worker stamp
    (:func:`.provenance.worker_stamp`) as its result comes back. ``failed(job, message)``: the result of a
    block whose worker died under it twice (see :func:`local_items`, :func:`ray_items`).
    """
    if engine == "local":
        results = local_items(jobs, spec, cfg, workers, load, work, failed)
    elif engine == "ray":
        results = ray_items(jobs, spec, cfg, workers, load, work, address, failed)
    else:
        raise ValueError(f"engine must be one of {', '.join(ENGINES)}, got {engine!r}")
    return _unstamped(results, stamps)


def _unstamped(results: Iterator, stamps: list | None) -> Iterator:
    for result, stamp in results:
        if stamps is not None and stamp is not None:
            stamps.append(stamp)
        yield result
