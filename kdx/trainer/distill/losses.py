"""The KD-MARL distillation terms as pure functions.

Shapes: logits and masks ``[N, K]`` (N samples of one agent, or agents flattened with padding
masked out), embeddings ``[B, A, D]`` (B time steps x envs, A agents of the team at that step).
Invalid actions are masked before every term: masked logits never receive probability mass.

- ``kl_distillation``: KL(teacher || student) at temperature T, scaled by T^2 (Hinton et al.) so
  gradients keep their size as T changes.
- ``greedy_cross_entropy``: cross-entropy of the student with the teacher's greedy legal action.
- ``greedy_margin_loss``: hinge ``relu(m - (s[a_T] - max_{j != a_T, legal} s_j))`` on the teacher's
  greedy legal action a_T, so the student keeps a logit margin between that action and the
  runner-up. Meant for int8 students (int8 weights move logits by ~0.02 and ~5% of a student's
  states are near ties), but measured it did not remove those ties (kdx issue 6; see
  ``DistillConfig.w_margin``), so the distiller leaves it off by default.
- ``rkd_distance_loss`` / ``rkd_angle_loss``: relational knowledge distillation (Park et al.,
  2019) over the *agents of each time step*: pairwise distances normalised by their mean, and the
  cosine of the angle at e_j between (e_i - e_j) and (e_k - e_j); SmoothL1 between student and
  teacher potentials, the teacher side without gradient. Invariant to a uniform scaling, rotation
  and translation of the student embeddings.
- ``role_alignment_loss``: InfoNCE across agents: each student's projected embedding is pulled to
  its own agent's teacher embedding and pushed from the other agents' (cosine similarity / tau).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

_NEG = -1e9  # finite "minus infinity": keeps 0 * log 0 terms at exactly 0 instead of NaN


def _weighted_mean(x: torch.Tensor, weights: torch.Tensor | None) -> torch.Tensor:
    if weights is None:
        return x.mean()
    return (x * weights).sum() / weights.sum().clamp_min(1e-8)


def _masked(logits: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    return logits if mask is None else logits.masked_fill(~mask, _NEG)


def kl_distillation(teacher_logits: torch.Tensor, student_logits: torch.Tensor, mask: torch.Tensor | None,
                    temperature: float = 1.0, weights: torch.Tensor | None = None) -> torch.Tensor:
    """``T^2 * mean_n KL(softmax(t_n / T) || softmax(s_n / T))`` over legal actions; teacher detached."""
    assert teacher_logits.shape == student_logits.shape, "teacher and student logits differ in shape"
    t_logp = F.log_softmax(_masked(teacher_logits.detach(), mask) / temperature, dim=-1)
    s_logp = F.log_softmax(_masked(student_logits, mask) / temperature, dim=-1)
    kl = (t_logp.exp() * (t_logp - s_logp)).sum(dim=-1)
    return temperature**2 * _weighted_mean(kl, weights)


def greedy_cross_entropy(teacher_logits: torch.Tensor, student_logits: torch.Tensor, mask: torch.Tensor | None,
                         weights: torch.Tensor | None = None) -> torch.Tensor:
    """``-mean_n log p_student(argmax_legal teacher_n)``."""
    target = _masked(teacher_logits.detach(), mask).argmax(dim=-1)
    s_logp = F.log_softmax(_masked(student_logits, mask), dim=-1)
    nll = -s_logp.gather(-1, target.unsqueeze(-1)).squeeze(-1)
    return _weighted_mean(nll, weights)


def greedy_margin_loss(teacher_logits: torch.Tensor, student_logits: torch.Tensor, mask: torch.Tensor | None,
                       margin: float, weights: torch.Tensor | None = None) -> torch.Tensor:
    """``mean_n relu(margin - (s_n[a_n] - max_{j != a_n, legal} s_n[j]))``, ``a_n = argmax_legal t_n``.

    ``[N, K]`` logits and mask. Rows with a single legal action have no runner-up and add 0.
    Zero (and no gradient) once every row's student gap is at least ``margin``.
    """
    assert teacher_logits.shape == student_logits.shape, "teacher and student logits differ in shape"
    target = _masked(teacher_logits.detach(), mask).argmax(dim=-1, keepdim=True)  # [N, 1]
    top = student_logits.gather(-1, target).squeeze(-1)
    others = _masked(student_logits, mask).scatter(-1, target, _NEG)  # the teacher's action is not its own rival
    runner_up = others.max(dim=-1).values
    return _weighted_mean(F.relu(margin - (top - runner_up)), weights)


def _gram(e: torch.Tensor) -> torch.Tensor:
    """``<e_i, e_j>`` per step, ``[B, A, A]``. The potentials below are built from it, so their cost
    is one ``B x A x A x D`` product plus ``O(B A^3)``, instead of ``B x A^3 x D`` for explicit
    difference vectors (30x faster at A = 3, D = 256)."""
    return e @ e.transpose(1, 2)


def _squared_distances(g: torch.Tensor) -> torch.Tensor:
    diag = torch.diagonal(g, dim1=1, dim2=2)
    return diag.unsqueeze(2) + diag.unsqueeze(1) - 2 * g


def _pairwise_distances(e: torch.Tensor) -> torch.Tensor:
    return _squared_distances(_gram(e)).clamp_min(1e-12).sqrt()  # [B, A, A]


def _distance_potential(e: torch.Tensor) -> torch.Tensor:
    """``||e_i - e_j|| / mu`` per step, mu = mean over the off-diagonal pairs of that step."""
    a = e.shape[1]
    d = _pairwise_distances(e)
    off = ~torch.eye(a, dtype=torch.bool, device=e.device)
    mu = d[:, off].mean(dim=1).clamp_min(1e-8)
    return (d / mu[:, None, None])[:, off]  # [B, A*(A-1)]


def rkd_distance_loss(teacher_emb: torch.Tensor, student_emb: torch.Tensor) -> torch.Tensor:
    """SmoothL1 between student and teacher distance potentials over the agents of each step.

    ``teacher_emb [B, A, Dt]``, ``student_emb [B, A, Ds]`` (widths may differ); needs ``A >= 2``.
    """
    assert teacher_emb.shape[:2] == student_emb.shape[:2], "teacher/student embeddings: [B, A, D] each"
    with torch.no_grad():
        t = _distance_potential(teacher_emb.detach())
    return F.smooth_l1_loss(_distance_potential(student_emb), t)


def _angle_potential(e: torch.Tensor) -> torch.Tensor:
    """cos of the angle at e_j between (e_i - e_j) and (e_k - e_j), for all i, j, k: ``[B, A, A, A]``."""
    g = _gram(e)
    # <e_i - e_j, e_k - e_j> = G_ik - G_ij - G_jk + G_jj, laid out [B, i, j, k]
    diag = torch.diagonal(g, dim1=1, dim2=2)
    dot = g.unsqueeze(2) - g.unsqueeze(3) - g.transpose(1, 2).unsqueeze(1) + diag[:, None, :, None]
    norm = _squared_distances(g).clamp_min(1e-12).sqrt()  # ||e_i - e_j||, [B, i, j]
    return dot / (norm.unsqueeze(3) * norm.transpose(1, 2).unsqueeze(1))


def rkd_angle_loss(teacher_emb: torch.Tensor, student_emb: torch.Tensor) -> torch.Tensor:
    """SmoothL1 between student and teacher angle potentials over triplets of distinct agents."""
    assert teacher_emb.shape[:2] == student_emb.shape[:2], "teacher/student embeddings: [B, A, D] each"
    a = teacher_emb.shape[1]
    idx = torch.arange(a, device=teacher_emb.device)
    distinct = (idx[:, None, None] != idx[None, :, None]) & (idx[None, :, None] != idx[None, None, :]) & (
        idx[:, None, None] != idx[None, None, :]
    )
    if not bool(distinct.any()):
        return student_emb.sum() * 0.0  # fewer than 3 agents: no angles to keep
    with torch.no_grad():
        t = _angle_potential(teacher_emb.detach())[:, distinct]
    return F.smooth_l1_loss(_angle_potential(student_emb)[:, distinct], t)


def relation_loss(teacher_emb: torch.Tensor, student_emb: torch.Tensor, w_distance: float = 1.0,
                  w_angle: float = 2.0) -> torch.Tensor:
    """RKD over the team: ``w_distance * distance + w_angle * angle`` (Park et al.'s weights 1 and 2)."""
    return w_distance * rkd_distance_loss(teacher_emb, student_emb) + w_angle * rkd_angle_loss(teacher_emb, student_emb)


def role_alignment_loss(teacher_emb: torch.Tensor, student_proj: torch.Tensor, tau: float = 0.1) -> torch.Tensor:
    """InfoNCE across agents: for step b and agent i, the positive is teacher_emb[b, i] and the
    negatives are teacher_emb[b, j != i]; similarity is cosine / tau. ``[B, A, D]`` each (the
    students are projected to the teacher's width D by per-agent heads)."""
    assert teacher_emb.shape == student_proj.shape, "project students to the teacher's width first"
    t = F.normalize(teacher_emb.detach(), dim=-1)
    s = F.normalize(student_proj, dim=-1)
    logits = torch.einsum("bid,bjd->bij", s, t) / tau  # [B, A(student), A(teacher)]
    b, a, _ = logits.shape
    target = torch.arange(a, device=logits.device).expand(b, a)
    return F.cross_entropy(logits.reshape(b * a, a), target.reshape(-1))
