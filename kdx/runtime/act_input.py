"""What an ACT request of ``kdx-runtime serve`` carries, for one served agent: the model input
(a student's viewed observation) or the agent's raw observation, which the server passes through
the device part of the agent's view, as ``kdx-runtime run`` does (``Policy.model_input``).

The rules (request types in :mod:`kdx.runtime.protocol`): ACT_VIEWED carries the model input,
ACT_RAW the raw observation, and ACT either one, told apart by the payload's length; a length that
fits both kinds is refused when the view changes values (it would otherwise be a silent guess).
Without a view the raw observation is the model input: every ACT type takes ``obs_dim`` values.
"""

from __future__ import annotations

import numpy as np

from kdx.runtime.policy import Policy
from kdx.runtime.protocol import ACT, ACT_RAW, ACT_VIEWED, ProtocolError, decode_act

RAW, VIEWED = "raw", "viewed"


class ActInput:
    """Decodes ACT / ACT_RAW / ACT_VIEWED payloads for ``policy``: ``decode`` gives the
    observation, the mask, and whether the observation is raw (to pass through the device view)."""

    def __init__(self, policy: Policy) -> None:
        self.policy = policy
        view = policy.view
        self.n_actions = policy.n_actions
        self.widths = {VIEWED: policy.obs_dim, RAW: view.raw_obs_dim if view is not None else policy.obs_dim}
        #: the device view changes nothing (no view, or only training-time ops): raw = viewed
        self.identity = view is None or not view.device_ops
        lengths = {kind: {4 * w, 4 * w + self.n_actions} for kind, w in self.widths.items()}
        #: ACT payload lengths that fit a raw and a viewed observation (refused: send a kind)
        self.ambiguous_bytes = sorted(lengths[RAW] & lengths[VIEWED]) if not self.identity else []
        self._kind_of_code = {ACT_RAW: RAW, ACT_VIEWED: VIEWED}

    @property
    def needs_kind(self) -> bool:
        """Every ACT length is ambiguous (equal widths, a view that changes values): the client
        must send ACT_RAW or ACT_VIEWED."""
        return not self.identity and self.widths[RAW] == self.widths[VIEWED]

    def info(self) -> dict[str, object]:
        """INFO's view fields (see :mod:`kdx.runtime.protocol`)."""
        view = self.policy.view
        return {"raw_obs_dim": self.widths[RAW], "view": view.text if view is not None else None,
                "device_ops": None if view is None else view.view().device_view().text,
                "act_needs_kind": self.needs_kind, "ambiguous_act_bytes": self.ambiguous_bytes}

    def decode(self, code: int, payload: memoryview) -> tuple[np.ndarray, np.ndarray | None, bool]:
        """``(obs, mask, raw)`` of an ACT-type request: ``raw`` True when ``obs`` is the raw
        observation, for ``Policy.model_input`` (left to the caller, so that the server times it
        with the decision). ProtocolError (not fatal) naming the accepted widths if the payload
        fits none, or both, of the kinds."""
        if self.identity:  # one width: the messages of clients written before views
            return (*decode_act(payload, self.widths[VIEWED], self.n_actions), False)
        kind = self._kind_of_code[code] if code != ACT else self._kind_of_length(payload.nbytes)
        return (*self._decode_kind(payload, kind), kind == RAW)

    def _kind_of_length(self, size: int) -> str:
        fits = [kind for kind, w in self.widths.items() if size in (4 * w, 4 * w + self.n_actions)]
        if len(fits) == 1:
            return fits[0]
        if fits:
            raise ProtocolError(
                f"ACT payload of {size} bytes fits both the raw observation ({self._form(RAW)}) and the view "
                f"({self._form(VIEWED)}) of {self.policy.name}, whose view ({' '.join(self.policy.view.text)}) "
                "changes values; send ACT_RAW (5) or ACT_VIEWED (6) instead (Client.act(..., kind='raw' or "
                "'viewed'))")
        raise ProtocolError(f"ACT payload is {size} bytes; {self.policy.name} takes its raw observation "
                            f"({self._form(RAW)}) or its view ({self._form(VIEWED)})")

    def _decode_kind(self, payload: memoryview, kind: str) -> tuple[np.ndarray, np.ndarray | None]:
        try:
            return decode_act(payload, self.widths[kind], self.n_actions)
        except ProtocolError:
            other = VIEWED if kind == RAW else RAW
            name = "ACT_RAW" if kind == RAW else "ACT_VIEWED"
            raise ProtocolError(f"{name} payload is {payload.nbytes} bytes; expected the {kind} observation of "
                                f"{self.policy.name} ({self._form(kind)}); its {other} observation "
                                f"({self._form(other)}) goes in {'ACT_VIEWED' if kind == RAW else 'ACT_RAW'} "
                                "or ACT") from None

    def _form(self, kind: str) -> str:
        width = self.widths[kind]
        return f"{width} float32 = {4 * width} bytes, or {4 * width + self.n_actions} with the mask"
