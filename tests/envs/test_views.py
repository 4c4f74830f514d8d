"""Views (kdx/envs/view_spec.py, view_apply.py): each op against a plain loop on real env
observations, output layout vs applied width, the device/training split, round trips, parsing
and its errors."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest
import torch

from kdx.envs import make
from kdx.envs.skirmish.features import SIGHT_RANGE
from kdx.envs.view_apply import APPLY, apply_view
from kdx.envs.view_spec import (
    OP_KINDS,
    Dropout,
    Keep,
    Noise,
    Quant,
    Sight,
    View,
    parse_op,
    read_views_toml,
    resolve_views,
)
from kdx.errors import KdxError

ENVS = ("skirmish/3m", "skirmish/2s3z", "mpe/simple_spread")


def views_of(env, entries):
    """``resolve_views`` for ``env``'s agents, groups and distance unit."""
    return resolve_views(entries, dict(zip(env.spec.agent_names, env.observation_layouts())), env.spec.groups,
                         env.observation_distance_unit)


def observed(name: str, steps: int = 6, num_envs: int = 16):
    """Agent 0's layout and observations ``[num_envs, D]`` after a few random steps, and the env."""
    env = make(name, num_envs=num_envs, seed=3)
    out = env.reset()
    gen = torch.Generator().manual_seed(0)
    for _ in range(steps):
        acts = [torch.multinomial(m.float(), 1, generator=gen).squeeze(1) for m in out.action_mask]
        out = env.step(torch.stack(acts, 1))
    return env.observation_layouts()[0], out.obs[0], env


# -------------------------------------------------------------------------- each op vs a plain loop
@pytest.mark.parametrize("name", ENVS)
def test_keep_and_drop_pick_the_named_features_in_order(name):
    layout, obs, _ = observed(name)
    names = layout.feature_names()
    for view, wanted in [(View.parse("-*.health"), [n for n in names if not n.endswith(".health")]),
                         (View.parse("+own.*" if "own.health" in names else "+self.*"),
                          [n for n in names if n.startswith(("self.", "own."))])]:
        if not wanted or len(wanted) == len(names):
            continue
        out = apply_view(view, layout, obs)
        assert view.output_layout(layout).feature_names() == wanted
        for r in range(obs.shape[0]):
            assert out[r].tolist() == [float(obs[r, names.index(n)]) for n in wanted]


