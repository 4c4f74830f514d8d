"""Views: what one student observes, as ops applied to its agent's full observation.

Torch-free (stdlib only), so that the runtime can later read a view from a manifest; the torch
side (``apply_view``) is ``kdx.envs.view_apply``. A ``View`` is an ordered tuple of ops; each op
maps an ``ObservationLayout`` to the layout it produces (``View.output_layout``), so the student's
input features are known without running anything. Ops, in compact form (JSON in brackets):

- ``+GLOB`` / ``keep:GLOB`` (``{"kind": "keep", "pattern"}``): keep only the features matching
  the glob (flat names or block names, as ``ObservationLayout.select``), in their order.
- ``-GLOB`` / ``drop:GLOB`` (``{"kind": "drop", "pattern"}``): drop the matching features.
- ``sight:R`` (``{"kind": "sight", "radius", "unit"}``): zero the *whole block* of every ally,
  enemy, landmark or other-agent block whose distance is R world units or more, as SMAC hides
  a unit beyond its sight range (seen iff distance < range). The distance is the block's
  ``distance`` feature, else ``sqrt(dx^2 + dy^2)``, times ``unit`` (world units per observed unit:
  9 for skirmish / SMAC, whose features are divided by the sight range 9; 1 for MPE), filled in
  from ``BatchedEnv.observation_distance_unit`` by ``resolve_views``. Blocks with neither
  feature (own, move, communication, goal) are never zeroed; blocks already zeroed by the env
  read distance 0 and stay as they are.
- ``noise:SIGMA`` (``{"kind": "noise", "sigma"}``): adds N(0, SIGMA^2) to every feature
  (but dropout's ``available`` flags). Training only.
- ``quant:BITS[:BOUND]`` (``{"kind": "quant", "bits", "bound"}``): clips every feature (but
  dropout's ``available`` flags) to
  [-BOUND, BOUND] (default 1: skirmish features lie in [-1, 1]; MPE offsets and velocities can
  exceed it, give a bound) and rounds it to the nearest of the 2^BITS - 1 levels
  k * BOUND / (2^(BITS-1) - 1), k = -(2^(BITS-1) - 1) .. 2^(BITS-1) - 1 (symmetric, so 0 stays 0).
- ``dropout:GLOB:P`` (``{"kind": "dropout", "pattern", "p"}``): each block whose name matches
  GLOB is, independently per row (env step) with probability P, zeroed; every matching block
  gains a last feature ``available`` (1 kept, 0 dropped). Training only: on the device the op
  becomes ``dropout:GLOB:0`` (``View.device_view``), which appends ``available`` = 1 so the
  student's input width is the same.

Views per agent come from a dict ``{"marine": "sight:4 noise:0.05", "agent_2": ["-enemy.*"]}``
(keys are agent or group names, or ``*`` for every agent; an agent's own entry wins over its
group's, which wins over ``*``) or from the ``[views]`` table of a TOML file: ``resolve_views``.
A device profile's default view (``[view] default``) is the ``*`` entry of ``kdx distill``.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import math
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from kdx.envs.obs_layout import ObservationBlock, ObservationLayout
from kdx.errors import KdxError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib

# Entity kinds that have a position relative to the agent, so a sight radius applies to them.
SIGHTED_KINDS = ("ally", "enemy", "landmark", "agent")
AVAILABLE = "available"  # the flag feature dropout appends to each block it may drop
EVERY_AGENT = "*"  # the views key that names every agent (an agent's or group's own entry wins)


def _number(op: str, text: str, what: str, kind: type = float) -> float:
    try:
        value = kind(text)
    except ValueError:
        raise KdxError(f"view op {op!r}: {what} must be a number, got {text!r}") from None
    if not math.isfinite(value):
        raise KdxError(f"view op {op!r}: {what} must be finite, got {text!r}")
    return value


class ViewOp:
    """Base of the op dataclasses: ``kind`` names it in ``OP_KINDS``, ``training_only`` ops are
    left out (or neutralised) on the device, ``output_layout`` maps the input layout to the
    output layout (raising ``KdxError`` when the op does not fit the layout)."""

    kind: ClassVar[str]
    training_only: ClassVar[bool] = False

    @property
    def text(self) -> str:  # the compact form
        raise NotImplementedError

    @classmethod
    def parse(cls, args: str) -> ViewOp:  # args: the compact form after "kind:"
        raise NotImplementedError

    @property
    def random(self) -> bool:
        """Whether applying it draws random numbers (needs a generator)."""
        return False

    def output_layout(self, layout: ObservationLayout) -> ObservationLayout:
        return layout

    def device_form(self) -> ViewOp | None:
        """What the device applies instead: itself, a neutral form, or nothing (``None``)."""
        return self

    def to_json(self) -> dict:
        return {"kind": self.kind, **dataclasses.asdict(self)}

    @classmethod
    def from_json(cls, data: Mapping) -> ViewOp:
        fields = {f.name for f in dataclasses.fields(cls)}
        given = {k: v for k, v in data.items() if k != "kind"}
        if set(given) != fields:
            raise KdxError(f"view op JSON {dict(data)!r}: a {cls.kind!r} op has fields "
                           f"{sorted(fields)}")
        try:
            return cls(**given)
        except TypeError as exc:
            raise KdxError(f"view op JSON {dict(data)!r}: {exc}") from None


def sub_layout(layout: ObservationLayout, keep: Sequence[int]) -> ObservationLayout:
    """The layout of ``layout``'s features at indices ``keep`` (ascending): blocks keep their
    names and entities, lose the other features; blocks left empty disappear."""
    chosen = set(keep)
    parts = [(b.name, b.entity, [f for i, f in enumerate(b.features) if b.start + i in chosen])
             for b in layout.blocks]
    return ObservationLayout.concat([p for p in parts if p[2]])


def sensor_indices(layout: ObservationLayout) -> list[int]:
    """Indices of sensor values: every feature but dropout's ``available`` flags, which noise
    and quantisation leave alone."""
    return [b.start + i for b in layout.blocks for i, f in enumerate(b.features) if f != AVAILABLE]


@dataclass(frozen=True)
class Keep(ViewOp):
    """Keep only the features matching ``pattern`` (compact form ``+pattern``)."""

    pattern: str
    kind: ClassVar[str] = "keep"
    prefix: ClassVar[str] = "+"

    @property
    def text(self) -> str:
        return f"{self.prefix}{self.pattern}"

    @classmethod
    def parse(cls, args: str) -> Keep:
        return cls(args)

    def indices(self, layout: ObservationLayout) -> list[int]:
        """Input indices that make up the output, in order."""
        return layout.select(self.pattern)

    def output_layout(self, layout: ObservationLayout) -> ObservationLayout:
        return sub_layout(layout, self.indices(layout))


@dataclass(frozen=True)
class Drop(Keep):
    """Drop the features matching ``pattern`` (compact form ``-pattern``)."""

    kind: ClassVar[str] = "drop"
    prefix: ClassVar[str] = "-"

    def indices(self, layout: ObservationLayout) -> list[int]:
        dropped = set(layout.select(self.pattern))
        kept = [i for i in range(layout.size) if i not in dropped]
        if not kept:
            raise KdxError(f"'-{self.pattern}' drops every feature; keep at least one")
        return kept


@dataclass(frozen=True)
class Sight(ViewOp):
    """Zero every positioned entity block at ``radius`` world units or farther."""

    radius: float
    unit: float = 1.0  # world units per observed distance unit
    kind: ClassVar[str] = "sight"

    def __post_init__(self) -> None:
        if not self.radius > 0 or not self.unit > 0:
            raise KdxError(f"view op 'sight:{self.radius}': the radius (and unit {self.unit}) must "
                           "be > 0, e.g. sight:4")

    @property
    def text(self) -> str:
        return f"sight:{self.radius:g}"

    @classmethod
    def parse(cls, args: str) -> Sight:
        return cls(_number(f"sight:{args}", args, "the radius"))

    def sighted_blocks(self, layout: ObservationLayout) -> list[ObservationBlock]:
        """The blocks this op may zero: positioned entities with ``distance`` or ``dx, dy``."""
        found = [b for b in layout.blocks if b.entity.kind in SIGHTED_KINDS
                 and ("distance" in b.features or {"dx", "dy"} <= set(b.features))]
        if not found:
            raise KdxError(f"view op {self.text!r} finds no ally/enemy/landmark/agent block with a "
                           "'distance' or 'dx', 'dy' feature; put sight before ops that drop them")
        return found

    def output_layout(self, layout: ObservationLayout) -> ObservationLayout:
        self.sighted_blocks(layout)
        return layout


@dataclass(frozen=True)
class Noise(ViewOp):
    """Gaussian sensor noise N(0, sigma^2) on every feature (training only)."""

    sigma: float
    kind: ClassVar[str] = "noise"
    training_only: ClassVar[bool] = True

    def __post_init__(self) -> None:
        if not self.sigma >= 0:
            raise KdxError(f"view op 'noise:{self.sigma}': sigma must be >= 0, e.g. noise:0.05")

    @property
    def random(self) -> bool:
        return self.sigma > 0

    @property
    def text(self) -> str:
        return f"noise:{self.sigma:g}"

    @classmethod
    def parse(cls, args: str) -> Noise:
        return cls(_number(f"noise:{args}", args, "sigma"))

    def device_form(self) -> None:
        return None


@dataclass(frozen=True)
class Quant(ViewOp):
    """Symmetric ``bits``-bit quantisation over ``[-bound, bound]`` (clipped)."""

    bits: int
    bound: float = 1.0
    kind: ClassVar[str] = "quant"

    def __post_init__(self) -> None:
        if isinstance(self.bits, bool) or not isinstance(self.bits, int) or not 2 <= self.bits <= 24:
            raise KdxError(f"view op 'quant:{self.bits}': bits must be an integer in 2..24, e.g. quant:8")
        if not self.bound > 0:
            raise KdxError(f"view op 'quant:{self.bits}:{self.bound}': the bound must be > 0")

    @property
    def levels(self) -> int:
        """Positive levels: values are k * bound / levels for k in -levels .. levels."""
        return 2 ** (self.bits - 1) - 1

    @property
    def text(self) -> str:
        return f"quant:{self.bits}" + ("" if self.bound == 1.0 else f":{self.bound:g}")

    @classmethod
    def parse(cls, args: str) -> Quant:
        op = f"quant:{args}"
        bits, _, bound = args.partition(":")
        return cls(int(_number(op, bits, "bits", int)), _number(op, bound, "the bound") if bound else 1.0)


@dataclass(frozen=True)
class Dropout(ViewOp):
    """Blocks matching ``pattern`` dropped (zeroed) with probability ``p`` per row; each gains an
    ``available`` flag (training only; ``p = 0`` on the device)."""

    pattern: str
    p: float
    kind: ClassVar[str] = "dropout"
    training_only: ClassVar[bool] = True

    def __post_init__(self) -> None:
        if not 0 <= self.p <= 1:
            raise KdxError(f"view op {self.text!r}: p must be in [0, 1], e.g. dropout:enemy.*:0.1")

    @property
    def random(self) -> bool:
        return self.p > 0

    @property
    def text(self) -> str:
        return f"dropout:{self.pattern}:{self.p:g}"

    @classmethod
    def parse(cls, args: str) -> Dropout:
        pattern, sep, p = args.rpartition(":")
        if not sep or not pattern:
            raise KdxError(f"view op 'dropout:{args}': write dropout:BLOCK_GLOB:P, e.g. dropout:enemy.*:0.1")
        return cls(pattern, _number(f"dropout:{args}", p, "p"))

    def device_form(self) -> Dropout:
        return dataclasses.replace(self, p=0.0)

    def blocks(self, layout: ObservationLayout) -> list[ObservationBlock]:
        """The input blocks this op may drop."""
        found = [b for b in layout.blocks if fnmatch.fnmatchcase(b.name, self.pattern)]
        if not found:
            raise KdxError(f"view op {self.text!r}: no block name matches {self.pattern!r}; blocks: "
                           + ", ".join(b.name for b in layout.blocks))
        for b in found:
            if AVAILABLE in b.features:
                raise KdxError(f"view op {self.text!r}: block {b.name!r} already has an "
                               f"'{AVAILABLE}' flag; drop it from one dropout op")
        return found

    def output_layout(self, layout: ObservationLayout) -> ObservationLayout:
        names = {b.name for b in self.blocks(layout)}
        return ObservationLayout.concat(
            (b.name, b.entity, b.features + ((AVAILABLE,) if b.name in names else ())) for b in layout.blocks)


# The op kinds, by the name their compact form and JSON use.
OP_KINDS: dict[str, type[ViewOp]] = {op.kind: op for op in (Keep, Drop, Sight, Noise, Quant, Dropout)}
_PREFIXES = {op.prefix: op for op in (Keep, Drop)}


def parse_op(text: str) -> ViewOp:
    """One op from its compact form: ``+GLOB``, ``-GLOB`` or ``KIND:ARGS``."""
    text = text.strip()
    if text[:1] in _PREFIXES and len(text) > 1:
        return _PREFIXES[text[0]](text[1:])
    kind, sep, args = text.partition(":")
    if kind not in OP_KINDS or not sep or not args:
        raise KdxError(f"unknown view op {text!r}; write +GLOB, -GLOB or one of "
                       + ", ".join(f"{k}:..." for k in OP_KINDS) + " (e.g. sight:4, noise:0.05, quant:8, "
                       "dropout:enemy.*:0.1)")
    return OP_KINDS[kind].parse(args)


def op_from_json(data: Mapping) -> ViewOp:
    kind = data.get("kind") if isinstance(data, Mapping) else None
    if kind not in OP_KINDS:
        raise KdxError(f"view op JSON {data!r}: 'kind' must be one of {', '.join(OP_KINDS)}")
    return OP_KINDS[kind].from_json(data)


@dataclass(frozen=True)
class View:
    """What one student observes: ``ops`` applied in order to its agent's full observation.
    The empty view is the identity."""

    ops: tuple[ViewOp, ...] = ()

    @staticmethod
    def parse(ops: str | Sequence[str]) -> View:
        """From compact ops: a list, or one string of whitespace-separated ops."""
        items = ops.split() if isinstance(ops, str) else list(ops)
        if not all(isinstance(o, str) for o in items):
            raise KdxError(f"a view is a list of op strings such as ['sight:4', '-ally.*'], got {ops!r}")
        return View(tuple(parse_op(o) for o in items))

    @property
    def text(self) -> list[str]:
        return [op.text for op in self.ops]

    @property
    def training_only_ops(self) -> tuple[ViewOp, ...]:
        return tuple(op for op in self.ops if op.training_only)

    def device_ops(self) -> tuple[ViewOp, ...]:
        """The ops the device applies: no noise, dropout with p = 0 (its flags read 1); the
        output layout is the training view's."""
        return tuple(d for d in (op.device_form() for op in self.ops) if d is not None)

    def device_view(self) -> View:
        return View(self.device_ops())

    def layouts(self, layout: ObservationLayout) -> list[ObservationLayout]:
        """The layout before each op and after the last (``len(ops) + 1`` layouts); an op that
        does not fit its input raises ``KdxError`` naming the op."""
        out = [layout]
        for op in self.ops:
            try:
                out.append(op.output_layout(out[-1]))
            except KdxError as exc:
                raise KdxError(f"view op {op.text!r}: {exc}") from None
        return out

    def output_layout(self, layout: ObservationLayout) -> ObservationLayout:
        """The student's input features, computed without torch."""
        return self.layouts(layout)[-1]

    def to_json(self) -> list[dict]:
        return [op.to_json() for op in self.ops]

    @staticmethod
    def from_json(data: Sequence[Mapping]) -> View:
        if isinstance(data, (str, Mapping)) or not isinstance(data, Sequence):
            raise KdxError(f"view JSON must be a list of ops, got {data!r}")
        return View(tuple(op_from_json(op) for op in data))


