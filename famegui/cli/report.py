"""``famegui report RUN_DIR``: the papers' table (mean AUC, 95 % CI, best method, random baseline) of a run."""
from __future__ import annotations

import argparse
import sys

from .common import CliError


# --------------------------------------------------------------------------- parsers
def add_report(sub) -> None:
    r = sub.add_parser("report", help="the table of a protocol run: mean AUC with 95%% CI per method, "
                                      "best marked, random baseline, errors")
    r.add_argument("run_dir", metavar="RUN_DIR", help="a run directory (run.json, results/part-*.parquet)")
    r.add_argument("--format", choices=("md", "csv", "latex"), default="md",
                   help="markdown (default), CSV or a LaTeX tabular")
    r.add_argument("--plot", default=None, metavar="CURVES.png", help="also draw the mean curves into a PNG")
    r.add_argument("--out", default=None, metavar="FILE", help="write the table here instead of printing it")
    r.set_defaults(func=cmd_report)


# --------------------------------------------------------------------------- commands
def cmd_report(args: argparse.Namespace) -> int:
    from ..evaluation import report_tables as rt
    from ..export import atomic_write_bytes, write_png

    run = rt.load_run(args.run_dir)
    rep = rt.summarise(run)
    if not rep.rows:
        raise CliError(f"{args.run_dir} has no result rows")
    text = rt.render(rep, args.format)
    if args.plot:
        write_png(args.plot, rt.curves_picture(run))
    if args.out:
        atomic_write_bytes(args.out, text.encode("utf-8"))
        print(f"wrote {args.out} ({len(rep.rows)} rows, {len(rep.errors)} errors)")
    else:
        sys.stdout.write(text)
    if args.format == "csv" and rep.errors:  # the CSV is one table: the errors section goes to stderr
        print(f"famegui: {len(rep.errors)} item(s) failed:", file=sys.stderr)
        for e in rep.errors:
            print(f"  {e.item} / {e.method} / {e.target} / {e.metric}: {e.message}", file=sys.stderr)
    if args.plot:
        print(f"wrote {args.plot}")
    return 0


PARSERS = {"report": add_report}
