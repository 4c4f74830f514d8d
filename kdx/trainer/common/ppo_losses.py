"""PPO loss terms as pure functions (clipped surrogate, clipped Huber value loss, entropy).

``weights`` (same shape as the per-sample terms, or None) lets callers drop samples from the
average, e.g. padded or inactive agents; every loss is a weighted mean.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _weighted_mean(x: torch.Tensor, weights: torch.Tensor | None) -> torch.Tensor:
    if weights is None:
        return x.mean()
    return (x * weights).sum() / weights.sum().clamp_min(1e-8)


def policy_loss(new_logp: torch.Tensor, old_logp: torch.Tensor, advantages: torch.Tensor,
                clip: float, weights: torch.Tensor | None = None) -> torch.Tensor:
    """Clipped surrogate: ``-mean(min(r * A, clip(r, 1 - eps, 1 + eps) * A))``, ``r = exp(new - old)``."""
    ratio = torch.exp(new_logp - old_logp)
    surrogate = torch.min(ratio * advantages, ratio.clamp(1.0 - clip, 1.0 + clip) * advantages)
    return -_weighted_mean(surrogate, weights)


def huber(error: torch.Tensor, delta: float) -> torch.Tensor:
    """Elementwise Huber: ``e^2 / 2`` within ``delta``, ``delta * (|e| - delta / 2)`` beyond."""
    abs_e = error.abs()
    return torch.where(abs_e <= delta, 0.5 * error**2, delta * (abs_e - 0.5 * delta))


def value_loss(new_values: torch.Tensor, old_values: torch.Tensor, returns: torch.Tensor,
               clip: float, delta: float, weights: torch.Tensor | None = None) -> torch.Tensor:
    """MAPPO value loss: max of the Huber loss of clipped and unclipped predictions.

    ``clipped = old + clamp(new - old, -clip, clip)``; ``loss = mean(max(H(ret - new), H(ret - clipped)))``.
    """
    clipped = old_values + (new_values - old_values).clamp(-clip, clip)
    loss = torch.max(huber(returns - new_values, delta), huber(returns - clipped, delta))
    return _weighted_mean(loss, weights)


def masked_log_probs(logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``log_softmax`` over legal actions only; illegal entries are ``-inf``-like (p = 0)."""
    return F.log_softmax(logits.masked_fill(~mask, -1e9), dim=-1)


def entropy(log_probs: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
    """Mean entropy ``-sum p log p`` of categorical distributions given as log-probs ``[..., K]``."""
    ent = -(log_probs.exp() * log_probs).sum(dim=-1)
    return _weighted_mean(ent, weights)
