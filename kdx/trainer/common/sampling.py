"""Masked action distributions, shared by both stages and by evaluation."""

from __future__ import annotations

import torch

MASKED_LOGIT = -1e9  # finite, so that masked entries give p = 0 and 0 * log p = 0 (no NaN)


def masked_logits(logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Illegal (or padded) actions get ``MASKED_LOGIT`` so they are never sampled."""
    return logits.masked_fill(~mask, MASKED_LOGIT)


def sample_actions(logits: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """Sample ``long [...]`` from (already masked) ``logits [..., K]`` with ``generator``."""
    probs = torch.softmax(logits, dim=-1).reshape(-1, logits.shape[-1])
    return torch.multinomial(probs, 1, generator=generator).reshape(logits.shape[:-1])
