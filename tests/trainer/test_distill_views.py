"""``kdx distill --view``: students learn from their views of their own observations (simple_spread
dropping ``comm.*``, with noise), sized by the view's width; resume is bit-exact; ``kdx evaluate``
applies the device view; a bad view is refused before anything is written; no view = as before;
a device profile's default view is used unless --view/--views-file is given."""

from __future__ import annotations

import json

import pytest
import torch

from kdx.cli import main
from kdx.envs.registry import make
from kdx.envs.view_spec import View
from kdx.errors import KdxError
from kdx.layout import RunLayout
from kdx.trainer.distill.config import DistillConfig
from kdx.trainer.distill.evaluate import StudentTeamPolicy
from kdx.trainer.distill.loop import distill, read_distill_metrics
from kdx.trainer.distill.store import load_student_views, load_students
from kdx.trainer.distill.views import StudentViews, parse_view_entries
from tests.trainer.test_distill import TOY, make_teacher_run

ENV = "mpe/simple_spread"
VIEWS = ("agent_0=-comm.* noise:0.05", "agent_1=-comm.*", "agent_2=-comm.* dropout:landmark.*:0.2")


def _cli(*args: str) -> None:
    try:
        main(list(args))
    except SystemExit as exc:
        assert exc.code in (0, None)


def _widths() -> dict[str, int]:
    env = make(ENV, num_envs=1)
    return StudentViews.resolve(VIEWS, env).widths()


def test_view_entries_are_parsed_and_bad_ones_refused():
    assert parse_view_entries(["marine=sight:4 noise:0.05"]) == {"marine": "sight:4 noise:0.05"}
    for bad in (["marine"], ["=sight:4"], ["marine="], ["a=sight:4", "a=-x"]):
        with pytest.raises(KdxError, match="--view"):
            parse_view_entries(bad)


def test_students_learn_on_their_views_and_resume_exactly(tmp_path):
    config = DistillConfig(total_steps=16 * 4 * 3, checkpoint_every=1, views=VIEWS, **TOY)
    for name in ("straight", "resumed"):
        make_teacher_run(tmp_path / name, env=ENV)
    distill(tmp_path / "straight", config, show_progress=False)
    distill(tmp_path / "resumed", config, show_progress=False, stop_after_updates=2)
    distill(tmp_path / "resumed", resume=True, show_progress=False)
    a, b = load_students(tmp_path / "straight"), load_students(tmp_path / "resumed")
    for name in a:
        for k, v in a[name].state_dict().items():
            torch.testing.assert_close(v, b[name].state_dict()[k], rtol=0, atol=0, msg=f"{name}.{k}")
    assert read_distill_metrics(tmp_path / "resumed")[-1]["loss"] == read_distill_metrics(tmp_path / "straight")[-1]["loss"]

    widths, full = _widths(), make(ENV, num_envs=1).spec.agents[0].obs_dim
    assert {n: s.obs_dim for n, s in a.items()} == widths and widths["agent_1"] < full
    assert widths["agent_2"] == widths["agent_1"] + 3  # one `available` flag per landmark
    paths = RunLayout(tmp_path / "straight").students
    sizing = json.loads(paths.sizing.read_text())["agents"]
    assert [(r["obs_dim"], r["view"]) for r in sizing] == [
        (widths["agent_0"], ["-comm.*", "noise:0.05"]), (widths["agent_1"], ["-comm.*"]),
        (widths["agent_2"], ["-comm.*", "dropout:landmark.*:0.2"])]
    views = load_student_views(tmp_path / "straight")
    assert View.from_json(views["agent_0"]["ops"]).text == ["-comm.*", "noise:0.05"]
    assert len(views["agent_2"]["features"]) == widths["agent_2"]
    assert not any(f.startswith("comm.") for f in views["agent_1"]["features"])
    # the normalisation was computed on the views (dropout's flags vary, noise keeps stds > 0)
    assert torch.all(a["agent_0"].obs_std > 0) and a["agent_2"].obs_mean.shape == (widths["agent_2"],)


