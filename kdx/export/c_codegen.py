"""C99 source for one policy: weights as ``static const`` arrays, one ``act`` function (torch-free).

The input is a :class:`CPolicy`, a small intermediate form built by ``kdx.export.c_target`` from
the torch module: the layers of the numpy sidecar format (:class:`kdx.runtime.mlp_npz.MlpLayer`:
``dense``, ``layernorm``, ``gru``; activations ``relu``/``tanh``), the constants appended after
the observation (the teacher's zero padding and one-hot agent id), and for int8 students the
observation normalisation kept as two const arrays (quantising the standardised observation,
not the raw one, is what keeps int8 within its bar).

Generated API of an agent whose symbol is ``<sym>`` (``<SYM>`` upper case)::

    #define KDX_<SYM>_OBS_DIM, KDX_<SYM>_N_ACTIONS (and KDX_<SYM>_HIDDEN if recurrent)
    int kdx_<sym>_act(const float *obs, const uint8_t *mask, float *logits);            feed-forward
    typedef struct { float h[KDX_<SYM>_HIDDEN]; } kdx_<sym>_state;                      recurrent
    void kdx_<sym>_reset(kdx_<sym>_state *s);
    int kdx_<sym>_act(kdx_<sym>_state *s, const float *obs, const uint8_t *mask, float *logits);

``obs``: ``OBS_DIM`` floats; ``mask``: ``N_ACTIONS`` bytes, nonzero = legal, or NULL (all
legal); ``logits``: where the ``N_ACTIONS`` raw logits (before masking) are written, or NULL
(not wanted). Returns the greedy legal action (argmax of the legal logits, ties to the first),
or a negative ``KDX_ERR_*`` code: a NaN/inf observation, no legal action, NaN/inf logits. On an
error the recurrent state is left unchanged (it moves only with a returned action).

Arithmetic: fp32 in float throughout (libm's ``tanhf``, ``expf``, ``sqrtf`` where an activation,
GRU gate or LayerNorm needs them; no approximations). fp32 dense layers with few inputs and
8 or more outputs (a student's) are stored input-major and computed as one running sum per
output, a loop the compiler vectorises over the outputs (1.7x faster on the demo's 18-32-5
students); the others use ``kdx_dot``'s 8 partial sums. int8 dense layers: per-output-channel
symmetric int8 weights (``w ~= q_w * s_w[o]``), the layer's input quantised per call with one
symmetric scale (``s_x = max|x| / 127``, round half away from zero), int32 accumulation, then
``y = b + acc * s_w[o] * s_x`` in float. LayerNorm and GRU cells stay in float. No malloc, no
mutable globals: scratch vectors live on the stack, the recurrent state in the caller's struct.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np

from kdx.errors import KdxError
from kdx.runtime.mlp_npz import MlpLayer

C_API_VERSION = 1
SHARED_HEADER = "kdx_policy.h"
#: ``KDX_ERR_*`` codes returned by every generated ``act`` (also read by the runtime's c backend)
ERROR_CODES = {"KDX_ERR_NONFINITE_INPUT": -1, "KDX_ERR_NO_LEGAL_ACTION": -2, "KDX_ERR_NONFINITE_LOGITS": -3}
_NOT_IDENTIFIER = re.compile(r"[^A-Za-z0-9_]")


_PLAIN_TEXT = re.compile(r"[^A-Za-z0-9_.\- ]")


def c_text(name: str) -> str:
    """``name`` safe inside a C comment or string literal: characters outside
    ``[A-Za-z0-9_.- ]`` become ``?`` (no ``*/``, quote or backslash can reach the source)."""
    return _PLAIN_TEXT.sub("?", name)


def mangle(name: str) -> str:
    """``name`` as a C identifier fragment: every character outside ``[A-Za-z0-9_]`` becomes
    ``_``, and a leading digit gets the prefix ``a_`` (collisions: :func:`c_symbols`)."""
    symbol = _NOT_IDENTIFIER.sub("_", name)
    return f"a_{symbol}" if not symbol or symbol[0].isdigit() else symbol


def c_symbols(names: list[str]) -> dict[str, str]:
    """Each name -> its unique symbol: :func:`mangle`, then, among names whose symbols collide
    (compared case-insensitively: the macros are upper case, and file names may be compared
    without case), the first in sorted order keeps it and the others get ``_2``, ``_3``, ...
    Deterministic: depends on the set of names only."""
    taken: set[str] = set()
    symbols: dict[str, str] = {}
    for name in sorted(names):
        base = mangle(name)
        symbol, n = base, 1
        while symbol.lower() in taken:
            n += 1
            symbol = f"{base}_{n}"
        taken.add(symbol.lower())
        symbols[name] = symbol
    return symbols


@dataclass
class CPolicy:
    """One policy in the form the C generator reads.

    ``layers`` map ``x0 = [obs (normalised if input_mean is set), *input_tail]`` to the logits;
    ``int8_layers``: indices of the dense layers computed in int8.
    """

    name: str
    role: str
    symbol: str  # the infix of the API names: kdx_<symbol>_act
    obs_dim: int
    n_actions: int
    layers: list[MlpLayer]
    input_tail: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    input_mean: np.ndarray | None = None  # applied as (obs - mean) * input_scale
    input_scale: np.ndarray | None = None
    int8_layers: frozenset[int] = frozenset()

    @property
    def state_size(self) -> int | None:
        sizes = [int(layer.params["weight_hh"].shape[0]) for layer in self.layers if layer.kind == "gru"]
        return sizes[0] if sizes else None

    @property
    def dense_layers(self) -> list[int]:
        """Indices of the dense layers, first to last (what int8 may quantise)."""
        return [i for i, layer in enumerate(self.layers) if layer.kind == "dense"]

    @property
    def macro(self) -> str:
        return f"KDX_{self.symbol.upper()}"


def _float(value: float) -> str:
    text = f"{float(value):.9g}"  # 9 significant digits round-trip a float32 exactly
    if not any(c in text for c in ".en"):
        text += ".0"
    return text + "f"


def _array(values: np.ndarray, per_line: int = 8) -> str:
    """A C initialiser for a 1-D or 2-D array, 2-D as nested braces."""
    if values.ndim == 2:
        rows = ",\n".join("    " + _array(row, per_line).replace("\n", "\n    ") for row in values)
        return "{\n" + rows + "\n}"
    if values.dtype.kind == "f":
        if not np.isfinite(values).all():
            raise KdxError("a weight is NaN or inf; the checkpoint is corrupt, re-train or re-distil")
        items = [_float(v) for v in values.astype(np.float32)]
    else:
        items = [str(int(v)) for v in values]
    lines = [", ".join(items[i:i + per_line]) for i in range(0, len(items), per_line)]
    return "{" + ",\n ".join(lines) + "}"


#: fp32 layers with at most this many inputs are laid out input-major (``w[in][out]``, one
#: running sum per output, vectorised over outputs: a student's layers); wider ones (a teacher's
#: 256-wide layers) keep ``kdx_dot``'s 8 partial sums, whose rounding stays within 1e-5 of torch.
INPUT_MAJOR_MAX_FAN_IN = 96


def quantize_rows(weight_out_in: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-output-channel symmetric int8: ``(q int8 [out, in], scale float32 [out])`` with
    ``weight ~= q * scale[:, None]`` (an all-zero row gets scale 1)."""
    amax = np.abs(weight_out_in).max(axis=1)
    scale = np.where(amax > 0, amax / 127.0, 1.0).astype(np.float32)
    q = np.clip(np.round(weight_out_in / scale[:, None]), -127, 127).astype(np.int8)
    return q, scale


