"""Commands that look things up or measure them: ``layers``, ``models``, ``methods``, ``bench`` and ``verify``."""
from __future__ import annotations

import argparse
import json

from .common import CliError, add_model_args, load_model, number

JSON_HELP = "print one JSON document on stdout instead of text"


# --------------------------------------------------------------------------- parsers
def add_layers(sub) -> None:
    la = sub.add_parser("layers", help="list layers with output shapes")
    add_model_args(la)
    la.add_argument("--spatial", action="store_true", help="only (C,H,W) feature maps")
    la.add_argument("--json", action="store_true", help=JSON_HELP)
    la.set_defaults(func=cmd_layers)


def add_models(sub) -> None:
    p = sub.add_parser("models", help="list the model zoo: ready, can be fetched, or needs a file from you")
    p.add_argument("--index", metavar="FILE", help="a weights index over the shipped catalogue "
                   "(default: $FAMEGUI_WEIGHTS_INDEX)")
    p.add_argument("--json", action="store_true", help=JSON_HELP)
    p.set_defaults(func=cmd_models)


def add_methods(sub) -> None:
    p = sub.add_parser("methods", help="list the explanation methods and their parameters")
    p.add_argument("--json", action="store_true", help=JSON_HELP)
    p.set_defaults(func=cmd_methods)


def _method_names(text: str) -> list[str]:
    from ..methods import methods

    known = sorted(m.name for m in methods())
    names = [n.strip() for n in text.split(",") if n.strip()]
    bad = [n for n in names if n not in known]
    if bad:
        raise argparse.ArgumentTypeError(f"unknown method {bad[0]!r} (known: {', '.join(known)})")
    return names


def add_bench(sub) -> None:
    b = sub.add_parser("bench", help="time FAME iterations; prints one JSON line")
    add_model_args(b)
    b.add_argument("--layer", default=None, help="layer for the cell timings (default: an early layer; "
                   "--against-reference: an early and the default layer)")
    b.add_argument("--iterations", type=number(1, 100_000, integral=True), default=None,
                   help="FAME iterations (default 10; --against-reference: 500)")
    b.add_argument("--batch", type=number(1, 4096, integral=True), default=8)
    b.add_argument("--methods", nargs="?", type=_method_names, const=[], default=None, metavar="A,B",
                   help="instead: seconds per map for each method (default parameters) on the demo pair")
    b.add_argument("--against-reference", action="store_true",
                   help="instead: the plain reference loop (full network, fixed iterations, batch 1) against "
                        "famegui's fast path on the demo pairs and the cells of two layers; one JSON line per "
                        "measurement (time ratios and map correlations, measured side by side)")
    b.add_argument("--cells", type=number(1, 4096, integral=True), default=2,
                   help="--against-reference: cells per layer run by the (slow) reference loop")
    b.add_argument("--precision", choices=("fp32", "bf16", "fp16"), default="fp32",
                   help="--against-reference: also time the cells in this precision")
    b.set_defaults(func=cmd_bench)


def add_verify(sub) -> None:
    v = sub.add_parser("verify", help="compare two face photos")
    add_model_args(v)
    v.add_argument("image_a")
    v.add_argument("image_b")
    v.add_argument("--face", type=int, default=0)
    v.add_argument("--reference-face", type=int, default=0)
    v.add_argument("--no-align", action="store_true")
    v.add_argument("--pairs", default=None, help="labelled pair list: use its EER threshold")
    v.add_argument("--json", action="store_true", help=JSON_HELP)
    v.set_defaults(func=cmd_verify)


