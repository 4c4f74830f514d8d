"""``kdx export --target c``: each policy as C99 source, checked against torch when a compiler is here.

The bundle keeps the fp32 ONNX models and numpy sidecars of the CPU targets (so the other
backends run it too, and ``auto`` can compare), and adds ``c/``::

    c/kdx_policy.h            shared: error codes, C API version, helpers     (kind c_header)
    c/<sym>.h, c/<sym>.c      one student per pair                             (c_header, c_source)
    c/teacher/<sym>.h/.c      the teacher actor seen from each agent           (c_header, c_source)
    c/Makefile                static lib, shared lib, harness; $(CC)/$(CFLAGS) (c_build)
    c/harness.c               replays c/parity_rows.bin                        (c_harness)
    c/parity_rows.bin         the held-out parity rows and torch's logits      (c_data)

``<sym>`` is the agent name mangled into a C identifier (:func:`kdx.export.c_codegen.c_symbols`);
the teacher's API names carry ``teacher_`` in front (``kdx_teacher_<sym>_act``). The manifest
records each entry's symbol (``c_symbol``) and its files.

Precision applies to the C code (the ONNX models stay fp32): ``int8`` tries every dense layer in
int8, then the logits layer in float, then the first layer in float, and ships the agent's C in
fp32 if all miss the bar (the attempts of the ONNX int8 path, :func:`kdx.export.bundle.int8_attempts`).

Parity: with a C compiler here (:func:`kdx.runtime.c_build.find_compiler`) the sources are
compiled into a shared library and every policy is compared with its torch module on the held-out
rows (fp32: max |dlogit| <= C_FP32_MAX_ABS_LOGIT_DIFF and 100% agreement; int8: the agreement bar
of ``PRECISIONS['int8']``); results go into parity.json with backend "c". Without a compiler the
check is skipped with a one-line note, and int8 is shipped unchecked (all layers int8).
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from torch import nn

from kdx.devices.targets import PRECISIONS
from kdx.errors import KdxError
from kdx.export.c_codegen import SHARED_HEADER, CPolicy, c_symbols, policy_files, shared_header
from kdx.export.c_harness import HarnessPolicy, write_c_folder
from kdx.export.onnx_export import CONSTANT_FEATURE_STD, student_npz_weights
from kdx.export.parity import ParityResult, compare_outputs, torch_reference
from kdx.export.sources import PolicySource
from kdx.runtime.c_build import Compiler, act_function, compile_shared, find_compiler, load_library
from kdx.runtime.manifest import FileEntry
from kdx.runtime.mlp_npz import MlpLayer
from kdx.trainer.common.activations import TORCH_ACTIVATIONS
from kdx.trainer.distill.students import StudentPolicy

C_DIR = "c"
#: the fp32 bar of the C code: tighter than ONNX's (no graph optimiser between torch and the loops)
C_FP32_MAX_ABS_LOGIT_DIFF = 1e-5
_ACTIVATION_NAMES = {module: name for name, module in TORCH_ACTIVATIONS.items()}


def _dense(linear: nn.Linear, rows: slice | None = None) -> MlpLayer:
    weight = linear.weight.detach().double().numpy()
    bias = linear.bias.detach().double().numpy()
    if rows is not None:
        weight, bias = weight[rows], bias[rows]
    return MlpLayer("dense", "identity", {"weight": weight.T.astype(np.float32), "bias": bias.astype(np.float32)})


def _layers(modules: list[nn.Module]) -> list[MlpLayer]:
    """Linear / LayerNorm / activation modules in order -> sidecar layers."""
    layers: list[MlpLayer] = []
    for module in modules:
        if isinstance(module, nn.Linear):
            layers.append(_dense(module))
        elif isinstance(module, nn.LayerNorm):
            layers.append(MlpLayer("layernorm", "identity", {
                "scale": module.weight.detach().numpy().astype(np.float32),
                "bias": module.bias.detach().numpy().astype(np.float32),
                "epsilon": np.array(module.eps, dtype=np.float32)}))
        elif type(module) in _ACTIVATION_NAMES and layers and layers[-1].activation == "identity":
            layers[-1].activation = _ACTIVATION_NAMES[type(module)]
        else:
            raise KdxError(f"the C target cannot express a {type(module).__name__} layer here")
    return layers


def _student_policy(source: PolicySource, symbol: str, normalise_in_c: bool) -> CPolicy:
    """A student: normalisation folded into the first layer (fp32), or applied from const
    arrays before the first layer (int8: the layer then quantises the standardised input)."""
    student: StudentPolicy = source.module
    if not normalise_in_c:
        layers = student_npz_weights(student).layers
        return CPolicy(source.name, source.role, symbol, source.obs_dim, source.n_actions, layers)
    std = student.obs_std.detach().double().numpy()
    constant = std < CONSTANT_FEATURE_STD  # as when folding: the feature's normalised value is 0
    scale = np.where(constant, 0.0, 1.0 / std).astype(np.float32)
    layers = _layers([*student.body, student.head])
    return CPolicy(source.name, source.role, symbol, source.obs_dim, source.n_actions, layers,
                   input_mean=student.obs_mean.detach().numpy().astype(np.float32), input_scale=scale)


def _teacher_policy(source: PolicySource, symbol: str) -> CPolicy:
    """The teacher actor seen from one agent (``AgentActor``): its input is the observation, the
    group's zero padding and the one-hot agent id (constants), then the trunk, the optional GRU
    cell with its LayerNorm, and the head's first ``n_actions`` rows."""
    view = source.module
    net = view.net
    layers = _layers(list(net.trunk))
    if net.gru is not None:
        gru = net.gru
        layers.append(MlpLayer("gru", "identity", {
            "weight_ih": gru.weight_ih.detach().numpy().T.astype(np.float32),
            "weight_hh": gru.weight_hh.detach().numpy().T.astype(np.float32),
            "bias_ih": gru.bias_ih.detach().numpy().astype(np.float32),
            "bias_hh": gru.bias_hh.detach().numpy().astype(np.float32)}))
        layers += _layers([net.gru_norm])
    layers.append(_dense(net.head, slice(0, source.n_actions)))
    tail = np.concatenate([np.zeros(view.pad, np.float32), view.agent_id.detach().numpy().astype(np.float32)])
    return CPolicy(source.name, source.role, symbol, source.obs_dim, source.n_actions, layers, input_tail=tail)