def resolve_views(entries: Mapping[str, str | Sequence[str]], layouts: Mapping[str, ObservationLayout],
                  groups: Mapping[str, Sequence[str]], distance_unit: float = 1.0,
                  action_targets: Mapping[str, Mapping[int, str]] | None = None) -> dict[str, View]:
    """Every agent's view (``layouts`` keys, in order) from ``entries`` keyed by agent or group
    name or ``*`` (every agent); an agent's own entry wins over its group's, which wins over
    ``*``; agents named by none get the identity.
    Sight ops get ``distance_unit`` (``env.observation_distance_unit``); each view is checked
    against its agent's layout, and must keep a feature of every block that one of the agent's
    actions targets (``action_targets[agent]``: action index -> block name, from
    ``env.action_targets()``)."""
    unknown = [k for k in entries if k not in layouts and k not in groups and k != EVERY_AGENT]
    if unknown:
        raise KdxError(f"views name {', '.join(map(repr, unknown))}, neither an agent nor a group; "
                       f"agents: {', '.join(layouts)}; groups: {', '.join(groups)}; or {EVERY_AGENT!r} for every agent")
    group_of = {agent: g for g, agents in groups.items() for agent in agents}
    views = {}
    for agent, layout in layouts.items():
        key = agent if agent in entries else group_of.get(agent)
        key = key if key in entries else EVERY_AGENT
        view = View.parse(entries[key]) if key in entries else View()
        view = View(tuple(dataclasses.replace(op, unit=distance_unit) if isinstance(op, Sight) else op
                          for op in view.ops))
        try:
            kept = {b.name for b in view.output_layout(layout).blocks}
        except KdxError as exc:
            raise KdxError(f"view of {agent} (from {key!r}): {exc}") from None
        targeted = (action_targets or {}).get(agent, {})
        lost = sorted({block for block in targeted.values() if block not in kept})
        if lost:
            actions = sorted(a for a, block in targeted.items() if block in lost)
            raise KdxError(f"view of {agent} (from {key!r}) drops every feature of {', '.join(lost)}, which its "
                           f"action(s) {', '.join(map(str, actions))} target: the action mask can allow them, so the "
                           f"student must see what it picks. Keep some of those features (e.g. drop "
                           f"'{lost[0]}.health' instead of '{lost[0]}.*')")
        views[agent] = view
    return views


def read_views_toml(path: str | Path) -> dict[str, list[str]]:
    """The ``[views]`` table of a TOML file: ``marine = ["sight:4", "noise:0.05"]``."""
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except OSError as exc:
        raise KdxError(f"cannot read views file {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise KdxError(f"views file {path} is not valid TOML: {exc}") from None
    table = data.get("views")
    if not isinstance(table, dict):
        raise KdxError(f"views file {path} has no [views] table; write e.g. "
                       '[views]\nmarine = ["sight:4", "noise:0.05"]')
    for key, ops in table.items():
        if not (isinstance(ops, str) or (isinstance(ops, list) and all(isinstance(o, str) for o in ops))):
            raise KdxError(f"views file {path}: {key} must be a list of op strings, got {ops!r}")
    return table
