"""Perplexity (DESIGN §5): exp of the mean next-token NLL over non-overlapping windows."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm


@torch.no_grad()
def perplexity(model: nn.Module, windows: torch.Tensor, device="cpu", batch_size: int = 1,
               progress: bool = False, desc: str = "eval") -> float:
    """Perplexity of ``model`` on ``windows`` (``[n, seqlen]`` token ids)."""
    model.to(device)
    total_nll, total_tokens = 0.0, 0
    try:
        for start in tqdm(range(0, windows.shape[0], batch_size), desc=desc, disable=not progress, leave=False):
            batch = windows[start : start + batch_size].to(device)
            logits = model(batch, use_cache=False).logits[:, :-1].float()
            targets = batch[:, 1:]
            nll = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), reduction="sum")
            total_nll += nll.item()
            total_tokens += targets.numel()
    finally:
        model.to("cpu")
    return math.exp(total_nll / total_tokens)
