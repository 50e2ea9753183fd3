"""``python -m copal_exp.report SWEEP_DIR``: the paper-style comparison table from local result files.

Reads every ``results.json`` under the directory (a multirun sweep, or any folder of jobs), prints a
Markdown table of a-bwt, m-bwt, a-ppl, m-ppl per method (``WS`` where the masks never changed after
step 1, as in the paper's Table 1), writes it as Markdown, CSV and LaTeX, and draws the perplexity
matrices as a heatmap PNG.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from copal_exp.io.results import RESULTS_FILE
from copal_exp.reporting.figures import FIGURES, bwt_curve, heatmaps
from copal_exp.reporting.runs import collect
from copal_exp.reporting.tables import TABLES, write_table


def fail(message: str) -> None:
    """A user error: one line on stderr, exit status 2 (as every copal_exp command)."""
    print(f"Error: {message}", file=sys.stderr)
    sys.exit(2)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m copal_exp.report", description=__doc__.splitlines()[0])
    parser.add_argument("sweep", type=Path, help="a directory holding results.json files (searched recursively)")
    parser.add_argument("--kind", default="comparison", choices=[*TABLES, *FIGURES],
                        help="which table or figure of the paper to build (default: the comparison table + heatmap)")
    parser.add_argument("--no-figures", action="store_true", help="skip the heatmap PNG")
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
    if args.kind in FIGURES:
        x_key, x_label = FIGURES[args.kind]
        frame, png = bwt_curve(runs, x_key, x_label, args.sweep / f"{args.kind}.png")
        print(write_table(frame, args.sweep, args.kind, skipped, runs))
        print(f"figure: {png}")
        return
    name = "report" if args.kind == "comparison" else args.kind
    print(write_table(TABLES[args.kind](runs), args.sweep, name, skipped, runs))
    if args.kind == "table2":
        print("'paper LLaMA-7B' columns: the COPAL paper's Table 2, LLaMA-7B (global-init baselines), not this sweep's model")
    if args.kind == "comparison" and not args.no_figures:
        print(f"heatmap: {heatmaps(runs, args.sweep / 'ppl_matrices.png')}")


if __name__ == "__main__":
    main()
