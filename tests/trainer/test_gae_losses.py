"""GAE, PPO losses and the value normaliser against plain Python loops."""

from __future__ import annotations

import math

import torch

from kdx.trainer.common.gae import gae_advantages
from kdx.trainer.common.ppo_losses import entropy, huber, masked_log_probs, policy_loss, value_loss
from kdx.trainer.teacher.value_norm import ValueNormalizer


def test_gae_matches_a_plain_loop_with_terminations_and_truncations():
    g = torch.Generator().manual_seed(0)
    T, B, A, gamma, lam = 7, 3, 2, 0.9, 0.8
    rewards = torch.randn(T, B, A, generator=g)
    values = torch.randn(T, B, A, generator=g)
    next_values = torch.randn(T, B, A, generator=g)
    done = torch.rand(T, B, generator=g) < 0.3
    terminated = done & (torch.rand(T, B, generator=g) < 0.5)
    adv, ret = gae_advantages(rewards, values, next_values, terminated, done, gamma, lam)
    for b in range(B):
        for a in range(A):
            running = 0.0
            for t in reversed(range(T)):
                boot = 0.0 if terminated[t, b] else next_values[t, b, a].item()
                delta = rewards[t, b, a].item() + gamma * boot - values[t, b, a].item()
                running = delta + (0.0 if done[t, b] else gamma * lam * running)
                assert math.isclose(adv[t, b, a].item(), running, rel_tol=1e-5, abs_tol=1e-5)
                assert math.isclose(ret[t, b, a].item(), running + values[t, b, a].item(), rel_tol=1e-5, abs_tol=1e-5)


def test_gae_single_step_by_hand():
    r = torch.tensor([[[1.0]]])
    v = torch.tensor([[[0.5]]])
    nv = torch.tensor([[[2.0]]])
    no = torch.tensor([[False]])
    adv, _ = gae_advantages(r, v, nv, no, no, 0.5, 0.9)
    assert adv.item() == 1.0 + 0.5 * 2.0 - 0.5
    adv_term, _ = gae_advantages(r, v, nv, torch.tensor([[True]]), torch.tensor([[True]]), 0.5, 0.9)
    assert adv_term.item() == 0.5


def test_policy_loss_matches_loop():
    g = torch.Generator().manual_seed(1)
    new, old, adv = (torch.randn(50, generator=g) * 0.3 for _ in range(3))
    clip = 0.2
    expected = 0.0
    for n, o, a in zip(new.tolist(), old.tolist(), adv.tolist()):
        ratio = math.exp(n - o)
        expected += min(ratio * a, min(max(ratio, 1 - clip), 1 + clip) * a)
    expected = -expected / 50
    assert math.isclose(policy_loss(new, old, adv, clip).item(), expected, rel_tol=1e-5)
    w = (torch.rand(50, generator=g) > 0.5).float()
    loop_w = -sum(
        min(math.exp(n - o) * a, min(max(math.exp(n - o), 0.8), 1.2) * a) * wi
        for n, o, a, wi in zip(new.tolist(), old.tolist(), adv.tolist(), w.tolist())
    ) / w.sum().item()
    assert math.isclose(policy_loss(new, old, adv, clip, w).item(), loop_w, rel_tol=1e-5)


def test_value_loss_matches_loop():
    g = torch.Generator().manual_seed(2)
    new, old, ret = (torch.randn(40, generator=g) * 5 for _ in range(3))
    clip, delta = 0.2, 3.0

    def h(e: float) -> float:
        return 0.5 * e * e if abs(e) <= delta else delta * (abs(e) - 0.5 * delta)

    expected = 0.0
    for n, o, r in zip(new.tolist(), old.tolist(), ret.tolist()):
        clipped = o + min(max(n - o, -clip), clip)
        expected += max(h(r - n), h(r - clipped))
    assert math.isclose(value_loss(new, old, ret, clip, delta).item(), expected / 40, rel_tol=1e-5)
    assert huber(torch.tensor([1.0, -5.0]), 3.0).tolist() == [0.5, 3.0 * (5.0 - 1.5)]


def test_entropy_and_masked_log_probs():
    logits = torch.tensor([[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]])
    mask = torch.tensor([[True, True, False], [True, True, True]])
    lp = masked_log_probs(logits, mask)
    assert lp[0, 2].exp().item() == 0.0
    p0 = [math.exp(1) / (math.exp(1) + math.exp(2)), math.exp(2) / (math.exp(1) + math.exp(2))]
    ent0 = -sum(p * math.log(p) for p in p0)
    expected = (ent0 + math.log(3)) / 2
    assert math.isclose(entropy(lp).item(), expected, rel_tol=1e-5)
    assert not torch.isnan(entropy(lp))


def test_value_normalizer_tracks_running_mean_and_variance():
    g = torch.Generator().manual_seed(3)
    batches = [torch.randn(13, 2, generator=g) * 4 + 7 for _ in range(5)]
    vn = ValueNormalizer()
    for b in batches:
        vn.update(b)
    flat = [x for b in batches for x in b.flatten().tolist()]
    mean = sum(flat) / len(flat)
    var = sum((x - mean) ** 2 for x in flat) / len(flat)
    assert math.isclose(vn.mean.item(), mean, rel_tol=1e-9)
    assert math.isclose(vn.var.item(), var, rel_tol=1e-9)
    x = torch.tensor([1.0, 20.0])
    assert torch.allclose(vn.denormalize(vn.normalize(x)), x, atol=1e-5)
    assert torch.equal(ValueNormalizer(enabled=False).normalize(x), x)
