"""Tokenisation helpers, and the byte-level tokenizer of the ``tiny_llama`` test model."""

from __future__ import annotations

import torch


class ByteTokenizer:
    """UTF-8 bytes as token ids (vocabulary 256): lets the tiny test model read real text with no files."""

    name_or_path = "byte-tokenizer"
    vocab_size = 256

    def encode(self, text: str) -> list[int]:
        return list(text.encode("utf-8"))


def encode(tokenizer, text: str) -> torch.Tensor:
    """Token ids of ``text`` as a 1-D ``LongTensor`` (no truncation)."""
    if isinstance(tokenizer, ByteTokenizer):
        return torch.tensor(tokenizer.encode(text), dtype=torch.long)
    return torch.as_tensor(tokenizer(text, return_tensors="pt", verbose=False).input_ids[0], dtype=torch.long)