class _Writer:
    """Builds the .c file: constants first, then the body of ``act``."""

    def __init__(self, policy: CPolicy) -> None:
        self.p = policy
        self.constants: list[str] = []
        self.body: list[str] = []
        self.needs_libm = False

    def const(self, suffix: str, ctype: str, values: np.ndarray) -> str:
        name = f"{self.p.symbol}_{suffix}"
        dims = "".join(f"[{d}]" for d in values.shape)
        self.constants.append(f"static const {ctype} {name}{dims} = {_array(values)};\n")
        return name

    def emit(self, *lines: str) -> None:
        self.body.extend(lines)

    def activation(self, value: str, activation: str) -> str:
        if activation == "identity":
            return value
        if activation == "relu":
            return f"({value} < 0.0f ? 0.0f : {value})"  # NaN passes, as in torch
        if activation == "tanh":
            self.needs_libm = True
            return f"tanhf({value})"
        raise KdxError(f"the C target cannot express activation {activation!r} (relu, tanh)")

    def dense(self, i: int, layer: MlpLayer, x: str, y: str) -> None:
        weight = np.asarray(layer.params["weight"], np.float32).T  # [out, in]: rows are contiguous
        n_out, n_in = weight.shape
        bias = self.const(f"b{i}", "float", np.asarray(layer.params["bias"], np.float32))
        self.emit(f"    float {y}[{n_out}];")
        if i in self.p.int8_layers:
            q, scale = quantize_rows(weight)
            w = self.const(f"w{i}", "int8_t", q)
            s = self.const(f"s{i}", "float", scale)
            self.emit(
                f"    {{  /* layer {i}: dense {n_in} -> {n_out}, int8 */",
                f"        int8_t q[{n_in}];",
                f"        float sx = kdx_quantize_vector({x}, q, {n_in});",
                f"        for (o = 0; o < {n_out}; ++o) {{",
                f"            const int8_t *w = {w}[o];",
                "            int32_t acc = 0;",
                f"            for (k = 0; k < {n_in}; ++k) acc += (int32_t)w[k] * (int32_t)q[k];",
                f"            {{ float v = {bias}[o] + (float)acc * ({s}[o] * sx); {y}[o] = "
                f"{self.activation('v', layer.activation)}; }}",
                "        }",
                "    }",
            )
            return
        if n_in <= INPUT_MAJOR_MAX_FAN_IN and n_out >= 8:  # few outputs: kdx_dot's partial sums are faster
            w = self.const(f"w{i}", "float", np.ascontiguousarray(weight.T))  # [in, out]
            self.emit(
                f"    for (o = 0; o < {n_out}; ++o) {y}[o] = {bias}[o];  /* layer {i}: dense {n_in} -> {n_out} */",
                f"    for (k = 0; k < {n_in}; ++k) {{  /* input-major: the inner loop vectorises over outputs */",
                f"        const float xk = {x}[k], *w = {w}[k];",
                f"        for (o = 0; o < {n_out}; ++o) {y}[o] += w[o] * xk;",
                "    }",
            )
            if layer.activation != "identity":
                self.emit(f"    for (o = 0; o < {n_out}; ++o) {y}[o] = {self.activation(f'{y}[o]', layer.activation)};")
            return
        w = self.const(f"w{i}", "float", weight)
        self.emit(
            f"    for (o = 0; o < {n_out}; ++o) {{  /* layer {i}: dense {n_in} -> {n_out} */",
            f"        const float *w = {w}[o];",
            f"        float acc = {bias}[o] + kdx_dot(w, {x}, {n_in});",
            f"        {y}[o] = {self.activation('acc', layer.activation)};",
            "    }",
        )

    def layernorm(self, i: int, layer: MlpLayer, x: str, y: str) -> None:
        self.needs_libm = True
        gamma = np.asarray(layer.params["scale"], np.float32)
        n = gamma.shape[0]
        g = self.const(f"g{i}", "float", gamma)
        b = self.const(f"b{i}", "float", np.asarray(layer.params["bias"], np.float32))
        eps = _float(float(layer.params["epsilon"]))
        self.emit(
            f"    float {y}[{n}];",
            f"    {{  /* layer {i}: layernorm {n} */",
            "        float mean, var, inv;",
            f"        for (k = 0; k < {n}; ++k) {y}[k] = 1.0f;",
            f"        mean = kdx_dot({x}, {y}, {n}) / {n}.0f;",
            f"        for (k = 0; k < {n}; ++k) {y}[k] = {x}[k] - mean;",
            f"        var = kdx_dot({y}, {y}, {n}) / {n}.0f;",
            f"        inv = 1.0f / sqrtf(var + {eps});",
            f"        for (k = 0; k < {n}; ++k) {y}[k] = {y}[k] * inv * {g}[k] + {b}[k];",
            "    }",
        )
        if layer.activation != "identity":
            self.emit(f"    for (k = 0; k < {n}; ++k) {y}[k] = {self.activation(f'{y}[k]', layer.activation)};")

    def gru(self, i: int, layer: MlpLayer, x: str, y: str) -> None:
        self.needs_libm = True
        w_ih = np.asarray(layer.params["weight_ih"], np.float32).T  # [3h, in]
        w_hh = np.asarray(layer.params["weight_hh"], np.float32).T  # [3h, h]
        h, n_in = w_hh.shape[1], w_ih.shape[1]
        wi, wh = self.const(f"wih{i}", "float", w_ih), self.const(f"whh{i}", "float", w_hh)
        bi = self.const(f"bih{i}", "float", np.asarray(layer.params["bias_ih"], np.float32))
        bh = self.const(f"bhh{i}", "float", np.asarray(layer.params["bias_hh"], np.float32))
        self.emit(
            f"    float {y}[{h}];",
            f"    {{  /* layer {i}: GRU cell {n_in} -> {h} (torch GRUCell, gates r, z, n) */",
            f"        float gi[{3 * h}], gh[{3 * h}];",
            f"        for (o = 0; o < {3 * h}; ++o) {{",
            f"            gi[o] = {bi}[o] + kdx_dot({wi}[o], {x}, {n_in});",
            f"            gh[o] = {bh}[o] + kdx_dot({wh}[o], s->h, {h});",
            "        }",
            f"        for (o = 0; o < {h}; ++o) {{",
            "            float r = 1.0f / (1.0f + expf(-(gi[o] + gh[o])));",
            f"            float z = 1.0f / (1.0f + expf(-(gi[{h} + o] + gh[{h} + o])));",
            f"            float n = tanhf(gi[{2 * h} + o] + r * gh[{2 * h} + o]);",
            f"            {y}[o] = (1.0f - z) * n + z * s->h[o];",
            "        }",
            "    }",
        )
        self.gru_out = y
        if layer.activation != "identity":
            raise KdxError("the C target expects no activation after a GRU cell")


