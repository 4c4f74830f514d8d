"""Every activation kdx networks may use (kdx.devices.mlp.ACTIVATIONS, the one list) has a torch
module in the trainer, a name in the runtime's npz format and an operator in the ONNX test
builder, and the three compute the same function."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from kdx.devices.mlp import ACTIVATIONS
from kdx.errors import KdxError
from kdx.export.onnx_export import student_npz_weights
from kdx.runtime import mlp_npz
from kdx.runtime.mlp_npz import MlpProgram
from kdx.runtime.testing import ONNX_ACTIVATIONS, mlp_onnx_bytes
from kdx.trainer.common.activations import TORCH_ACTIVATIONS, activation_module
from kdx.trainer.distill.students import StudentPolicy
from kdx.trainer.teacher.networks import mlp_trunk


def test_the_torch_mapping_is_the_one_list():
    assert set(TORCH_ACTIVATIONS) == set(ACTIVATIONS)
    with pytest.raises(KdxError, match="choose one of relu"):
        activation_module("gelu")


def test_the_npz_vocabulary_holds_the_one_list_and_the_onnx_builder_covers_it():
    assert mlp_npz.ACTIVATIONS[0] == "identity"
    assert set(ACTIVATIONS) <= set(mlp_npz.ACTIVATIONS)
    assert len(set(mlp_npz.ACTIVATIONS)) == len(mlp_npz.ACTIVATIONS)
    assert set(ONNX_ACTIVATIONS) == set(mlp_npz.ACTIVATIONS) - {"identity"}


@pytest.mark.parametrize("name", ACTIVATIONS)
def test_a_student_with_each_activation_runs_alike_in_torch_npz_and_onnx(name: str):
    ort = pytest.importorskip("onnxruntime")
    torch.manual_seed(0)
    student = StudentPolicy(6, 4, (8, 8), activation=name).eval()
    student.set_obs_normalisation(torch.randn(6), torch.rand(6) + 0.5)
    weights = student_npz_weights(student)
    assert [layer.activation for layer in weights.layers] == [name, name, "identity"]
    obs = np.random.default_rng(0).standard_normal((32, 6)).astype(np.float32)
    with torch.no_grad():
        expected = student(torch.from_numpy(obs))[0].numpy()

    program = MlpProgram(weights)
    for row in range(len(obs)):
        program.input[:] = obs[row]
        np.testing.assert_allclose(program.run(), expected[row], atol=1e-5)

    session = ort.InferenceSession(mlp_onnx_bytes(weights), providers=["CPUExecutionProvider"])
    for row in range(len(obs)):  # the builder's graphs take batch 1
        logits = session.run(["logits"], {"obs": obs[row : row + 1]})[0]
        np.testing.assert_allclose(logits[0], expected[row], atol=1e-5)


@pytest.mark.parametrize("name", ACTIVATIONS)
def test_the_teacher_trunk_uses_the_same_module(name: str):
    trunk = mlp_trunk(5, (8, 8), name)
    assert sum(isinstance(m, TORCH_ACTIVATIONS[name]) for m in trunk) == 2
