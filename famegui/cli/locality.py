"""``famegui locality``: how local the cells of each layer are (FAME's feature-map claim as a number)."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .common import CliError, add_model_args, load_model, model_spec, number


def add_locality(sub) -> None:
    p = sub.add_parser("locality", help="how much of a cell's FAME map lies under the cell, layer by layer",
                       description="FAME for a sample of cells of each layer on each image; per layer the share "
                                   "of the maps' mass inside the cell's footprint (and 2x / 4x it) and the radius "
                                   "that holds 50 %% / 90 %% of it. Writes locality.json/.md/.csv/.tex/.png to "
                                   "--out; an interrupted run resumes from the parts already there.")
    add_model_args(p)
    p.add_argument("--images", default=None, metavar="DIR|LIST",
                   help="a folder of images, or a text file with one image path per line (default: one bundled "
                        "sample photo per person)")
    p.add_argument("--layers", default="stages", metavar="stages|all|A,B",
                   help="the model's stages (default), every feature map, or layer names")
    p.add_argument("--cells", default="16", metavar="N|all", help="cells per layer, the same for every image")
    p.add_argument("--iterations", type=number(1, 100000, integral=True), default=100)
    p.add_argument("--blur", default=None, metavar="K,SIGMA",
                   help="measure the map after FAME's Gaussian blur (default: before it)")
    p.add_argument("--seed", type=number(0, 2 ** 31 - 1, integral=True), default=0, help="the cells' draw")
    p.add_argument("--engine", choices=("local", "ray"), default=None,
                   help="compute the (image, layer) parts in worker processes (local) or Ray actors, as a "
                        "protocol run does (default: in this process)")
    p.add_argument("--workers", type=number(1, 1024, integral=True), default=1,
                   help="processes (local) or actors (ray)")
    p.add_argument("--address", default=None, help="ray: the address of a running cluster (default: a local Ray)")
    p.add_argument("--out", required=True, metavar="DIR")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_locality)


def _images(spec: str | None) -> list[str]:
    from ..data.pairs import IMAGE_SUFFIXES, sample_identities

    if spec is None:
        return [str(photos[0]) for photos in sample_identities().values()]
    path = Path(spec)
    if path.is_dir():
        found = sorted(str(f) for f in path.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES and f.is_file())
        if not found:
            raise CliError(f"--images {spec}: no image files there ({', '.join(IMAGE_SUFFIXES)})")
        return found
    if path.is_file():
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as e:
            raise CliError(f"--images {spec}: not a readable list of paths ({e})") from None
        items = [ln.strip() for ln in lines if ln.strip() and not ln.lstrip().startswith("#")]
        base = path.resolve().parent
        out = [str(p if Path(p).is_absolute() else base / p) for p in items]
        missing = [p for p in out if not Path(p).is_file()]
        if missing:
            raise CliError(f"--images {spec}: {len(missing)} listed image(s) not found, e.g. {missing[0]}")
        if not out:
            raise CliError(f"--images {spec}: the list is empty")
        return out
    raise CliError(f"--images {spec}: no such folder or list file")


def _blur(text: str | None):
    if text is None:
        return None
    try:
        k, s = text.split(",")
        return int(k), float(s)
    except ValueError:
        raise CliError(f"--blur must be K,SIGMA (e.g. 25,5), got {text!r}") from None


def cmd_locality(args: argparse.Namespace) -> int:
    from ..evaluation.locality import locality

    cells = args.cells.strip().lower()
    if cells != "all" and not (cells.isdigit() and int(cells) >= 1):
        raise CliError(f"--cells must be 'all' or a whole number >= 1, got {args.cells!r}")
    layers = args.layers if args.layers in ("stages", "all") else [s for s in args.layers.split(",") if s]
    images = _images(args.images)
    blur = _blur(args.blur)
    model = load_model(args)
    bar = None
    if not args.quiet:
        from tqdm import tqdm

        bar = tqdm(total=1000, desc="locality", file=sys.stderr, disable=not sys.stderr.isatty(),
                   bar_format="{l_bar}{bar}| {elapsed}<{remaining}")
    try:
        result = locality(model, images, layers, cells if cells == "all" else int(cells), args.iterations,
                          blur=blur, seed=args.seed, out=args.out, engine=args.engine, workers=args.workers,
                          address=args.address, spec=model_spec(args) if args.engine else None,
                          progress=(lambda f: bar.update(int(1000 * f) - bar.n)) if bar is not None else None)
    except ValueError as e:
        raise CliError(str(e)) from None
    finally:
        if bar is not None:
            bar.close()
    written = result.save(args.out)
    print(result.table("md"), end="")
    if result.reused:
        print(f"({result.reused} image x layer parts reused from an earlier run)")
    print("wrote " + ", ".join(str(p) for p in written))
    return 0


PARSERS = {"locality": add_locality}