def _input(w: _Writer) -> str:
    """Emit the assembly of the first layer's input; returns its C name."""
    p = w.p
    tail = np.asarray(p.input_tail, np.float32)
    if p.input_mean is None and not tail.size:
        return "obs"  # the first layer reads the caller's array directly
    width = p.obs_dim + tail.size
    w.emit(f"    float x0[{width}];")
    if p.input_mean is not None:
        mean = w.const("mean", "float", np.asarray(p.input_mean, np.float32))
        scale = w.const("scale", "float", np.asarray(p.input_scale, np.float32))
        w.emit(f"    for (k = 0; k < {p.obs_dim}; ++k) x0[k] = (obs[k] - {mean}[k]) * {scale}[k];")
    else:
        w.emit(f"    for (k = 0; k < {p.obs_dim}; ++k) x0[k] = obs[k];")
    if tail.size:
        const = w.const("tail", "float", tail)
        w.emit(f"    for (k = 0; k < {tail.size}; ++k) x0[{p.obs_dim} + k] = {const}[k];")
    return "x0"


def policy_files(policy: CPolicy, file_stem: str) -> dict[str, str]:
    """``{relative path inside c/: text}``: the policy's header and source. ``file_stem`` is the
    mangled agent name (teacher files live in ``teacher/``)."""
    folder = "teacher/" if policy.role == "teacher" else ""
    shared = "../" + SHARED_HEADER if folder else SHARED_HEADER
    return {f"{folder}{file_stem}.h": _header(policy, shared),
            f"{folder}{file_stem}.c": _source(policy, f"{file_stem}.h")}


