"""Each student's view of its agent's observation during distillation (``kdx distill --view``).

``StudentViews`` pairs every agent's ``View`` (``kdx.envs.view_spec``) with that agent's input
layout. ``inputs(obs, generator)`` turns the agents' own observations (``[B, D_i]`` each) into the
students' padded input ``[B, A, D']`` (``D'`` the widest view): the training view draws noise and
dropout from ``generator`` (the loop's sample generator, so runs stay reproducible and resumable);
``device()`` gives the views a deployed student sees (no noise, dropout flags 1), which ``kdx
evaluate`` applies. With no view given (``active`` False) callers keep the padded observation
as before, bit for bit.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch

from kdx.envs.obs_layout import ObservationLayout
from kdx.envs.view_apply import apply_view
from kdx.envs.view_spec import View, read_views_toml, resolve_views
from kdx.errors import KdxError


def parse_view_entries(entries: Sequence[str]) -> dict[str, str]:
    """``("marine=sight:4", "medivac=-enemy.* noise:0.05")`` -> ``{AGENT_OR_GROUP: OPS}``."""
    out: dict[str, str] = {}
    for entry in entries:
        key, sep, ops = entry.partition("=")
        key, ops = key.strip(), ops.strip()
        if not sep or not key or not ops:
            raise KdxError(f"--view {entry!r}: write AGENT_OR_GROUP=OPS, e.g. --view 'marine=sight:4 noise:0.05'")
        if key in out:
            raise KdxError(f"--view names {key!r} twice; give its ops in one entry")
        out[key] = ops
    return out


def view_entries_from_toml(path: str) -> tuple[str, ...]:
    """The ``[views]`` table of a TOML file as ``AGENT_OR_GROUP=OPS`` entries (what ``--view`` takes)."""
    return tuple(f"{k}={ops if isinstance(ops, str) else ' '.join(ops)}" for k, ops in read_views_toml(path).items())


@dataclass(frozen=True)
class StudentViews:
    """Per agent (env order): its view and the layout of its full observation."""

    views: Mapping[str, View]
    layouts: Mapping[str, ObservationLayout]

    @staticmethod
    def resolve(entries: Sequence[str], env) -> StudentViews:
        """From ``AGENT_OR_GROUP=OPS`` entries against ``env``'s layouts, groups and distance unit;
        ``KdxError`` on an unknown agent/group or an op that does not fit."""
        layouts = dict(zip(env.spec.agent_names, env.observation_layouts()))
        targets = dict(zip(env.spec.agent_names, env.action_targets()))
        views = resolve_views(parse_view_entries(entries), layouts, env.spec.groups, env.observation_distance_unit,
                              targets)
        return StudentViews(views, layouts)

    @staticmethod
    def from_json(data: Mapping[str, Mapping], layouts: Sequence[ObservationLayout]) -> StudentViews:
        """From ``students/config.json``'s ``views`` (``to_json``) and the env's layouts."""
        names = list(data)
        return StudentViews({n: View.from_json(data[n]["ops"]) for n in names}, dict(zip(names, layouts)))

    @property
    def active(self) -> bool:
        return any(v.ops for v in self.views.values())

    def widths(self) -> dict[str, int]:
        """Each student's input width: its view's output size."""
        return {n: v.output_layout(self.layouts[n]).size for n, v in self.views.items()}

    def device(self) -> StudentViews:
        return StudentViews({n: v.device_view() for n, v in self.views.items()}, self.layouts)

    def to_json(self) -> dict[str, dict]:
        """Per agent: the view's ops (``View.to_json``), its text and the student's input features."""
        return {n: {"ops": v.to_json(), "text": v.text, "features": v.output_layout(self.layouts[n]).feature_names()}
                for n, v in self.views.items()}

    def inputs(self, obs: Sequence[torch.Tensor], generator: torch.Generator | None) -> torch.Tensor:
        """Agents' own observations ``[B, D_i]`` (env order) -> viewed and padded ``[B, A, D']``."""
        viewed = [apply_view(v, self.layouts[n], o, generator) for (n, v), o in zip(self.views.items(), obs)]
        out = viewed[0].new_zeros(viewed[0].shape[0], len(viewed), max(x.shape[1] for x in viewed))
        for i, x in enumerate(viewed):
            out[:, i, : x.shape[1]] = x
        return out
