"""Timing FAME on this machine (``famegui bench``): numbers for notes, not for tests."""
from __future__ import annotations

import time
from collections.abc import Iterator

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
    from .explanation import decision_threshold
    from .methods import methods, run_method

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
                   threshold=decision_threshold(model) if ref is not None else None)
        rows.append({"method": spec.name, "task": task, "cost": spec.cost,
                     "seconds": round(time.perf_counter() - t0, 3)})
    return rows


# --------------------------------------------------------------------------- against the reference loop
def reference_loop(model: ModelWrapper, x: torch.Tensor, loss, iterations: int = 500,
                   step: float = 1.0 / 255.0) -> torch.Tensor:
    """The plain loop of the FAME paper (Eq. 3), one sample, fixed iterations, no early stop:
    x_{t+1} = x_t - eta * g_t / max|g_t|. ``loss`` maps (1,3,H,W) to a scalar. Returns x_T."""
    xt = x.detach().clone()
    for _ in range(iterations):
        xt.requires_grad_(True)
        (g,) = torch.autograd.grad(loss(xt), xt)
        xt = (xt - step * g / g.abs().max().clamp_min(1e-30)).detach()
    return xt


def reference_map(x0: torch.Tensor, xt: torch.Tensor, kernel: int, sigma: float) -> torch.Tensor:
    """Eq. 4 and its post-processing: |gray(x_T) - gray(x)|, / max, Gaussian blur, min-max. (H,W)."""
    from torchvision.transforms.functional import gaussian_blur

    w = torch.tensor([0.2989, 0.587, 0.114], device=x0.device).view(1, 3, 1, 1)
    d = ((xt * w).sum(1) - (x0 * w).sum(1)).abs()
    d = d / d.max().clamp_min(1e-30)
    d = gaussian_blur(d.unsqueeze(1), [kernel, kernel], [sigma, sigma])[0, 0]
    return (d - d.min()) / (d.max() - d.min()).clamp_min(1e-30)


def reference_losses(model: ModelWrapper, reference: torch.Tensor | None = None):
    """The reference's losses on the full network: a cell through a hook on its layer (the
    network runs to its end, as the original does), L+ = cos and L- = 1 - cos."""
    def cell(layer: str, rc: tuple[int, int]):
        def loss(x):
            seen = []
            handle = model.get_layer(layer).register_forward_hook(lambda _m, _i, out: seen.append(out))
            try:
                model(x)
            finally:
                handle.remove()
            return seen[0][0, :, rc[0], rc[1]].abs().sum()
        return loss

    def cos(x):
        e = model(x)
        return torch.nn.functional.cosine_similarity(e, reference.expand_as(e), dim=1)[0]

    return cell, (lambda x: cos(x)), (lambda x: 1.0 - cos(x))


def _timed(fn, *args, **kwargs):
    t0 = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - t0


def _corr(a, b) -> float:
    from .core.fame import map_correlation

    a = torch.as_tensor(a, dtype=torch.float32).reshape(1, -1)
    b = torch.as_tensor(b, dtype=torch.float32).reshape(1, -1)
    return round(float(map_correlation(a, b)[0]), 4)


def plain_model(model: ModelWrapper) -> ModelWrapper:
    """The model as a plain PyTorch script runs it (the authors' code included): weights in PyTorch's
    default memory layout, not the channels-last layout famegui keeps for speed."""
    plain = model.clone()
    plain.set_layout(channels_last=False)
    return plain


def _fame_params(model, task: str, params: dict):
    from .methods import get_method
    from .methods.fame import fame_params_for

    return fame_params_for(model, get_method("fame").resolve(params, task))


def bench_pairs_against_reference(model: ModelWrapper, iterations: int = 500, fast: dict | None = None,
                                  plain: ModelWrapper | None = None, full: bool = True) -> list[dict]:
    """Per demo pair and sign: the reference loop's time and map (on ``plain``, see :func:`plain_model`)
    against famegui's fast path (``fast``: the GUI's settings by default) and, with ``full``, the same path
    without the convergence stop; then e+/e- in one batch against both reference runs."""
    from .data.pairs import demo_pairs
    from .data.pipeline import prepare_for_model
    from .methods.fame import FAST_PARAMS, explain_fame, explain_fame_pair

    fast = dict(FAST_PARAMS if fast is None else fast, iterations=iterations)
    plain = plain if plain is not None else plain_model(model)
    rows = []
    for pair in demo_pairs():
        x = prepare_for_model(model, str(pair.a)).tensor.to(model.device)
        y = prepare_for_model(model, str(pair.b)).tensor.to(model.device)
        with torch.no_grad():
            ref_emb = model(y).detach()
        _, plus, minus = reference_losses(plain, ref_emb)
        fp = _fame_params(model, "verification", fast)
        ref_maps, ref_total = [], 0.0
        for sign, loss, kind in (("e+", plus, "similar"), ("e-", minus, "dissimilar")):
            xt, t_ref = _timed(reference_loop, plain, x, loss, iterations)
            ref_maps.append(reference_map(x, xt, fp.blur_kernel, fp.blur_sigma))
            ref_total += t_ref
            runs = [("pair", fp)]
            if full and fp.converge_tol is not None:  # also every iteration: the loop's own speed-up
                runs.append(("pair-all-iterations", _fame_params(model, "verification",
                                                                  dict(fast, converge_tol=None))))
            for bench, params in runs:
                res, t_fast = _timed(explain_fame, model, x, Target(kind), params, reference=y, every=iterations)
                rows.append({"bench": bench, "pair": "genuine" if pair.same else "impostor", "map": sign,
                             "reference_s": round(t_ref, 3), "fast_s": round(t_fast, 3),
                             "time_ratio": round(t_fast / t_ref, 3), "iterations": int(res.iterations[0]),
                             "corr_with_reference": _corr(res.maps[0], ref_maps[-1])})
        both, t_both = _timed(explain_fame_pair, model, x, y, fp, every=iterations)
        rows.append({"bench": "pair-batch", "pair": "genuine" if pair.same else "impostor", "map": "e+ and e-",
                     "reference_s": round(ref_total, 3), "fast_s": round(t_both, 3),
                     "time_ratio": round(t_both / ref_total, 3), "iterations": both.iterations.tolist(),
                     "corr_with_reference": [_corr(both.maps[i], ref_maps[i]) for i in range(2)]})
    return rows


