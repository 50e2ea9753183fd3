"""The command lines: ``python -m copal_exp`` (Hydra), ``copal_exp.report``, ``copal_exp.export``, and Hydra callbacks."""
