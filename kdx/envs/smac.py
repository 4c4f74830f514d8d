"""The real SMAC (StarCraft II) behind the batched API: ``smac/<map>``.

Needs oxwhirl's SMAC (``pip install git+https://github.com/oxwhirl/smac.git``), the StarCraft II
binary (``SC2PATH``, default ``~/StarCraftII``) and the SMAC maps. ``num_envs`` StarCraft II
instances run in ``num_envs`` worker processes (one env in-process when ``num_envs == 1``).

The translation from SMAC's per-env API (lists of per-agent observations and available actions,
a global state, one team reward, ``terminated`` and ``info["battle_won"]``) into batched tensors
lives in ``SmacEnv`` and does not depend on StarCraft II: it drives any object with
``StarCraft2Env``'s methods, which is how it is tested (against a skirmish env with the same
interface). SMAC ends an episode at its step limit with ``terminated=True`` and no win; here that
becomes ``truncated`` (a loss on the very last step reads as a timeout, SMAC does not tell them
apart). Messages between processes are JSON (nothing is pickled by kdx's protocol).

Observation layouts: with SMAC's default observation options the observation is the skirmish
layout of the same map (``skirmish.features.observation_layout``; ``obs_last_action=True`` adds
each ally's last action), otherwise one generic block.
"""

from __future__ import annotations

import functools
import json
import multiprocessing as mp
from collections.abc import Callable, Sequence

import numpy as np
import torch

from kdx.envs.base import AgentSpec, BatchedEnv, EnvSpec
from kdx.envs.obs_layout import ObservationLayout
from kdx.envs.registry import register
from kdx.envs.skirmish.features import SIGHT_RANGE, observation_layout
from kdx.envs.skirmish.maps import MAPS
from kdx.errors import KdxError

INSTALL_HINT = (
    "Install oxwhirl's SMAC with `pip install git+https://github.com/oxwhirl/smac.git`, install "
    "StarCraft II (Linux package from Blizzard's s2client-proto page) and the SMAC maps "
    "(SMAC_Maps.zip from the SMAC README, unzipped into $SC2PATH/Maps/SMAC_Maps), and set SC2PATH "
    "if StarCraft II is not in ~/StarCraftII. Without StarCraft II, use `skirmish/<map>`: the "
    "same maps and interface in a torch simulator."
)


# StarCraft2Env's options that change the observation, at their defaults; at these values the
# observation follows the skirmish layout.
SMAC_OBS_DEFAULTS = {"obs_all_health": True, "obs_own_health": True, "obs_pathing_grid": False,
                     "obs_terrain_height": False, "obs_timestep_number": False}


def smac_observation_layout(map_name: str, smac_kwargs: dict, obs_dim: int) -> ObservationLayout:
    """The observation layout of SMAC map ``map_name`` made with ``smac_kwargs``: the skirmish
    layout (plus each ally's last action under ``obs_last_action``) when the options keep SMAC's
    default layout and its size is ``obs_dim``, else one generic block."""
    game_map = MAPS.get(map_name)
    if game_map is not None and all(smac_kwargs.get(k, v) == v for k, v in SMAC_OBS_DEFAULTS.items()):
        last = game_map.n_actions if smac_kwargs.get("obs_last_action", False) else 0
        layout = observation_layout(game_map, last_action_bits=last)
        if layout.size == obs_dim:
            return layout
    return ObservationLayout.generic(obs_dim)


def load_starcraft2env() -> type:
    """``smac.env.StarCraft2Env``, or a ``KdxError`` saying what is installed instead and how to fix it."""
    try:
        import smac  # noqa: F401
    except ImportError:
        raise KdxError(f"SMAC is not installed (no module named 'smac'). {INSTALL_HINT}") from None
    try:
        from smac.env import StarCraft2Env
    except ImportError:
        where = getattr(smac, "__file__", "?")
        raise KdxError(
            f"the installed 'smac' package ({where}) is not oxwhirl's SMAC: it has no smac.env."
            " The PyPI package named 'smac' is SMAC3, an unrelated hyperparameter optimiser with the"
            f" same import name; uninstall it (`pip uninstall smac`) and install the right one. {INSTALL_HINT}"
        ) from None
    return StarCraft2Env


