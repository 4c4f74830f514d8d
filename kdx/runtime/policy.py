"""A per-agent policy: one backend, the agent's recurrent state, and an optional deadline."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from kdx.errors import KdxError
from kdx.runtime.backends.base import Backend
from kdx.runtime.manifest import AgentEntry
from kdx.runtime.manifest_view import AgentView


class Policy:
    """Decisions for one agent from that agent's own observation (decentralised execution).

    ``act(obs, mask=None) -> int``: ``obs`` float32 [obs_dim]; ``mask`` bool [n_actions]
    (True = legal). Recurrent state is carried between calls; call :meth:`reset` at the start
    of every episode. Not thread-safe: one policy per control loop.

    A student distilled on a view reads the view (``obs_dim`` is its width): turn the raw
    observation (``view.raw_obs_dim`` values) into the model input with :meth:`model_input`.
    """

    def __init__(self, agent: AgentEntry, backend: Backend,
                 selection: dict[str, float | str] | None = None) -> None:
        self.agent = agent
        self.backend = backend
        #: what backend="auto" measured (backend -> p50 µs or why skipped); None if chosen by name
        self.selection = selection
        # act() is the backend's infer(), bound once: the per-decision path gets no extra frame.
        self.act = backend.infer  # type: ignore[method-assign]
        self._device_view = agent.view.device() if agent.view is not None else None

    @property
    def name(self) -> str:
        return self.agent.name

    @property
    def backend_name(self) -> str:
        return self.backend.name

    @property
    def obs_dim(self) -> int:
        return self.agent.obs_dim

    @property
    def n_actions(self) -> int:
        return self.agent.n_actions

    @property
    def view(self) -> AgentView | None:
        """The student's view (None: it reads the raw observation)."""
        return self.agent.view

    def model_input(self, raw_obs: np.ndarray) -> np.ndarray:
        """What ``act`` takes, from the agent's raw observation: the device part of its view
        (keep/drop, sight, quant, dropout flags 1; ``kdx.runtime.manifest_view``), or
        ``raw_obs`` itself without a view."""
        return raw_obs if self._device_view is None else self._device_view(raw_obs)

    def act(self, obs: np.ndarray, mask: np.ndarray | None = None) -> int:
        """The action for ``obs`` (KdxError on wrong shape/dtype, NaN or inf).

        Replaced in ``__init__`` by the backend's ``infer`` (same signature and checks)."""
        return self.backend.infer(obs, mask)

    def reset(self) -> None:
        """Start of an episode: zero the recurrent state (no-op for feed-forward policies)."""
        self.backend.reset()

    def last_logits(self) -> np.ndarray:
        """A copy of the raw logits of the last decision, float32 [n_actions]."""
        return self.backend.logits()


@dataclass
class Deadline:
    """A per-decision latency budget: decisions over ``budget_us`` are counted, and replaced by
    ``fallback_action`` when one is set (e.g. a safe no-op for the actuator).

    Python cannot interrupt an inference call, so lateness is known once the decision returns;
    the fallback makes what the actuator receives predictable, it does not make it earlier.
    """

    budget_us: float
    fallback_action: int | None = None
    decisions: int = 0
    late: int = 0
    fallbacks_used: int = 0
    worst_us: float = 0.0
    _budget_ns: int = field(init=False, repr=False, default=0)

    def __post_init__(self) -> None:
        if not self.budget_us > 0:
            raise KdxError(f"deadline must be > 0 µs, got {self.budget_us}")
        self._budget_ns = int(self.budget_us * 1e3)

    def check_fallback(self, n_actions: int) -> None:
        if self.fallback_action is not None and not 0 <= self.fallback_action < n_actions:
            raise KdxError(f"fallback action {self.fallback_action} is not in [0, {n_actions})")

    def decide(self, policy: Policy, obs: np.ndarray, mask: np.ndarray | None = None) -> tuple[int, int, bool]:
        """``(action, elapsed_ns, late)`` for one decision, with the fallback applied if late."""
        start = time.perf_counter_ns()
        action = policy.act(obs, mask)
        elapsed = time.perf_counter_ns() - start
        return self.record(action, elapsed)

    def record(self, action: int, elapsed_ns: int) -> tuple[int, int, bool]:
        """Count one decision that took ``elapsed_ns``; returns the action to use."""
        self.decisions += 1
        late = elapsed_ns > self._budget_ns
        if late:
            self.late += 1
            self.worst_us = max(self.worst_us, elapsed_ns / 1e3)
            if self.fallback_action is not None:
                self.fallbacks_used += 1
                action = self.fallback_action
        return action, elapsed_ns, late

    def summary(self) -> dict[str, float | int | None]:
        return {
            "deadline_us": float(self.budget_us),
            "decisions": self.decisions,
            "late": self.late,
            "late_fraction": self.late / self.decisions if self.decisions else 0.0,
            "fallback_action": self.fallback_action,
            "fallbacks_used": self.fallbacks_used,
            "worst_late_us": self.worst_us,
        }
