"""Observations recorded from real rollouts: calibration data for int8 and TensorRT, and the
inputs of the parity checks.

The students act greedily in the run's environment (batched envs, auto-reset) while each
agent's observation and action mask are recorded. Recurrent policies (a recurrent teacher
actor) are run along the same trajectories so that their hidden state before every recorded
step is recorded too (zeros at the start of each episode).

``calib.npz`` keys (agent names contain no key prefix, so ``kind.agent`` splits on the first dot):

    obs.<agent>            float32 [N, obs_dim]    the env's (raw) observation: what a teacher reads
    viewed_obs.<agent>     float32 [N, view width] students with a view: the device view of those rows,
                                                   what the student's model reads (int8 calibrates on it)
    action_mask.<agent>    bool    [N, n_actions]
    h_in.<role>.<agent>    float32 [N, H]      recurrent policies only

A student with a view acts on, and is recorded with, the device part of its view
(``View.device_view``: no noise, dropout flags 1), as it runs on the device.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from kdx.envs.view_apply import apply_view
from kdx.envs.view_spec import View
from kdx.errors import KdxError
from kdx.export.sources import PolicySource

MIN_PARITY_SAMPLES = 1000


@dataclass
class CalibData:
    """Recorded inputs per agent; ``h_in`` keyed by ``(role, agent)``."""

    obs: dict[str, np.ndarray]
    action_mask: dict[str, np.ndarray]
    h_in: dict[tuple[str, str], np.ndarray] = field(default_factory=dict)
    viewed_obs: dict[str, np.ndarray] = field(default_factory=dict)  # students with a view

    @property
    def n_samples(self) -> int:
        return min(v.shape[0] for v in self.obs.values())

    def inputs(self, source: PolicySource) -> dict[str, np.ndarray]:
        """``{"obs", "action_mask"[, "h_in"]}`` arrays (all rows) for one policy."""
        viewed = source.role == "student" and source.name in self.viewed_obs
        out = {"obs": self.viewed_obs[source.name] if viewed else self.obs[source.name],
               "action_mask": self.action_mask[source.name]}
        if source.recurrent_size is not None:
            out["h_in"] = self.h_in[(source.role, source.name)]
        return out

    def save(self, path: str | Path) -> Path:
        arrays: dict[str, np.ndarray] = {}
        for agent, value in self.obs.items():
            arrays[f"obs.{agent}"] = value.astype(np.float32)
            arrays[f"action_mask.{agent}"] = self.action_mask[agent].astype(bool)
        for (role, agent), value in self.h_in.items():
            arrays[f"h_in.{role}.{agent}"] = value.astype(np.float32)
        for agent, value in self.viewed_obs.items():
            arrays[f"viewed_obs.{agent}"] = value.astype(np.float32)
        path = Path(path)
        with open(path, "wb") as handle:
            np.savez_compressed(handle, **arrays)
            handle.flush()
            os.fsync(handle.fileno())
        return path

    @classmethod
    def load(cls, path: str | Path) -> CalibData:
        try:
            with np.load(path, allow_pickle=False) as data:
                arrays = {k: data[k] for k in data.files}
        except (OSError, ValueError) as exc:
            raise KdxError(f"{path}: not a readable calibration file ({exc})") from None
        data = cls({}, {})
        for key, value in arrays.items():
            kind, _, rest = key.partition(".")
            if kind == "obs":
                data.obs[rest] = value
            elif kind == "action_mask":
                data.action_mask[rest] = value
            elif kind == "viewed_obs":
                data.viewed_obs[rest] = value
            elif kind == "h_in":
                role, _, agent = rest.partition(".")
                data.h_in[(role, agent)] = value
        return data


def _logits(source: PolicySource, obs: torch.Tensor, h: torch.Tensor | None):
    out = source.module(obs, h) if source.recurrent_size is not None else source.module(obs)
    if isinstance(out, tuple):
        return out[0], (out[1] if source.recurrent_size is not None else None)
    return out, None


@torch.no_grad()
def record_rollouts(env_name: str, students: list[PolicySource], others: tuple[PolicySource, ...] | list[PolicySource] = (),
                    n_samples: int = 1024, num_envs: int = 16, seed: int = 20_000) -> CalibData:
    """Roll the greedy students out in ``env_name`` and record ``n_samples`` inputs per agent.

    ``others`` (the teacher views) do not act; recurrent ones are stepped along to record their
    hidden state. Every agent of the env needs a student.
    """
    from kdx.envs.registry import make

    if n_samples < 1:
        raise KdxError(f"the number of recorded observations must be positive, got {n_samples}")
    env = make(env_name, num_envs=num_envs, seed=seed)
    names = list(env.spec.agent_names)
    by_name = {s.name: s for s in students}
    missing = [n for n in names if n not in by_name]
    if missing:
        raise KdxError(f"{env_name} has agents without a student: {', '.join(missing)}; "
                       "re-run `kdx distill` for all agents")
    for s in [*students, *others]:
        spec = env.spec.agents[names.index(s.name)]
        raw_dim = s.obs_dim if s.view is None else s.view.raw_obs_dim
        if (spec.obs_dim, spec.n_actions) != (raw_dim, s.n_actions):
            raise KdxError(f"{s.role} {s.name!r} expects obs {raw_dim}/actions {s.n_actions} but "
                           f"{env_name} gives {spec.obs_dim}/{spec.n_actions}; wrong run folder?")
    device_views = {s.name: (View.from_json(s.view.device_ops), s.view.layout()) for s in students if s.view}
    recurrent = [s for s in [*students, *others] if s.recurrent_size is not None]
    hidden = {(s.role, s.name): torch.zeros(num_envs, s.recurrent_size) for s in recurrent}
    obs_rec: dict[str, list[torch.Tensor]] = {n: [] for n in names}
    mask_rec: dict[str, list[torch.Tensor]] = {n: [] for n in names}
    viewed_rec: dict[str, list[torch.Tensor]] = {n: [] for n in device_views}
    h_rec: dict[tuple[str, str], list[torch.Tensor]] = {k: [] for k in hidden}
    step = env.reset()
    for _ in range(math.ceil(n_samples / num_envs)):
        actions = torch.zeros(num_envs, len(names), dtype=torch.long)
        for i, name in enumerate(names):
            obs, mask = step.obs[i].float(), step.action_mask[i].bool()
            obs_rec[name].append(obs.clone())
            mask_rec[name].append(mask.clone())
            s_obs = obs  # what this agent's student reads: its device view, if it has one
            if name in device_views:
                s_obs = apply_view(*device_views[name], obs)
                viewed_rec[name].append(s_obs.clone())
            logits = None
            for s in (x for x in recurrent if x.name == name):
                h_rec[(s.role, name)].append(hidden[(s.role, name)].clone())
                out, hidden[(s.role, name)] = _logits(s, s_obs if s is by_name[name] else obs, hidden[(s.role, name)])
                if s is by_name[name]:
                    logits = out
            if logits is None:
                logits, _ = _logits(by_name[name], s_obs, None)
            actions[:, i] = logits.masked_fill(~mask, torch.finfo(logits.dtype).min).argmax(-1)
        step = env.step(actions)
        for key in hidden:  # a finished env starts a new episode: fresh recurrent state
            hidden[key] = hidden[key].masked_fill(step.done.view(-1, 1), 0.0)
    env.close()

    def stack(parts: list[torch.Tensor]) -> np.ndarray:
        return torch.cat(parts)[:n_samples].numpy()

    return CalibData(
        obs={n: stack(v).astype(np.float32) for n, v in obs_rec.items()},
        action_mask={n: stack(v).astype(bool) for n, v in mask_rec.items()},
        h_in={k: stack(v).astype(np.float32) for k, v in h_rec.items()},
        viewed_obs={n: stack(v).astype(np.float32) for n, v in viewed_rec.items()},
    )
