"""Perplexity (docs/design.md, "Metrics"): exp of the mean next-token NLL over non-overlapping windows."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from copal_exp.io.offload import Offloader, resident
from copal_exp.models.anatomy import decoder_layers, final_norm, lm_head
from copal_exp.pruning.capture import capture_layer_inputs, run_layer


@torch.no_grad()
def perplexity(model: nn.Module, windows: torch.Tensor, device="cpu", batch_size: int = 1,
               progress: bool = False, desc: str = "eval") -> float:
    """Perplexity of ``model`` on ``windows`` (``[n, seqlen]`` token ids); the model is moved to
    ``device`` for the call unless it is already there (see :func:`resident`)."""
    total_nll, total_tokens = torch.zeros((), dtype=torch.float64, device=device), 0
    with resident(model, device):
        windows = windows.to(device, non_blocking=True)  # one copy per dataset
        for start in tqdm(range(0, windows.shape[0], batch_size), desc=desc, disable=not progress, leave=False):
            batch = windows[start : start + batch_size]
            total_nll += window_nll(model(batch, use_cache=False).logits, batch)
            total_tokens += batch.shape[0] * (batch.shape[1] - 1)
    return math.exp(total_nll.item() / total_tokens)  # the only host sync of the dataset


def window_nll(logits: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """Summed next-token NLL of ``tokens`` (``[b, t]``) under ``logits`` (``[b, t, vocab]``), in float32,
    as a device tensor (no host sync)."""
    logits = logits[:, :-1].float()
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), tokens[:, 1:].reshape(-1), reduction="sum")


@torch.no_grad()
def perplexity_layerwise(model: nn.Module, windows: torch.Tensor, device="cpu", progress: bool = False,
                         desc: str = "eval") -> float:
    """Perplexity computed one decoder layer at a time (only that layer on ``device``), for models that
    do not fit on the accelerator; equal to :func:`perplexity` up to floating-point rounding."""
    inputs = capture_layer_inputs(model, windows, device)
    keep = Offloader("cpu")
    for index, layer in enumerate(tqdm(decoder_layers(model), desc=desc, disable=not progress, leave=False)):
        with resident(layer, device):
            inputs.hidden = run_layer(layer, inputs, device, index, keep=keep)
    norm, head = final_norm(model), lm_head(model)
    total_nll, total_tokens = torch.zeros((), dtype=torch.float64, device=device), 0
    with resident(norm, device), resident(head, device):
        for hidden, row in zip(inputs.hidden, windows.to(device)):
            total_nll += window_nll(head(norm(hidden.to(device))), row.reshape(1, -1))
            total_tokens += row.numel() - 1
    return math.exp(total_nll.item() / total_tokens)
