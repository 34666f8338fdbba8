"""Protocol runs: every item of a protocol explained by every method, every map scored by every metric.

:func:`run_protocol` writes a run directory (:mod:`.rundir`); the engines
(:mod:`.engines`: a local process pool or Ray actors) call :func:`explain_block`
once per block of items (FAME maps of a block's pairs run in one batch) with the
model they loaded once, and the parent process writes each finished item. For a
pair (or triplet) the probe is explained against the reference for the targets
``e+`` (similar) and ``e-`` (dissimilar), with the model's default cosine
threshold so that deletion / insertion also give S-RISE's decision-flip share;
an image is explained for its labelled class (``class``).
Each map is computed once (:func:`famegui.evaluation.experiment.compute_map`),
saved, and every metric that applies runs on it
(:func:`famegui.evaluation.experiment.evaluate`); the random-ranking baseline
(method ``random``, :func:`~famegui.evaluation.experiment.baseline`) is seeded
with the item index, and methods with a ``seed`` parameter left at ``None`` use
seed 0, and blocks are fixed by item index (``fame_batch``), so any engine and
any number of workers give the same table. A metric
that does not apply to a target (the hiding game on ``e-``) has no row; a bad
item (unreadable image, no face) or a failing method gives rows with ``error``
set and a NaN ``auc``.
"""
from __future__ import annotations

import dataclasses
import math
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from ..models.extras import missing, needs
from . import curves as C
from . import rundir
from .experiment import RANDOM, baseline, compute_map, evaluate
from .metrics import Sample, metric_names
from .presets import default_targets, get_preset, run_targets, target_kind
from .protocol import ImageItem, PairItem, Protocol

DEFAULT_METRICS = ("deletion", "insertion")
# FAME maps of pairs per batch in a protocol run: with one torch thread per worker, a batch of 4 costs
# 23 ms per sample and iteration on the dlib network against 40 ms one by one (1.7x)
FAME_BATCH = 4


@dataclass
class RunSummary:
    done: int  # items computed by this call
    skipped: int  # items already finished in the run directory
    errors: int  # computed items with at least one error row
    seconds: float
    total: int

    def line(self) -> str:
        return (f"{self.done} items done, {self.skipped} skipped as already finished, {self.errors} with errors, "
                f"{self.seconds:.1f} s")


# --------------------------------------------------------------------------- the model
def load_spec(spec: dict):
    """The model of ``spec`` ({"model", "weights", "device", "options"}), in eval mode on its device."""
    from ..models.zoo import load_model

    model = load_model(spec["model"], spec.get("weights"), **spec.get("options", {}))
    device = spec.get("device") or "cpu"
    return model.to(device) if device != "cpu" else model


def weights_sha256(model, weights: str | None) -> str | None:
    if weights and weights != "random" and Path(weights).is_file():
        from ..paths import file_sha256

        return file_sha256(weights)
    wid = str(model.weights_id or "")
    return wid if re.fullmatch(r"[0-9a-f]{64}", wid) else None


# --------------------------------------------------------------------------- one item
def _base_samples(model, item, cfg: dict) -> list[tuple[str, Sample]]:
    """(target name, Sample without method) for each target of the run, the target given by its kind
    (:meth:`famegui.targets.TargetKind.from_item`: a class kind reads an image's class label)."""
    from ..data.pipeline import prepare_for_model
    from ..targets import get_kind, register_kind, target_kinds

    for kind in cfg.get("kinds", ()):  # a kind registered in the parent only (a worker is a fresh process)
        if kind.name not in target_kinds():
            register_kind(kind)

    def load(p):
        return prepare_for_model(model, str(p), align=cfg["align"]).tensor

    if isinstance(item, ImageItem):
        targets = [(name, get_kind(target_kind(name, None, "classification")).from_item(model, item.label))
                   for name in cfg["targets"]]
        x = load(item.path)
        return [(name, Sample(model, x, t)) for name, t in targets]
    if isinstance(item, PairItem):
        x, ref, nm, same = load(item.a), load(item.b), None, item.same
    else:
        x, ref, nm, same = load(item.probe), load(item.mate), load(item.non_mate), True
    return [(name, Sample(model, x, get_kind(target_kind(name, same)).from_item(model, item.label), reference=ref,
                          non_mate=nm, threshold=cfg["threshold"], same=same, group=name))
            for name in cfg["targets"]]


