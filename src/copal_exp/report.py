"""``python -m copal_exp.report``: the command of :mod:`copal_exp.cli.report`."""

from copal_exp.cli.report import main

if __name__ == "__main__":
    main()