def c_policy(source: PolicySource, symbol: str, int8_layers: frozenset[int] = frozenset()) -> CPolicy:
    """``source`` in the C generator's form, with ``int8_layers`` (dense layer indices) in int8."""
    if isinstance(source.module, StudentPolicy):
        policy = _student_policy(source, symbol, normalise_in_c=bool(int8_layers))
    elif hasattr(source.module, "net") and hasattr(source.module, "agent_id"):
        policy = _teacher_policy(source, symbol)
    else:
        raise KdxError(f"{source.role} {source.name}: the C target exports kdx students and teacher actors, "
                       f"not a {type(source.module).__name__}")
    policy.int8_layers = frozenset(int8_layers)
    return policy


def api_symbols(sources: list[PolicySource]) -> dict[tuple[str, str], tuple[str, str]]:
    """``(role, name) -> (file stem, API symbol)``: students ``<sym>``, teachers ``teacher_<sym>``
    (file ``teacher/<sym>``), symbols from :func:`c_symbols` over the names of each role."""
    out: dict[tuple[str, str], tuple[str, str]] = {}
    for role in ("student", "teacher"):
        names = [s.name for s in sources if s.role == role]
        for name, stem in c_symbols(names).items():
            out[(role, name)] = (stem, stem if role == "student" else f"teacher_{stem}")
    return out


@dataclass
class CExportResult:
    """What the C part of an export wrote: per (role, name) its files, symbol, precision and
    parity fields for the manifest; parity results for parity.json; notes for the log."""

    files: dict[tuple[str, str], list[FileEntry]]
    symbols: dict[tuple[str, str], str]
    precisions: dict[tuple[str, str], str]
    parity: dict[tuple[str, str], dict]
    results: list[ParityResult]
    notes: list[str]


