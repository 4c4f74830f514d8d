"""The real-SMAC adapter: install diagnostics, and its translation layer driven by a test double.

StarCraft II is not available here. The double below stands in for StarCraft II only: it is an
object with ``StarCraft2Env``'s methods whose battle is a skirmish env with ``num_envs=1``. The
code under test (``SmacEnv``: per-env lists -> batched tensors, timeouts, auto-reset, both
backends) runs unchanged, and its output must equal the skirmish env's own batched output.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.util

import pytest
import torch

from kdx.envs import available, make
from kdx.envs.obs_layout import ObservationLayout
from kdx.envs.skirmish import SkirmishEnv
from kdx.envs.skirmish.features import observation_layout
from kdx.envs.skirmish.maps import MAPS
from kdx.envs.skirmish.scripted import SCRIPTED_POLICIES
from kdx.envs.smac import SmacEnv, load_starcraft2env, smac_observation_layout
from kdx.errors import KdxError


class SkirmishStarCraft2Env:
    """``StarCraft2Env``'s interface (SMAC semantics: terminated at the step limit, no auto-reset)
    over a one-env skirmish battle."""

    def __init__(self, map_name, seed: int) -> None:
        self.env = SkirmishEnv(map_name, num_envs=1, seed=seed)
        self.out = None
        self.pending = None

    def get_env_info(self) -> dict:
        s = self.env.spec
        return {"n_agents": s.n_agents, "n_actions": s.agents[0].n_actions,
                "obs_shape": s.agents[0].obs_dim, "state_shape": s.state_dim,
                "episode_limit": s.episode_limit}

    def reset(self):
        if self.pending is not None:  # the skirmish env already started the next episode
            self.out, self.pending, self.final = self.pending, None, None
        else:
            self.out, self.final = self.env.reset(), None
        return self.get_obs(), self.get_state()

    def step(self, actions):
        out = self.env.step(torch.tensor([actions]))
        done = bool(out.done[0])
        if done:
            self.pending, self.final = out, out.info["final_state"][0]
        self.out = out
        return float(out.reward[0, 0]), done, {"battle_won": bool(out.info["won"][0])}

    def get_obs(self):
        return [o[0].numpy() for o in self.out.obs]

    def get_state(self):
        return (self.final if self.final is not None else self.out.state[0]).numpy()

    def get_avail_actions(self):
        return [m[0].int().tolist() for m in self.out.action_mask]

    def close(self) -> None:
        pass


def adapter(map_name: str, seeds: list[int], processes: bool) -> SmacEnv:
    # Worker processes start with "spawn": factories must be importable (a partial of a class).
    makers = [functools.partial(SkirmishStarCraft2Env, map_name, s) for s in seeds]
    return SmacEnv(f"smac/{map_name}", makers, processes=processes)


@pytest.mark.parametrize("processes", [False, True])
def test_adapter_matches_the_batched_skirmish_env(processes):
    name, seeds = "3m", [11, 12]
    smac = adapter(name, seeds, processes)  # processes=True: two spawned workers
    refs = [SkirmishEnv(name, num_envs=1, seed=s) for s in seeds]
    try:
        assert smac.spec.to_json() | {"name": ""} == refs[0].spec.to_json() | {"name": "", "agents": [
            a | {"group": "agents"} for a in refs[0].spec.to_json()["agents"]]}
        out = smac.reset()
        ref_out = [r.reset() for r in refs]
        policy = SCRIPTED_POLICIES["focus-fire"]
        n_done = 0
        for _ in range(30):
            actions = torch.cat([policy(r, o) for r, o in zip(refs, ref_out)])
            out = smac.step(actions)
            ref_out = [r.step(actions[i:i + 1]) for i, r in enumerate(refs)]
            for i, ref in enumerate(ref_out):
                for a in range(len(ref.obs)):
                    assert torch.allclose(out.obs[a][i], ref.obs[a][0])
                    assert torch.equal(out.action_mask[a][i], ref.action_mask[a][0])
                assert torch.allclose(out.state[i], ref.state[0])
                assert torch.allclose(out.reward[i], ref.reward[0])
                assert bool(out.terminated[i]) == bool(ref.terminated[0])
                assert bool(out.truncated[i]) == bool(ref.truncated[0])
                assert bool(out.info["won"][i]) == bool(ref.info["won"][0])
                assert torch.allclose(out.info["final_state"][i], ref.info["final_state"][0])
                assert torch.allclose(out.info["episode_return"][i], ref.info["episode_return"][0])
                n_done += int(ref.done[0])
        assert n_done >= 2  # the comparison crossed episode boundaries (auto-reset)
    finally:
        smac.close()


def test_adapter_turns_the_smac_step_limit_into_a_truncation():
    short = dataclasses.replace(MAPS["3m"], limit=3)  # over before the teams meet
    smac = SmacEnv("smac/short", [lambda: SkirmishStarCraft2Env(short, 0)], processes=False)
    out = smac.reset()
    stop = torch.ones(1, 3, dtype=torch.long)
    for _ in range(2):
        out = smac.step(stop)
        assert not bool(out.done[0])
    out = smac.step(stop)
    assert bool(out.truncated[0]) and not bool(out.terminated[0]) and not bool(out.info["won"][0])
    with pytest.raises(KdxError, match="agent_0.*illegal"):
        smac.step(torch.zeros(1, 3, dtype=torch.long))


def test_the_adapter_reuses_the_skirmish_observation_layout():
    smac = adapter("2s3z", [0], processes=False)
    try:
        assert smac.observation_layouts() == SkirmishEnv("2s3z", num_envs=1).observation_layouts()
    finally:
        smac.close()


@pytest.mark.parametrize("map_name", list(MAPS))
def test_smac_layout_follows_its_observation_options(map_name):
    m = MAPS[map_name]
    default = observation_layout(m)
    assert smac_observation_layout(map_name, {}, default.size) == default
    # obs_last_action appends each other ally's last action one-hot (SMAC's nf_al += n_actions).
    last = smac_observation_layout(map_name, {"obs_last_action": True}, default.size + (m.n_agents - 1) * m.n_actions)
    if m.n_agents > 1:
        assert last.block("ally.0").features[-1] == f"last_action_{m.n_actions - 1}"
    assert last.block("enemy.0") == default.block("enemy.0")
    # Options whose layout kdx does not describe, or a size that disagrees: one generic block.
    for kwargs, size in (({"obs_pathing_grid": True}, default.size + 8), ({}, default.size + 1)):
        assert smac_observation_layout(map_name, kwargs, size) == ObservationLayout.generic(size)


def test_every_map_is_registered_under_smac():
    names = {n for n, e in available().items() if e.family == "smac"}
    assert names == {f"smac/{m}" for m in MAPS}


SMAC_MISSING = importlib.util.find_spec("smac") is None


@pytest.mark.skipif(not SMAC_MISSING, reason="a 'smac' package is installed here")
def test_missing_smac_says_how_to_install_it():
    with pytest.raises(KdxError, match=r"not installed.*git\+https://github.com/oxwhirl/smac.git.*SC2PATH"):
        load_starcraft2env()
    with pytest.raises(KdxError, match="oxwhirl/smac"):
        make("smac/3m", num_envs=1)


def test_smac3_is_recognised_as_the_wrong_package(tmp_path, monkeypatch):
    # An importable 'smac' without smac.env, as the PyPI SMAC3 optimiser is.
    (tmp_path / "smac").mkdir()
    (tmp_path / "smac" / "__init__.py").write_text("version = '2.0'\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    for mod in [m for m in list(__import__("sys").modules) if m == "smac" or m.startswith("smac.")]:
        monkeypatch.delitem(__import__("sys").modules, mod)
    with pytest.raises(KdxError, match=r"not oxwhirl's SMAC.*SMAC3.*pip uninstall smac"):
        load_starcraft2env()


@pytest.mark.skipif(SMAC_MISSING, reason="needs oxwhirl's SMAC and StarCraft II")
def test_real_smac_3m_steps():  # pragma: no cover - needs StarCraft II
    env = make("smac/3m", num_envs=1)
    try:
        out = env.reset()
        assert env.spec.agents[0].obs_dim == 30 and env.spec.state_dim == 48
        assert env.observation_layout(0) == make("skirmish/3m").observation_layout(0)
        out = env.step(env.sample_random_actions())
        assert out.reward.shape == (1, 3)
    finally:
        env.close()
