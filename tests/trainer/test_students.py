"""Student policies: shapes, normalisation, architecture round trip, masking."""

import pytest
import torch

from kdx.errors import KdxError
from kdx.trainer.distill.students import StudentPolicy, masked_logits


def test_forward_shapes_and_embedding():
    student = StudentPolicy(obs_dim=18, n_actions=5, hidden=(32, 16))
    logits, emb = student(torch.randn(7, 18))
    assert logits.shape == (7, 5) and emb.shape == (7, 16)
    assert student.embedding_dim == 16


def test_normalisation_is_applied_to_the_input():
    torch.manual_seed(0)
    student = StudentPolicy(obs_dim=3, n_actions=2, hidden=(4,))
    obs = torch.randn(5, 3)
    mean, std = torch.tensor([1.0, -2.0, 0.5]), torch.tensor([2.0, 0.5, 4.0])
    reference, _ = student((obs - mean) / std)
    student.set_obs_normalisation(mean, std)
    normalised, _ = student(obs)
    torch.testing.assert_close(normalised, reference)


def test_arch_round_trip_and_bad_arch():
    student = StudentPolicy(obs_dim=11, n_actions=5, hidden=(16,), activation="relu")
    clone = StudentPolicy.from_arch_json(student.arch_json())
    clone.load_state_dict(student.state_dict())
    x = torch.randn(2, 11)
    torch.testing.assert_close(clone(x)[0], student(x)[0])
    with pytest.raises(KdxError, match="hidden layer"):
        StudentPolicy(4, 2, hidden=())
    with pytest.raises(KdxError, match="activation"):
        StudentPolicy(4, 2, hidden=(8,), activation="swish9")
    with pytest.raises(KdxError, match="size 11"):
        student(torch.randn(2, 10))


def test_masked_logits_give_zero_probability_to_illegal_actions():
    logits = torch.tensor([[5.0, 1.0, 0.0]])
    mask = torch.tensor([[False, True, True]])
    probs = torch.softmax(masked_logits(logits, mask), dim=-1)
    assert probs[0, 0].item() == 0.0
    assert probs[0, 1:].sum().item() == pytest.approx(1.0)