def _signature(p: CPolicy) -> str:
    state = f"kdx_{p.symbol}_state *s, " if p.state_size else ""
    return f"int kdx_{p.symbol}_act({state}const float *obs, const uint8_t *mask, float *logits)"


def _header(p: CPolicy, shared: str) -> str:
    guard = f"{p.macro}_H"
    lines = [
        f"/* {p.role} policy of agent '{c_text(p.name)}', generated by kdx (C API {C_API_VERSION}); see {SHARED_HEADER}. */",
        f"#ifndef {guard}", f"#define {guard}", "", f'#include "{shared}"', "",
        f"#define {p.macro}_OBS_DIM {p.obs_dim}", f"#define {p.macro}_N_ACTIONS {p.n_actions}",
    ]
    if p.state_size:
        lines.append(f"#define {p.macro}_HIDDEN {p.state_size}")
    lines += ["", "#ifdef __cplusplus", 'extern "C" {', "#endif", ""]
    if p.state_size:
        lines += [f"/* Recurrent state, owned by the caller; zero it with kdx_{p.symbol}_reset at each episode start. */",
                  f"typedef struct {{ float h[{p.macro}_HIDDEN]; }} kdx_{p.symbol}_state;",
                  f"void kdx_{p.symbol}_reset(kdx_{p.symbol}_state *s);", ""]
    lines += [
        "/* obs: OBS_DIM floats; mask: N_ACTIONS bytes (nonzero = legal) or NULL (all legal);",
        " * logits: N_ACTIONS floats written (raw, before masking) or NULL.",
        " * Returns the greedy legal action, or a negative KDX_ERR_* code (state then unchanged). */",
        f"{_signature(p)};", "",
        "#ifdef __cplusplus", "}", "#endif", "", f"#endif /* {guard} */", "",
    ]
    return "\n".join(lines)


