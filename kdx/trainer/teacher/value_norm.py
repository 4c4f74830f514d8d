"""Running mean/std of value targets (MAPPO's value normalisation), as a tiny module.

The critic predicts normalised values; ``normalize`` maps returns into that space for the loss
and ``denormalize`` maps predictions back for GAE. Statistics are buffers, so they travel with
the critic's safetensors.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn


class ValueNormalizer(nn.Module):
    """Exact running mean and variance over every target seen (parallel Welford update)."""

    def __init__(self, enabled: bool = True, eps: float = 1e-5) -> None:
        super().__init__()
        self.enabled, self.eps = enabled, eps
        # Data-parallel runs set this to fold every rank's batch into the statistics
        # (``(n, mean, var) -> global (n, mean, var)``, see kdx.trainer.teacher.distributed).
        self.moments_reducer: Callable[[float, torch.Tensor, torch.Tensor], tuple[float, torch.Tensor, torch.Tensor]] | None = None
        self.register_buffer("mean", torch.zeros((), dtype=torch.float64))
        self.register_buffer("var", torch.ones((), dtype=torch.float64))
        self.register_buffer("count", torch.zeros((), dtype=torch.float64))

    @torch.no_grad()
    def update(self, targets: torch.Tensor) -> None:
        if not self.enabled:
            return
        x = targets.detach().to(torch.float64).flatten()
        n, m, v = float(x.numel()), x.mean(), x.var(unbiased=False)
        if self.moments_reducer is not None:
            n, m, v = self.moments_reducer(n, m, v)
        total = self.count + n
        delta = m - self.mean
        self.var.copy_((self.var * self.count + v * n + delta**2 * self.count * n / total) / total)
        self.mean.copy_(self.mean + delta * n / total)
        self.count.copy_(total)

    @property
    def std(self) -> torch.Tensor:
        return (self.var + self.eps).sqrt()

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        if not self.enabled:
            return x
        return ((x - self.mean) / self.std).to(x.dtype)

    def denormalize(self, x: torch.Tensor) -> torch.Tensor:
        if not self.enabled:
            return x
        return (x * self.std + self.mean).to(x.dtype)
