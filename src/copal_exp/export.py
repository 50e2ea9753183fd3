"""``python -m copal_exp.export``: the command of :mod:`copal_exp.cli.export`."""

from copal_exp.cli.export import main

if __name__ == "__main__":
    main()