def _source(p: CPolicy, header: str) -> str:
    w = _Writer(p)
    x = _input(w)
    for i, layer in enumerate(p.layers):
        y = f"a{i}"
        getattr(w, layer.kind)(i, layer, x, y)
        x = y
    n = p.n_actions
    out_width = int(p.layers[-1].params["weight"].shape[1])
    if out_width != n:
        raise KdxError(f"{p.role} {p.name}: the last layer has {out_width} outputs, expected {n} logits")
    gru_out = getattr(w, "gru_out", None)
    body = [
        f"{_signature(p)}",
        "{",
        "    int o, k, best = -1;",
        "    (void)o;",
        f"    for (k = 0; k < {p.obs_dim}; ++k)",
        "        if (!kdx_finite(obs[k])) return KDX_ERR_NONFINITE_INPUT;",
        f"    for (k = 0; k < {n}; ++k)",
        "        if (mask == NULL || mask[k]) { best = k; break; }",
        "    if (best < 0) return KDX_ERR_NO_LEGAL_ACTION;",
        "    {",
        *["    " + line for line in w.body],
        f"    for (k = 0; k < {n}; ++k)",
        f"        if (!kdx_finite({x}[k])) return KDX_ERR_NONFINITE_LOGITS;",
        f"    for (k = best + 1; k < {n}; ++k)",
        f"        if ((mask == NULL || mask[k]) && {x}[k] > {x}[best]) best = k;",
        f"    if (logits != NULL) for (k = 0; k < {n}; ++k) logits[k] = {x}[k];",
    ]
    if gru_out is not None:
        body.append(f"    for (k = 0; k < {p.state_size}; ++k) s->h[k] = {gru_out}[k];  /* commit the state */")
    body += ["    }", "    return best;", "}", ""]
    head = [f"/* {p.role} policy of agent '{c_text(p.name)}' ({_describe(p)}), generated by kdx. */",
            f'#include "{header}"']
    if w.needs_libm:
        head.append("#include <math.h>")
    head.append("")
    reset = []
    if p.state_size:
        reset = [f"void kdx_{p.symbol}_reset(kdx_{p.symbol}_state *s)", "{",
                 f"    int k;\n    for (k = 0; k < {p.state_size}; ++k) s->h[k] = 0.0f;", "}", ""]
    return "\n".join(head) + "\n" + "\n".join(w.constants) + "\n" + "\n".join(reset + body)