def test_evaluate_applies_the_device_view(tmp_path):
    make_teacher_run(tmp_path, env=ENV)
    distill(tmp_path, DistillConfig(total_steps=16 * 4, views=VIEWS, **TOY), show_progress=False)
    _cli("evaluate", str(tmp_path), "--episodes", "2")
    result = json.loads(RunLayout(tmp_path).eval_json.read_text())
    assert "students_greedy" in result["policies"]
    policy = StudentTeamPolicy(load_students(tmp_path), greedy=True, views=load_student_views(tmp_path))
    env = make(ENV, num_envs=4, seed=1)
    policy.reset(env)
    assert all(not op.training_only or op.kind == "dropout" for v in policy.views.views.values() for op in v.ops)
    assert [op.text for op in policy.views.views["agent_2"].ops] == ["-comm.*", "dropout:landmark.*:0"]
    step = env.reset()
    assert torch.equal(policy.act(step), policy.act(step))  # no noise on the device
    # export and the runtime with views: tests/export/test_export_views.py


def test_bad_views_are_refused_before_anything_is_written(tmp_path):
    make_teacher_run(tmp_path, env=ENV)
    for views, match in ((("nobody=-comm.*",), "neither an agent nor a group"), (("agent_0=blur:3",), "unknown view op"),
                         (("agent_0=-nothing.*",), "agent_0")):
        with pytest.raises(KdxError, match=match):
            distill(tmp_path, DistillConfig(total_steps=16 * 4, views=views, **TOY), show_progress=False)
        assert not RunLayout(tmp_path).students.root.exists()


def test_cli_takes_views_and_a_views_file(tmp_path, capsys):
    make_teacher_run(tmp_path, env=ENV)
    toml = tmp_path / "views.toml"
    toml.write_text('[views]\nagent_0 = ["-comm.*"]\n')
    _cli("distill", str(tmp_path), "--profile", "rpi4", "--views-file", str(toml), "--view", "agent_1=-comm.*",
         "--steps", "64", "--num-envs", "16", "--rollout-length", "4", "--threads", "1", "--quiet")
    saved = json.loads(RunLayout(tmp_path).students.config.read_text())
    assert saved["distill"]["views"] == ["agent_0=-comm.*", "agent_1=-comm.*"]
    assert load_students(tmp_path)["agent_2"].obs_dim == make(ENV, num_envs=1).spec.agents[2].obs_dim
    with pytest.raises(SystemExit):
        main(["distill", str(tmp_path), "--resume", "--view", "agent_2=-comm.*"])
    assert "['view']" in capsys.readouterr().err


def test_no_view_keeps_full_observations(tmp_path):
    make_teacher_run(tmp_path, env=ENV)
    distill(tmp_path, DistillConfig(total_steps=16 * 4, **TOY), show_progress=False)
    spec = make(ENV, num_envs=1).spec
    assert [s.obs_dim for s in load_students(tmp_path).values()] == [a.obs_dim for a in spec.agents]
    assert load_student_views(tmp_path) is None
    assert "view" not in json.loads(RunLayout(tmp_path).students.sizing.read_text())["agents"][0]


def _profile_with_view(tmp_path, ops: list[str]) -> str:
    """A user profile file (rpi4's budgets) whose [view] default is ``ops``."""
    from kdx.devices.registry import PROFILES

    name = f"robot-{len(ops)}-{abs(hash(tuple(ops))) % 1000}"
    source = PROFILES["rpi4"]
    text = f'name = "{name}"\ndisplay_name = "a robot"\ntarget = "{source.target}"\n' \
           f'default_precision = "{source.default_precision}"\nmemory_gb = [4]\npreferred_backends = ["onnxruntime"]\n' \
           f'[cpu]\narch = "aarch64"\ncore = "A72"\ncores = 4\nclock_ghz = 1.5\n' \
           f'[budget]\nmax_macs_per_agent = {source.budget.max_macs_per_agent}\n' \
           f'max_param_bytes_per_agent = {source.budget.max_param_bytes_per_agent}\nlatency_budget_us = 500\n' \
           f'[view]\ndefault = {json.dumps(ops)}\n'
    path = tmp_path / f"{name}.toml"
    path.write_text(text)
    return str(path)


