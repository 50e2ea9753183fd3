"""Cache locations under ``$COPAL_CACHE_DIR`` (default ``~/.cache/copal_exp``)."""

from __future__ import annotations

import os
from pathlib import Path


def cache_root() -> Path:
    return Path(os.environ.get("COPAL_CACHE_DIR", Path.home() / ".cache" / "copal_exp")).expanduser()


def models_dir() -> Path:
    """Converted models (the SmolLM2 GGUF as safetensors) and downloaded wheels."""
    return cache_root() / "models"


def downloads_dir() -> Path:
    return cache_root() / "downloads"


def dense_cache_dir() -> Path:
    """Dense perplexities shared between jobs, keyed by model config, device and evaluation tokens."""
    return cache_root() / "dense"


def token_cache_dir() -> Path:
    """Tokenised texts, keyed by tokenizer and exact text."""
    return cache_root() / "tokens"


def demo_data_dir() -> Path:
    return cache_root() / "data" / "demo"
