"""Shared machinery of the vectorised MPE scenarios: state tensors, resets, state import.

Every scenario keeps its world as a few batch-first tensors:

- ``agent_pos``, ``agent_vel``: ``[num_envs, n_agents, 2]`` (immovable agents keep velocity 0);
- ``landmark_pos``: ``[num_envs, n_landmarks, 2]`` (landmarks never move in these scenarios);
- ``comm``: ``[num_envs, n_agents, dim_c]``, each agent's current utterance ``state.c``
  (one-hot of the last word said; zeros for silent agents and after a reset);
- ``goal``: ``long [num_envs, n_goals]``, landmark indices of the scenario's goals.

Scenario subclasses declare their agents and implement the step, observations and rewards,
and name their observations' features (``_make_layouts``, from the blocks in ``blocks.py``; the
spec's observation sizes are the layouts' sizes).
Observations are computed once per state and cached (``_step_envs`` and ``_reset_envs``
invalidate the cache), because the base class asks for them and for the global state (which
is their concatenation) several times per step.
"""

from __future__ import annotations

from typing import Any

import torch

from kdx.envs.base import AgentSpec, BatchedEnv, EnvSpec
from kdx.envs.obs_layout import ObservationLayout
from kdx.errors import KdxError

_DTYPES = {"float32": torch.float32, "float64": torch.float64}


def resolve_dtype(dtype: torch.dtype | str) -> torch.dtype:
    """Accept ``torch.float32``/``torch.float64`` or their names; anything else is an error."""
    if isinstance(dtype, str):
        if dtype not in _DTYPES:
            raise KdxError(f"dtype must be one of {sorted(_DTYPES)}, got {dtype!r}")
        return _DTYPES[dtype]
    if dtype not in _DTYPES.values():
        raise KdxError(f"dtype must be torch.float32 or torch.float64, got {dtype!r}")
    return dtype