# ---------------------------------------------------------------------------------- backends
def _snapshot(env, reward=0.0, terminated=False, info=None) -> dict:
    """One env's view after reset/step, as plain JSON-able data."""
    return {
        "obs": [np.asarray(o, dtype=np.float32).tolist() for o in env.get_obs()],
        "state": np.asarray(env.get_state(), dtype=np.float32).tolist(),
        "avail": [list(map(int, a)) for a in env.get_avail_actions()],
        "reward": float(reward),
        "terminated": bool(terminated),
        "won": bool((info or {}).get("battle_won", False)),
    }


def _handle(env, msg: dict) -> dict:
    cmd = msg["cmd"]
    if cmd == "info":
        info = env.get_env_info()
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in info.items()
                if isinstance(v, (int, float, str, list, tuple))}
    if cmd == "reset":
        env.reset()
        return _snapshot(env)
    if cmd == "step":
        reward, terminated, info = env.step(msg["actions"])
        return _snapshot(env, reward, terminated, info)
    raise ValueError(f"unknown command {cmd!r}")


def _worker(conn, make_env: Callable[[], object]) -> None:
    env = make_env()
    try:
        while True:
            msg = json.loads(conn.recv_bytes())
            if msg["cmd"] == "close":
                break
            conn.send_bytes(json.dumps(_handle(env, msg)).encode())
    finally:
        env.close()
        conn.close()


class InProcessBackend:
    """SMAC-shaped envs in this process (``num_envs == 1``, and tests)."""

    def __init__(self, make_envs: Sequence[Callable[[], object]]) -> None:
        self.envs = [make() for make in make_envs]

    def call(self, msgs: Sequence[tuple[int, dict]]) -> list[dict]:
        return [_handle(self.envs[i], m) for i, m in msgs]

    def close(self) -> None:
        for env in self.envs:
            env.close()


class ProcessBackend:
    """One worker process per env; commands go out to all first, then answers are collected."""

    def __init__(self, make_envs: Sequence[Callable[[], object]]) -> None:
        # "spawn": a fresh interpreter per worker (forking a process that has run torch's thread
        # pools can deadlock the child). Python pickles the factory to start the worker, so
        # factories must be importable callables (a class or functools.partial of one); the
        # messages themselves are JSON.
        ctx = mp.get_context("spawn")
        self.conns, self.procs = [], []
        for make in make_envs:
            parent, child = ctx.Pipe()
            proc = ctx.Process(target=_worker, args=(child, make), daemon=True)
            proc.start()
            child.close()
            self.conns.append(parent)
            self.procs.append(proc)

    def call(self, msgs: Sequence[tuple[int, dict]]) -> list[dict]:
        for i, m in msgs:
            self.conns[i].send_bytes(json.dumps(m).encode())
        return [json.loads(self.conns[i].recv_bytes()) for i, _ in msgs]

    def close(self) -> None:
        for conn in self.conns:
            try:
                conn.send_bytes(json.dumps({"cmd": "close"}).encode())
            except (BrokenPipeError, OSError):
                pass
        for proc in self.procs:
            proc.join(timeout=30)
            if proc.is_alive():
                proc.terminate()