def _spread_cells(fh: int, fw: int, n: int) -> list[tuple[int, int]]:
    """n cells spread over the map: the middle, then corners and edges."""
    cand = [(fh // 2, fw // 2), (0, 0), (fh - 1, fw - 1), (0, fw - 1), (fh - 1, 0), (fh // 2, 0)]
    out = list(dict.fromkeys(cand))
    return out[:max(1, n)]


def bench_cells_against_reference(model: ModelWrapper, layer: str, iterations: int = 500, ref_cells: int = 2,
                                  precision: str = "fp32", plain: ModelWrapper | None = None) -> dict:
    """All-cells throughput: the reference loop on ``ref_cells`` cells (full network, batch 1, on ``plain``)
    against one batch of famegui's sheet (batched, cropped, fixed iterations), maps compared on the shared
    cells."""
    from .data.pairs import demo_pairs
    from .data.pipeline import prepare_for_model
    from .methods.fame import cells_batch_size, explain_fame

    x = prepare_for_model(model, str(demo_pairs()[0].a)).tensor.to(model.device)
    _, fh, fw = model.layer_info(layer).shape
    sample = _spread_cells(fh, fw, ref_cells)
    plain = plain if plain is not None else plain_model(model)
    cell_loss_of, _, _ = reference_losses(plain)
    fp = _fame_params(model, "cell", {"iterations": iterations, "crop": True, "precision": precision})
    ref_maps, t_ref = [], 0.0
    for rc in sample:
        xt, t = _timed(reference_loop, plain, x, cell_loss_of(layer, rc), iterations)
        ref_maps.append(reference_map(x, xt, fp.blur_kernel, fp.blur_sigma))
        t_ref += t
    batch = max(len(sample), min(fh * fw, cells_batch_size(model, layer, crop=True)))
    rest = [(r, c) for r in range(fh) for c in range(fw) if (r, c) not in sample]
    cells = sample + rest[:batch - len(sample)]
    targets = [Target("cell", layer=layer, cell=rc) for rc in cells]
    explain_fame(model, x, targets[:1], _fame_params(model, "cell", {"iterations": 2, "crop": True}))  # warm-up
    res, t_fast = _timed(explain_fame, model, x, targets, fp, every=iterations)
    ref_per_cell, fast_per_cell = t_ref / len(sample), t_fast / len(cells)
    return {"bench": "cells", "layer": layer, "cells_in_layer": fh * fw, "batch": len(cells),
            "crop": list(res.window.size) if res.window is not None else None, "precision": precision,
            "reference_s_per_cell": round(ref_per_cell, 3), "fast_s_per_cell": round(fast_per_cell, 3),
            "throughput_ratio": round(ref_per_cell / fast_per_cell, 2),
            "corr_with_reference": [_corr(res.maps[i], ref_maps[i]) for i in range(len(sample))],
            "sheet_estimate_s": round(fast_per_cell * fh * fw, 1)}


def bench_against_reference(model: ModelWrapper, iterations: int = 500, layers: list[str] | None = None,
                            ref_cells: int = 2, precision: str = "fp32") -> Iterator[dict]:
    """`famegui bench --against-reference`: pairs (faces) then the cells of an early and the default layer
    (and again in ``precision`` when it is not fp32). The reference loop runs on the model as a plain script
    holds it (:func:`plain_model`); famegui's path on the model as famegui holds it."""
    plain = plain_model(model)
    yield {"bench": "setup", "model": model.name, "device": str(model.device), "threads": torch.get_num_threads(),
           "iterations": iterations, "reference_layout": "PyTorch default (contiguous)",
           "famegui_layout": "channels-last"}
    if model.task == "embedding":
        yield from bench_pairs_against_reference(model, iterations, plain=plain)
    layers = layers or list(dict.fromkeys([early_layer(model), model.default_layer]))
    for layer in layers:
        yield bench_cells_against_reference(model, layer, iterations, ref_cells, plain=plain)
        if precision != "fp32":
            yield bench_cells_against_reference(model, layer, iterations, ref_cells, precision, plain=plain)
