"""Parity of an exported model with its torch source, on recorded observations.

The reference is the *original* torch module (normalisation not folded, full fp32), so the
check covers the folding and the export as well as the precision. The bar of each precision is
part of its entry in ``kdx.devices.targets.PRECISIONS`` (issue 6): fp32 max |logit difference|
<= 1e-4 and 100% greedy-action agreement, fp16 >= 99.5%, int8 >= 99% greedy-action agreement.

Greedy action = argmax of the masked logits (illegal actions never chosen), ties to the first.
The bars are on the plain agreement; the agreement on the states that are not near ties (the
reference's best and second-best legal logits more than ``NEAR_TIE_GAP`` apart) is reported
beside it, to tell precision loss on clear decisions from flipped near ties.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from kdx.devices.targets import PRECISIONS
from kdx.errors import KdxError
from kdx.export.calib import MIN_PARITY_SAMPLES
from kdx.export.onnx_export import MASKED_LOGIT
from kdx.export.sources import PolicySource

NEAR_TIE_GAP = 0.05  # logits; a state whose top-2 legal logits are closer is a near tie


@dataclass
class ParityResult:
    """Measured parity of one model. Numbers, no formatting."""

    agent: str
    role: str
    precision: str
    model: str  # the model file (path inside the bundle once exported)
    samples: int
    max_abs_logit_diff: float
    mean_abs_logit_diff: float
    action_agreement: float
    required_agreement: float
    required_max_abs_logit_diff: float | None
    passed: bool
    # Largest gap between the reference's best and second-best legal logit among the rows where
    # the actions differ (0 if none): small values mean the model only flips near-ties.
    max_ref_gap_where_disagreeing: float = 0.0
    note: str = ""  # how the model was made, when there were several attempts
    near_tie_fraction: float = 0.0  # share of the states whose reference top-2 gap <= NEAR_TIE_GAP
    action_agreement_beyond_near_ties: float = 1.0  # agreement on the other states
    int8_recipe: str = ""  # int8 models: the quantisation recipe (kdx.export.quantize.INT8_RECIPES)
    backend: str = "onnxruntime"  # what ran the exported model: onnxruntime, or "c" (generated C code)

    def to_json(self) -> dict:
        return asdict(self)

    def manifest_parity(self) -> dict[str, float | int | bool | str]:
        """The flat dict stored in the manifest's ``parity`` field (no nulls)."""
        skip = ("agent", "role", "model", "note", "backend")
        return {k: v for k, v in asdict(self).items() if v is not None and v != "" and k not in skip}


def greedy_actions(logits: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """``int64 [N]``: argmax over legal actions of ``logits [N, K]`` (``mask`` bool [N, K])."""
    return np.argmax(np.where(mask, logits, MASKED_LOGIT), axis=-1).astype(np.int64)


@torch.no_grad()
def torch_reference(source: PolicySource, inputs: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Logits ``[N, K]`` and greedy actions ``[N]`` of the torch source, in fp32."""
    obs = torch.from_numpy(inputs["obs"]).float()
    if source.recurrent_size is not None:
        out = source.module(obs, torch.from_numpy(inputs["h_in"]).float())
    else:
        out = source.module(obs)
    logits = (out[0] if isinstance(out, tuple) else out).float().numpy()
    return logits, greedy_actions(logits, inputs["action_mask"])


def onnx_outputs(path: str | Path, inputs: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Logits and actions of an ONNX model under onnxruntime (CPU), one row per call when the
    model has a static batch of 1."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]
    missing = [n for n in names if n not in inputs]
    if missing:
        raise KdxError(f"{path}: the model needs inputs {missing} that the recorded data lacks")
    n = inputs["obs"].shape[0]
    static = session.get_inputs()[0].shape[0] == 1
    if not static:
        logits, actions = session.run(["logits", "action"], {k: inputs[k] for k in names})[:2]
        return logits, actions.reshape(-1)
    logits = np.empty((n, session.get_outputs()[0].shape[-1]), dtype=np.float32)
    actions = np.empty(n, dtype=np.int64)
    for row in range(n):
        out = session.run(["logits", "action"], {k: inputs[k][row:row + 1] for k in names})
        logits[row], actions[row] = out[0][0], out[1].reshape(-1)[0]
    return logits, actions


def measure_parity(source: PolicySource, model_path: str | Path, precision: str,
                   inputs: dict[str, np.ndarray], min_samples: int = MIN_PARITY_SAMPLES) -> ParityResult:
    """Compare the ONNX model at ``model_path`` with ``source`` on ``inputs`` (>= min_samples rows)."""
    n = inputs["obs"].shape[0]
    if n < min_samples:
        raise KdxError(f"parity needs at least {min_samples} recorded observations, got {n}")
    logits, actions = onnx_outputs(model_path, inputs)
    result = compare_outputs(source, precision, inputs, logits, actions)
    result.model = Path(model_path).name
    if precision == "int8":
        from kdx.export.onnx_export import read_metadata

        result.int8_recipe = read_metadata(model_path).get("int8_recipe", "")
    return result


def compare_outputs(source: PolicySource, precision: str, inputs: dict[str, np.ndarray], logits: np.ndarray,
                    actions: np.ndarray, max_abs_logit_diff: float | None = None,
                    min_agreement: float | None = None) -> ParityResult:
    """Parity of an exported model's ``logits [N, K]`` and ``actions [N]`` on ``inputs`` with
    ``source``, against the bar of ``precision`` (or the bars given)."""
    bar = PRECISIONS[precision]  # its min_action_agreement and max_abs_logit_diff
    required = bar.min_action_agreement if min_agreement is None else min_agreement
    max_bar = bar.max_abs_logit_diff if max_abs_logit_diff is None else max_abs_logit_diff
    ref_logits, ref_actions = torch_reference(source, inputs)
    n = inputs["obs"].shape[0]
    diff = np.abs(logits.astype(np.float64) - ref_logits.astype(np.float64))
    agreement = float(np.mean(actions == ref_actions))
    max_diff = float(diff.max())
    if not np.isfinite(max_diff):
        max_diff = 1e9  # JSON has no inf/NaN
    legal = np.where(inputs["action_mask"], ref_logits, -np.inf)
    top2 = np.sort(legal, axis=-1)[:, -2:]
    gaps = np.where(np.isfinite(top2[:, 0]), top2[:, 1] - top2[:, 0], np.inf)
    differ = actions != ref_actions
    flip_gap = float(min(gaps[differ].max(), 1e9)) if differ.any() else 0.0  # JSON has no inf
    clear = gaps > NEAR_TIE_GAP
    beyond = float(np.mean(~differ[clear])) if clear.any() else 1.0
    passed = agreement >= required
    if max_bar is not None:
        passed = passed and max_diff <= max_bar
    return ParityResult(
        agent=source.name, role=source.role, precision=precision, model="", samples=n,
        max_abs_logit_diff=max_diff, mean_abs_logit_diff=float(np.nan_to_num(diff, nan=1e9, posinf=1e9).mean()),
        action_agreement=agreement, required_agreement=required,
        required_max_abs_logit_diff=max_bar, passed=bool(passed),
        max_ref_gap_where_disagreeing=flip_gap, near_tie_fraction=float(1.0 - clear.mean()),
        action_agreement_beyond_near_ties=beyond,
    )
