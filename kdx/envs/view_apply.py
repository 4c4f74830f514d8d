"""Applying a view (``kdx.envs.view_spec``) to a batch of one agent's observations, in torch.

``apply_view(view, layout, obs, generator)``: ``obs`` is ``float [B, layout.size]``, the result
``[B, view.output_layout(layout).size]``. A pure function of its inputs: the randomness of
training-only ops (noise, dropout) comes from ``generator`` alone. On the device apply
``view.device_view()`` (no noise, dropout flags 1).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from kdx.envs import view_spec as vs
from kdx.envs.obs_layout import ObservationLayout
from kdx.errors import KdxError


def _select(op: vs.Keep | vs.Drop, layout: ObservationLayout, obs: torch.Tensor, gen) -> torch.Tensor:
    return obs[:, torch.tensor(op.indices(layout), dtype=torch.long, device=obs.device)]


def _sight(op: vs.Sight, layout: ObservationLayout, obs: torch.Tensor, gen) -> torch.Tensor:
    out = obs.clone()
    for b in op.sighted_blocks(layout):
        block = obs[:, b.start:b.stop]
        if "distance" in b.features:
            dist = block[:, b.features.index("distance")]
        else:
            dist = torch.hypot(block[:, b.features.index("dx")], block[:, b.features.index("dy")])
        seen = (dist * op.unit < op.radius).to(obs.dtype)  # SMAC: seen iff distance < range
        out[:, b.start:b.stop] = block * seen[:, None]
    return out


def _sensors(layout: ObservationLayout, obs: torch.Tensor) -> torch.Tensor:
    """``bool [D]``: True for sensor values, False for dropout's ``available`` flags."""
    mask = torch.zeros(layout.size, dtype=torch.bool, device=obs.device)
    mask[vs.sensor_indices(layout)] = True
    return mask


def _noise(op: vs.Noise, layout: ObservationLayout, obs: torch.Tensor, gen) -> torch.Tensor:
    noise = torch.randn(obs.shape, generator=gen, device=obs.device, dtype=obs.dtype)
    return obs + op.sigma * noise * _sensors(layout, obs)


def _quant(op: vs.Quant, layout: ObservationLayout, obs: torch.Tensor, gen) -> torch.Tensor:
    step = op.bound / op.levels
    return torch.where(_sensors(layout, obs), torch.round(obs.clamp(-op.bound, op.bound) / step) * step, obs)


def _dropout(op: vs.Dropout, layout: ObservationLayout, obs: torch.Tensor, gen) -> torch.Tensor:
    names = {b.name for b in op.blocks(layout)}
    parts = []
    for b in layout.blocks:
        block = obs[:, b.start:b.stop]
        if b.name in names:
            if op.random:
                draw = torch.rand(obs.shape[0], generator=gen, device=obs.device, dtype=obs.dtype)
                available = (draw >= op.p).to(obs.dtype)[:, None]
            else:  # p = 0 (the device form): always available, no draw
                available = obs.new_ones(obs.shape[0], 1)
            block = torch.cat([block * available, available], 1)
        parts.append(block)
    return torch.cat(parts, 1)


# How each op kind changes the tensor: (op, input layout, obs [B, D], generator) -> [B, D'].
APPLY: dict[str, Callable[[vs.ViewOp, ObservationLayout, torch.Tensor, torch.Generator | None], torch.Tensor]] = {
    "keep": _select, "drop": _select, "sight": _sight, "noise": _noise, "quant": _quant, "dropout": _dropout,
}


def apply_view(view: vs.View, layout: ObservationLayout, obs: torch.Tensor,
               generator: torch.Generator | None = None) -> torch.Tensor:
    """``view`` applied to ``obs`` ``[B, layout.size]`` -> ``[B, output size]``. ``generator``
    (on ``obs``'s device) drives noise and dropout and is required when the view has them."""
    if obs.dim() != 2 or obs.shape[1] != layout.size:
        raise KdxError(f"apply_view expects observations [B, {layout.size}], got {list(obs.shape)}")
    random_ops = [op.text for op in view.ops if op.random]
    if random_ops and generator is None:
        raise KdxError(f"view ops {random_ops} are random; pass a "
                       "torch.Generator, or apply view.device_view() for deterministic inference")
    layouts = view.layouts(layout)
    for op, before, after in zip(view.ops, layouts, layouts[1:]):
        obs = APPLY[op.kind](op, before, obs, generator)
        assert obs.shape[1] == after.size, (op.text, obs.shape, after.size)
    return obs
