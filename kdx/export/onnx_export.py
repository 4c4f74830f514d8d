"""torch -> ONNX, one model per agent, following the bundle conventions of kdx.runtime.manifest.

Graph of every exported model (fp32 and fp16 alike; int8 is derived from the fp32 one)::

    obs [B, obs_dim] f32  -> (Cast f16) -> policy (normalisation folded) -> (Cast f32) -> logits
    action_mask [B, K] bool, logits -> Where(mask, logits, -1e9) -> ArgMax -> action int64 [B]
    h_in [B, H] f32 -> GRU -> h_out [B, H] f32          (recurrent policies only)

``B`` is 1 (static) or symbolic ``batch`` (``dynamic_batch``). The fp16 model is the same torch
module converted to half precision before export, with the casts at its edges, so its inputs
and outputs keep the fp32/bool/int64 types of the fp32 model and the runtime code does not
change. Masking happens in fp32 after the cast: -1e9 does not exist in fp16.
"""

from __future__ import annotations

import copy
import io
import json
import warnings
from dataclasses import astuple
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from kdx import __version__
from kdx.devices.targets import PRECISIONS
from kdx.errors import KdxError
from kdx.export.sources import PolicySource
from kdx.runtime.manifest import InputNames, OutputNames
from kdx.runtime.mlp_npz import MlpLayer, MlpWeights, save_mlp_npz
from kdx.trainer.common.activations import TORCH_ACTIVATIONS
from kdx.trainer.distill.students import StudentPolicy

OPSET = 17
MASKED_LOGIT = -1e9
INPUT_OBS, INPUT_MASK, INPUT_H = astuple(InputNames.of_policy(action_mask=True, recurrent=True))
OUTPUT_LOGITS, OUTPUT_ACTION, OUTPUT_H = astuple(OutputNames.of_policy(recurrent=True))


# Features whose std is below this were constant in the data the normalisation was fitted on.
CONSTANT_FEATURE_STD = 1e-4


def fold_student_normalisation(student: StudentPolicy) -> nn.Sequential:
    """The student as one ``Sequential`` whose first Linear absorbs ``(obs - mean) / std``.

    ``W (x - m) / s + b = (W / s) x + (b - W (m / s))``: the graph then starts with the
    first Gemm, with no Sub/Div nodes in front of it.

    Constant features (``std < CONSTANT_FEATURE_STD``, floored when the statistics were fitted:
    MPE's silent communication channels, for instance) would get columns ~1e6 times larger than
    the rest: fp16 overflows (inf * 0 = NaN) and int8's per-channel scales lose every other
    weight. Their columns are zeroed instead, which is exact while the feature keeps the value
    it had in training (its normalised value is then 0) -- the only value the student has seen.
    """
    layers = [copy.deepcopy(m) for m in student.body] + [copy.deepcopy(student.head)]
    first = layers[0]
    if not isinstance(first, nn.Linear):
        raise KdxError("student body must start with a Linear layer to fold the normalisation")
    mean = student.obs_mean.detach().double()
    std = student.obs_std.detach().double()
    constant = std < CONSTANT_FEATURE_STD
    with torch.no_grad():
        weight = first.weight.detach().double()
        scaled = torch.where(constant, torch.zeros_like(weight), weight / std)
        shift = torch.where(constant, torch.zeros_like(mean), mean / std)
        first.bias.copy_((first.bias.detach().double() - weight @ shift).float())
        first.weight.copy_(scaled.float())
    return nn.Sequential(*layers).eval()


def constant_features(student: StudentPolicy) -> list[int]:
    """Indices of the observation features treated as constant when folding."""
    return [int(i) for i in torch.nonzero(student.obs_std < CONSTANT_FEATURE_STD).flatten()]


class _LogitsOnly(nn.Module):
    """Adapts ``module(obs[, h]) -> logits or (logits, ...)`` to ``(logits, h | None)``."""

    def __init__(self, module: nn.Module, recurrent: bool) -> None:
        super().__init__()
        self.module, self.recurrent = module, recurrent

    def forward(self, obs: torch.Tensor, h: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None]:
        out = self.module(obs, h) if self.recurrent else self.module(obs)
        if isinstance(out, tuple):
            return out[0], (out[1] if self.recurrent else None)
        return out, None


def policy_module(source: PolicySource) -> nn.Module:
    """The module exported for ``source``: students with their normalisation folded, anything
    else (the teacher's per-agent view, whose LayerNorm is part of the network) copied as is."""
    if isinstance(source.module, StudentPolicy):
        return fold_student_normalisation(source.module)
    return copy.deepcopy(source.module).eval()


class ExportWrapper(nn.Module):
    """Inputs/outputs of the bundle conventions around one agent's policy (see module doc)."""

    def __init__(self, source: PolicySource, half: bool = False) -> None:
        super().__init__()
        module = policy_module(source)
        self.half_precision = half
        self.recurrent = source.recurrent_size is not None
        self.policy = _LogitsOnly(module.half() if half else module.float(), self.recurrent)

    def forward(self, obs: torch.Tensor, action_mask: torch.Tensor, h_in: torch.Tensor | None = None):
        x = obs.half() if self.half_precision else obs
        h = None
        if self.recurrent:
            h = h_in.half() if self.half_precision else h_in
        logits, h_out = self.policy(x, h)
        logits = logits.float()
        masked = torch.where(action_mask, logits, torch.full_like(logits, MASKED_LOGIT))
        action = torch.argmax(masked, dim=-1)
        if self.recurrent:
            return logits, action, h_out.float()
        return logits, action