def _row(key: str, index: int, label: str, method: str, target: str, metric: str, cfg: dict, **values) -> dict:
    row = {"item": key, "item_index": index, "label": label, "method": method, "target": target, "metric": metric,
           "auc": math.nan, "gain": math.nan, "flip": None, "curve": [], "reverse": [],
           "fractions": list(cfg["fractions"]), "score": "", "seconds": 0.0, "error": None, "map": None}
    row.update(values)
    return row


def _one_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0] if text else ''}".strip().rstrip(":")


def _method_rows(base: Sample, method: str, index: int, tname: str, head: tuple, cfg: dict, made: dict):
    """Rows of one method on one target, and its map (None for the random baseline or on error).
    ``made``: the maps of this item so far by (method, target kind), each with the seconds it took that no
    row has counted yet (a map computed in a batch, :func:`_fame_in_batches`): a map is computed once per
    kind."""
    started = time.perf_counter()
    earlier = 0.0
    try:
        if method == RANDOM:
            s = baseline(base, seed=index)
        elif (method, base.target.kind) in made:
            amap, earlier = made[method, base.target.kind]
            if isinstance(amap, MapError):
                return [_row(*head, method, tname, m, cfg, error=amap.text) for m in cfg["metrics"]], None
            made[method, base.target.kind] = (amap, 0.0)
            s = dataclasses.replace(base, method=method, params=dict(cfg["methods"][method]), amap=amap)
        else:
            s = compute_map(dataclasses.replace(base, method=method, params=dict(cfg["methods"][method])))
            made[method, base.target.kind] = (s.amap, 0.0)
        map_seconds = time.perf_counter() - started + earlier
        curves = evaluate([s], cfg["metrics"], fractions=cfg["fractions"], fill=cfg["fill"],
                          masks=cfg.get("masks", "rank"), batched=cfg.get("batched", True))
    except Exception as e:  # one bad method must not stop the item
        err = _one_line(e)
        return [_row(*head, method, tname, m, cfg, error=err) for m in cfg["metrics"]], None
    rel = None if method == RANDOM else rundir.map_path(index, method, tname)
    rows = []
    for c in curves:
        flip = c.extra.get("flip")
        rows.append(_row(*head, method, tname, c.metric, cfg, auc=float(c.auc), gain=float(c.gain),
                         flip=None if flip is None else float(flip), curve=[float(v) for v in c.scores],
                         reverse=[float(v) for v in c.extra.get("reverse", [])],
                         fractions=[float(f) for f in c.fractions], score=c.score_name,
                         seconds=round(map_seconds + float(c.extra.get("seconds", 0.0)), 4), map=rel))
    return rows, (rel, s.amap) if rel is not None else None


def explain_item(model, job: tuple, cfg: dict) -> tuple[int, list[dict], dict]:
    """(item index, rows, maps {relative path: array}) of one item: every method x target x metric."""
    return explain_block(model, [job], cfg)[0]


def explain_block(model, jobs: Sequence[tuple], cfg: dict) -> list[tuple[int, list[dict], dict]]:
    """:func:`explain_item` for a block of items; their FAME maps of pairs run as batches
    (:func:`_fame_in_batches`). The engines call this once per block."""
    loaded = []
    for index, key, item in jobs:
        try:
            loaded.append((index, key, item, _base_samples(model, item, cfg), None))
        except Exception as e:  # unreadable image, no face, unknown class: the item is an error, the run goes on
            loaded.append((index, key, item, None, _one_line(e)))
    made = _fame_in_batches(model, [bases for *_, bases, _err in loaded if bases is not None], cfg)
    return [_item_rows(index, key, item, bases, err, cfg, made.get(id(bases), {}))
            for index, key, item, bases, err in loaded]


