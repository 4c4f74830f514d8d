"""Stage 2 distillation: gradients, learning, resume, run-folder errors (teachers with random weights)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from kdx.envs.registry import make
from kdx.errors import KdxError
from kdx.layout import RunLayout
from kdx.trainer.distill.config import LOSS_TERMS, DistillConfig
from kdx.trainer.distill.loop import (
    build_heads,
    build_students,
    distill,
    distill_losses,
    read_distill_metrics,
    size_run_students,
)
from kdx.trainer.distill.rollout import collect_student_rollout, team_forward
from kdx.trainer.distill.store import load_students
from kdx.trainer.teacher.config import TeacherConfig
from kdx.trainer.teacher.model import Teacher
from kdx.trainer.teacher.store import save_teacher

TOY = dict(num_envs=16, rollout_length=4, threads=1, obs_norm_steps=4, epochs=2, minibatches=2)


def make_teacher_run(run: Path, env: str = "toy/match", hidden: str = "32,32", seed: int = 0) -> Teacher:
    """A run folder whose teacher has random weights (what distillation needs: a frozen teacher)."""
    config = TeacherConfig(env=env, hidden=hidden, num_envs=8, rollout_length=4, total_steps=32)
    spec = make(env, num_envs=1).spec
    torch.manual_seed(seed)
    teacher = Teacher.build(config, spec)
    save_teacher(run, teacher)
    return teacher.eval()


def _rollout_batch(teacher: Teacher, config: DistillConfig, env_name: str):
    env = make(env_name, num_envs=8, seed=3)
    env.check_actions = False
    _, rows = size_run_students(teacher, config)
    torch.manual_seed(0)
    students = build_students(rows)
    heads = build_heads(students, teacher.actor.hidden_dim)
    buf, _, _ = collect_student_rollout(env, teacher, list(students.values()), env.reset(), None, 6,
                                        torch.Generator().manual_seed(0))
    n = 6 * 8

    def flat(x):
        return x.reshape(n, *x.shape[2:])

    adv = torch.randn(6, 8, env.spec.n_agents, generator=torch.Generator().manual_seed(1))
    batch = (flat(buf.obs), flat(buf.masks), flat(buf.actions), flat(buf.log_probs), flat(buf.student_acted),
             flat(adv), flat(buf.teacher_logits), flat(buf.teacher_embedding))
    return students, heads, batch


@pytest.mark.parametrize("term", LOSS_TERMS)
def test_every_term_sends_gradients_to_every_student(tmp_path, term):
    teacher = make_teacher_run(tmp_path, env="mpe/simple_spread")  # 3 agents: RKD angles exist
    weights = {f"w_{t}": (1.0 if t == term else 0.0) for t in LOSS_TERMS}
    config = DistillConfig(**weights, structural_samples=0)
    students, heads, batch = _rollout_batch(teacher, config, "mpe/simple_spread")
    terms = distill_losses(list(students.values()), list(heads.values()), *batch, config)
    assert torch.isfinite(terms["loss"]) and float(terms[term].detach().abs()) > 0
    terms["loss"].backward()
    for name, student in students.items():
        # the structural terms shape the embedding: the logits layer is theirs to ignore
        trained = student.body if term in ("rel", "role") else student
        for pname, p in trained.named_parameters():
            assert p.grad is not None and float(p.grad.abs().sum()) > 0, f"{term}: no gradient in {name}.{pname}"
    if term in ("rel", "role"):
        for name, head in heads.items():
            assert float(head.weight.grad.abs().sum()) > 0, f"{term}: no gradient in head {name}"


def test_policy_term_ignores_steps_where_the_teacher_acted(tmp_path):
    teacher = make_teacher_run(tmp_path)
    config = DistillConfig(w_pg=1.0, w_kl=0.0, w_ce=0.0, w_rel=0.0, w_role=0.0)
    students, heads, batch = _rollout_batch(teacher, config, "toy/match")
    obs, masks, actions, logp, acted, adv, t_logits, t_emb = batch
    terms = distill_losses(list(students.values()), list(heads.values()), obs, masks, actions, logp,
                           torch.zeros_like(acted), adv, t_logits, t_emb, config)
    assert float(terms["pg"].detach()) == 0.0


def _agreement(students, teacher, env_name: str) -> float:
    """Greedy agreement on held-out states (where an agent has more than one legal action)."""
    env = make(env_name, num_envs=256, seed=999)
    step = env.reset()
    for _ in range(3):
        step = env.step(env.sample_random_actions())
    obs, mask = step.padded_obs(), step.padded_action_mask()
    with torch.no_grad():
        t = teacher.forward_actor(obs, step.state, mask).logits.argmax(-1)
        s_logits, _ = team_forward(list(students.values()), obs, mask.shape[-1])
        s = s_logits.masked_fill(~mask, -1e9).argmax(-1)
    choice = mask.sum(-1) > 1
    return float((s == t)[choice].float().mean())


def test_short_distillation_raises_teacher_agreement(tmp_path):
    teacher = make_teacher_run(tmp_path, env="mpe/simple_spread", hidden="64,64", seed=4)
    config = DistillConfig(total_steps=32 * 25 * 12, num_envs=32, rollout_length=25, threads=1, w_pg=0.0, epochs=4, minibatches=1,
                           lr=1e-2, lr_decay=False, obs_norm_steps=25, students=("agent_0=64", "agent_1=64", "agent_2=64"))
    before = {}

    def record_first(metrics, students):
        if not before:
            before["metrics"] = metrics
        return False

    torch.manual_seed(config.seed)
    initial = build_students(size_run_students(teacher, config)[1])  # what distill() starts from
    start = _agreement(initial, teacher, "mpe/simple_spread")
    distill(tmp_path, config, show_progress=False, callback=record_first)
    end = _agreement(load_students(tmp_path), teacher, "mpe/simple_spread")
    assert end > start + 0.25 and end > 0.6, (start, end)
    metrics = read_distill_metrics(tmp_path)
    assert metrics[-1]["teacher_agreement"] > metrics[0]["teacher_agreement"]


def _weights(run: Path) -> dict[str, torch.Tensor]:
    return {f"{a}.{k}": v.clone() for a, s in load_students(run).items() for k, v in s.state_dict().items()}


@pytest.mark.parametrize("env", ["toy/match", "toy/lazy", "skirmish/3m"])
def test_resume_continues_exactly(tmp_path, env):
    """A stopped distillation resumed from its checkpoint ends bit-identical to an uninterrupted one,
    on the toy envs (one builds a state tensor lazily, which a fresh env lacks at restore) and on
    skirmish; temp files of a killed writer are removed on resume."""
    config = DistillConfig(total_steps=16 * 4 * 4, checkpoint_every=1, teacher_mix=0.5, **TOY)
    for name in ("straight", "resumed"):
        make_teacher_run(tmp_path / name, env=env)
    distill(tmp_path / "straight", config, show_progress=False)
    distill(tmp_path / "resumed", config, show_progress=False, stop_after_updates=2)
    with pytest.raises(KdxError, match="--resume"):
        distill(tmp_path / "resumed", config, show_progress=False)
    folder = RunLayout(tmp_path / "resumed").students
    stale = [folder.checkpoints / ".tmp-000003-999999999", folder.root / ".a0.safetensors.tmp-999999999"]
    stale[0].mkdir()
    stale[1].write_bytes(b"half a file")
    distill(tmp_path / "resumed", resume=True, show_progress=False)
    assert not any(p.exists() for p in stale)
    a, b = _weights(tmp_path / "straight"), _weights(tmp_path / "resumed")
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0, msg=k)
    lines = read_distill_metrics(tmp_path / "resumed")
    assert [m["update"] for m in lines] == [1, 2, 3, 4]
    straight = read_distill_metrics(tmp_path / "straight")
    assert lines[-1]["loss"] == straight[-1]["loss"]


def test_outputs_in_the_students_folder(tmp_path):
    make_teacher_run(tmp_path)
    distill(tmp_path, DistillConfig(total_steps=16 * 4, profile="rpi4", students=("a1=8x8",), **TOY),
            show_progress=False)
    paths = RunLayout(tmp_path).students
    doc = json.loads(paths.config.read_text())
    assert doc["env"] == "toy/match" and doc["profile"] == {"name": "rpi4", "target": "rpi", "precision": "int8"}
    assert doc["agents"]["a1"]["hidden"] == [8, 8]
    sizing = json.loads(paths.sizing.read_text())
    assert [a["agent"] for a in sizing["agents"]] == ["a0", "a1"]
    assert sizing["agents"][1]["source"] == "override"
    students = load_students(tmp_path)
    assert list(students) == ["a0", "a1"] and students["a1"].hidden == (8, 8)
    assert paths.weights("a0").is_file() and paths.metrics.is_file()


def test_missing_wrong_env_and_corrupt_teacher(tmp_path):
    config = DistillConfig(total_steps=16 * 4, **TOY)
    with pytest.raises(KdxError, match="kdx train"):
        distill(tmp_path / "nothing", config, show_progress=False)
    run = tmp_path / "wrong"
    make_teacher_run(run)
    doc = json.loads((run / "teacher/config.json").read_text())
    doc["env_spec"]["episode_limit"] = 9  # weights fit, but the env differs
    (run / "teacher/config.json").write_text(json.dumps(doc))
    with pytest.raises(KdxError, match="retrain"):
        distill(run, config, show_progress=False)
    run = tmp_path / "corrupt"
    make_teacher_run(run)
    (run / "teacher/weights.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(KdxError, match="corrupt"):
        distill(run, config, show_progress=False)


def test_bad_overrides_and_too_small_profile(tmp_path):
    make_teacher_run(tmp_path)
    with pytest.raises(KdxError, match="agents: a0, a1"):
        distill(tmp_path, DistillConfig(total_steps=64, students=("ghost=16",), **TOY), show_progress=False)
    with pytest.raises(KdxError, match="malformed"):
        distill(tmp_path, DistillConfig(total_steps=64, students=("a0=16x",), **TOY), show_progress=False)
    profile = Path(__file__).parents[2] / "kdx/devices/profiles/rpi4.toml"
    tiny = tmp_path / "tiny.toml"
    tiny.write_text(profile.read_text().replace('name = "rpi4"', 'name = "tiny"')
                    .replace("max_macs_per_agent = 4096", "max_macs_per_agent = 10"))
    with pytest.raises(KdxError, match="short by"):
        distill(tmp_path, DistillConfig(total_steps=64, profile=str(tiny), **TOY), show_progress=False)
    assert not RunLayout(tmp_path).students.root.exists()  # nothing written before the checks passed


def test_load_students_errors(tmp_path):
    with pytest.raises(KdxError, match="kdx distill"):
        load_students(tmp_path)
    make_teacher_run(tmp_path)
    distill(tmp_path, DistillConfig(total_steps=64, **TOY), show_progress=False)
    (tmp_path / "students/a1.safetensors").write_bytes(b"garbage")
    with pytest.raises(KdxError, match="corrupt"):
        load_students(tmp_path)


def test_config_validation_and_round_trip():
    config = DistillConfig(students=("a0=16",), w_rel=0.0)
    assert DistillConfig.from_json(json.loads(json.dumps(config.to_json()))) == config
    with pytest.raises(KdxError, match="--temperature"):
        DistillConfig(temperature=0.0).validate()
    with pytest.raises(KdxError, match="switched off"):
        DistillConfig(w_pg=0, w_kl=0, w_ce=0, w_rel=0, w_role=0).validate()
    with pytest.raises(KdxError, match="--teacher-mix"):
        DistillConfig(teacher_mix=1.5).validate()


def test_teacher_mix_hands_actions_to_the_teacher(tmp_path):
    teacher = make_teacher_run(tmp_path)
    _, rows = size_run_students(teacher, DistillConfig())
    students = list(build_students(rows).values())
    env = make("toy/match", num_envs=64, seed=0)
    acted = {}
    for mix in (0.0, 0.5, 1.0):
        buf, _, _ = collect_student_rollout(env, teacher, students, env.reset(), None, 4,
                                            torch.Generator().manual_seed(0), teacher_mix=mix)
        acted[mix] = float(buf.student_acted.float().mean())
        assert bool(buf.masks.gather(-1, buf.actions.unsqueeze(-1)).all())  # every executed action is legal
    assert acted[0.0] == 1.0 and acted[1.0] == 0.0 and 0.35 < acted[0.5] < 0.65


def test_a_time_budget_ends_a_distillation_annealed_and_a_resume_can_extend_it(tmp_path):
    make_teacher_run(tmp_path)
    config = DistillConfig(total_steps=16 * 4 * 100_000, minutes=0.01, lr=1e-3, **TOY)
    last = distill(tmp_path, config, show_progress=False)
    assert 1 <= last["update"] < config.num_updates and last["time_s"] >= 0.6
    lines = read_distill_metrics(tmp_path)
    assert lines[-1]["update"] == last["update"]  # the stopping update is logged and checkpointed
    assert last["lr"] < 0.5 * config.lr  # decayed with the clock, not with the (tiny) step fraction
    assert json.loads(RunLayout(tmp_path).students.config.read_text())["distill"]["minutes"] == 0.01
    more = distill(tmp_path, resume=True, minutes=0.02, show_progress=False)
    assert more["update"] > last["update"] and more["time_s"] >= 1.2
