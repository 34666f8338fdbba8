"""``famegui explain`` (one map, written as an overlay PNG, a .npy and a JSON sidecar) and
``famegui reproduce`` (recompute an export from its sidecar)."""
from __future__ import annotations

import argparse
import sys

from .common import (
    CliError,
    add_input_args,
    add_method_param_flags,
    check_inputs,
    check_outputs,
    check_params,
    cli_progress,
    load_model,
    method_params,
    number,
    prepare_input,
    resolve_target,
)


def add_explain(sub) -> None:
    from ..core.render import COLORMAPS

    e = sub.add_parser("explain", help="compute an explanation and write an overlay")
    add_input_args(e, target_required=True)
    e.add_argument("--method", default="fame", help="explanation method (`famegui methods` lists them)")
    e.add_argument("--non-mate", default=None, metavar="IMG3",
                   help="a photo of another person: gweEBP then uses the triplet gain of Wang et al. "
                        "(PRL 2025) for e+")
    e.add_argument("--non-mate-face", type=number(0, 999, integral=True), default=0)
    add_method_param_flags(e)
    e.add_argument("--out", required=True, help="overlay PNG")
    e.add_argument("--save-map", default=None, help="raw map as float32 .npy")
    e.add_argument("--on-photo", action="store_true", help="draw on the full photo instead of the model input")
    e.add_argument("--opacity", type=number(0.0, 1.0), default=0.5, help="of the map over the image, 0 to 1")
    e.add_argument("--colormap", default="jet", choices=tuple(COLORMAPS))
    e.add_argument("--size", type=number(0, 8192, integral=True), default=800, metavar="PX",
                   help="long side of the overlay PNG in pixels (a figure for a paper; default 800; 0: the model "
                        "input's or the photo's own size); the .npy keeps the map as computed")
    e.add_argument("--no-sidecar", action="store_true", help="do not write OUT.json")
    e.add_argument("--quiet", action="store_true")
    e.set_defaults(func=cmd_explain)


def add_reproduce(sub) -> None:
    r = sub.add_parser("reproduce", help="recompute an export from its sidecar (checks that its PNG belongs to it)")
    r.add_argument("sidecar", help="the export's JSON sidecar, or its overlay PNG (the sidecar beside it is used)")
    r.add_argument("--out", default=None, help="overlay PNG (default: next to the sidecar, *.reproduced.png)")
    r.add_argument("--save-map", default=None)
    r.add_argument("--trust-entry-point", action="store_true",
                   help="allow a sidecar whose model is a Python entry point (package.module:callable): "
                        "that module is imported and run")
    r.set_defaults(func=cmd_reproduce)


def explain_outputs(args) -> dict:
    """What explain writes, by what the user calls it: checked together before any work."""
    from pathlib import Path

    side = None
    if not args.no_sidecar and args.out and args.out.strip():
        side = str(Path(args.out).with_suffix(".json"))
    return {"--out": args.out, "--save-map": args.save_map, "the sidecar (--out with .json)": side}


def cmd_explain(args: argparse.Namespace) -> int:
    from ..explanation import Row, explain_rows
    from ..methods import get_method
    from ..records import EmptyMapError
    from ..targets import task_of

    spec = get_method(args.method)  # unknown method -> one-line error listing them
    check_params(args, [spec])
    check_outputs(explain_outputs(args), [args.image, args.reference, args.non_mate, args.weights, args.model])
    check_inputs(args)
    model = load_model(args)
    probe = prepare_input(model, args, args.image, args.face)
    target = resolve_target(model, args, probe.tensor)
    task = task_of(target)
    if task not in spec.tasks:
        raise CliError(f"{spec.label} does not support {task} targets (it supports: {', '.join(sorted(spec.tasks))})")
    ref, non_mate = _pair_inputs(model, args, spec)
    try:
        [e] = explain_rows(model, [Row(probe, target, ref, non_mate)], spec.name, method_params(args),
                           weights=args.weights, progress=cli_progress(args.quiet))
    except EmptyMapError as err:
        raise CliError(f"{spec.label}: {err}; nothing written") from None
    written = e.save(args.out, save_map=args.save_map, on_photo=args.on_photo, opacity=args.opacity,
                     cmap=args.colormap, sidecar=not args.no_sidecar, size=args.size or None)
    if e.info.problem is not None:
        print(f"famegui: warning: {spec.label}: {e.info.problem}", file=sys.stderr)
    for note in filter(None, (probe.note, ref.note if ref else "")):
        print(f"note: {note}", file=sys.stderr)
    print(f"{spec.label} {target.label()}: {_run_summary(e.info.to_dict())}{e.info.seconds:.1f} s; "
          f"wrote {', '.join(map(str, written))}")
    return 0


def _pair_inputs(model, args, spec):
    """The prepared reference and non-mate (None where not given); a non-mate only for triplet gains."""
    from ..methods import methods

    ref = non_mate = None
    if args.reference is not None:
        ref = prepare_input(model, args, args.reference, args.reference_face)
    if args.non_mate is not None:
        if ref is None or not spec.uses_non_mate:
            users = ", ".join(m.name for m in methods() if m.uses_non_mate)
            raise CliError(f"--non-mate is for pair targets of methods with a triplet gain ({users})")
        non_mate = prepare_input(model, args, args.non_mate, args.non_mate_face)
    return ref, non_mate


def _run_summary(info: dict) -> str:
    """What the method reported about its run (FAME's loss and iterations, gweEBP's gain), for the summary."""
    extra = ""
    if "initial_loss" in info:
        extra = f"loss {info['initial_loss']:.4f} -> {info['final_loss']:.4f} in {info['iterations']} iterations, "
    if "gain" in info:
        extra += f"gain {info['gain']}, "
    return extra


def cmd_reproduce(args: argparse.Namespace) -> int:
    from ..report import load_sidecar, reproduce, sidecar_of

    side, _given = sidecar_of(args.sidecar)
    rec = load_sidecar(str(side))
    out = args.out if args.out is not None else str(side.with_name(side.stem + ".reproduced.png"))
    recorded = [r.get("path") for r in (rec.get("image"), rec.get("reference"), rec.get("non_mate")) if r]
    outputs = rec.get("outputs") or {}
    check_outputs({"--out": out, "--save-map": args.save_map},
                  [str(side), args.sidecar, *recorded, outputs.get("overlay"), outputs.get("map"),
                   str(side.with_suffix(".png")), rec["model"].get("weights_path")])
    done = reproduce(args.sidecar, out=out, save_map=args.save_map, trust_entry_point=args.trust_entry_point)
    for note in done.notes:
        print(f"note: {note}", file=sys.stderr)
    msg = f"wrote {done.out}"
    if done.diff is not None:
        msg += f"; max |difference| to the exported map: {done.diff:.2e}"
    print(msg)
    return 0


PARSERS = {"explain": add_explain, "reproduce": add_reproduce}
