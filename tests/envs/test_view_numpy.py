"""The torch-free device applier (kdx/envs/view_numpy.py) equals the torch applier's device view
(kdx/envs/view_apply.py) bit for bit, on real observations of skirmish and MPE, for every device
op kind and for training views (whose training-only ops it leaves out)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

from kdx.envs.view_apply import apply_view
from kdx.envs.view_numpy import COMPILE, DeviceView, apply_device_view
from kdx.envs.view_spec import OP_KINDS, View
from kdx.errors import KdxError
from tests.envs.test_views import observed, views_of

CASES = {
    "skirmish/3m": ["sight:4", "sight:4 -ally.*.health quant:4", "-enemy.* dropout:ally.*:0.3 noise:0.1",
                    "-enemy.* -ally.*.health", "quant:3:0.5 sight:6"],
    "mpe/simple_spread": ["-comm.*", "sight:0.8 quant:5:2", "-comm.* dropout:landmark.*:0.2 noise:0.05",
                          "dropout:agent.*:0.5 sight:1.2 -landmark.1.*"],
}


@pytest.mark.parametrize("name", CASES)
def test_numpy_device_view_equals_torch_device_view(name):
    layout, obs, env = observed(name, steps=8, num_envs=32)
    agent = env.spec.agent_names[0]
    for text in CASES[name]:
        view = views_of(env, {agent: text})[agent]
        expected = apply_view(view.device_view(), layout, obs.float()).numpy()
        got = apply_device_view(view, layout, obs.numpy())
        assert got.dtype == np.float32 and got.shape == expected.shape, text
        np.testing.assert_array_equal(got, expected, err_msg=text)
        assert got.shape[1] == view.output_layout(layout).size
        single = DeviceView(view, layout)(obs[3].numpy())  # one observation, as the device feeds it
        np.testing.assert_array_equal(single, expected[3], err_msg=text)
    # the ops did something: sight zeroes some entity at range 4 on skirmish, -comm.* shrinks MPE
    first = views_of(env, {agent: CASES[name][0]})[agent]
    assert not np.array_equal(apply_device_view(first, layout, obs.numpy()), obs.numpy())


def test_training_only_ops_are_left_out_and_dropout_flags_read_one():
    layout, obs, env = observed("mpe/simple_spread")
    view = views_of(env, {"agent_0": "noise:0.5 dropout:landmark.*:0.9"})["agent_0"]
    out = apply_device_view(view, layout, obs.numpy())
    flags = [i for i, f in enumerate(view.output_layout(layout).feature_names()) if f.endswith(".available")]
    assert len(flags) == 3 and np.all(out[:, flags] == 1.0)
    rest = np.delete(out, flags, axis=1)
    np.testing.assert_array_equal(rest, obs.numpy())  # no noise, nothing dropped


def test_every_device_op_kind_compiles():
    assert set(COMPILE) == {k for k, op in OP_KINDS.items() if k != "noise"}


def test_wrong_width_is_refused_naming_the_sizes():
    layout, obs, env = observed("mpe/simple_spread")
    device = DeviceView(View.parse("-comm.*"), layout)
    with pytest.raises(KdxError, match=f"{layout.size} values"):
        device(np.zeros(layout.size + 1, dtype=np.float32))
    with pytest.raises(KdxError, match="nothing"):
        DeviceView(View.parse("-nothing.*"), layout)


def test_view_numpy_is_torch_free():
    code = ("import sys; import kdx.envs.view_numpy, kdx.envs.view_spec, kdx.envs.obs_layout; "
            "assert 'torch' not in sys.modules, 'torch imported'")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert torch is not None