# --------------------------------------------------------------------------- commands
def cmd_layers(args: argparse.Namespace) -> int:
    model = load_model(args)
    rows = model.layers()
    if args.spatial:
        rows = [r for r in rows if r.is_spatial]
    if args.json:
        return _print_json({"model": model.name, "input_size": list(model.input_size), "task": model.task,
                            "default_layer": model.default_layer,
                            "layers": [{"name": r.name, "type": r.type, "shape": list(r.shape), "layout": r.layout,
                                        "spatial": r.is_spatial, "note": r.layout_note or None} for r in rows]})
    width = max((len(r.name) for r in rows), default=10)
    print(f"# {model.name}: input {model.input_size[0]}x{model.input_size[1]}, task {model.task}, "
          f"default layer {model.default_layer}")
    for r in rows:
        note = f"  ({r.layout_note})" if r.layout_note else ""
        print(f"{r.name:<{width}}  {r.type:<20} {'x'.join(map(str, r.shape))}{note}")
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    from ..models.zoo import model_catalogue

    rows = model_catalogue(args.index)
    if args.json:
        return _print_json({"models": [{"name": r.name, "family": r.family, "state": r.state or None,
                                        "ready": r.ready, "explainable": r.explainable, "download_bytes": r.size,
                                        "note": r.note} for r in rows]})
    width = max(len(r.name) for r in rows)
    marks = {"ready": "ready", "fetch": "fetch", "manual": "file"}
    for r in rows:
        mark = marks.get(r.state, "-") if r.explainable else "-"
        print(f"{r.name:<{width}}  {r.family:<12} {mark:<5}  {r.note}")
    print("also: timm:NAME --weights FILE (.safetensors/.pth, any timm architecture), FILE.onnx, "
          "FILE.pt (TorchScript), package.module:callable")
    return 0


def cmd_methods(args: argparse.Namespace) -> int:
    from ..methods import methods

    if args.json:
        return _print_json({"methods": [
            {"name": m.name, "label": m.label, "tasks": sorted(m.tasks), "output": m.output, "cost": m.cost,
             "description": m.description,
             "params": [{"name": p.name, "type": p.type.__name__, "default": p.default, "help": p.help,
                         "min": p.min, "max": p.max, "choices": list(p.choices) if p.choices else None}
                        for p in m.params]} for m in methods()]})
    for m in methods():
        ps = ", ".join(f"{p.name}={p.default}" for p in m.params)
        print(f"{m.name:<12} {m.label:<16} tasks: {','.join(sorted(m.tasks)):<32} output: {m.output:<6} "
              f"cost: {m.cost:<9} {ps}")
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from ..bench import bench_against_reference, bench_fame, bench_methods

    model = load_model(args)
    if args.layer is not None:
        _check_spatial_layer(model, args.layer)
    if args.methods is not None:
        for row in bench_methods(model, args.methods or None):
            print(json.dumps(row), flush=True)
        return 0
    if args.against_reference:
        layers = [args.layer] if args.layer else None
        for row in bench_against_reference(model, iterations=args.iterations or 500, layers=layers,
                                           ref_cells=args.cells, precision=args.precision):
            print(json.dumps(row), flush=True)
        return 0
    print(json.dumps(bench_fame(model, layer=args.layer, iterations=args.iterations or 10, batch=args.batch)))
    return 0


def _check_spatial_layer(model, layer: str) -> None:
    names = [info.name for info in model.layers()]
    if layer not in names:
        raise CliError(f"{model.name} has no layer {layer!r}; `famegui layers --spatial` lists its feature maps")
    shape = model.layer_info(layer).shape
    if len(shape) != 3:
        raise CliError(f"layer {layer!r} of {model.name} has output shape {tuple(shape)}, not a (C,H,W) feature "
                       "map; `famegui layers --spatial` lists the ones with cells")


def cmd_verify(args: argparse.Namespace) -> int:
    from ..evaluation.verification import compare_pair

    model = load_model(args)
    if model.task != "embedding":
        raise CliError(f"{model.name} is a classifier; verify needs a face (embedding) model")
    res = compare_pair(model, args.image_a, args.image_b, align=not args.no_align,
                       face_a=args.face, face_b=args.reference_face, pairs=args.pairs)
    if args.json:
        return _print_json(res.to_dict())
    print(res.summary())
    return 0


def _print_json(doc: dict) -> int:
    """``doc`` as one JSON document on stdout (NaN written as null, so that any JSON parser reads it)."""
    import math

    def clean(v):
        if isinstance(v, float) and not math.isfinite(v):
            return None
        if isinstance(v, dict):
            return {k: clean(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [clean(x) for x in v]
        return v

    print(json.dumps(clean(doc), indent=2, allow_nan=False))
    return 0


PARSERS = {"layers": add_layers, "models": add_models, "methods": add_methods, "bench": add_bench,
           "verify": add_verify}
