"""``python -m copal_exp.report SWEEP_DIR``: the paper-style comparison table from local result files.

Reads every ``results.json`` under the directory (a multirun sweep, or any folder of jobs), prints a
Markdown table of a-bwt, m-bwt, a-ppl, m-ppl per method (``WS`` where the masks never changed after
step 1, as in the paper's Table 1), writes it as Markdown, CSV and LaTeX, and draws the perplexity
matrices as a heatmap PNG — into the sweep directory, or into ``--out DIR``. On a sweep that cannot be
written (a read-only share, another user's folder) without ``--out`` the table is still printed.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from copal_exp.errors import fail
from copal_exp.io.results import RESULTS_FILE
from copal_exp.protocol.jobdir import unwritable
from copal_exp.reporting.kinds import REPORT_KINDS
from copal_exp.reporting.runs import collect
from copal_exp.reporting.tables import write_table


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m copal_exp.report", description=__doc__.splitlines()[0])
    parser.add_argument("sweep", type=Path, help="a directory holding results.json files (searched recursively)")
    parser.add_argument("--kind", default="comparison", choices=list(REPORT_KINDS),
                        help="which table or figure of the paper to build (default: the comparison table + heatmap)")
    parser.add_argument("--no-figures", action="store_true", help="skip the figure (the heatmap PNG of the comparison)")
    parser.add_argument("--out", type=Path, help="where to write the table and figure files (default: the sweep directory)")
    args = parser.parse_args(argv)
    if not args.sweep.exists():
        fail(f"{args.sweep}: no such directory (give a sweep or job directory holding {RESULTS_FILE} files)")
    if not args.sweep.is_dir():
        fail(f"{args.sweep} is a file: give the directory that holds it (e.g. {args.sweep.parent})")
    skipped: list[tuple[str, str]] = []
    runs = collect(args.sweep, skipped=skipped)
    if skipped:
        print(f"skipped {len(skipped)} job(s):")
        for where, why in skipped:
            print(f"  {where}: {why}")
    if not runs:
        fail(f"no complete {RESULTS_FILE} under {args.sweep}")
    out = args.out or args.sweep
    blocked = unwritable(out)
    if blocked is not None and args.out is not None:
        fail(f"--out {args.out}: {blocked} cannot be written; give a folder you can write")
    if blocked is None:
        out.mkdir(parents=True, exist_ok=True)
    else:
        out = None
    kind = REPORT_KINDS[args.kind]
    frame = kind.table(runs)
    if frame.empty and kind.empty:
        fail(kind.empty.format(sweep=args.sweep))
    print(write_table(frame, out, kind.stem, skipped, runs))
    if kind.note:
        print(kind.note)
    if kind.figure is not None and not args.no_figures and out:
        drawn = kind.figure(runs, out / kind.figure_file)
        if drawn:
            print(f"{kind.figure_word}: {drawn}")
    if out is None:
        print(f"{blocked} cannot be written: the table is printed only (give --out DIR to write its files)",
              file=sys.stderr)

if __name__ == "__main__":
    main()
