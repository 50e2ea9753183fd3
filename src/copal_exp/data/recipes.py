"""Calibration segments and evaluation windows, cut as SparseGPT's and Wanda's ``get_loaders`` do.

``random.seed(seed)``, then per segment for wikitext2/ptb ``i = random.randint(0, n − seqlen − 1)``
on the tokenised joined training text; for c4, draw documents until one tokenises to more than
``seqlen`` tokens, then a window inside it (docs/design.md, "Data recipes"). Same seed and data → same segments.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

import torch

from copal_exp.data.custom import check_overlap
from copal_exp.data.demo_suite import DEMO_DATASETS
from copal_exp.data.sources import TextSource, load_text
from copal_exp.data.tokens import encode, encode_cached
from copal_exp.errors import DataError

#: how the rows of each split are joined before tokenisation
JOINERS = {("wikitext2", "calibration"): " ", ("wikitext2", "evaluation"): "\n\n",
           ("ptb", "calibration"): " ", ("ptb", "evaluation"): " ", ("c4", "evaluation"): " ",
           **{(name, role): "\n\n" for name in DEMO_DATASETS for role in ("calibration", "evaluation")}}
C4_EVAL_DOCS = 1100
C4_EVAL_WINDOWS = 256


@dataclass
class DatasetSplits:
    """What one dataset contributes to a run: calibration segments, evaluation windows, provenance."""

    name: str
    calibration: torch.Tensor  # [nsamples, seqlen] token ids
    evaluation: torch.Tensor  # [windows, seqlen] token ids
    provenance: dict[str, Any] = field(default_factory=dict)


def calibration_segments(source: TextSource, dataset: str, tokenizer, nsamples: int, seqlen: int, seed: int,
                         token_cache=None) -> torch.Tensor:
    """``nsamples`` windows of ``seqlen`` tokens drawn from the training text, draw for draw as SparseGPT."""
    random.seed(seed)
    segments = []
    if dataset == "c4":
        where = (source.provenance or {}).get("location", "c4 calibration documents")
        # a document can tokenise to more than seqlen tokens only if it has more than seqlen - 2 UTF-8 bytes
        # (a token spans at least one byte; BOS/EOS may be added): count the candidates before drawing
        candidates = {i for i, row in enumerate(source.rows) if len(row.encode("utf-8")) + 2 > seqlen}
        if candidates and nsamples > len(candidates):
            # SparseGPT's recipe cuts one segment per drawn document; far more segments than documents that can
            # hold one would draw the same few documents over and over (for minutes, memory climbing)
            raise DataError(f"c4 calibration split: data.nsamples={nsamples} segments of data.seqlen={seqlen} tokens, "
                            f"but at most {len(candidates)} of the {len(source.rows)} documents in {where} are long "
                            f"enough to hold one: lower data.nsamples (to {len(candidates)} or fewer) or data.seqlen, "
                            "or give data.root a fuller C4 shard")
        lengths: dict[int, torch.Tensor] = {}  # token ids of every document drawn so far (same draws, no re-tokenising)
        too_short = 0
        for _ in range(nsamples):
            while True:
                if too_short == len(candidates):
                    raise DataError(f"c4 calibration split: none of the {len(source.rows)} documents in {where} has more "
                                    f"than data.seqlen={seqlen} tokens, so no segment can be cut; lower data.seqlen "
                                    "or provide the full C4 shard")
                i = random.randint(0, len(source.rows) - 1)
                if i not in lengths:
                    lengths[i] = encode(tokenizer, source.rows[i]) if i in candidates else torch.empty(0, dtype=torch.long)
                    too_short += i in candidates and lengths[i].numel() <= seqlen
                ids = lengths[i]
                if ids.numel() > seqlen:
                    break
            j = random.randint(0, ids.numel() - seqlen - 1)
            segments.append(ids[j : j + seqlen])
    else:
        ids = encode_cached(tokenizer, JOINERS.get((dataset, "calibration"), "\n\n").join(source.rows), f"{dataset}-calibration",
                            token_cache)
        if ids.numel() < nsamples * seqlen + 1:
            raise DataError(
                f"{dataset} calibration text has {ids.numel()} tokens, too short for data.nsamples={nsamples} × "
                f"data.seqlen={seqlen} = {nsamples * seqlen}: lower data.nsamples or data.seqlen"
            )
        for _ in range(nsamples):
            i = random.randint(0, ids.numel() - seqlen - 1)
            segments.append(ids[i : i + seqlen])
    return torch.stack(segments)


def evaluation_tokens(source: TextSource, dataset: str, tokenizer, seqlen: int, token_cache=None) -> torch.Tensor:
    """The tokenised evaluation text (C4: the first 1,100 documents, cut to 256 · seqlen tokens)."""
    rows = source.rows[:C4_EVAL_DOCS] if dataset == "c4" else source.rows
    ids = encode_cached(tokenizer, JOINERS.get((dataset, "evaluation"), "\n\n").join(rows), f"{dataset}-evaluation",
                        token_cache)
    if dataset == "c4":
        ids = ids[: C4_EVAL_WINDOWS * seqlen]
    return ids


def evaluation_windows(ids: torch.Tensor, seqlen: int, max_windows: int | None = None) -> torch.Tensor:
    """Non-overlapping windows of ``seqlen`` tokens (the tail is dropped), at most ``max_windows``."""
    n = ids.numel() // seqlen
    if max_windows is not None:
        n = min(n, int(max_windows))
    if n < 1:
        raise DataError(f"evaluation text has {ids.numel()} tokens, fewer than data.seqlen={seqlen}")
    return ids[: n * seqlen].reshape(n, seqlen)


BOS_MODES = ("text", "window")


def bos_token(tokenizer) -> int:
    bos = getattr(tokenizer, "bos_token_id", None)
    if bos is None:
        raise DataError(f"data.bos=window: the tokenizer {getattr(tokenizer, 'name_or_path', tokenizer)!r} has no "
                        "beginning-of-sequence token; use data.bos=text")
    return int(bos)


def prepend(windows: torch.Tensor, token: int) -> torch.Tensor:
    return torch.cat([torch.full((windows.shape[0], 1), token, dtype=windows.dtype), windows], dim=1)


def load_dataset_splits(dataset: str, tokenizer, *, root, nsamples: int, seqlen: int, seed: int,
                        max_windows: int | None, hub: dict | None = None, use_hub: bool = True,
                        with_calibration: bool = True, demo_root=None, token_cache=None,
                        bos: str = "text", custom: dict | None = None) -> DatasetSplits:
    """Load, tokenise and cut one dataset for a run.

    ``bos="text"`` (the official recipes): the tokenizer's beginning-of-sequence token, if it adds one,
    starts the whole text only. ``bos="window"``: every calibration segment and evaluation window is
    the BOS token followed by ``seqlen − 1`` text tokens (cut and drawn as before, one token shorter).
    """
    body = seqlen - 1 if bos == "window" else seqlen
    hub_overrides = (hub or {}).get(dataset)
    evaluation = load_text(dataset, "evaluation", root, hub_overrides, use_hub, demo_root, custom)
    ids = evaluation_tokens(evaluation, dataset, tokenizer, seqlen, token_cache)
    if bos == "window" and ids.numel() and int(ids[0]) == bos_token(tokenizer):
        ids = ids[1:]  # the text's own BOS: every window gets one instead
    windows = evaluation_windows(ids, body, max_windows)
    provenance = {"evaluation": evaluation.provenance, "evaluation_windows": int(windows.shape[0]), "bos": bos}
    calibration = torch.empty(0, seqlen, dtype=torch.long)
    if with_calibration:
        source = load_text(dataset, "calibration", root, hub_overrides, use_hub, demo_root, custom)
        if custom and dataset in custom:
            check_overlap(dataset, source, evaluation)
        calibration = calibration_segments(source, dataset, tokenizer, nsamples, body, seed, token_cache)
        provenance["calibration"] = source.provenance
    if bos == "window":
        windows = prepend(windows, bos_token(tokenizer))
        if with_calibration:
            calibration = prepend(calibration, bos_token(tokenizer))
    return DatasetSplits(dataset, calibration, windows, provenance)
