"""The device part of a view (``kdx.envs.view_spec``), applied with numpy alone (no torch).

What a deployed student's model reads is ``view.device_view()`` applied to its agent's raw
observation: keep/drop, sight and quant as in training; noise left out; dropout with ``p = 0``,
i.e. every block it may drop kept and its ``available`` flag set to 1 (``kdx.envs.view_apply``
does the same in torch, and tests hold the two equal). ``DeviceView`` compiles the ops against
the raw layout once (indices, masks), so a call is a handful of array operations:

    device = DeviceView(view, layout)       # the training view or its device view: same result
    model_input = device(raw_obs)           # float32 [raw] -> [width], or [B, raw] -> [B, width]

Used by ``kdx-runtime`` (closed loop) on the device; torch-free, like ``view_spec``.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from kdx.envs import view_spec as vs
from kdx.envs.obs_layout import ObservationLayout
from kdx.errors import KdxError

# One compiled op: float32 [B, D] -> [B, D'].
Step = Callable[[np.ndarray], np.ndarray]


def _select(op: vs.Keep, layout: ObservationLayout) -> Step:
    index = np.asarray(op.indices(layout), dtype=np.intp)
    return lambda obs: obs[:, index]


def _sight(op: vs.Sight, layout: ObservationLayout) -> Step:
    """All sighted blocks at once: their distances (the ``distance`` feature, else the hypot of
    ``dx, dy``), one seen flag per block, spread over the block's columns."""
    blocks = op.sighted_blocks(layout)
    by_distance = [b for b in blocks if "distance" in b.features]
    by_offset = [b for b in blocks if "distance" not in b.features]
    at = np.asarray([b.start + b.features.index("distance") for b in by_distance], dtype=np.intp)
    dx = np.asarray([b.start + b.features.index("dx") for b in by_offset], dtype=np.intp)
    dy = np.asarray([b.start + b.features.index("dy") for b in by_offset], dtype=np.intp)
    ordered = by_distance + by_offset
    columns = np.concatenate([np.arange(b.start, b.stop) for b in ordered])
    block_of = np.concatenate([np.full(b.size, i) for i, b in enumerate(ordered)])
    unit, radius = np.float32(op.unit), np.float32(op.radius)

    def apply(obs: np.ndarray) -> np.ndarray:
        dist = np.concatenate([obs[:, at], np.hypot(obs[:, dx], obs[:, dy])], axis=1)
        seen = (dist * unit < radius).astype(obs.dtype)  # SMAC: seen iff distance < range
        out = obs.copy()
        out[:, columns] = obs[:, columns] * seen[:, block_of]
        return out

    return apply


def _quant(op: vs.Quant, layout: ObservationLayout) -> Step:
    sensors = np.zeros(layout.size, dtype=bool)
    sensors[vs.sensor_indices(layout)] = True
    step = np.float32(op.bound / op.levels)
    bound = np.float32(op.bound)

    def rounded(obs: np.ndarray) -> np.ndarray:
        return np.round(np.clip(obs, -bound, bound) / step) * step

    if sensors.all():  # no dropout flags to leave alone
        return rounded
    return lambda obs: np.where(sensors, rounded(obs), obs)


def _available(op: vs.Dropout, layout: ObservationLayout) -> Step:
    """Dropout's device form: the matching blocks are always there, each followed by a 1."""
    names = {b.name for b in op.blocks(layout)}
    # Output column j copies input column source[j], or is an `available` flag (source -1).
    source = []
    for b in layout.blocks:
        source += range(b.start, b.stop)
        if b.name in names:
            source.append(-1)
    index = np.asarray(source, dtype=np.intp)
    flags = index < 0
    gather = np.where(flags, 0, index)

    def apply(obs: np.ndarray) -> np.ndarray:
        out = obs[:, gather]
        out[:, flags] = 1.0
        return out

    return apply


# How each device op kind compiles against its input layout. Noise never reaches the device
# (``View.device_ops`` leaves it out); dropout arrives with p = 0.
COMPILE: dict[str, Callable[[vs.ViewOp, ObservationLayout], Step]] = {
    "keep": _select, "drop": _select, "sight": _sight, "quant": _quant, "dropout": _available,
}


class DeviceView:
    """``view.device_view()`` compiled against the raw observation ``layout``.

    ``__call__(obs)``: ``obs`` ``[layout.size]`` or ``[B, layout.size]`` (any float dtype) ->
    float32 ``[width]`` / ``[B, width]``, ``width = view.output_layout(layout).size``."""

    def __init__(self, view: vs.View, layout: ObservationLayout) -> None:
        self.view = view.device_view()
        self.layout = layout
        layouts = self.view.layouts(layout)  # KdxError naming the op when one does not fit
        self.width = layouts[-1].size
        self._steps = [COMPILE[op.kind](op, before) for op, before in zip(self.view.ops, layouts)]

    def __call__(self, obs: np.ndarray) -> np.ndarray:
        x = np.asarray(obs, dtype=np.float32)
        if x.ndim not in (1, 2) or x.shape[-1] != self.layout.size:
            raise KdxError(f"the view {' '.join(self.view.text) or '(identity)'} reads raw observations of "
                           f"{self.layout.size} values ([{self.layout.size}] or [B, {self.layout.size}]), "
                           f"got shape {list(x.shape)}")
        rows = x.reshape(-1, self.layout.size)
        for step in self._steps:
            rows = step(rows)
        return rows[0] if x.ndim == 1 else rows


def apply_device_view(view: vs.View, layout: ObservationLayout, obs: np.ndarray) -> np.ndarray:
    """The device part of ``view`` applied to ``obs`` ``[B, layout.size]`` (or ``[layout.size]``)."""
    return DeviceView(view, layout)(obs)