# ---------------------------------------------------------------------------------- the env
class SmacEnv(BatchedEnv):
    """``num_envs`` SMAC-shaped envs behind the batched API.

    Args:
        make_envs: one factory per env returning an object with ``StarCraft2Env``'s methods
            (``reset``, ``step``, ``get_obs``, ``get_state``, ``get_avail_actions``,
            ``get_env_info``, ``close``).
        processes: run each env in its own worker process.
        smac_kwargs: the options the envs were made with (for the observation layout).
    """

    state_in_tensors = False  # the state lives in the wrapped simulator
    observation_distance_unit = SIGHT_RANGE  # SMAC observes distances as dist / sight range 9

    def __init__(self, name: str, make_envs: Sequence[Callable[[], object]], seed: int = 0,
                 device: str | torch.device = "cpu", check_actions: bool = True,
                 processes: bool = True, smac_kwargs: dict | None = None) -> None:
        if not make_envs:
            raise KdxError("SmacEnv needs at least one env factory")
        self.backend = (ProcessBackend if processes else InProcessBackend)(make_envs)
        info = self.backend.call([(0, {"cmd": "info"})])[0]
        n_agents, n_actions = int(info["n_agents"]), int(info["n_actions"])
        self.spec = EnvSpec(
            name=name,
            agents=tuple(AgentSpec(f"agent_{i}", int(info["obs_shape"]), n_actions) for i in range(n_agents)),
            state_dim=int(info["state_shape"]),
            episode_limit=int(info["episode_limit"]),
            has_win_flag=True,
            shared_reward=True,
        )
        super().__init__(len(make_envs), seed=seed, device=device, check_actions=check_actions)
        e = self.num_envs
        self._obs = torch.zeros(e, n_agents, self.spec.agents[0].obs_dim)
        self._state = torch.zeros(e, self.spec.state_dim)
        self._avail = torch.zeros(e, n_agents, n_actions, dtype=torch.bool)
        self._timeout = torch.zeros(e, dtype=torch.bool)
        self._layout = smac_observation_layout(name.removeprefix("smac/"), smac_kwargs or {},
                                               self.spec.agents[0].obs_dim)

    def _store(self, i: int, snap: dict) -> None:
        self._obs[i] = torch.tensor(snap["obs"])
        self._state[i] = torch.tensor(snap["state"])
        self._avail[i] = torch.tensor(snap["avail"], dtype=torch.bool)

    def _reset_envs(self, mask: torch.Tensor) -> None:
        idx = mask.nonzero().flatten().tolist()
        for i, snap in zip(idx, self.backend.call([(i, {"cmd": "reset"}) for i in idx])):
            self._store(i, snap)

    def _step_envs(self, actions: torch.Tensor):
        acts = actions.cpu().tolist()
        snaps = self.backend.call([(i, {"cmd": "step", "actions": acts[i]}) for i in range(self.num_envs)])
        reward = torch.tensor([s["reward"] for s in snaps])
        ended = torch.tensor([s["terminated"] for s in snaps])
        won = torch.tensor([s["won"] for s in snaps])
        for i, snap in enumerate(snaps):
            self._store(i, snap)
        # SMAC reports its step limit as terminated without a win: that is a truncation.
        at_limit = (self.t.cpu() + 1) >= self.spec.episode_limit
        self._timeout = ended & ~won & at_limit
        terminated = ended & ~self._timeout
        dev = self.device
        return (reward.unsqueeze(1).expand(-1, self.spec.n_agents).to(dev), terminated.to(dev), won.to(dev))

    def _env_truncated(self) -> torch.Tensor | None:
        return self._timeout.to(self.device)

    def _observations(self) -> tuple[torch.Tensor, ...]:
        return tuple(self._obs.to(self.device, copy=True).unbind(1))

    def _action_masks(self) -> tuple[torch.Tensor, ...]:
        return tuple(self._avail.to(self.device, copy=True).unbind(1))

    def _observation_layouts(self) -> tuple[ObservationLayout, ...]:
        return (self._layout,) * self.spec.n_agents

    def _global_state(self) -> torch.Tensor:
        return self._state.to(self.device, copy=True)  # later steps write in place

    def _describe_illegal(self, agent: int, env: int, action: int) -> str:
        if action == 0:
            return "SMAC allows no-op (0) only for dead agents"
        return "StarCraft II reports it unavailable (get_avail_agent_actions): dead or out of shoot range"

    def close(self) -> None:
        self.backend.close()

    def state_dict(self) -> dict[str, torch.Tensor]:
        raise KdxError("smac envs cannot be checkpointed: their state lives in StarCraft II")


def make_smac(map_name: str, num_envs: int = 1, seed: int = 0, device: str = "cpu",
              check_actions: bool = True, **smac_kwargs) -> SmacEnv:
    """``smac/<map_name>`` with ``num_envs`` StarCraft II instances (raises ``KdxError`` with
    install instructions when SMAC is unavailable)."""
    starcraft2env = load_starcraft2env()

    factories = [functools.partial(starcraft2env, map_name=map_name, seed=seed + i, **smac_kwargs)
                 for i in range(num_envs)]
    return SmacEnv(f"smac/{map_name}", factories, seed=seed, device=device,
                   check_actions=check_actions, processes=num_envs > 1, smac_kwargs=smac_kwargs)


def _factory(map_name: str):
    def make(num_envs: int = 1, seed: int = 0, device: str = "cpu", **kwargs) -> SmacEnv:
        return make_smac(map_name, num_envs=num_envs, seed=seed, device=device, **kwargs)

    return make


for _name in MAPS:
    register(f"smac/{_name}", _factory(_name), f"SMAC {_name} in StarCraft II (needs SMAC + SC2)", family="smac")
