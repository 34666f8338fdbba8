"""``famegui`` and ``famegui gui``: start the app (the default when no command is given)."""
from __future__ import annotations

import argparse


def add_gui(sub) -> None:
    g = sub.add_parser("gui", help="start the app (the default)")
    g.add_argument("--model", default=None)
    g.add_argument("--weights", default=None)
    g.add_argument("images", nargs="*")
    g.set_defaults(func=cmd_gui)


def cmd_gui(args: argparse.Namespace) -> int:
    """The window; it reports a missing display itself (one line, exit code 1)."""
    from ..gui.app import run_app

    return run_app(model=getattr(args, "model", None), weights=getattr(args, "weights", None),
                   images=getattr(args, "images", None) or [])


PARSERS = {"gui": add_gui}