def io_names(recurrent: bool) -> tuple[list[str], list[str]]:
    """ONNX input and output names of a model."""
    inputs = [INPUT_OBS, INPUT_MASK] + ([INPUT_H] if recurrent else [])
    outputs = [OUTPUT_LOGITS, OUTPUT_ACTION] + ([OUTPUT_H] if recurrent else [])
    return inputs, outputs


def model_metadata(source: PolicySource, precision: str, dynamic_batch: bool, target: str) -> dict[str, str]:
    """String key/values stored in the model's ``metadata_props``."""
    extra = dict(source.extra_metadata)
    if isinstance(source.module, StudentPolicy):
        extra["constant_features"] = json.dumps(constant_features(source.module))
    return {
        "kdx_version": __version__,
        "agent": source.name,
        "role": source.role,
        "obs_dim": str(source.obs_dim),
        "n_actions": str(source.n_actions),
        "hidden_sizes": json.dumps(source.hidden_sizes),
        "recurrent_size": str(source.recurrent_size or 0),
        "checkpoint_sha256": source.checkpoint_sha256,
        "precision": precision,
        "target": target,
        "batch": "dynamic" if dynamic_batch else "1",
        "normalisation_folded": "true",
        **extra,
    }


def export_onnx(source: PolicySource, path: str | Path, precision: str = "fp32",
                dynamic_batch: bool = False, target: str = "x86") -> Path:
    """Export ``source`` to ``path`` as fp32 or fp16 ONNX (opset 17), metadata included."""
    if precision not in PRECISIONS or PRECISIONS[precision].quantized:
        made = " or ".join(p.name for p in PRECISIONS.values() if not p.quantized)
        raise KdxError(f"export_onnx makes {made} models, not {precision!r} (quantised precisions are "
                       "made from fp32 by kdx.export.quantize)")
    recurrent = source.recurrent_size is not None
    wrapper = ExportWrapper(source, half=precision == "fp16").eval()
    args: tuple[torch.Tensor, ...] = (torch.zeros(1, source.obs_dim), torch.ones(1, source.n_actions, dtype=torch.bool))
    if recurrent:
        args += (torch.zeros(1, source.recurrent_size),)
    inputs, outputs = io_names(recurrent)
    dynamic_axes = {name: {0: "batch"} for name in inputs + outputs} if dynamic_batch else None
    buffer = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation and tracer notes
        torch.onnx.export(wrapper, args, buffer, input_names=inputs, output_names=outputs,
                          opset_version=OPSET, dynamic_axes=dynamic_axes, do_constant_folding=True,
                          dynamo=False)
    import onnx

    model = onnx.load_from_string(buffer.getvalue())
    set_metadata(model, model_metadata(source, precision, dynamic_batch, target))
    onnx.checker.check_model(model)
    path = Path(path)
    path.write_bytes(model.SerializeToString())
    return path


def set_metadata(model: Any, metadata: dict[str, str]) -> None:
    """Replace ``model.metadata_props`` entries named in ``metadata`` (others are kept)."""
    kept = [p for p in model.metadata_props if p.key not in metadata]
    del model.metadata_props[:]
    model.metadata_props.extend(kept)
    for key, value in metadata.items():
        prop = model.metadata_props.add()
        prop.key, prop.value = key, str(value)


def read_metadata(path: str | Path) -> dict[str, str]:
    """The ``metadata_props`` of an ONNX file as a dict."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return {p.key: p.value for p in model.metadata_props}


# the npz format names activations as kdx networks do
_NPZ_ACTIVATIONS = {module: name for name, module in TORCH_ACTIVATIONS.items()}


def student_npz_weights(student: StudentPolicy) -> MlpWeights:
    """The student (normalisation folded) in the numpy sidecar format of kdx.runtime.mlp_npz."""
    layers: list[MlpLayer] = []
    for module in fold_student_normalisation(student):
        if isinstance(module, nn.Linear):
            layers.append(MlpLayer("dense", "identity", {
                "weight": module.weight.detach().numpy().T.astype(np.float32),
                "bias": module.bias.detach().numpy().astype(np.float32),
            }))
        elif type(module) in _NPZ_ACTIVATIONS and layers and layers[-1].activation == "identity":
            layers[-1].activation = _NPZ_ACTIVATIONS[type(module)]
        else:
            raise KdxError(f"the numpy sidecar cannot express a {type(module).__name__} layer")
    return MlpWeights(layers)


def write_student_npz(source: PolicySource, path: str | Path) -> Path | None:
    """Write the numpy sidecar for a student; ``None`` for policies it cannot express."""
    if not isinstance(source.module, StudentPolicy):
        return None
    return save_mlp_npz(path, student_npz_weights(source.module))