@pytest.mark.parametrize("name", ENVS)
def test_sight_zeroes_whole_entity_blocks_at_or_beyond_the_radius(name):
    layout, obs, env = observed(name)
    unit = env.observation_distance_unit
    # the median of the distances seen, so that some blocks are kept and some zeroed
    dists = []
    for b in layout.blocks:
        if b.entity.kind in ("ally", "enemy", "landmark", "agent"):
            for r in range(obs.shape[0]):
                row = obs[r, b.start:b.stop].tolist()
                d = row[b.features.index("distance")] if "distance" in b.features else \
                    math.hypot(row[b.features.index("dx")], row[b.features.index("dy")])
                dists.append((r, b, d * unit))
    radius = sorted(d for _, _, d in dists if d > 0)[len(dists) // 2]
    out = apply_view(View((Sight(radius, unit),)), layout, obs)
    expected = obs.clone()
    zeroed = 0
    for r, b, d in dists:
        if d >= radius:
            expected[r, b.start:b.stop] = 0.0
            zeroed += int(obs[r, b.start:b.stop].abs().sum() > 0)
    assert zeroed > 0 and (out != 0).any()
    assert torch.equal(out, expected)


#: Features the env divides by its sight range: ``sight:r`` keeps them in units of 9, so they
#: match the env at range r only after scaling by 9 / r (and to float rounding, not bit for bit).
SCALED_BY_SIGHT = ("distance", "dx", "dy")


@pytest.mark.parametrize(("map_name", "radius"), [("3m", 4.0), ("2s3z", 4.0), ("MMM", 4.0), ("8m", 6.5)])
def test_sight_on_skirmish_matches_the_env_at_that_sight_range(map_name, radius):
    """``sight:r`` applied to the observation at SMAC's sight range 9 equals the env's own
    observation with its sight range set to r, step after step: exactly for every feature
    (what is hidden, attackable, health, shield, unit type, move and own features), and for
    distance, dx and dy after scaling by 9 / r (the env reports them in units of its range)."""
    from kdx.envs.skirmish.env import SkirmishEnv

    full = SkirmishEnv(map_name, num_envs=32, seed=5)
    near = SkirmishEnv(map_name, num_envs=32, seed=5, sight_range=radius)
    assert full.observation_distance_unit == SIGHT_RANGE and near.observation_distance_unit == radius
    out_full, out_near = full.reset(), near.reset()
    gen = torch.Generator().manual_seed(1)
    view = View((Sight(radius, SIGHT_RANGE),))
    hidden_only_by_range = 0
    for _ in range(25):
        for layout, o_full, o_near in zip(full.observation_layouts(), out_full.obs, out_near.obs):
            viewed = apply_view(view, layout, o_full)
            scaled = torch.tensor([name.split(".")[-1] in SCALED_BY_SIGHT for name in layout.feature_names()])
            assert torch.equal(viewed[:, ~scaled], o_near[:, ~scaled])
            torch.testing.assert_close(viewed[:, scaled] * (SIGHT_RANGE / radius), o_near[:, scaled],
                                       rtol=1e-5, atol=1e-6)
            hidden_only_by_range += int(((o_full != 0) & (o_near == 0)).any(1).sum())
        for m_full, m_near in zip(out_full.action_mask, out_near.action_mask):
            assert torch.equal(m_full, m_near)  # sight does not change what may be done
        acts = torch.stack([torch.multinomial(m.float(), 1, generator=gen).squeeze(1)
                            for m in out_full.action_mask], 1)
        out_full, out_near = full.step(acts), near.step(acts)
    assert hidden_only_by_range > 0  # the shorter range did hide units during the test


def test_skirmish_refuses_a_sight_range_that_is_not_positive():
    from kdx.envs.skirmish.env import SkirmishEnv

    with pytest.raises(KdxError, match="sight_range must be > 0"):
        SkirmishEnv("3m", num_envs=1, sight_range=0.0)


@pytest.mark.parametrize("name", ENVS)
def test_noise_adds_gaussian_noise_from_the_generator(name):
    layout, obs, _ = observed(name)
    out = apply_view(View((Noise(0.1),)), layout, obs, torch.Generator().manual_seed(7))
    gen = torch.Generator().manual_seed(7)
    expected = obs + 0.1 * torch.randn(obs.shape, generator=gen)
    assert torch.equal(out, expected)
    again = apply_view(View((Noise(0.1),)), layout, obs, torch.Generator().manual_seed(7))
    assert torch.equal(out, again)  # pure: the generator is the only randomness


@pytest.mark.parametrize(("name", "bits", "bound"), [("skirmish/2s3z", 4, 1.0), ("mpe/simple_spread", 3, 2.0)])
def test_quant_rounds_to_symmetric_levels_over_the_bound(name, bits, bound):
    layout, obs, _ = observed(name)
    out = apply_view(View((Quant(bits, bound),)), layout, obs)
    levels = 2 ** (bits - 1) - 1
    grid = [k * bound / levels for k in range(-levels, levels + 1)]
    for r in range(obs.shape[0]):
        for i in range(obs.shape[1]):
            x = min(max(float(obs[r, i]), -bound), bound)
            nearest = min(grid, key=lambda g: abs(g - x))
            assert float(out[r, i]) == pytest.approx(nearest, abs=1e-6)
    zeros = obs == 0
    assert torch.all(out[zeros] == 0)  # 0 is a level: unseen blocks stay zero


@pytest.mark.parametrize("name", ENVS)
def test_dropout_zeroes_matching_blocks_and_appends_available_flags(name):
    layout, obs, _ = observed(name)
    pattern = "enemy.*" if name.startswith("skirmish") else "landmark.*"
    op = Dropout(pattern, 0.4)
    out = apply_view(View((op,)), layout, obs, torch.Generator().manual_seed(5))
    gen = torch.Generator().manual_seed(5)
    matched = [b for b in layout.blocks if b.name.startswith(pattern[:-1])]
    draws = {b.name: torch.rand(obs.shape[0], generator=gen) for b in matched}
    for r in range(obs.shape[0]):
        row = []
        for b in layout.blocks:
            values = obs[r, b.start:b.stop].tolist()
            if b.name in draws:
                keep = float(draws[b.name][r] >= 0.4)
                row += [v * keep for v in values] + [keep]
            else:
                row += values
        assert out[r].tolist() == row
    flags = [i for i, n in enumerate(View((op,)).output_layout(layout).feature_names()) if n.endswith(".available")]
    assert len(flags) == len(matched) and 0 < out[:, flags].mean() < 1
    # noise and quantisation leave the flags alone
    noisy = apply_view(View((op, Noise(0.3), Quant(3, 4.0))), layout, obs, torch.Generator().manual_seed(5))
    assert torch.equal(noisy[:, flags], out[:, flags])


# ------------------------------------------------------------------ layouts, device split, round trip
@pytest.mark.parametrize("name", ENVS)
def test_output_layout_size_equals_the_applied_width(name):
    layout, obs, _ = observed(name)
    drop = "-ally.*.health" if name.startswith("skirmish") else "-comm.*"
    view = View.parse(f"sight:4 {drop} noise:0.05 quant:8 dropout:*.1:0.2")
    out = apply_view(view, layout, obs, torch.Generator().manual_seed(0))
    assert out.shape == (obs.shape[0], view.output_layout(layout).size)
    device = apply_view(view.device_view(), layout, obs)
    assert device.shape == out.shape
    assert view.device_view().output_layout(layout) == view.output_layout(layout)


def test_device_view_leaves_out_noise_and_keeps_dropout_flags_at_one():
    layout, obs, _ = observed("mpe/simple_spread")
    view = View.parse("-comm.* noise:0.1 dropout:landmark.*:0.5 quant:8:4")
    assert [op.text for op in view.training_only_ops] == ["noise:0.1", "dropout:landmark.*:0.5"]
    assert view.device_view().text == ["-comm.*", "dropout:landmark.*:0", "quant:8:4"]
    out = apply_view(view.device_view(), layout, obs)
    names = view.output_layout(layout).feature_names()
    assert torch.all(out[:, [i for i, n in enumerate(names) if n.endswith("available")]] == 1)
    with pytest.raises(KdxError, match="pass a torch.Generator"):
        apply_view(view, layout, obs)


def test_simple_spread_without_comm_and_agents_keeps_self_and_landmarks():
    layout, obs, _ = observed("mpe/simple_spread")
    view = View.parse(["-comm.*", "-agent.*"])
    assert view.output_layout(layout).feature_names() == [
        "self.vel_x", "self.vel_y", "self.pos_x", "self.pos_y",
        "landmark.0.dx", "landmark.0.dy", "landmark.1.dx", "landmark.1.dy", "landmark.2.dx", "landmark.2.dy"]
    assert torch.equal(apply_view(view, layout, obs), obs[:, :10])


@pytest.mark.parametrize("text", ["+enemy.*", "-ally.*.health", "sight:4", "noise:0.05", "quant:8",
                                  "quant:6:2.5", "dropout:enemy.*:0.1", "keep:own", "drop:move"])
def test_ops_round_trip_through_text_and_json(text):
    op = parse_op(text)
    assert parse_op(op.text) == op
    assert OP_KINDS[op.kind].from_json(json.loads(json.dumps(op.to_json()))) == op
    view = View((op, Sight(3.0, SIGHT_RANGE)))
    assert View.from_json(json.loads(json.dumps(view.to_json()))) == view


def test_every_op_kind_has_an_apply_rule():
    assert set(APPLY) == set(OP_KINDS)


def test_view_spec_is_torch_free():
    code = ("import sys; import kdx.envs.view_spec; "
            "assert 'torch' not in sys.modules, 'view_spec imported torch'")
    subprocess.run([sys.executable, "-c", code], check=True)


# ---------------------------------------------------------------------------------- per agent, TOML
def test_views_resolve_per_group_with_agents_winning():
    env = make("skirmish/2s3z")
    views = views_of(env, {"stalker": "sight:4 noise:0.05", "zealot": ["-enemy.*"], "agent_3": "+own.*"})
    assert views["agent_0"].ops == (Sight(4.0, SIGHT_RANGE), Noise(0.05))
    assert views["agent_2"].text == ["-enemy.*"] == views["agent_4"].text
    assert views["agent_3"].ops == (Keep("own.*"),)
    assert views_of(env, {})["agent_1"] == View()


def test_the_star_entry_names_every_agent_and_loses_to_groups_and_agents():
    env = make("skirmish/2s3z")
    views = views_of(env, {"*": "sight:6", "zealot": "-enemy.*", "agent_0": "+own.*"})
    assert views["agent_0"].text == ["+own.*"] and views["agent_1"].text == ["sight:6"]
    assert views["agent_1"].ops == (Sight(6.0, SIGHT_RANGE),)
    assert all(views[f"agent_{i}"].text == ["-enemy.*"] for i in (2, 3, 4))


def test_views_from_a_toml_file(tmp_path):
    path = tmp_path / "views.toml"
    path.write_text('[views]\nmarine = ["sight:4", "noise:0.05"]\n')
    env = make("skirmish/3m")
    views = views_of(env, read_views_toml(path))
    assert all(v.text == ["sight:4", "noise:0.05"] for v in views.values())
    (tmp_path / "bad.toml").write_text("[other]\n")
    with pytest.raises(KdxError, match=r"no \[views\] table"):
        read_views_toml(tmp_path / "bad.toml")


@pytest.mark.parametrize(("entries", "match"), [
    ({"marine": "blur:3"}, "unknown view op 'blur:3'.*sight:4"),
    ({"marine": "sight:far"}, "'sight:far': the radius must be a number"),
    ({"marine": "sight:-1"}, "radius .* must be > 0"),
    ({"marine": "noise:nan"}, "sigma must be finite"),
    ({"marine": "quant:1"}, "bits must be an integer in 2..24"),
    ({"marine": "quant:8.5"}, "bits must be a number"),
    ({"marine": "dropout:0.1"}, "write dropout:BLOCK_GLOB:P"),
    ({"marine": "dropout:enemy.*:1.5"}, "p must be in"),
    ({"marine": "-medivac.*"}, "view of agent_0 .*'-medivac.\\*'.*matches no observation feature"),
    ({"marine": "dropout:tank.*:0.1"}, "no block name matches 'tank.\\*'"),
    ({"marine": "-*"}, "drops every feature"),
    ({"marine": "-*.distance -*.d? sight:4"}, "put sight before ops that drop them"),
    ({"medivac": "sight:4"}, "'medivac', neither an agent nor a group; agents: agent_0"),
])
def test_parse_errors_name_the_op_and_the_fix(entries, match):
    env = make("skirmish/3m")
    with pytest.raises(KdxError, match=match):
        views_of(env, entries)


@pytest.mark.parametrize(("data", "match"), [
    ([{"kind": "blur", "radius": 3}], "'kind' must be one of keep, drop, sight"),
    ([{"kind": "noise"}], "a 'noise' op has fields \\['sigma'\\]"),
    ([{"kind": "dropout", "pattern": "enemy.*", "p": "often"}], "view op JSON"),
    ({"kind": "noise", "sigma": 0.1}, "view JSON must be a list of ops"),
])
def test_view_json_errors_name_the_op(data, match):
    with pytest.raises(KdxError, match=match):
        View.from_json(data)


def test_a_view_must_keep_what_the_agents_actions_target():
    """Attack action 6 + k targets enemy k (a medivac's heals target allies): a view dropping every
    feature of such a block is refused, naming the block and the actions; dropping some is fine."""
    env = make("skirmish/MMM")
    targets = dict(zip(env.spec.agent_names, env.action_targets()))
    assert targets["agent_0"][8] == "enemy.2" and targets["agent_9"][6] == "ally.0"

    def resolve(entries):
        return resolve_views(entries, dict(zip(env.spec.agent_names, env.observation_layouts())), env.spec.groups,
                             env.observation_distance_unit, targets)

    with pytest.raises(KdxError, match=r"view of agent_\d+ .*drops every feature of enemy\.2, which its action\(s\) 8 target"):
        resolve({"marine": "-enemy.2.*"})
    with pytest.raises(KdxError, match=r"agent_9 .*drops every feature of ally\.0.*, which its action"):
        resolve({"medivac": "-ally.*"})
    views = resolve({"medivac": "-enemy.*", "marine": "-enemy.*.health sight:4"})  # medivacs heal allies
    assert views["agent_9"].text == ["-enemy.*"] and views["agent_2"].text == ["-enemy.*.health", "sight:4"]
    assert all(not t for t in make("mpe/simple_spread").action_targets())  # no targeted actions
