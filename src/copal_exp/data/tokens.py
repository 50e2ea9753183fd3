"""Tokenisation helpers, and the byte-level tokenizer of the ``tiny_llama`` test model."""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import torch

from copal_exp.io.storage import save_torch

log = logging.getLogger(__name__)


class ByteTokenizer:
    """UTF-8 bytes as token ids (vocabulary 256): lets the tiny test model read real text with no files."""

    name_or_path = "byte-tokenizer"
    vocab_size = 256

    def encode(self, text: str) -> list[int]:
        return list(text.encode("utf-8"))


def _byte_symbols() -> dict[int, str]:
    """GPT-2's printable stand-in character for every byte (the byte-level BPE alphabet)."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    symbols, extra = {b: chr(b) for b in printable}, 0
    for b in range(256):
        if b not in symbols:
            symbols[b] = chr(256 + extra)
            extra += 1
    return symbols


def hf_byte_tokenizer():
    """The same ids as :class:`ByteTokenizer` (id = UTF-8 byte) through a Hugging Face fast tokenizer: a byte-level
    BPE without merges, byte 0 as end of text. It saves and loads like any model's tokenizer, so tools that need
    one (lm-evaluation-harness, an exported folder) can read the tiny test model."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    symbols = _byte_symbols()
    core = Tokenizer(models.BPE(vocab={symbols[b]: b for b in range(256)}, merges=[]))
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    core.decoder = decoders.ByteLevel()
    return PreTrainedTokenizerFast(tokenizer_object=core, eos_token=symbols[0], pad_token=symbols[0],
                                   name_or_path="hf-byte-tokenizer")


def encode(tokenizer, text: str) -> torch.Tensor:
    """Token ids of ``text`` as a 1-D ``LongTensor`` (no truncation)."""
    if isinstance(tokenizer, ByteTokenizer):
        return torch.tensor(tokenizer.encode(text), dtype=torch.long)
    return torch.as_tensor(tokenizer(text, return_tensors="pt", verbose=False).input_ids[0], dtype=torch.long)


def tokenizer_id(tokenizer) -> str:
    """A stable identity for a tokenizer: its class, source and a hash of its whole vocabulary."""
    vocab = json.dumps(sorted(tokenizer.get_vocab().items()), ensure_ascii=False)
    digest = hashlib.sha256(vocab.encode("utf-8")).hexdigest()[:16]
    return f"{type(tokenizer).__name__}|{getattr(tokenizer, 'name_or_path', '')}|{digest}"


def encode_cached(tokenizer, text: str, label: str, cache_dir: Path | None) -> torch.Tensor:
    """:func:`encode`, remembered on disk under a key of the tokenizer and the exact text.

    ``label`` (dataset, split, recipe) names the file for people; the key itself is a hash of the
    tokenizer's identity and the text, so any change of data or recipe gives a new entry.
    """
    if cache_dir is None or isinstance(tokenizer, ByteTokenizer):
        return encode(tokenizer, text)
    digest = hashlib.sha256(tokenizer_id(tokenizer).encode() + b"\0" + text.encode("utf-8")).hexdigest()[:24]
    path = Path(cache_dir) / f"{label}-{digest}.pt"
    cached = _read_token_cache(path)
    if cached is not None:
        return cached
    ids = encode(tokenizer, text)
    stored = ids.to(torch.int32)
    try:
        save_torch({"ids": stored, "sha256": _ids_digest(stored)}, path)
    except OSError as exc:  # a cache is a convenience: a read-only or full one never stops the job
        log.warning("the token cache %s cannot be written (%s): going on without it (data.token_cache=false "
                    "turns it off)", path.parent, getattr(exc, "problem", None) or exc)
    return ids


def _ids_digest(ids: torch.Tensor) -> str:
    return hashlib.sha256(ids.contiguous().numpy().tobytes()).hexdigest()


def _read_token_cache(path: Path) -> torch.Tensor | None:
    """Token ids from the cache, or ``None`` (absent, or damaged: reported, removed and re-tokenised)."""
    if not path.is_file():
        return None
    try:
        entry = torch.load(path, weights_only=True)
        if _ids_digest(entry["ids"]) == entry["sha256"]:
            return entry["ids"].long()
        problem = "its checksum does not match"
    except Exception as exc:  # noqa: BLE001 - a damaged cache entry is recomputed, whatever the damage
        problem = f"{type(exc).__name__}: {exc}"
    log.warning("ignoring the damaged token-cache entry %s (%s); tokenising again", path, problem)
    path.unlink(missing_ok=True)
    return None
