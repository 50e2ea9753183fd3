"""``python -m copal_exp.export JOB_DIR OUT [--order K] [--step T] [--verify] [--force]`` and
``python -m copal_exp.export --check FOLDER``: the pruned model of any state of a finished job as a
Hugging Face folder (safetensors, config, tokenizer, a model card), and the check of one written before.

The state's keep masks are read from the job's verified ``states/``. A method that only masks
(``updates_weights = False``: magnitude, Wanda, COPAL) gives ``W_t = W ⊙ M_t`` on the dense
weights. A method that also changes the kept weights (SparseGPT) has them recomputed: the job's
steps leading to that state are run again on the same calibration segments (the protocol is
deterministic), and the recomputed masks must equal the recorded ones. ``--verify`` reloads the
folder with ``from_pretrained`` and checks its perplexities against the recorded ones. A non-empty
OUT is refused unless ``--force`` (then its content is replaced by the export, nothing else kept).
``--check FOLDER`` writes nothing: every file the export wrote must be there unchanged, nothing added,
and the reloaded model must give the recorded perplexities. A user error is one line on stderr, exit 2.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from copal_exp.errors import UserError
from copal_exp.protocol.export import check, export, verify


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m copal_exp.export", description=__doc__.splitlines()[0])
    parser.add_argument("job", type=Path, nargs="?", help="a finished job directory (holding results.json and states/)")
    parser.add_argument("out", type=Path, nargs="?", help="the folder to write (a Hugging Face model folder)")
    parser.add_argument("--order", type=int, default=0, help="which order of the job (0-based; default 0)")
    parser.add_argument("--step", type=int, default=None, help="which step (1-based; default the last)")
    parser.add_argument("--verify", action="store_true", help="reload the folder and check its perplexities")
    parser.add_argument("--force", action="store_true", help="replace the content of a non-empty OUT")
    parser.add_argument("--check", type=Path, metavar="FOLDER", help="verify an exported folder; writes nothing")
    args = parser.parse_args(argv)
    if args.check is None and (args.job is None or args.out is None):
        parser.error("give JOB_DIR and OUT to export, or --check FOLDER to verify an exported folder")
    if args.check is not None and args.job is not None:
        parser.error("--check FOLDER takes no JOB_DIR or OUT")
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        if args.check is not None:
            got = check(args.check)
            print(f"{args.check}: every file as exported; perplexities {({d: round(v, 4) for d, v in got.items()})}")
            return
        info = export(args.job, args.out, args.order, None if args.step is None else args.step - 1, args.force)
        print(f"wrote {args.out} (state {info['chain'][-1][1]})")
        if args.verify:
            print("verified perplexities:", {d: round(v, 4) for d, v in verify(args.out, info).items()})
    except UserError as exc:
        print(f"Error: {exc}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
