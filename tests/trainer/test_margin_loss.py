"""The greedy-margin hinge (kdx issue 6): hand-computed values, masking, gradient direction, and
its device-profile default (on for int8 profiles, off otherwise, an explicit weight wins)."""

from __future__ import annotations

import json

import pytest
import torch
from test_distill import TOY, make_teacher_run

from kdx.errors import KdxError
from kdx.trainer.distill import INT8_MARGIN_WEIGHT, DistillConfig, distill, read_distill_metrics
from kdx.trainer.distill_losses import greedy_margin_loss
from kdx.trainer.student_io import StudentPaths


def test_margin_matches_hand_computed_values():
    teacher = torch.tensor([[3.0, 1.0, 0.0], [0.0, 2.0, 1.0]])  # greedy actions 0 and 1
    student = torch.tensor([[1.0, 0.9, 0.0], [0.5, 0.0, 0.2]])
    # row 0: gap 1.0 - 0.9 = 0.1 -> relu(0.3 - 0.1) = 0.2; row 1: gap 0.0 - 0.5 = -0.5 -> 0.8
    got = greedy_margin_loss(teacher, student, None, margin=0.3)
    assert got.item() == pytest.approx((0.2 + 0.8) / 2)
    weighted = greedy_margin_loss(teacher, student, None, margin=0.3, weights=torch.tensor([1.0, 0.0]))
    assert weighted.item() == pytest.approx(0.2)


def test_margin_is_zero_once_every_gap_exceeds_it():
    teacher = torch.tensor([[3.0, 1.0, 0.0], [0.0, 2.0, 1.0]])
    student = torch.tensor([[1.0, 0.5, 0.0], [-1.0, 0.0, -0.31]], requires_grad=True)
    loss = greedy_margin_loss(teacher, student, None, margin=0.3)
    assert loss.item() == 0.0
    loss.backward()
    assert float(student.grad.abs().sum()) == 0.0


def test_masked_actions_are_ignored_by_target_and_runner_up():
    mask = torch.tensor([[True, True, False], [True, False, False]])
    teacher = torch.tensor([[1.0, 0.0, 9.0], [0.0, 5.0, 5.0]])  # illegal logits would be greedy
    student = torch.tensor([[0.8, 0.7, 100.0], [0.0, 100.0, 100.0]])
    # row 0: target 0 (not illegal 2), rival 1 (not illegal 2): relu(0.2 - 0.1) = 0.1
    # row 1: one legal action, no runner-up: 0
    got = greedy_margin_loss(teacher, student, mask, margin=0.2)
    assert got.item() == pytest.approx(0.1 / 2, abs=1e-6)
    changed = student.clone()
    changed[:, 2] = -100.0
    assert greedy_margin_loss(teacher, changed, mask, margin=0.2).item() == pytest.approx(got.item())


def test_gradient_raises_the_teachers_action_and_lowers_the_runner_up():
    teacher = torch.tensor([[0.0, 2.0, 1.0, -1.0]])  # greedy action 1
    student = torch.tensor([[0.3, 0.25, 0.1, 0.0]], requires_grad=True)  # runner-up (the rival) is 0
    greedy_margin_loss(teacher, student, None, margin=0.5).backward()
    grad = student.grad[0]
    assert grad[1] < 0 and grad[0] > 0  # descent raises logit 1, lowers logit 0
    assert grad[2] == 0 and grad[3] == 0
    with torch.no_grad():
        stepped = student - 0.1 * student.grad
    assert (stepped[0, 1] - stepped[0, 0]) > (student[0, 1] - student[0, 0])


def test_profile_default_turns_the_margin_on_only_for_int8():
    assert DistillConfig().with_profile_defaults("int8").w_margin == INT8_MARGIN_WEIGHT > 0
    assert DistillConfig().with_profile_defaults("fp32").w_margin == 0.0
    assert DistillConfig(w_margin=0.0).with_profile_defaults("int8").w_margin == 0.0
    assert DistillConfig(w_margin=0.7).with_profile_defaults("fp16").w_margin == 0.7
    assert DistillConfig.from_json({"device_profile": "rpi5"}).w_margin == 0.0  # saved before the term existed
    with pytest.raises(KdxError, match="--margin"):
        DistillConfig(margin=0.0).validate()


@pytest.mark.parametrize(("profile", "w_margin", "expected"), [
    ("rpi4", None, INT8_MARGIN_WEIGHT), ("x86-cpu", None, 0.0), ("rpi4", 0.0, 0.0)])
def test_distill_saves_the_resolved_margin_weight_and_logs_the_term(tmp_path, profile, w_margin, expected):
    make_teacher_run(tmp_path)
    distill(tmp_path, DistillConfig(total_steps=16 * 4, device_profile=profile, w_margin=w_margin, **TOY),
            show_progress=False)
    saved = json.loads(StudentPaths(tmp_path).config.read_text())["distill"]
    assert saved["w_margin"] == expected
    (line,) = read_distill_metrics(tmp_path)
    assert (line["loss_margin"] > 0) == (expected > 0)
