"""famegui's command line: the GUI by default, and headless commands on the same code path.

    famegui                       start the app on the embedded face model
    famegui explain ...           compute a map and write an overlay PNG (+ .npy, + sidecar)
    famegui layers --model M      list layers with output shapes
    famegui bench --model M       time FAME iterations (one JSON line); --methods: every method
    famegui verify --model M A B  cosine, distance, threshold and the decision
    famegui reproduce SIDECAR     recompute an export from its JSON sidecar
    famegui models                list the model zoo
    famegui methods               list the explanation methods and their parameters
    famegui sanity ...            randomisation sanity check (Adebayo et al.) for one or more methods
    famegui faithfulness ...      metrics of the evaluation registry (deletion / insertion curves and their
                                  areas, the hiding game), for one image, one pair or a pair list
    famegui run PROTOCOL ...      every map and metric over a pair / triplet / image list into a run folder
                                  (resumable; local worker processes or Ray)
    famegui report RUN_DIR        the papers' tables of a run (mean, 95% CI, best marked, random baseline)
    famegui protocol make DIR     genuine / impostor pairs and triplets from a folder of identities

One module per command group; each has an ``add_<command>(sub)`` per subcommand (it registers the
subparser and sets ``func``, the command function) and lists them in ``PARSERS``; a new command
group is one module here, imported and listed in ``_MODULES``:

- :mod:`.launch`: gui
- :mod:`.explain`: explain, reproduce
- :mod:`.info`: layers, models, methods, bench, verify;  :mod:`.fetch`: fetch (the one download)
- :mod:`.evaluate`: sanity, faithfulness;  :mod:`.locality`: locality
- :mod:`.run`: run, protocol make;  :mod:`.report`: report
- :mod:`.common`: what they share (flags, model and target resolution, :class:`CliError`, error text)

Heavy modules (torch, the methods, Qt) are imported inside the command functions.
"""
from __future__ import annotations

import argparse
import sys
import warnings

from . import evaluate, explain, fetch, info, launch, locality, report, run
from .common import (
    EXIT_CHECK_FAILED,
    EXIT_ERROR,
    EXIT_INTERNAL,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_USAGE,
    CliError,
    Parser,
    one_line,
)

__all__ = ["main", "build_parser", "CliError", "EXIT_OK", "EXIT_ERROR", "EXIT_USAGE", "EXIT_CHECK_FAILED",
           "EXIT_INTERNAL", "EXIT_INTERRUPTED"]

_MODULES = (launch, explain, info, fetch, evaluate, locality, report, run)
# subcommand -> the function that adds its subparser (and sets ``func``, the command to run)
PARSERS = {name: add for module in _MODULES for name, add in module.PARSERS.items()}
# the order of `famegui --help`; a command not listed here follows, in the order of _MODULES
ORDER = ("gui", "explain", "reproduce", "layers", "models", "fetch", "methods", "bench", "sanity", "faithfulness",
         "verify")


def build_parser() -> argparse.ArgumentParser:
    p = Parser(prog="famegui", description="See what a convolutional network looks at.")
    from ..version import VERSION

    p.add_argument("--version", action="version", version=f"famegui {VERSION}")
    p.add_argument("--debug", action="store_true", help="show full tracebacks")
    sub = p.add_subparsers(dest="command")
    for name in ORDER + tuple(n for n in PARSERS if n not in ORDER):
        PARSERS[name](sub)
    return p


# library warnings that say nothing to a user of the command line (the deprecation of torch.jit, which
# famegui uses only to read TorchScript files; Pillow's notes on damaged metadata, which images.py reports)
QUIET_WARNINGS = ("is deprecated. Please switch to", "TypedStorage is deprecated", "EXIF", "Metadata Warning",
                  "DecompressionBombWarning", "weights_only")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as e:  # --help (0), or a usage error already printed as one line (2)
        return e.code if isinstance(e.code, int) else EXIT_ERROR
    if args.command in (None, "gui"):
        return launch.cmd_gui(args)
    args.argv = ["famegui", *argv]  # the command as typed, for the provenance of what it writes
    with warnings.catch_warnings(record=True) as caught:  # shown after the result, never before an error
        code = _run(args)
    _show_warnings(caught, code, args.debug)
    return code


def _show_warnings(caught, code: int, debug: bool) -> None:
    """Library warnings of a command: none after an error (its one line is the message), the ones that mean
    something to the user after a success, each as one ``famegui: note:`` line; all of them with --debug."""
    seen = set()
    for w in caught:
        text = str(w.message).strip().splitlines()[0] if str(w.message).strip() else w.category.__name__
        quiet = any(q in text or q == w.category.__name__ for q in QUIET_WARNINGS)
        if text in seen or not (debug or (code == 0 and not quiet)):
            continue
        seen.add(text)
        print(f"famegui: note: {w.category.__name__}: {text}", file=sys.stderr)


def _run(args) -> int:
    from ..core.fame import Cancelled
    from ..data.images import ImageLoadError
    from ..export import ExportError
    from ..models.wrapper import ModelLoadError

    try:
        return args.func(args)
    except KeyboardInterrupt:
        print("famegui: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # output piped into e.g. `head`, which stopped reading
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK
    except (CliError, ModelLoadError, ImageLoadError, ExportError, Cancelled, ValueError, KeyError,
            OSError, MemoryError) as e:
        if args.debug:
            raise
        if isinstance(e, MemoryError):
            print("famegui: error: not enough memory for this command", file=sys.stderr)
        else:
            print(f"famegui: error: {one_line(e)}", file=sys.stderr)
        return EXIT_ERROR
    except Exception as e:  # last resort: still one line, never a traceback unless asked
        if args.debug:
            raise
        print(f"famegui: internal error: {type(e).__name__}: {one_line(e)} (rerun with --debug for details)",
              file=sys.stderr)
        return EXIT_INTERNAL
