"""Observation layouts: what each index of an agent's observation means, as named blocks.

Torch-free (stdlib only), so that the runtime can read and record views built on it.

An ``ObservationLayout`` splits one agent's observation ``[obs_dim]`` into consecutive
``ObservationBlock``\\ s. A block describes one ``Entity`` (the agent itself, ally k, enemy k,
landmark k, other agent k, the utterance of other agent k, the goal, or "generic" when nothing
is known) and names its features, one per index. Entity indices count *slots* of the
observation: ``ally.1`` is the second other ally in this agent's observation, not agent 1, so
agents of one group share one layout. Flat feature names are ``<block>.<feature>``, e.g.
``enemy.2.health``; ``select("ally.*.health")`` turns glob patterns into indices.

JSON form: ``{"blocks": [{"name", "entity": {"kind", "index"}, "features", "start", "stop"}]}``.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from kdx.errors import KdxError

# Entity kinds; those in INDEXED_KINDS carry a slot index k, the others none.
INDEXED_KINDS = ("ally", "enemy", "landmark", "agent", "communication")
ENTITY_KINDS = ("self", "goal", "generic", *INDEXED_KINDS)


@dataclass(frozen=True)
class Entity:
    """What a block describes: ``kind`` (one of ``ENTITY_KINDS``) and, for ally / enemy /
    landmark / other agent / communication, the slot ``index`` k (the k-th such entity in this
    agent's observation)."""

    kind: str
    index: int | None = None

    def __post_init__(self) -> None:
        if self.kind not in ENTITY_KINDS:
            raise KdxError(f"unknown entity kind {self.kind!r}; kinds are: {', '.join(ENTITY_KINDS)}")
        indexed = self.kind in INDEXED_KINDS
        if indexed and (isinstance(self.index, bool) or not isinstance(self.index, int) or self.index < 0):
            raise KdxError(f"entity {self.kind!r} needs a slot index >= 0, got {self.index!r}")
        if not indexed and self.index is not None:
            raise KdxError(f"entity {self.kind!r} takes no index, got {self.index!r}")

    @property
    def label(self) -> str:
        """``"enemy 2"``, ``"self"``: for tables."""
        return self.kind if self.index is None else f"{self.kind} {self.index}"

    def to_json(self) -> dict:
        return {"kind": self.kind, "index": self.index}

    @staticmethod
    def from_json(data: dict) -> Entity:
        return Entity(str(data["kind"]), data.get("index"))


@dataclass(frozen=True)
class ObservationBlock:
    """Features ``start .. stop - 1`` of an observation, all about one entity."""

    name: str
    entity: Entity
    features: tuple[str, ...]
    start: int

    def __post_init__(self) -> None:
        if not self.name or not self.features:
            raise KdxError(f"observation block {self.name!r} needs a name and at least one feature")
        if len(set(self.features)) != len(self.features):
            raise KdxError(f"observation block {self.name!r} repeats a feature name: {self.features}")

    @property
    def stop(self) -> int:
        return self.start + len(self.features)

    @property
    def size(self) -> int:
        return len(self.features)

    def feature_names(self) -> list[str]:
        """Flat names ``<block>.<feature>`` in index order."""
        return [f"{self.name}.{f}" for f in self.features]

    def to_json(self) -> dict:
        return {"name": self.name, "entity": self.entity.to_json(), "features": list(self.features),
                "start": self.start, "stop": self.stop}

    @staticmethod
    def from_json(data: dict) -> ObservationBlock:
        block = ObservationBlock(str(data["name"]), Entity.from_json(data["entity"]),
                                 tuple(str(f) for f in data["features"]), int(data["start"]))
        if "stop" in data and int(data["stop"]) != block.stop:
            raise KdxError(f"observation block {block.name!r}: stop {data['stop']} does not match "
                           f"start {block.start} + {block.size} features")
        return block


@dataclass(frozen=True)
class ObservationLayout:
    """One agent's observation as consecutive named blocks covering ``[0, size)``, each index
    in exactly one block. Build one with ``ObservationLayout.concat``."""

    blocks: tuple[ObservationBlock, ...]

    def __post_init__(self) -> None:
        if not self.blocks:
            raise KdxError("an observation layout needs at least one block")
        at = 0
        for b in self.blocks:
            if b.start != at:
                raise KdxError(f"observation block {b.name!r} starts at {b.start}, expected {at}: "
                               "blocks must follow each other without gaps or overlaps")
            at = b.stop
        names = [b.name for b in self.blocks]
        if len(set(names)) != len(names):
            raise KdxError(f"observation block names repeat: {names}")

    @staticmethod
    def concat(parts: Iterable[tuple[str, Entity, Sequence[str]]]) -> ObservationLayout:
        """Blocks ``(name, entity, features)`` laid out one after another from index 0."""
        blocks, at = [], 0
        for name, entity, features in parts:
            blocks.append(ObservationBlock(name, entity, tuple(features), at))
            at = blocks[-1].stop
        return ObservationLayout(tuple(blocks))

    @staticmethod
    def generic(size: int) -> ObservationLayout:
        """One ``obs`` block of ``size`` unnamed features ``f0 .. f{size-1}``."""
        return ObservationLayout.concat([("obs", Entity("generic"), [f"f{i}" for i in range(size)])])

    @property
    def size(self) -> int:
        return self.blocks[-1].stop

    def feature_names(self) -> list[str]:
        """One flat name per observation index, e.g. ``enemy.2.health``."""
        return [name for b in self.blocks for name in b.feature_names()]

    def block(self, name: str) -> ObservationBlock:
        for b in self.blocks:
            if b.name == name:
                return b
        raise KdxError(f"no observation block {name!r}; blocks: {', '.join(b.name for b in self.blocks)}")

    def select(self, *patterns: str) -> list[int]:
        """Indices (ascending) of the features matching any glob pattern, e.g. ``ally.*.health``
        or ``enemy.*``. A pattern matches flat feature names, or block names (the whole block).
        A pattern that matches nothing is an error: a typo would otherwise select nothing."""
        chosen: set[int] = set()
        for pattern in patterns:
            hits = set()
            for b in self.blocks:
                if fnmatch.fnmatchcase(b.name, pattern):
                    hits.update(range(b.start, b.stop))
                    continue
                hits.update(b.start + i for i, name in enumerate(b.feature_names())
                            if fnmatch.fnmatchcase(name, pattern))
            if not hits:
                raise KdxError(f"pattern {pattern!r} matches no observation feature; blocks: "
                               + ", ".join(b.name for b in self.blocks))
            chosen |= hits
        return sorted(chosen)

    def to_json(self) -> dict:
        return {"blocks": [b.to_json() for b in self.blocks]}

    @staticmethod
    def from_json(data: dict) -> ObservationLayout:
        try:
            return ObservationLayout(tuple(ObservationBlock.from_json(b) for b in data["blocks"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise KdxError(f"not an observation layout ({type(exc).__name__}: {exc}); expected "
                           '{"blocks": [{"name", "entity", "features", "start", "stop"}, ...]}') from None
