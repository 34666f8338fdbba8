"""``famegui report RUN_DIR [RUN_B]``: the papers' table (mean AUC, 95 % CI, best method, random baseline) of a run;
with a second run of the same protocol, both side by side and the agreement of their maps."""
from __future__ import annotations

import argparse
import sys

from .common import CliError


# --------------------------------------------------------------------------- parsers
def add_report(sub) -> None:
    r = sub.add_parser("report", help="the table of a protocol run: mean AUC with 95%% CI per method, "
                                      "best marked, random baseline, errors")
    r.add_argument("run_dir", metavar="RUN_DIR", help="a run directory (run.json, results/part-*.parquet)")
    r.add_argument("other_run", nargs="?", default=None, metavar="RUN_B",
                   help="a second run of the same protocol (another model or settings): both runs' means side by "
                        "side and the per-item agreement of their maps (Spearman, top-10 %% overlap)")
    r.add_argument("--format", choices=("md", "csv", "latex"), default="md",
                   help="markdown (default), CSV or a LaTeX tabular")
    r.add_argument("--plot", default=None, metavar="CURVES.png", help="also draw the mean curves into a PNG")
    r.add_argument("--out", default=None, metavar="FILE", help="write the table here instead of printing it")
    r.add_argument("--regions", action="store_true",
                   help="face models: the mean share of each method x target's maps per face region (eyes, brows, "
                        "mouth, nose, cheeks, forehead, face, outside) with its 95%% CI; --plot draws the bars")
    r.add_argument("--by", default=None, metavar="COLUMN[,COLUMN]",
                   help="split every table by item columns of the run's list (a header such as "
                        "pathA,pathB,label,group names them; 'label' splits genuine / impostor): one table per group")
    r.set_defaults(func=cmd_report)


# --------------------------------------------------------------------------- commands
def warn_files(problems: list[str]) -> None:
    """One line on stderr per file of a run folder that was left out; the report is made of the rest."""
    for line in problems:
        print(f"famegui: warning: {line}", file=sys.stderr)


def cmd_report(args: argparse.Namespace) -> int:
    from ..evaluation import report_tables as rt
    from ..export import atomic_write_bytes, write_png

    by = [c.strip() for c in args.by.split(",") if c.strip()] if args.by else []
    if args.by is not None and not by:
        raise CliError("--by needs a column name, e.g. --by group")
    if args.other_run is not None:
        if args.regions:
            raise CliError("--regions reports one run: give one run folder")
        if by:
            raise CliError("--by splits one run's tables: give one run folder")
        return _compare(args)
    if args.regions:
        return _regions(args, by)
    run = rt.load_run(args.run_dir)
    warn_files(run.problems)
    rep = rt.summarise(run)
    if not rep.rows:
        raise CliError(f"{args.run_dir} has no result rows")
    try:
        text = rt.render_by(run, by, args.format) if by else rt.render(rep, args.format)
    except ValueError as e:
        raise CliError(str(e)) from None
    if args.plot:
        write_png(args.plot, rt.curves_picture(run))
    made = rt.provenance_text(run.meta, args.format)
    if args.format != "csv":
        text += made  # under the table; a CSV stays one table, its provenance goes to stderr
    elif made:
        print(made, end="", file=sys.stderr)
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


def _regions(args: argparse.Namespace, by: list[str]) -> int:
    from ..evaluation.regions import regions_chart, render_regions, run_regions
    from ..export import atomic_write_bytes, write_png

    problems: list[str] = []
    try:
        rows = run_regions(args.run_dir, by, problems)
    except ValueError as e:
        raise CliError(str(e)) from None
    warn_files(problems)
    if not rows:
        raise CliError(f"{args.run_dir} holds no maps to measure")
    text = render_regions(rows, args.format)
    if args.out:
        atomic_write_bytes(args.out, text.encode("utf-8"))
        print(f"wrote {args.out}")
    else:
        sys.stdout.write(text)
    if args.plot:
        write_png(args.plot, regions_chart(rows))
        print(f"wrote {args.plot}")
    return 0


def _compare(args: argparse.Namespace) -> int:
    from ..evaluation.compare_runs import compare_runs
    from ..export import atomic_write_bytes

    if args.plot:
        raise CliError("--plot draws one run's curves: give one run folder")
    try:
        comparison = compare_runs(args.run_dir, args.other_run)
    except ValueError as e:
        raise CliError(str(e)) from None
    warn_files(comparison.problems)
    if not comparison.tables and not comparison.agreement:
        raise CliError(f"{args.run_dir} and {args.other_run} share no method x target x metric")
    text = comparison.render(args.format)
    if args.out:
        atomic_write_bytes(args.out, text.encode("utf-8"))
        print(f"wrote {args.out}")
    else:
        sys.stdout.write(text)
    return 0


PARSERS = {"report": add_report}