def _describe(p: CPolicy) -> str:
    parts = []
    for i, layer in enumerate(p.layers):
        if layer.kind == "dense":
            n_in, n_out = layer.params["weight"].shape
            q = " int8" if i in p.int8_layers else ""
            act = "" if layer.activation == "identity" else f" {layer.activation}"
            parts.append(f"dense {n_in}->{n_out}{q}{act}")
        else:
            parts.append(layer.kind)
    return ", ".join(parts)


def shared_header() -> str:
    """``kdx_policy.h``: error codes, the C API version, and the helpers every policy uses."""
    codes = "\n".join(f"#define {name} ({value})" for name, value in ERROR_CODES.items())
    return f"""/* Shared by every policy of a kdx bundle (generated by kdx). C99, no malloc, no globals. */
#ifndef KDX_POLICY_H
#define KDX_POLICY_H

#include <stddef.h>
#include <stdint.h>

#define KDX_C_API_VERSION {C_API_VERSION}

/* Negative return values of every kdx_<agent>_act: */
{codes}

/* Finite test on the bits (immune to -ffast-math, which may fold isfinite() to true). */
static inline int kdx_finite(float x)
{{
    union {{ float f; uint32_t u; }} v;
    v.f = x;
    return (v.u & 0x7f800000u) != 0x7f800000u;
}}

/* w . x over n floats in 8 interleaved partial sums, added pairwise: closer to torch's blocked
 * sums than one running sum (its error grows with n), and laid out for SIMD. */
static inline float kdx_dot(const float *w, const float *x, int n)
{{
    float a0 = 0.0f, a1 = 0.0f, a2 = 0.0f, a3 = 0.0f, a4 = 0.0f, a5 = 0.0f, a6 = 0.0f, a7 = 0.0f;
    int k = 0;
    for (; k + 8 <= n; k += 8) {{
        a0 += w[k] * x[k]; a1 += w[k + 1] * x[k + 1]; a2 += w[k + 2] * x[k + 2]; a3 += w[k + 3] * x[k + 3];
        a4 += w[k + 4] * x[k + 4]; a5 += w[k + 5] * x[k + 5]; a6 += w[k + 6] * x[k + 6]; a7 += w[k + 7] * x[k + 7];
    }}
    for (; k < n; ++k) a0 += w[k] * x[k];
    return ((a0 + a1) + (a2 + a3)) + ((a4 + a5) + (a6 + a7));
}}

/* Symmetric int8 quantisation of x[0..n): q = round(x / s) with s = max|x| / 127 (round half away
 * from zero); returns s (0 when x is all zero, then q is all zero). A NaN or inf in x (an overflow
 * upstream) gives q = 0 and s = NaN, so the layer's outputs are NaN and the logits check refuses. */
static inline float kdx_quantize_vector(const float *x, int8_t *q, int n)
{{
    float amax = 0.0f, inv;
    int k, finite = 1;
    for (k = 0; k < n; ++k) {{
        float a = x[k] < 0.0f ? -x[k] : x[k];
        finite &= kdx_finite(x[k]);
        if (a > amax) amax = a;
    }}
    if (!finite || amax == 0.0f) {{
        for (k = 0; k < n; ++k) q[k] = 0;
        if (finite) return 0.0f;
        amax = 0.0f;
        return amax / amax;  /* NaN */
    }}
    inv = 127.0f / amax;
    for (k = 0; k < n; ++k) {{
        float v = x[k] * inv;
        int r = v >= 0.0f ? (int)(v + 0.5f) : -(int)(-v + 0.5f);
        q[k] = (int8_t)(r > 127 ? 127 : (r < -127 ? -127 : r));
    }}
    return amax / 127.0f;
}}

#endif /* KDX_POLICY_H */
"""
