"""copal_exp: continual pruning of large language models (COPAL and its baselines)."""

__version__ = "0.1.0"