def _fame_in_batches(model, items: list[list[tuple[str, Sample]]], cfg: dict) -> dict:
    """FAME maps of every pair target of ``items`` (each the base samples of one item), computed
    ``cfg["fame_batch"]`` rows at a time through the one explain path
    (:func:`famegui.explanation.explain_rows`); returns {id(item's bases): {("fame", kind): (map, seconds)}}.
    Nothing when FAME is not run, for classes, or with a batch of 1. A batch that fails gives each of its
    rows the error (recorded in the table), never a silent fallback."""
    from ..explanation import Row, explain_rows

    size = int(cfg.get("fame_batch") or 1)
    if "fame" not in cfg["methods"] or size < 2:
        return {}
    rows = []  # (item key, kind, sample): one row per (item, target kind)
    for bases in items:
        kinds = set()
        for _tname, base in bases:
            if base.target.needs_reference and base.target.kind not in kinds:
                kinds.add(base.target.kind)
                rows.append((id(bases), base.target.kind, base))
    out: dict = {}
    for start in range(0, len(rows), size):
        chunk = rows[start:start + size]
        try:
            made = explain_rows(model, [Row(s.x, s.target, s.reference) for *_, s in chunk], "fame",
                                cfg["methods"]["fame"], threshold=cfg["threshold"], batch=size, fatal="keep")
        except Exception as e:  # noqa: BLE001 - recorded in every row of the batch (the run goes on)
            made = [MapError(_one_line(e))] * len(chunk)
        for (owner, kind, _s), e in zip(chunk, made):
            out.setdefault(owner, {})["fame", kind] = (e, 0.0) if isinstance(e, MapError) else (e.map, e.info.seconds)
    return out


@dataclass(frozen=True)
class MapError:
    """A map that could not be computed in its batch: the rows of its item record this error."""

    text: str


def _item_rows(index: int, key: str, item, bases, err: str | None, cfg: dict, made: dict):
    head = (key, index, item.label)
    names = [RANDOM, *cfg["methods"]]
    if bases is None:
        rows = [_row(*head, m, t, metric, cfg, error=err)
                for m in names for t in cfg["targets"] for metric in cfg["metrics"]]
        return index, rows, {}
    rows, maps = [], {}
    for tname, base in bases:
        for m in names:
            got, amap = _method_rows(base, m, index, tname, head, cfg, made)
            rows += got
            if amap is not None:
                maps[amap[0]] = amap[1]
    return index, rows, maps


# --------------------------------------------------------------------------- the run
def resolve_methods(model, task: str, methods: Sequence[str], params: dict | None, iterations: int | None) -> dict:
    """{method: resolved parameters}; ``params``: {method: {name: value}}; ``iterations`` for those that have it."""
    from ..methods import get_method

    out = {}
    for name in methods:
        spec = get_method(name)
        if task not in spec.tasks:
            raise ValueError(f"{spec.label} does not support {task} targets")
        given = dict((params or {}).get(name, {}))
        if iterations is not None and any(p.name == "iterations" for p in spec.params):
            given["iterations"] = iterations
        out[name] = spec.resolve(given, task)
    return out


def run_kinds(task: str, targets: Sequence[str]) -> list:
    """The target kinds of the run targets ``targets`` of ``task`` (``decision``: e+'s and e-'s)."""
    from ..targets import get_kind

    names = [target_kind(t, same, task) for t in targets for same in (True, False)]
    return [get_kind(n) for n in dict.fromkeys(names)]


def _check_targets(protocol: Protocol, model, targets: Sequence[str] | None, metrics: Sequence[str]) -> list[str]:
    """The run targets (:func:`.presets.run_targets`: those the target kinds of the protocol's task declare)."""
    task = "classification" if protocol.kind == "images" else "verification"
    if protocol.kind == "images" and model.task != "classification":
        raise ValueError(f"{model.name} is an embedding model; an image protocol needs a classifier")
    if protocol.kind != "images" and model.task != "embedding":
        raise ValueError(f"{model.name} is a classifier; a {protocol.kind} protocol needs a face (embedding) model")
    known = run_targets(task)
    targets = list(targets or default_targets(task, metrics))
    bad = [t for t in targets if t not in known]
    if (bad or not targets) and protocol.kind == "images" and len(known) == 1:
        raise ValueError(f"an image protocol has the one target {next(iter(known))!r}")
    if bad or not targets:
        raise ValueError(f"targets of a{'n' if protocol.kind == 'images' else ''} {protocol.kind} protocol are "
                         f"{', '.join(known)}, got {', '.join(bad) or 'none'}")
    return targets


