"""The batched multi-agent environment API every kdx environment implements.

Conventions (shapes are part of the contract):

- ``num_envs`` copies of one scenario step together; every tensor is batch-first.
- Agents may differ: agent ``i`` has its own observation size ``spec.agents[i].obs_dim`` and
  action count ``spec.agents[i].n_actions``. Observations and action masks are therefore tuples
  with one tensor per agent, ``obs[i]: float32 [num_envs, obs_dim_i]`` and
  ``action_mask[i]: bool [num_envs, n_actions_i]``. ``EnvStep.padded_obs()`` stacks them into
  ``[num_envs, n_agents, max_obs_dim]`` for shared networks.
- Actions are one integer tensor ``long [num_envs, n_agents]`` (discrete actions).
- Rewards are per agent, ``float32 [num_envs, n_agents]``; ``state`` is the global state
  ``float32 [num_envs, state_dim]`` for centralised critics.
- Finished environments reset themselves inside ``step``: the returned observations of an env
  whose ``done`` flag is set already belong to its next episode. ``info["final_state"]`` keeps
  the state the finished episode ended in (for bootstrapping on truncation) and
  ``info["episode_return"]`` / ``info["episode_length"]`` / ``info["won"]`` describe it. The
  episode return is the team's: the sum of the agents' rewards, or the shared team reward once
  when ``spec.shared_reward`` (SMAC-style envs give every agent the same reward).

Subclasses implement only the scenario: ``_reset_envs``, ``_step_envs``, ``_observations``,
``_action_masks`` and ``_global_state``; the base class owns auto-reset, time limits, action
checks, episode statistics and seeding.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field

import torch

from kdx.envs.obs_layout import ObservationLayout
from kdx.errors import KdxError


@dataclass(frozen=True)
class AgentSpec:
    """One agent as the learner sees it."""

    name: str
    obs_dim: int
    n_actions: int
    group: str = "agents"


@dataclass(frozen=True)
class EnvSpec:
    """What a batched environment offers: its agents, global state size and episode limit."""

    name: str
    agents: tuple[AgentSpec, ...]
    state_dim: int
    episode_limit: int
    has_win_flag: bool = False
    shared_reward: bool = False  # every agent receives the same team reward (SMAC-style)

    @property
    def n_agents(self) -> int:
        return len(self.agents)

    @property
    def agent_names(self) -> tuple[str, ...]:
        return tuple(a.name for a in self.agents)

    @property
    def max_obs_dim(self) -> int:
        return max(a.obs_dim for a in self.agents)

    @property
    def max_actions(self) -> int:
        return max(a.n_actions for a in self.agents)

    @property
    def groups(self) -> dict[str, list[str]]:
        """Agent names by group, e.g. ``{"speaker": ["speaker_0"], "listener": ["listener_0"]}``."""
        out: dict[str, list[str]] = {}
        for a in self.agents:
            out.setdefault(a.group, []).append(a.name)
        return out

    @property
    def homogeneous(self) -> bool:
        first = self.agents[0]
        return all(a.obs_dim == first.obs_dim and a.n_actions == first.n_actions for a in self.agents)

    def agent_index(self, name: str) -> int:
        try:
            return self.agent_names.index(name)
        except ValueError:
            raise KdxError(
                f"{self.name} has no agent named {name!r}; its agents are: "
                + ", ".join(self.agent_names)
            ) from None

    def to_json(self) -> dict:
        return {
            "name": self.name,
            "state_dim": self.state_dim,
            "episode_limit": self.episode_limit,
            "has_win_flag": self.has_win_flag,
            "shared_reward": self.shared_reward,
            "agents": [
                {"name": a.name, "obs_dim": a.obs_dim, "n_actions": a.n_actions, "group": a.group}
                for a in self.agents
            ],
        }


@dataclass
class EnvStep:
    """What ``reset`` and ``step`` return. See the module docstring for shapes."""

    obs: tuple[torch.Tensor, ...]
    action_mask: tuple[torch.Tensor, ...]
    state: torch.Tensor
    reward: torch.Tensor
    terminated: torch.Tensor
    truncated: torch.Tensor
    info: dict[str, torch.Tensor] = field(default_factory=dict)

    @property
    def done(self) -> torch.Tensor:
        """``bool [num_envs]``: the episode ended at this step (terminated or truncated)."""
        return self.terminated | self.truncated

    def padded_obs(self) -> torch.Tensor:
        """Observations stacked as ``float32 [num_envs, n_agents, max_obs_dim]``, zero-padded."""
        return pad_and_stack(self.obs)

    def padded_action_mask(self) -> torch.Tensor:
        """Masks stacked as ``bool [num_envs, n_agents, max_actions]``; padding is False."""
        return pad_and_stack(self.action_mask)


def pad_and_stack(per_agent: tuple[torch.Tensor, ...]) -> torch.Tensor:
    """Stack per-agent ``[num_envs, d_i]`` tensors into ``[num_envs, n_agents, max d_i]``."""
    width = max(t.shape[1] for t in per_agent)
    if all(t.shape[1] == width for t in per_agent):
        return torch.stack(per_agent, dim=1)
    n = per_agent[0].shape[0]
    out = per_agent[0].new_zeros((n, len(per_agent), width))
    for i, t in enumerate(per_agent):
        out[:, i, : t.shape[1]] = t
    return out


def check_num_envs(num_envs: object) -> None:
    """Refuse anything but a positive ``int`` env count, before any env is built."""
    if isinstance(num_envs, bool) or not isinstance(num_envs, int) or num_envs < 1:
        raise KdxError(f"num_envs must be a positive integer, got {num_envs!r}")


class BatchedEnv(ABC):
    """Base class: auto-reset, time limits, action checks, episode statistics, seeding.

    Args:
        num_envs: how many copies step together.
        seed: seeds the env's own ``torch.Generator``; equal seeds give equal episodes.
        device: where every tensor lives (``"cpu"`` or ``"cuda"``).
        check_actions: validate action shape, range and masks on every step. Trainers that
            sample from masked distributions may switch it off for speed.
    """

    spec: EnvSpec
    # Whether ``state_dict`` holds the env's whole state, so that a checkpoint resumes it exactly.
    # Envs that wrap an external simulator (PettingZoo, StarCraft II) set False: a resume then
    # starts fresh episodes.
    state_in_tensors: bool = True
    # World units per unit of the ``distance`` / ``dx`` / ``dy`` observation features: the
    # ``sight:r`` view op (``kdx.envs.view_spec``) compares r in world units. SMAC-style envs
    # normalise distances by their sight range 9; MPE observes raw offsets.
    observation_distance_unit: float = 1.0

    def __init__(
        self,
        num_envs: int,
        seed: int = 0,
        device: str | torch.device = "cpu",
        check_actions: bool = True,
    ) -> None:
        check_num_envs(num_envs)
        self.num_envs = num_envs
        self.device = torch.device(device)
        self.check_actions = check_actions
        self.seed = seed
        self.rng = torch.Generator(device=self.device)
        self.rng.manual_seed(seed)
        self.t = torch.zeros(num_envs, dtype=torch.long, device=self.device)
        self._episode_return = torch.zeros(num_envs, device=self.device)
        self._all_envs = torch.ones(num_envs, dtype=torch.bool, device=self.device)
        self._n_actions = torch.tensor(
            [a.n_actions for a in self.spec.agents], dtype=torch.long, device=self.device
        )

    # ------------------------------------------------------------------ scenario hooks
    @abstractmethod
    def _reset_envs(self, mask: torch.Tensor) -> None:
        """Start new episodes in the envs where ``mask`` (``bool [num_envs]``) is True."""

    @abstractmethod
    def _step_envs(self, actions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Advance every env one agent step.

        Returns ``(reward [num_envs, n_agents], terminated bool [num_envs], won bool [num_envs]
        or None)``.
        """

    @abstractmethod
    def _observations(self) -> tuple[torch.Tensor, ...]:
        """Per-agent observations ``[num_envs, obs_dim_i]`` of the current state."""

    @abstractmethod
    def _global_state(self) -> torch.Tensor:
        """The global state ``[num_envs, state_dim]``."""

    def _action_masks(self) -> tuple[torch.Tensor, ...]:
        """Per-agent legal actions ``bool [num_envs, n_actions_i]``; all legal by default."""
        return tuple(
            torch.ones(self.num_envs, a.n_actions, dtype=torch.bool, device=self.device)
            for a in self.spec.agents
        )

    def _env_truncated(self) -> torch.Tensor | None:
        """Truncations decided by the scenario itself (``bool [num_envs]``), beyond the spec's
        episode limit; wrapped external envs override this. Called right after ``_step_envs``."""
        return None

    def _describe_illegal(self, agent: int, env: int, action: int) -> str:
        """Why an action is masked out; scenarios with rules override this."""
        return "it is masked out in the current state"

    # ------------------------------------------------------------------ public API
    def reset(self) -> EnvStep:
        """Reset every env and return the first observations (rewards zero, no flags set)."""
        self._reset_envs(self._all_envs)
        self.t.zero_()
        self._episode_return.zero_()
        masks = self._action_masks()
        self._last_masks = masks
        zeros_b = torch.zeros(self.num_envs, dtype=torch.bool, device=self.device)
        return EnvStep(
            obs=self._observations(),
            action_mask=masks,
            state=self._global_state(),
            reward=torch.zeros(self.num_envs, self.spec.n_agents, device=self.device),
            terminated=zeros_b,
            truncated=zeros_b.clone(),
            info={},
        )

    def step(self, actions: torch.Tensor) -> EnvStep:
        """Apply ``actions`` (``long [num_envs, n_agents]``) and auto-reset finished envs."""
        if self.check_actions:
            actions = self._validate_actions(actions)
        reward, terminated, won = self._step_envs(actions)
        self.t += 1
        truncated = self.t >= self.spec.episode_limit
        external = self._env_truncated()
        if external is not None:
            truncated = truncated | external
        truncated = truncated & ~terminated
        done = terminated | truncated
        # The team's return: one shared reward counts once, per-agent rewards are summed.
        self._episode_return += reward[:, 0] if self.spec.shared_reward else reward.sum(dim=1)
        info: dict[str, torch.Tensor] = {}
        info["episode_return"] = self._episode_return.clone()
        info["episode_length"] = self.t.clone()
        info["won"] = won if won is not None else torch.zeros_like(done)
        info["final_state"] = state = self._global_state()
        if bool(done.any()):
            self._reset_envs(done)
            self.t[done] = 0
            self._episode_return[done] = 0.0
            state = self._global_state()  # else nothing changed: the final state is the state
        masks = self._action_masks()
        self._last_masks = masks
        return EnvStep(
            obs=self._observations(),
            action_mask=masks,
            state=state,
            reward=reward,
            terminated=terminated,
            truncated=truncated,
            info=info,
        )

    def _validate_actions(self, actions: torch.Tensor) -> torch.Tensor:
        expected = (self.num_envs, self.spec.n_agents)
        if not isinstance(actions, torch.Tensor):
            raise KdxError(
                f"{self.spec.name}: actions must be a torch tensor of shape {expected}, "
                f"got {type(actions).__name__}"
            )
        if tuple(actions.shape) != expected:
            raise KdxError(
                f"{self.spec.name}: actions must have shape [num_envs, n_agents] = {list(expected)}, "
                f"got {list(actions.shape)}"
            )
        if actions.dtype.is_floating_point or actions.dtype == torch.bool:
            raise KdxError(
                f"{self.spec.name}: actions must be integers (torch.long), got {actions.dtype}"
            )
        actions = actions.to(device=self.device, dtype=torch.long)
        bad = (actions < 0) | (actions >= self._n_actions)
        if bool(bad.any()):
            env, agent = (int(v) for v in bad.nonzero()[0])
            a = self.spec.agents[agent]
            raise KdxError(
                f"{self.spec.name}: action {int(actions[env, agent])} of agent {a.name!r} in env "
                f"{env} is out of range; valid actions are 0..{a.n_actions - 1}"
            )
        for i, mask in enumerate(self._last_masks):
            legal = mask.gather(1, actions[:, i : i + 1]).squeeze(1)
            if not bool(legal.all()):
                env = int((~legal).nonzero()[0])
                action = int(actions[env, i])
                raise KdxError(
                    f"{self.spec.name}: action {action} of agent {self.spec.agents[i].name!r} in env "
                    f"{env} is illegal: {self._describe_illegal(i, env, action)}. "
                    "Sample from the action mask (EnvStep.action_mask)."
                )
        return actions

    def observation_layouts(self) -> tuple[ObservationLayout, ...]:
        """What each index of each agent's observation means, one layout per agent (see
        ``kdx.envs.obs_layout``). Scenarios override ``_observation_layouts``; the default is one
        generic block per agent."""
        layouts = self._observation_layouts()
        for agent, layout in zip(self.spec.agents, layouts, strict=True):
            if layout.size != agent.obs_dim:
                raise KdxError(f"{self.spec.name}: the observation layout of {agent.name!r} has "
                               f"{layout.size} features, its observations {agent.obs_dim}")
        return layouts

    def observation_layout(self, agent: int | str) -> ObservationLayout:
        """The layout of one agent, by index or name."""
        index = self.spec.agent_index(agent) if isinstance(agent, str) else agent
        if not 0 <= index < self.spec.n_agents:
            raise KdxError(f"{self.spec.name} has agents 0..{self.spec.n_agents - 1}, not {index}")
        return self.observation_layouts()[index]

    def _observation_layouts(self) -> tuple[ObservationLayout, ...]:
        return tuple(ObservationLayout.generic(a.obs_dim) for a in self.spec.agents)

    def action_targets(self) -> tuple[dict[int, str], ...]:
        """Per agent, the observation block that each targeted action refers to, by action index
        (SMAC: attack action ``6 + k`` -> ``enemy.k``; a medivac's heal -> that ally's block). The
        action mask may allow such an action, so a student's view must keep some feature of its
        block (``kdx.envs.view_spec.resolve_views``). Default: no targeted actions."""
        return tuple({} for _ in self.spec.agents)

    def sample_random_actions(self) -> torch.Tensor:
        """Uniformly random legal actions, ``long [num_envs, n_agents]``, from the env's generator."""
        cols = []
        for mask in self._last_masks:
            probs = mask.float()
            cols.append(torch.multinomial(probs, 1, generator=self.rng).squeeze(1))
        return torch.stack(cols, dim=1)

    def close(self) -> None:
        """Release resources (subprocesses, simulators). Pure-torch envs hold none."""

    # ------------------------------------------------------------------ checkpointing
    def state_dict(self) -> dict[str, torch.Tensor]:
        """Every tensor of the env's state, flat ``{dotted.name: tensor}`` (safetensors-ready).

        Collected generically from instance attributes: tensors, ``torch.Generator`` states
        (as ``uint8`` tensors), and tensors inside tuples, lists, dicts and plain objects
        (dataclasses, small state holders) reachable from them. Python scalars are not state:
        scenarios keep their mutable state in tensors. Envs whose state lives outside torch
        (simulator processes) override this and ``load_state_dict`` or raise ``KdxError``.
        """
        out: dict[str, torch.Tensor] = {}
        _collect_tensors(vars(self), "", out, seen=set())
        return out

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Restore what ``state_dict`` returned (same scenario, ``num_envs`` and device).

        Tensors that the saved env had built lazily (caches created on its first steps) and this
        env has not built yet are adopted first, so a freshly reset env restores any checkpoint.
        """
        self._adopt_lazy_tensors(state)
        current = self.state_dict()
        missing = sorted(set(current) - set(state))
        extra = sorted(set(state) - set(current))
        if missing or extra:
            raise KdxError(
                f"{self.spec.name}: env state does not match this env (missing {missing[:5]}, "
                f"unexpected {extra[:5]}); resume with the same env and num_envs"
            )
        for key, value in current.items():
            if value.shape != state[key].shape or value.dtype != state[key].dtype:
                raise KdxError(
                    f"{self.spec.name}: env state {key!r} has shape {list(state[key].shape)} "
                    f"{state[key].dtype}, expected {list(value.shape)} {value.dtype}; resume with "
                    "the same env and num_envs"
                )
        _restore_tensors(self, "", state, seen=set())

    def _adopt_lazy_tensors(self, saved: dict[str, torch.Tensor]) -> None:
        """Attach saved tensors whose holder exists here but which were not created yet; keys
        that do not resolve are left for ``load_state_dict`` to report."""
        for key in sorted(set(saved) - set(self.state_dict())):
            *path, name = key.split(".")
            if name.endswith("#generator"):
                continue
            holder: object = self
            try:
                for part in path:
                    holder = holder[int(part)] if isinstance(holder, (list, tuple)) else (
                        holder[part] if isinstance(holder, dict) else getattr(holder, part))
            except (AttributeError, KeyError, IndexError, ValueError):
                continue
            if isinstance(holder, dict):
                holder[name] = saved[key].to(self.device).clone()
            elif hasattr(holder, "__dict__") and not isinstance(holder, (list, tuple)):
                setattr(holder, name, saved[key].to(self.device).clone())


def _is_state_holder(value: object) -> bool:
    """Plain Python objects whose attributes may hold env state (not modules or classes, nor
    objects whose class sets ``NOT_ENV_STATE = True``: large constants rebuilt from the config)."""
    return hasattr(value, "__dict__") and not isinstance(value, (type, torch.nn.Module)) and (
        type(value).__module__.startswith("kdx.") or hasattr(value, "__dataclass_fields__")
    ) and not getattr(value, "NOT_ENV_STATE", False)


def _collect_tensors(value: object, prefix: str, out: dict[str, torch.Tensor], seen: set[int]) -> None:
    if isinstance(value, torch.Tensor):
        out[prefix] = value.detach().clone()
    elif isinstance(value, torch.Generator):
        out[prefix + "#generator"] = value.get_state().clone()
    elif id(value) in seen:
        return
    elif isinstance(value, dict):
        seen.add(id(value))
        for k, v in value.items():
            if isinstance(k, str):
                _collect_tensors(v, f"{prefix}.{k}" if prefix else k, out, seen)
    elif isinstance(value, (list, tuple)):
        seen.add(id(value))
        for i, v in enumerate(value):
            _collect_tensors(v, f"{prefix}.{i}", out, seen)
    elif _is_state_holder(value):
        seen.add(id(value))
        _collect_tensors(vars(value), prefix, out, seen)


def _restore_tensors(owner: object, prefix: str, state: dict[str, torch.Tensor], seen: set[int]) -> None:
    """Copy saved tensors back into the live objects, in place where possible."""
    seen.add(id(owner))
    items = owner.items() if isinstance(owner, dict) else vars(owner).items()
    for name, value in list(items):
        if not isinstance(name, str):
            continue
        key = f"{prefix}.{name}" if prefix else name
        new = _restored(value, key, state, seen)
        if new is not value:
            if isinstance(owner, dict):
                owner[name] = new
            else:
                setattr(owner, name, new)


def _restored(value: object, key: str, state: dict[str, torch.Tensor], seen: set[int]) -> object:
    if isinstance(value, torch.Tensor):
        try:
            value.copy_(state[key])
            return value
        except RuntimeError:  # inference tensors, overlapping views: replace instead
            return state[key].to(value.device).clone()
    if isinstance(value, torch.Generator):
        value.set_state(state[key + "#generator"])
        return value
    if id(value) in seen:
        return value
    if isinstance(value, tuple):
        seen.add(id(value))
        items = tuple(_restored(v, f"{key}.{i}", state, seen) for i, v in enumerate(value))
        # Keep the original tuple when nothing in it was replaced: tuples inside frozen
        # dataclasses (EnvSpec.agents) cannot be reassigned.
        return value if all(a is b for a, b in zip(items, value)) else items
    if isinstance(value, list):
        seen.add(id(value))
        value[:] = [_restored(v, f"{key}.{i}", state, seen) for i, v in enumerate(value)]
        return value
    if isinstance(value, dict) or _is_state_holder(value):
        _restore_tensors(value, key, state, seen)
    return value