class MpeEnv(BatchedEnv):
    """Base of the vectorised MPE scenarios (see the module docstring for the state layout).

    Subclasses set ``n_landmarks``, ``dim_c``, ``n_goals`` and implement ``_make_layouts``,
    ``_make_spec``, ``_step_envs``, ``_compute_observations`` and ``_goals_from_mpe2``.
    """

    n_landmarks: int
    dim_c: int
    n_goals: int = 0

    def __init__(
        self,
        config: Any,
        num_envs: int,
        seed: int = 0,
        device: str | torch.device = "cpu",
        check_actions: bool = True,
        dtype: torch.dtype | str = torch.float32,
    ) -> None:
        self.config = config
        self._layouts = self._make_layouts()
        self.spec = self._make_spec()
        super().__init__(num_envs, seed=seed, device=device, check_actions=check_actions)
        self.dtype = resolve_dtype(dtype)
        self._obs_cache: tuple[torch.Tensor, ...] | None = None
        self._state_cache: torch.Tensor | None = None
        self._allocate_state()
        b = num_envs
        # MPE has no illegal actions; one constant set of all-True masks serves every step.
        self._masks = tuple(
            torch.ones(b, s.n_actions, dtype=torch.bool, device=self.device) for s in self.spec.agents
        )

    # ------------------------------------------------------------------ scenario hooks
    def _allocate_state(self) -> None:
        """Create the world tensors (all zeros). Scenarios with a packed layout override this
        and expose the same names as properties."""
        b, a = self.num_envs, self.spec.n_agents
        f = {"dtype": self.dtype, "device": self.device}
        self.agent_pos = torch.zeros(b, a, 2, **f)
        self.agent_vel = torch.zeros(b, a, 2, **f)
        self.landmark_pos = torch.zeros(b, self.n_landmarks, 2, **f)
        self.comm = torch.zeros(b, a, self.dim_c, **f)
        self.goal = torch.zeros(b, self.n_goals, dtype=torch.long, device=self.device)

    def _make_layouts(self) -> tuple[ObservationLayout, ...]:  # pragma: no cover - abstract
        """Each agent's observation layout, from the config alone (called before ``_make_spec``,
        which takes the observation sizes from it)."""
        raise NotImplementedError

    def _make_spec(self) -> EnvSpec:  # pragma: no cover - abstract
        raise NotImplementedError

    def _observation_layouts(self) -> tuple[ObservationLayout, ...]:
        return self._layouts

    def _compute_observations(self) -> tuple[tuple[torch.Tensor, ...], torch.Tensor]:
        """Per-agent observations and their concatenation ``[num_envs, state_dim]``."""
        raise NotImplementedError  # pragma: no cover - abstract

    def _goals_from_mpe2(self, world: Any) -> list[int]:
        """The scenario's goal landmark indices read from an mpe2 world."""
        return []

    # ------------------------------------------------------------------ BatchedEnv hooks
    def _reset_envs(self, mask: torch.Tensor) -> None:
        # Draw fresh states for every env and keep them where ``mask`` is set: no host sync,
        # and a reset costs a few small random draws.
        b, a = self.num_envs, self.spec.n_agents
        f = {"dtype": self.dtype, "device": self.device, "generator": self.rng}
        new_agent_pos = torch.rand(b, a, 2, **f) * 2.0 - 1.0
        new_landmark_pos = torch.rand(b, self.n_landmarks, 2, **f) * 2.0 - 1.0
        m3 = mask[:, None, None]
        self.agent_pos = torch.where(m3, new_agent_pos, self.agent_pos)
        self.landmark_pos = torch.where(m3, new_landmark_pos, self.landmark_pos)
        self.agent_vel = self.agent_vel.masked_fill(m3, 0.0)
        self.comm = self.comm.masked_fill(m3, 0.0)
        if self.n_goals:
            new_goal = torch.randint(
                0, self.n_landmarks, (b, self.n_goals), generator=self.rng, device=self.device
            )
            self.goal = torch.where(mask[:, None], new_goal, self.goal)
        self._invalidate()

    def _observations(self) -> tuple[torch.Tensor, ...]:
        if self._obs_cache is None:
            self._obs_cache, self._state_cache = self._compute_observations()
        return self._obs_cache

    def _global_state(self) -> torch.Tensor:
        self._observations()
        assert self._state_cache is not None
        return self._state_cache

    def _action_masks(self) -> tuple[torch.Tensor, ...]:
        return self._masks

    def _invalidate(self) -> None:
        self._obs_cache = None
        self._state_cache = None

    # The observation cache is derived data: keep it out of checkpoints so that the saved
    # keys do not depend on whether it happened to be filled.
    def state_dict(self) -> dict[str, torch.Tensor]:
        self._invalidate()
        return super().state_dict()

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self._invalidate()
        super().load_state_dict(state)
        self._invalidate()

    # ------------------------------------------------------------------ public extras
    def observations(self) -> tuple[torch.Tensor, ...]:
        """Per-agent observations of the current state (e.g. after ``set_state``)."""
        return self._observations()

    def global_state(self) -> torch.Tensor:
        """The global state of the current state: all agents' observations concatenated."""
        return self._global_state()

    # ------------------------------------------------------------------ state import
    def set_state(
        self,
        env_index: int,
        *,
        agent_pos: Any = None,
        agent_vel: Any = None,
        landmark_pos: Any = None,
        comm: Any = None,
        goal: Any = None,
    ) -> None:
        """Overwrite parts of env ``env_index``'s world (arrays shaped like one env's slice).

        Shapes: ``agent_pos``/``agent_vel`` ``[n_agents, 2]``, ``landmark_pos``
        ``[n_landmarks, 2]``, ``comm`` ``[n_agents, dim_c]``, ``goal`` ``[n_goals]`` (landmark
        indices). Goal colours follow from the goal indices, as in mpe2.
        """
        if not 0 <= env_index < self.num_envs:
            raise KdxError(f"env_index {env_index} is out of range 0..{self.num_envs - 1}")
        for name, value in (
            ("agent_pos", agent_pos),
            ("agent_vel", agent_vel),
            ("landmark_pos", landmark_pos),
            ("comm", comm),
            ("goal", goal),
        ):
            if value is None:
                continue
            # Read-modify-write through the attribute, so that packed layouts (properties) work.
            target = getattr(self, name).clone()
            t = torch.as_tensor(value, dtype=target.dtype, device=self.device)
            if tuple(t.shape) != tuple(target.shape[1:]):
                raise KdxError(
                    f"{self.spec.name}.set_state: {name} must have shape {list(target.shape[1:])}, "
                    f"got {list(t.shape)}"
                )
            if name == "goal" and bool(((t < 0) | (t >= self.n_landmarks)).any()):
                raise KdxError(f"{self.spec.name}.set_state: goals must be landmark indices 0..{self.n_landmarks - 1}")
            target[env_index] = t
            setattr(self, name, target)
        self._invalidate()

    def load_state_from_mpe2(self, world: Any, env_index: int) -> None:
        """Copy an mpe2 world (``parallel_env(...).unwrapped.world``) into env ``env_index``.

        The mpe2 env must be the same scenario with the same agents; positions, velocities,
        utterances and goals are copied, so both envs continue identically. The env's episode
        clock and return restart at 0, as after mpe2's ``reset``.
        """
        names = tuple(a.name for a in world.agents)
        if names != self.spec.agent_names:
            raise KdxError(
                f"{self.spec.name}: the mpe2 world has agents {names}, expected {self.spec.agent_names}; "
                "load a world of the same scenario (and the same N)"
            )
        if len(world.landmarks) != self.n_landmarks:
            raise KdxError(
                f"{self.spec.name}: the mpe2 world has {len(world.landmarks)} landmarks, expected {self.n_landmarks}"
            )
        self.set_state(
            env_index,
            agent_pos=[list(a.state.p_pos) for a in world.agents],
            agent_vel=[list(a.state.p_vel) for a in world.agents],
            landmark_pos=[list(lm.state.p_pos) for lm in world.landmarks],
            comm=[list(a.state.c) for a in world.agents],
            goal=self._goals_from_mpe2(world),
        )
        self.t[env_index] = 0
        self._episode_return[env_index] = 0.0


def reject_unknown_params(env_name: str, unknown: dict, allowed: tuple[str, ...]) -> None:
    """Refuse keyword arguments a scenario does not have (a typo must not pass silently)."""
    if unknown:
        raise KdxError(
            f"{env_name} has no parameter(s) {', '.join(sorted(unknown))}; it accepts: {', '.join(allowed)}"
        )


def agent_spec(name: str, layout: ObservationLayout, n_actions: int, group: str) -> AgentSpec:
    """Shorthand used by the scenario modules: the observation size is the layout's."""
    return AgentSpec(name=name, obs_dim=layout.size, n_actions=n_actions, group=group)



def landmark_index(world: Any, landmark: Any) -> int:
    """Index of ``landmark`` in ``world.landmarks`` by identity (mpe2 stores goals as objects)."""
    for i, lm in enumerate(world.landmarks):
        if lm is landmark:
            return i
    raise KdxError("the mpe2 goal is not one of the world's landmarks")
