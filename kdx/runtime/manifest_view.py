"""An agent's view in the bundle manifest: what the device feeds a student that was distilled on
a view of its observation (``kdx distill --view``, ``kdx.envs.view_spec``). Torch-free.

A student's model reads its *view* (``AgentEntry.obs_dim`` = the view's width), not the raw
observation. The manifest entry's ``view`` (schema version 2, see ``kdx.runtime.manifest``)::

    ops              [op JSON]  the view as trained (``View.to_json``: keep/drop/sight/quant/noise/dropout)
    text             [str]      the same ops in compact form, e.g. ["-comm.*", "noise:0.05"]
    device_ops       [op JSON]  what the device applies to each raw observation, in order
                                (``View.device_view``): keep/drop, sight, quant, and dropout with p 0
    training_only    [str]      ops the device must NOT apply: noise, and dropout's random drops
    raw_obs_dim      int        width of the raw observation the ops apply to
    raw_layout       {...}      its layout (``ObservationLayout.to_json``: blocks, feature names, ranges)
    features         [str]      the model input's features, in order (len = the entry's obs_dim)
    available_flags  [str]      the dropout ``available`` flags among ``features``

Which ops the device applies, and why:

* keep/drop select features: the model has inputs for the kept ones only.
* sight zeroes entities at or beyond the radius: a simulator or a longer-range sensor reports
  them, the student never saw them; on data already limited to that range it changes nothing.
* quant rounds to the levels the student was trained on. Rounding is idempotent, so applying it
  to a sensor that already delivers those levels changes nothing, and applying it to finer data
  (a simulator, a better sensor) gives exactly the training inputs. So the device applies it.
* noise models sensor noise during training only: the real sensor brings its own.
* dropout zeroes blocks at random during training, each with an ``available`` flag: the device
  feeds 1 (present). A device that knows a reading is missing may zero that block and feed 0,
  which is what the student learnt that 0 means.

``DeviceView`` (``kdx.envs.view_numpy``) applies ``device_ops`` with numpy; ``kdx-runtime run``
does it before every ``Policy.act``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from kdx.envs.obs_layout import ObservationLayout
from kdx.envs.view_numpy import DeviceView
from kdx.envs.view_spec import AVAILABLE, View
from kdx.errors import KdxError

VIEW_SCHEMA_VERSION = 2  # the first manifest schema version with views
_KEYS = ("ops", "text", "device_ops", "training_only", "raw_obs_dim", "raw_layout", "features", "available_flags")


@dataclass
class AgentView:
    """One student's view, as the manifest records it (see the module docstring)."""

    ops: list[dict[str, Any]]
    text: list[str]
    device_ops: list[dict[str, Any]]
    training_only: list[str]
    raw_obs_dim: int
    raw_layout: dict[str, Any]
    features: list[str]
    available_flags: list[str] = field(default_factory=list)

    @classmethod
    def of(cls, view: View, layout: ObservationLayout) -> AgentView:
        """The record of ``view`` applied to raw observations laid out as ``layout``."""
        features = view.output_layout(layout).feature_names()
        return cls(ops=view.to_json(), text=view.text, device_ops=view.device_view().to_json(),
                   training_only=[op.text for op in view.training_only_ops], raw_obs_dim=layout.size,
                   raw_layout=layout.to_json(), features=features,
                   available_flags=[f for f in features if f.rsplit(".", 1)[-1] == AVAILABLE])

    def view(self) -> View:
        return View.from_json(self.ops)

    def layout(self) -> ObservationLayout:
        return ObservationLayout.from_json(self.raw_layout)

    def device(self) -> DeviceView:
        """The applier of ``device_ops``: raw observation ``[raw_obs_dim]`` -> model input."""
        return DeviceView(View.from_json(self.device_ops), self.layout())

    @property
    def width(self) -> int:
        return len(self.features)

    def summary(self, max_features: int = 6) -> str:
        """One line for ``kdx-runtime info``: ops, what the device applies, widths, features."""
        shown = self.features if len(self.features) <= max_features else \
            [*self.features[: max_features // 2], "...", *self.features[-(max_features // 2):]]
        device = " ".join(View.from_json(self.device_ops).text) or "nothing"
        skipped = f"; training only, not applied: {' '.join(self.training_only)}" if self.training_only else ""
        flags = f"; feed 1 to {len(self.available_flags)} available flag(s)" if self.available_flags else ""
        return (f"{' '.join(self.text) or '(full observation)'}: the device applies {device}{skipped}{flags}; "
                f"raw obs {self.raw_obs_dim} -> model input {self.width}: {', '.join(shown)}")

    def validate(self, model_input: int, where: str) -> None:
        """Every field agrees with the others and the view's width with the model's input
        (``model_input``, the entry's ``obs_dim``); KdxError naming what disagrees."""
        try:
            view, layout = self.view(), self.layout()
        except KdxError as exc:
            raise KdxError(f"{where}: view: {exc}") from None
        if layout.size != self.raw_obs_dim:
            raise KdxError(f"{where}: view raw_obs_dim {self.raw_obs_dim} but its raw_layout has {layout.size} "
                           "features; re-export the bundle")
        try:
            expected = AgentView.of(view, layout)
        except KdxError as exc:
            raise KdxError(f"{where}: view {' '.join(self.text)!r} does not fit its raw_layout ({exc})") from None
        width = len(expected.features)
        if width != model_input:
            raise KdxError(f"{where}: its view ({' '.join(expected.text)}) gives {width} features but the model's "
                           f"input is {model_input} (obs_dim); the view and the model disagree, re-export the bundle")
        for key in ("text", "device_ops", "training_only", "features", "available_flags"):
            if getattr(self, key) != getattr(expected, key):
                raise KdxError(f"{where}: view {key} {getattr(self, key)!r} does not follow from its ops and "
                               f"raw_layout (expected {getattr(expected, key)!r}); re-export the bundle")

    @staticmethod
    def from_json(data: Any, where: str) -> AgentView:
        """From the manifest's JSON; KdxError naming the missing/unknown key or wrong type."""
        if not isinstance(data, Mapping):
            raise KdxError(f"{where}: view must be a JSON object, got {type(data).__name__}")
        unknown = sorted(set(data) - set(_KEYS))
        missing = sorted(set(_KEYS) - set(data))
        if unknown or missing:
            raise KdxError(f"{where}: view has unknown key(s) {unknown} / lacks {missing}; keys: {', '.join(_KEYS)}")
        lists = ("ops", "text", "device_ops", "training_only", "features", "available_flags")
        for key in lists:
            if not isinstance(data[key], list):
                raise KdxError(f"{where}: view.{key} must be a list, got {data[key]!r}")
        for key in ("text", "training_only", "features", "available_flags"):
            if not all(isinstance(v, str) for v in data[key]):
                raise KdxError(f"{where}: view.{key} must list strings")
        if not isinstance(data["raw_obs_dim"], int) or isinstance(data["raw_obs_dim"], bool):
            raise KdxError(f"{where}: view.raw_obs_dim must be an integer, got {data['raw_obs_dim']!r}")
        if not isinstance(data["raw_layout"], Mapping):
            raise KdxError(f"{where}: view.raw_layout must be a JSON object")
        return AgentView(**{k: data[k] for k in _KEYS})
