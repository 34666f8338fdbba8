"""Timing FAME on this machine (``famegui bench``): numbers for notes, not for tests."""
from __future__ import annotations

import time

import torch

from .core.fame import FameParams, run_fame
from .models.wrapper import ModelWrapper
from .targets import Target, build_loss


def early_layer(model: ModelWrapper) -> str:
    """A shallow spatial layer: the first residual stage if there is one."""
    names = [layer.name for layer in model.spatial_layers()]
    for cand in ("layer1", "stage1", "features.4", "features.3"):
        if cand in names:
            return cand
    top = [n for n in names if "." not in n] or names
    return top[len(top) // 3]


def _ms_per_iteration(model, x, targets, reference, iterations: int) -> float:
    loss = build_loss(model, targets, reference)
    params = FameParams(iterations=iterations)
    run_fame(x, loss, FameParams(iterations=2))  # warm-up
    t0 = time.perf_counter()
    run_fame(x, loss, params, every=iterations)
    return (time.perf_counter() - t0) * 1000.0 / iterations


def bench_fame(model: ModelWrapper, layer: str | None = None, iterations: int = 10, batch: int = 8) -> dict:
    """ms per FAME iteration: one cell, per sample for a batch of cells, and the full-network loss."""
    layer = layer or early_layer(model)
    _, fh, fw = model.layer_info(layer).shape
    h, w = model.input_size
    gen = torch.Generator().manual_seed(0)
    x1 = torch.rand(1, 3, h, w, generator=gen).to(model.device)
    cells = [Target("cell", layer=layer, cell=((i * 7) % fh, (i * 3) % fw)) for i in range(batch)]
    one = _ms_per_iteration(model, x1, cells[:1], None, iterations)
    many = _ms_per_iteration(model, x1.expand(batch, -1, -1, -1).contiguous(), cells, None, iterations) / batch
    if model.task == "embedding":
        with torch.no_grad():
            ref = model(x1.flip(3))
        full_target = [Target("similar")]
    else:
        ref = None
        with torch.no_grad():
            full_target = [Target("class", class_index=int(model(x1).argmax()))]
        ref = None
    full = _ms_per_iteration(model, x1, full_target, ref, iterations)
    return {
        "model": model.name, "input": f"{h}x{w}", "device": str(model.device), "threads": torch.get_num_threads(),
        "layer": layer, "layer_shape": list(model.layer_info(layer).shape), "iterations": iterations,
        "ms_per_iter_cell": round(one, 2), "batch": batch, "ms_per_iter_per_sample_batch": round(many, 2),
        "ms_per_iter_full_network": round(full, 2), "full_network_loss": full_target[0].kind,
        "est_s_500_iter_cell": round(one * 500 / 1000.0, 2),
    }


def bench_methods(model: ModelWrapper, names: list[str] | None = None) -> list[dict]:
    """Seconds per map for every method on one demo pair (faces) or one sample photo (classifiers)."""
    from .data.pairs import demo_pairs
    from .data.pipeline import prepare_for_model
    from .methods import methods, run_method
    from .models.thresholds import default_cosine_threshold

    genuine, _ = demo_pairs()
    probe = prepare_for_model(model, str(genuine.a)).tensor
    if model.task == "embedding":
        ref = prepare_for_model(model, str(genuine.b)).tensor
        task, target = "verification", Target("similar")
    else:
        ref = None
        with torch.no_grad():
            target = Target("class", class_index=int(model(probe).argmax()))
        task = "classification"
    rows = []
    for spec in methods(task):
        if names and spec.name not in names:
            continue
        t0 = time.perf_counter()
        run_method(spec.name, model, probe, target, {}, reference=ref,
                   threshold=default_cosine_threshold(model) if ref is not None else None)
        rows.append({"method": spec.name, "task": task, "cost": spec.cost,
                     "seconds": round(time.perf_counter() - t0, 3)})
    return rows
