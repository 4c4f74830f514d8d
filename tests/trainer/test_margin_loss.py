"""The greedy-margin hinge (kdx issue 6): hand-computed values, masking, gradient direction, and
its wiring into the composite loss (off by default, logged as ``loss_margin`` when on)."""

from __future__ import annotations

import json

import pytest
import torch
from test_distill import TOY, make_teacher_run

from kdx.errors import KdxError
from kdx.layout import RunLayout
from kdx.trainer.distill.config import DistillConfig
from kdx.trainer.distill.loop import distill, read_distill_metrics
from kdx.trainer.distill.losses import greedy_margin_loss


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


def test_margin_is_off_by_default_and_validated():
    assert DistillConfig().w_margin == 0.0
    assert DistillConfig.from_json({"profile": "rpi5"}).w_margin == 0.0  # saved before the term existed
    with pytest.raises(KdxError, match="--margin"):
        DistillConfig(w_margin=1.0, margin=0.0).validate()
    with pytest.raises(KdxError, match="--w-margin"):
        DistillConfig(w_margin=-1.0).validate()


@pytest.mark.parametrize("w_margin", [0.0, 1.0])
def test_distill_logs_the_margin_term_when_it_is_on(tmp_path, w_margin):
    make_teacher_run(tmp_path)
    distill(tmp_path, DistillConfig(total_steps=16 * 4, profile="rpi4", w_margin=w_margin, **TOY),
            show_progress=False)
    saved = json.loads(RunLayout(tmp_path).students.config.read_text())["distill"]
    assert saved["w_margin"] == w_margin and saved["margin"] == DistillConfig().margin
    (line,) = read_distill_metrics(tmp_path)
    assert (line["loss_margin"] > 0) == (w_margin > 0)