def test_a_profile_default_view_is_used_unless_a_view_is_given(tmp_path, capsys):
    profile = _profile_with_view(tmp_path, ["-comm.*", "quant:8:2"])
    args = ["--steps", "64", "--num-envs", "16", "--rollout-length", "4", "--threads", "1", "--quiet"]
    full, widths = make(ENV, num_envs=1).spec.agents[0].obs_dim, _widths()
    make_teacher_run(tmp_path / "default", env=ENV)
    _cli("distill", str(tmp_path / "default"), "--profile", profile, *args)
    saved = json.loads(RunLayout(tmp_path / "default").students.config.read_text())
    assert saved["distill"]["views"] == ["*=-comm.* quant:8:2"]
    assert {n: s.obs_dim for n, s in load_students(tmp_path / "default").items()} == \
        {"agent_0": widths["agent_1"], "agent_1": widths["agent_1"], "agent_2": widths["agent_1"]}
    assert load_student_views(tmp_path / "default")["agent_2"]["text"] == ["-comm.*", "quant:8:2"]
    assert "default view of device profile" in capsys.readouterr().out
    make_teacher_run(tmp_path / "given", env=ENV)  # --view wins: the profile's view is not used
    _cli("distill", str(tmp_path / "given"), "--profile", profile, "--view", "agent_0=-comm.*", *args)
    assert [s.obs_dim for s in load_students(tmp_path / "given").values()] == [widths["agent_1"], full, full]


def test_a_profile_default_view_that_does_not_fit_the_env_is_refused(tmp_path, capsys):
    profile = _profile_with_view(tmp_path, ["sight:4", "-ally.*.health"])  # skirmish features, not MPE's
    make_teacher_run(tmp_path, env=ENV)
    with pytest.raises(SystemExit):
        main(["distill", str(tmp_path), "--profile", profile, "--steps", "64", "--quiet"])
    err = " ".join(capsys.readouterr().err.split())
    assert "device profile 'robot-2" in err and "ally.*.health" in err and "--view" in err
    assert not RunLayout(tmp_path).students.root.exists()


@pytest.mark.parametrize(("env", "view"), [
    ("toy/match", "noise:0.1 quant:4"),  # one generic block: sensor ops only
    ("mpe/simple_speaker_listener", "quant:6"),
    ("skirmish/3m", "sight:4 -ally.*.health"),
    ("skirmish/MMM", "sight:6 -enemy.*.type_* dropout:ally.*:0.1"),
    ("pettingzoo:mpe2.simple_spread_v3", "noise:0.05"),
])
def test_distillation_with_a_view_on_every_env_family(tmp_path, env, view):
    """Every env family: students learn on their view (width from the env's layout), the loss is
    finite, and evaluation feeds them the device view."""
    if env.startswith("pettingzoo:"):
        pytest.importorskip("mpe2", reason="PettingZoo's MPE (mpe2) is not installed")
    make_teacher_run(tmp_path, env=env)
    env_obj = make(env, num_envs=1)
    name0 = env_obj.spec.agents[0].name
    config = DistillConfig(total_steps=16 * 4 * 2, views=(f"{name0}={view}",), **TOY)
    distill(tmp_path, config, show_progress=False)
    expected = StudentViews.resolve(config.views, env_obj).widths()
    students = load_students(tmp_path)
    assert students[name0].obs_dim == expected[name0]
    full = {a.name: a.obs_dim for a in env_obj.spec.agents}
    assert all(s.obs_dim == full[n] for n, s in students.items() if n != name0)  # no view: full obs
    assert all(torch.isfinite(torch.tensor(m["loss"])) for m in read_distill_metrics(tmp_path))
    policy = StudentTeamPolicy(students, greedy=True, views=load_student_views(tmp_path))
    play = make(env, num_envs=2, seed=1)
    policy.reset(play)
    step = play.reset()
    actions = policy.act(step)
    assert actions.shape == (2, len(full))
    for i, mask in enumerate(step.action_mask):
        assert bool(mask.gather(1, actions[:, i:i + 1]).all())  # legal actions only
