"""``famegui run`` (a protocol run into a run directory, resumable) and ``famegui protocol make`` (pair and
triplet lists from a folder of identity folders)."""
from __future__ import annotations

import argparse
import sys

from .common import CliError, add_method_param_flags, method_params


# --------------------------------------------------------------------------- parsers
def add_run(sub) -> None:
    r = sub.add_parser("run", help="explain and score every item of a protocol into a run directory (resumable)")
    r.add_argument("protocol", metavar="PROTOCOL",
                   help="'demo' (the bundled photos), 'demo-triplets', or a pair / triplet / image list file")
    r.add_argument("--model", default="dlib-resnet", help="zoo name, TorchScript file or package.module:callable")
    r.add_argument("--weights", default=None, help="weights file, or 'random'")
    r.add_argument("--device", default="cpu", help="cpu or cuda (Ray: one GPU per actor)")
    r.add_argument("--no-align", action="store_true", help="face models: centre crop instead of alignment")
    r.add_argument("--method", default="fame,gradcam,corrrise", metavar="A,B",
                   help="methods (default: fame,gradcam,corrrise); the random ranking is always run as the baseline")
    r.add_argument("--target", default=None, metavar="e+,e-",
                   help="pairs/triplets: e+, e-, decision (e+ for genuine, e- for impostor pairs); default: the "
                        "preset's (famegui: e+,e-, plus decision for accuracy metrics)")
    r.add_argument("--metric", default="deletion,insertion", metavar="A,B",
                   help="curve metrics of the evaluation registry (default: deletion,insertion)")
    r.add_argument("--preset", default="famegui", choices=("famegui", "fame-authors"),
                   help="evaluation choices: famegui's (mean fill, exact pixel counts, e+/e-) or the FAME authors' "
                        "(zero fill, percentile masks, every pair by e+, FAME epsilon 0.01); flags below win")
    r.add_argument("--fill-with", dest="fill_with", choices=("mean", "zero", "blur"), default=None,
                   help="what a removed pixel becomes (default: the preset's)")
    r.add_argument("--mask-rule", dest="mask_rule", choices=("rank", "percentile"), default=None,
                   help="rank: exactly P of the pixels; percentile: every pixel at or above the map's percentile "
                        "(default: the preset's)")
    r.add_argument("--limit", type=int, default=None, help="only the first N items of the protocol")
    r.add_argument("--engine", choices=("local", "ray"), default="local")
    r.add_argument("--workers", type=int, default=1, help="processes (local) or actors (ray)")
    r.add_argument("--fame-batch", dest="fame_batch", type=int, default=None, metavar="N",
                   help="FAME maps of pairs computed N at a time in one batch (default 4 with FAME on pairs, "
                        "else 1; part of the run's configuration: the batch changes float sums)")
    r.add_argument("--per-step", dest="per_step", action="store_true",
                   help="score every curve and flip share by its own forward passes (the slower path before "
                        "the one-scan curves; the same table, for benchmarks)")
    r.add_argument("--address", default=None, help="ray: the address of a running cluster (default: a local Ray)")
    r.add_argument("--out", required=True, metavar="RUN_DIR")
    r.add_argument("--quiet", action="store_true", help="no progress bar")
    add_method_param_flags(r)
    r.set_defaults(func=cmd_run)


def add_protocol(sub) -> None:
    p = sub.add_parser("protocol", help="make protocol files")
    psub = p.add_subparsers(dest="protocol_command", required=True)
    m = psub.add_parser("make", help="pairs (all genuine, as many impostors) and triplets from a gallery folder")
    m.add_argument("gallery", metavar="GALLERY_DIR", help="a folder with one sub-folder of photos per identity")
    m.add_argument("--out", required=True, metavar="FILE", help="the pair list to write")
    m.add_argument("--triplets", default=None, metavar="FILE", help="also write a triplet list")
    m.add_argument("--seed", type=int, default=0, help="seed of the impostor and non-mate draws")
    m.set_defaults(func=cmd_protocol_make)


# --------------------------------------------------------------------------- commands
def _protocol(args):
    from ..evaluation.protocol import demo_protocol, read_protocol

    if args.protocol in ("demo", "demo-pairs"):
        return demo_protocol("pairs", args.limit)
    if args.protocol == "demo-triplets":
        return demo_protocol("triplets", args.limit)
    return read_protocol(args.protocol).limited(args.limit)


def _per_method_params(args, names: list[str]) -> dict:
    """The registry flags given, for each method that has them."""
    from ..methods import get_method

    given = method_params(args)
    out = {}
    for name in names:
        known = {p.name for p in get_method(name).params}
        out[name] = {k: v for k, v in given.items() if k in known}
    return out


def _progress_bar(args, desc: str):
    if args.quiet or not sys.stderr.isatty():
        return None, None
    from tqdm import tqdm

    bar = tqdm(total=0, desc=desc, unit="item", file=sys.stderr, dynamic_ncols=True)

    def show(done: int, total: int) -> None:
        if bar.total != total:
            bar.reset(total=total)
            bar.update(done)
        else:
            bar.update(1)

    return show, bar


def cmd_run(args: argparse.Namespace) -> int:
    from ..evaluation.runner import run_protocol

    if args.limit is not None and args.limit < 1:
        raise CliError(f"--limit must be at least 1, got {args.limit}")
    protocol = _protocol(args)
    names = [m for m in args.method.split(",") if m]
    if not names:
        raise CliError("--method needs at least one method")
    targets = [t for t in args.target.split(",") if t] if args.target else None
    metrics = [m for m in args.metric.split(",") if m]
    show, bar = _progress_bar(args, protocol.name)
    try:
        summary = run_protocol(protocol, {"model": args.model, "weights": args.weights, "device": args.device},
                               methods=names, targets=targets, metrics=metrics, out_dir=args.out,
                               engine=args.engine, workers=args.workers, address=args.address,
                               method_params=_per_method_params(args, [n for n in names if n != "random"]),
                               align=not args.no_align, fill=args.fill_with, masks=args.mask_rule,
                               preset=args.preset, fame_batch=args.fame_batch, batched=not args.per_step,
                               command=getattr(args, "argv", None), progress=show)
    finally:
        if bar is not None:
            bar.close()
    print(f"{protocol.name}: {summary.line()} -> {args.out}")
    return 0


def cmd_protocol_make(args: argparse.Namespace) -> int:
    from ..evaluation.protocol import make_protocol

    n_pairs, n_trips = make_protocol(args.gallery, args.out, args.triplets, seed=args.seed)
    print(f"wrote {args.out} ({n_pairs} pairs)" + (f" and {args.triplets} ({n_trips} triplets)" if args.triplets
                                                   else ""))
    return 0


PARSERS = {"run": add_run, "protocol": add_protocol}
