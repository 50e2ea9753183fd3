"""``python -m copal_exp [overrides] [-m|--multirun] …``: the command of :mod:`copal_exp.cli.app`."""

from copal_exp.cli.app import main

if __name__ == "__main__":
    main()
