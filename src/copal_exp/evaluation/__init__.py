"""Evaluation of a model on text: perplexity over evaluation windows (whole model or layer by layer)."""
