"""Where things are: caches under ``$COPAL_CACHE_DIR`` (default ``~/.cache/copal_exp``) and the reference data
folder used when ``data.root`` is unset."""

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


def default_root() -> Path | None:
    """With no ``data.root`` and no ``COPAL_DATA_DIR``: a ``shared/data`` beside the checkout or the
    working directory, if there is one (logged and recorded like any other root)."""
    checkout = Path(__file__).resolve().parents[3]
    for candidate in (checkout.parent / "shared" / "data", Path.cwd().parent / "shared" / "data"):
        if (candidate / "README.md").is_file():
            return candidate
    return None