class _CompiledPolicies:
    """All the bundle's policies compiled into one shared library in a scratch folder."""

    def __init__(self, compiler: Compiler, files: dict[str, str], scratch: Path) -> None:
        out = Path(tempfile.mkdtemp(prefix="c-", dir=scratch)) / "libkdx_policy.so"
        compile_shared(compiler, {rel: text.encode() for rel, text in files.items()}, out)
        self.library = load_library(out)

    def outputs(self, policy: CPolicy, inputs: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """Logits ``[N, K]`` and actions ``[N]`` of the C code, one call per row (recurrent:
        the state loaded from the row's ``h_in``)."""
        recurrent = policy.state_size is not None
        act = act_function(self.library, policy.symbol, recurrent)
        obs = np.ascontiguousarray(inputs["obs"], np.float32)
        mask = np.ascontiguousarray(inputs["action_mask"], np.uint8)
        n = obs.shape[0]
        logits = np.zeros((n, policy.n_actions), np.float32)
        actions = np.zeros(n, np.int64)
        state = np.zeros(policy.state_size or 1, np.float32)
        obs_ptr, mask_ptr, logits_ptr = obs.ctypes.data, mask.ctypes.data, logits.ctypes.data
        row_obs, row_mask, row_logits = obs.strides[0], mask.strides[0], logits.strides[0]
        for row in range(n):
            args = [obs_ptr + row * row_obs, mask_ptr + row * row_mask, logits_ptr + row * row_logits]
            if recurrent:
                state[:] = inputs["h_in"][row]
                args.insert(0, state.ctypes.data)
            actions[row] = act(*args)
        return logits, actions


def _int8_mac_fraction(policy: CPolicy) -> float:
    """Share of the policy's weight multiply-adds done in int8 (GRU cells stay in float)."""
    macs = {i: int(np.prod(layer.params["weight"].shape)) if layer.kind == "dense" else
            int(np.prod(layer.params["weight_ih"].shape) + np.prod(layer.params["weight_hh"].shape))
            for i, layer in enumerate(policy.layers) if layer.kind in ("dense", "gru")}
    return round(sum(macs[i] for i in policy.int8_layers) / sum(macs.values()), 4)


def _bar(precision: str) -> tuple[float | None, float]:
    """(max |dlogit| or None, min agreement) of the C code at ``precision``."""
    if precision == "fp32":
        return C_FP32_MAX_ABS_LOGIT_DIFF, PRECISIONS["fp32"].min_action_agreement
    return PRECISIONS[precision].max_abs_logit_diff, PRECISIONS[precision].min_action_agreement


def export_c(root: Path, scratch: Path, sources: list[PolicySource], precision: str, heldout_inputs: Callable,
             int8_attempts: Callable[[str, list[str]], list[tuple[str, list[str] | None, str]]],
             warn: Callable[[str], None]) -> CExportResult:
    """Write ``root/c/`` for ``sources`` at ``precision`` (see the module docstring).
    ``heldout_inputs(source)`` gives the parity rows (``obs``, ``action_mask``, ``h_in``)."""
    compiler, why = find_compiler()
    notes: list[str] = []
    if compiler is None:
        notes.append(f"{why}; C parity not checked")
    symbols = api_symbols(sources)
    chosen: dict[tuple[str, str], tuple[CPolicy, str, np.ndarray, dict, str]] = {}
    results: list[ParityResult] = []
    for source in sources:
        key = (source.role, source.name)
        stem, symbol = symbols[key]
        dense = c_policy(source, symbol).dense_layers
        inputs = heldout_inputs(source)
        ref_logits, _ = torch_reference(source, inputs)
        shipped = None
        failed: ParityResult | None = None
        attempts = int8_attempts(precision, [str(i) for i in dense]) if precision == "int8" else [("fp32", None, "")]
        if compiler is None:
            attempts = attempts[:1]
        for attempt_precision, float_layers, note in attempts:
            int8 = frozenset(i for i in dense if str(i) not in (float_layers or [])) \
                if attempt_precision == "int8" else frozenset()
            policy = c_policy(source, symbol, int8)
            if compiler is None:
                shipped = (policy, attempt_precision, None, {})
                break
            result = _measure(compiler, policy, stem, source, attempt_precision, inputs, scratch, note)
            if result.passed:
                shipped = (policy, attempt_precision, result, {})
                break
            failed = result
            results.append(result)
        if shipped is None:
            if precision == "fp32":
                raise KdxError(f"{source.role} {source.name!r}: the generated fp32 C code misses its parity bar "
                               f"(max |dlogit| {failed.max_abs_logit_diff:.3g}, agreement "
                               f"{failed.action_agreement:.4f}); this is a bug in the exporter, please report it")
            warn(f"{source.role} {source.name}: C int8 greedy-action agreement {failed.action_agreement:.2%} < "
                 f"{failed.required_agreement:.1%}; shipping its C code in fp32")
            policy = c_policy(source, symbol)
            result = _measure(compiler, policy, stem, source, "fp32", inputs, scratch,
                              f"fallback: {precision} missed its bar")
            if not result.passed:
                raise KdxError(f"{source.role} {source.name!r}: the generated fp32 C code misses its parity bar; "
                               "this is a bug in the exporter, please report it")
            shipped = (policy, "fp32", result, {"fallback_from": precision,
                                                "fallback_from_action_agreement": failed.action_agreement})
        policy, shipped_precision, result, extra = shipped
        if result is not None:
            results.append(result)
        parity = {f"c_{k}": v for k, v in (result.manifest_parity() if result else {}).items()
                  if k in ("precision", "max_abs_logit_diff", "action_agreement", "passed")}
        parity.update({f"c_{k}": v for k, v in extra.items()})
        if result is None:
            parity["c_checked"] = False
        if shipped_precision == "int8":
            parity["c_int8_mac_fraction"] = _int8_mac_fraction(policy)
        chosen[key] = (policy, stem, ref_logits, parity, shipped_precision)
    return _write(root, sources, chosen, inputs_of=heldout_inputs, results=results, notes=notes)


def _measure(compiler: Compiler, policy: CPolicy, stem: str, source: PolicySource, precision: str,
             inputs: dict[str, np.ndarray], scratch: Path, note: str) -> ParityResult:
    files = {SHARED_HEADER: shared_header(), **policy_files(policy, stem)}
    logits, actions = _CompiledPolicies(compiler, files, scratch).outputs(policy, inputs)
    bar, agreement = _bar(precision)
    result = compare_outputs(source, precision, inputs, logits, actions, max_abs_logit_diff=bar,
                             min_agreement=agreement)
    folder = "teacher/" if source.role == "teacher" else ""
    result.model = f"{C_DIR}/{folder}{stem}.c"
    result.backend = "c"
    result.note = note
    return result


def _write(root: Path, sources: list[PolicySource], chosen: dict, inputs_of: Callable,
           results: list[ParityResult], notes: list[str]) -> CExportResult:
    entries: list[HarnessPolicy] = []
    rows: list[dict[str, np.ndarray]] = []
    for source in sources:
        policy, stem, ref_logits, _, shipped_precision = chosen[(source.role, source.name)]
        folder = "teacher/" if source.role == "teacher" else ""
        bar, agreement = _bar(shipped_precision)
        entries.append(HarnessPolicy(policy, f"{folder}{stem}.h", f"{folder}{stem}.c", shipped_precision,
                                     bar, agreement))
        inputs = inputs_of(source)
        rows.append({**inputs, "logits": ref_logits})
    per_entry = write_c_folder(root, C_DIR, entries, rows)
    out_files, out_symbols, out_precisions, out_parity = {}, {}, {}, {}
    for entry, source, files in zip(entries, sources, per_entry, strict=True):
        key = (source.role, source.name)
        out_files[key] = files
        out_symbols[key] = entry.policy.symbol
        out_precisions[key] = entry.precision
        out_parity[key] = chosen[key][3]
    return CExportResult(out_files, out_symbols, out_precisions, out_parity, results, notes)