def _check_metrics(metrics: Sequence[str]) -> list[str]:
    known = metric_names(curves_only=True)
    bad = [m for m in metrics if m not in known]
    if bad or not metrics:
        raise ValueError(f"metrics must be curve metrics of the registry ({', '.join(known)}), "
                         f"got {', '.join(bad) or 'none'}")
    return list(metrics)


def run_config(protocol: Protocol, model, spec: dict, methods: dict, targets: list[str], metrics: list[str],
               fractions: Sequence[float], fill: str, threshold: float | None, engine: dict,
               masks: str = "rank", preset: str = "famegui", fame_batch: int = 1) -> dict:
    from ..export import package_versions

    return {"famegui_run": rundir.RUN_FORMAT, "protocol": protocol.describe(),
            "model": {**model.describe(), "weights_sha256": weights_sha256(model, spec.get("weights"))},
            "methods": methods, "targets": targets, "metrics": metrics, "preset": preset, "masks": masks,
            "fractions": [float(f) for f in fractions], "fill": fill, "threshold": threshold,
            "align": spec.get("align", True), "fame_batch": fame_batch, "engine": engine,
            "versions": package_versions(),
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds")}


def check_engine(engine: str) -> None:
    """``engine`` is one of :data:`.engines.ENGINES`, and for ``ray`` the ray extra is installed; else a
    one-line ValueError."""
    from . import engines

    if engine not in engines.ENGINES:
        raise ValueError(f"engine must be one of {', '.join(engines.ENGINES)}, got {engine!r}")
    if engine == "ray" and missing("ray"):
        raise ValueError(needs("the ray engine", "ray"))


def run_protocol(protocol: Protocol, model_spec: str | dict, weights: str | None = None, *,
                 methods: Sequence[str] = ("fame",), targets: Sequence[str] | None = None,
                 metrics: Sequence[str] = DEFAULT_METRICS, out_dir: str | Path, engine: str = "local",
                 workers: int = 1, iterations: int | None = None, method_params: dict | None = None,
                 device: str = "cpu", address: str | None = None, align: bool = True,
                 fractions: Sequence[float] = C.DEFAULT_FRACTIONS, fill: str | None = None,
                 masks: str | None = None, preset: str = "famegui", fame_batch: int | None = None,
                 batched: bool = True, command: Sequence[str] | None = None,
                 progress: Callable[[int, int], None] | None = None) -> RunSummary:
    """Explain and score every item of ``protocol`` into the run directory ``out_dir`` (resumable).

    ``model_spec``: a zoo name / file / entry point (with ``weights``), or a spec dict. ``preset``
    (:mod:`.presets`) gives ``fill``, ``masks``, the pair targets and method parameters that are not
    given explicitly. ``fame_batch``: FAME maps of pairs computed that many at a time in one batch
    (default :data:`FAME_BATCH` when FAME runs on pairs, else 1); the items are taken in fixed blocks of
    that size, so a resumed run recomputes a block whole and every block sees the same batch (the same
    float sums). ``batched=False`` scores each curve and flip share by its own forward passes (the path
    before :func:`.curves.curve_and_flip`; the same table, slower: for the benchmark and the equality test;
    recorded under ``engine`` in ``run.json``). ``command``: the command line to record in the run's
    provenance (default: this process's). ``progress(done, to_do)`` is called after each item written.
    Returns counts for the summary line.
    """
    from ..explanation import decision_threshold

    started = time.perf_counter()
    check_engine(engine)
    if workers < 1:
        raise ValueError(f"workers must be at least 1, got {workers}")
    spec = dict(model_spec) if isinstance(model_spec, dict) else {"model": model_spec, "weights": weights}
    spec.setdefault("device", device)
    spec["align"] = align
    chosen = get_preset(preset)
    fill, masks = fill or chosen.fill, masks or chosen.masks
    metrics = _check_metrics(metrics)
    model = load_spec(spec)
    targets = _check_targets(protocol, model, targets or chosen.targets, metrics)
    task = "classification" if protocol.kind == "images" else "verification"
    given = {m: {**chosen.method_params.get(m, {}), **(method_params or {}).get(m, {})} for m in methods}
    resolved = resolve_methods(model, task, [m for m in methods if m != RANDOM], given, iterations)
    threshold = decision_threshold(model) if task == "verification" else None
    fame_batch = _fame_batch(fame_batch, "fame" in resolved and task == "verification")
    engine_info = {"name": engine, "workers": workers, **({"address": address} if address else {}),
                   "evaluation": "batched" if batched else "per-step"}
    config = run_config(protocol, model, spec, resolved, targets, metrics, fractions, fill, threshold, engine_info,
                        masks, preset, fame_batch)
    cfg = {"methods": resolved, "targets": targets, "metrics": metrics, "fractions": [float(f) for f in fractions],
           "fill": fill, "masks": masks, "threshold": threshold, "align": align, "fame_batch": fame_batch,
           "batched": bool(batched)}
    cfg["kinds"] = run_kinds(task, targets)  # the target kinds, for workers that lack one (a plug-in's)
    del model  # the workers load their own
    with rundir.writer_lock(out_dir):  # one writer per folder: a second run into it is refused
        rundir.check_or_write_config(out_dir, config)
        rundir.write_items(out_dir, protocol)
        done, skipped, errors = _recorded(
            out_dir, str(spec.get("device") or "cpu"), engine_info, command,
            lambda stamps: _run_blocks(protocol, out_dir, fame_batch, spec, cfg, engine, workers, address,
                                       progress, stamps))
    return RunSummary(done, skipped, errors, time.perf_counter() - started, len(protocol))


def _fame_batch(given: int | None, pairs_with_fame: bool) -> int:
    """The FAME batch of a run: the given one (1 to 256), else :data:`FAME_BATCH` for FAME on pairs, else 1."""
    if given is None:
        return FAME_BATCH if pairs_with_fame else 1
    if not 1 <= int(given) <= 256:
        raise ValueError(f"fame batch must be between 1 and 256, got {given}")
    return int(given)


def _recorded(out_dir, device: str, engine_info: dict, command: Sequence[str] | None, compute: Callable):
    """``compute(stamps)`` as one session of the run's provenance (:mod:`.provenance`): recorded in
    ``run.json`` when it starts and again, with its workers and items, when it ends (or fails)."""
    from . import provenance

    record = provenance.session(device, engine_info, None if command is None else list(command))
    at = rundir.record_session(out_dir, record)
    stamps: list[dict] = []
    before = len(rundir.finished_keys(out_dir))
    try:
        return compute(stamps)
    finally:
        record = provenance.finish(record, len(rundir.finished_keys(out_dir)) - before, stamps)
        try:
            rundir.record_session(out_dir, record, at)
        except OSError as e:  # a full disk: the session stays recorded as started, the run's own error is said
            if e.errno not in rundir.FULL:
                raise


def _run_blocks(protocol: Protocol, out_dir, size: int, spec: dict, cfg: dict, engine: str, workers: int,
                address: str | None, progress: Callable[[int, int], None] | None,
                stamps: list | None = None) -> tuple[int, int, int]:
    """Compute the blocks of ``size`` items (fixed by index) that hold an unfinished item and write each
    unfinished item as it comes back (:class:`.rundir.RunWriter`: compacted as it goes and at the end);
    (items written, items already finished, items with errors)."""
    from . import engines

    finished = rundir.finished_keys(out_dir)
    todo = [i for i in range(len(protocol)) if protocol.key(i) not in finished]
    starts = sorted({i - i % size for i in todo})  # blocks with unfinished items, recomputed whole
    blocks = [[(i, protocol.key(i), protocol.items[i]) for i in range(b, min(b + size, len(protocol)))]
              for b in starts]
    done = errors = 0
    if not blocks:
        return done, len(protocol) - len(todo), errors
    results = engines.run_items(engine, blocks, spec, cfg, load=load_spec, work=explain_block,
                                workers=min(workers, len(blocks)), address=address, stamps=stamps,
                                failed=lambda job, message: [_item_rows(i, key, item, None, message, cfg, {})
                                                             for i, key, item in job])
    writer = rundir.RunWriter(out_dir)
    try:
        for block in results:
            for index, rows, maps in block:
                if protocol.key(index) in finished:
                    continue  # computed again only for its block's batch: the table keeps the first
                writer.add(index, rows, maps)
                done += 1
                errors += any(r["error"] for r in rows)
                if progress is not None:
                    progress(done, len(todo))
    finally:
        writer.close()
    return done, len(protocol) - len(todo), errors
