"""Distillation terms against plain loops, hand-computed values and their invariances."""

import math

import pytest
import torch

from kdx.trainer.distill.losses import (
    greedy_cross_entropy,
    kl_distillation,
    relation_loss,
    rkd_angle_loss,
    rkd_distance_loss,
    role_alignment_loss,
)


def _loop_kl(t_logits, s_logits, mask, temp):
    total = 0.0
    for n in range(len(t_logits)):
        legal = [k for k in range(len(t_logits[n])) if mask[n][k]]
        zt = sum(math.exp(t_logits[n][k] / temp) for k in legal)
        zs = sum(math.exp(s_logits[n][k] / temp) for k in legal)
        for k in legal:
            p = math.exp(t_logits[n][k] / temp) / zt
            q = math.exp(s_logits[n][k] / temp) / zs
            total += p * math.log(p / q)
    return temp**2 * total / len(t_logits)


def test_kl_matches_a_plain_loop_with_masks_and_temperature():
    torch.manual_seed(0)
    t, s = torch.randn(6, 5, dtype=torch.float64), torch.randn(6, 5, dtype=torch.float64)
    mask = torch.rand(6, 5) > 0.3
    mask[:, 0] = True
    for temp in (1.0, 2.5):
        got = kl_distillation(t, s, mask, temperature=temp).item()
        assert got == pytest.approx(_loop_kl(t.tolist(), s.tolist(), mask.tolist(), temp), rel=1e-9)
    assert kl_distillation(t, t.clone(), mask).item() == pytest.approx(0.0, abs=1e-12)


def test_kl_ignores_illegal_logits_entirely():
    t = torch.tensor([[1.0, 2.0, 50.0]])
    s = torch.tensor([[0.5, 1.0, -50.0]])
    mask = torch.tensor([[True, True, False]])
    changed = s.clone()
    changed[0, 2] = 123.0
    assert kl_distillation(t, s, mask).item() == pytest.approx(kl_distillation(t, changed, mask).item())


def test_greedy_cross_entropy_by_hand():
    teacher = torch.tensor([[0.0, 3.0, 9.0], [2.0, 1.0, 0.0]])
    mask = torch.tensor([[True, True, False], [True, True, True]])  # teacher's 9.0 is illegal
    student = torch.tensor([[0.0, 0.0, 5.0], [1.0, 0.0, 0.0]])
    # row 0: target action 1 among legal {0, 1}: -log(1/2); row 1: target 0: -log(e / (e + 2))
    expected = (math.log(2) + -math.log(math.e / (math.e + 2))) / 2
    assert greedy_cross_entropy(teacher, student, mask).item() == pytest.approx(expected, rel=1e-6)


def _loop_distance_potentials(e):
    a = len(e)
    d = {(i, j): math.dist(e[i], e[j]) for i in range(a) for j in range(a) if i != j}
    mu = sum(d.values()) / len(d)
    return {k: v / mu for k, v in d.items()}


def _smooth_l1(x, y):
    diff = abs(x - y)
    return 0.5 * diff**2 if diff < 1 else diff - 0.5


def test_rkd_distance_matches_a_plain_loop():
    torch.manual_seed(1)
    t, s = torch.randn(3, 4, 6, dtype=torch.float64), torch.randn(3, 4, 2, dtype=torch.float64)
    terms = []
    for b in range(3):
        pt = _loop_distance_potentials(t[b].tolist())
        ps = _loop_distance_potentials(s[b].tolist())
        terms += [_smooth_l1(ps[k], pt[k]) for k in pt]
    assert rkd_distance_loss(t, s).item() == pytest.approx(sum(terms) / len(terms), rel=1e-9)


def test_rkd_angle_matches_a_plain_loop():
    torch.manual_seed(2)
    t, s = torch.randn(2, 4, 5, dtype=torch.float64), torch.randn(2, 4, 3, dtype=torch.float64)

    def cos_at_j(e, i, j, k):
        u = [x - y for x, y in zip(e[i], e[j])]
        v = [x - y for x, y in zip(e[k], e[j])]
        return sum(a * b for a, b in zip(u, v)) / (math.hypot(*u) * math.hypot(*v))

    terms = []
    for b in range(2):
        for i in range(4):
            for j in range(4):
                for k in range(4):
                    if len({i, j, k}) == 3:
                        terms.append(_smooth_l1(cos_at_j(s[b].tolist(), i, j, k), cos_at_j(t[b].tolist(), i, j, k)))
    assert rkd_angle_loss(t, s).item() == pytest.approx(sum(terms) / len(terms), rel=1e-9)


def test_relation_loss_is_zero_for_a_scaled_rotated_shifted_copy_in_another_width():
    torch.manual_seed(3)
    teacher = torch.randn(5, 4, 8, dtype=torch.float64)
    q, _ = torch.linalg.qr(torch.randn(16, 16, dtype=torch.float64))
    embed = q[:, :8]  # an isometric embedding of the teacher's 8 dims into 16
    student = 3.7 * teacher @ embed.T + torch.randn(16, dtype=torch.float64)
    assert relation_loss(teacher, student).item() == pytest.approx(0.0, abs=1e-10)
    assert relation_loss(teacher, torch.randn(5, 4, 16, dtype=torch.float64)).item() > 1e-3


def test_role_alignment_is_lowest_when_each_student_matches_its_own_teacher():
    torch.manual_seed(4)
    teacher = torch.randn(6, 3, 8)
    matched = role_alignment_loss(teacher, teacher.clone())
    swapped = role_alignment_loss(teacher, teacher[:, [1, 2, 0]])
    noisy = role_alignment_loss(teacher, teacher + 0.5 * torch.randn_like(teacher))
    assert matched < noisy < swapped


def test_gradients_reach_the_student_side_only():
    teacher = torch.randn(4, 3, 8, requires_grad=True)
    student = torch.randn(4, 3, 8, requires_grad=True)
    (relation_loss(teacher, student) + role_alignment_loss(teacher, student)).backward()
    assert teacher.grad is None
    assert student.grad is not None and student.grad.abs().sum() > 0
