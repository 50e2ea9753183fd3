"""``python -m copal_exp.export JOB_DIR OUT [--order K] [--step T] [--verify]``: the pruned model of any
state of a finished job as a Hugging Face folder (safetensors, config, tokenizer, a model card).

The state's keep masks are read from the job's verified ``states/``. A method that only masks
(``updates_weights = False``: magnitude, Wanda, COPAL) gives ``W_t = W ⊙ M_t`` on the dense
weights. A method that also changes the kept weights (SparseGPT) has them recomputed: the job's
steps leading to that state are run again on the same calibration segments (the protocol is
deterministic), and the recomputed masks must equal the recorded ones. ``--verify`` reloads the
folder with ``from_pretrained`` and checks its perplexities against the recorded ones.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from copal_exp.errors import UserError
from copal_exp.protocol.export import export, verify


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m copal_exp.export", description=__doc__.splitlines()[0])
    parser.add_argument("job", type=Path, help="a finished job directory (holding results.json and states/)")
    parser.add_argument("out", type=Path, help="the folder to write (a Hugging Face model folder)")
    parser.add_argument("--order", type=int, default=0, help="which order of the job (0-based; default 0)")
    parser.add_argument("--step", type=int, default=None, help="which step (1-based; default the last)")
    parser.add_argument("--verify", action="store_true", help="reload the folder and check its perplexities")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        info = export(args.job, args.out, args.order, None if args.step is None else args.step - 1)
        print(f"wrote {args.out} (state {info['chain'][-1][1]})")
        if args.verify:
            print("verified perplexities:", {d: round(v, 4) for d, v in verify(args.out, info).items()})
    except UserError as exc:
        raise SystemExit(f"Error: {exc}") from None


if __name__ == "__main__":
    main()
