"""Metrics of the continual protocol: backward transfer and summaries (pure functions), and per-permutation records."""
