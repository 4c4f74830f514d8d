"""Test bundles whose students read a view (kdx.runtime.testing weights, no exporter, no torch):
the manifest records each student's view of an 8-value raw observation laid out as ``LAYOUT``,
and the models take the view's width."""

from __future__ import annotations

from pathlib import Path

from kdx.envs.obs_layout import Entity, ObservationLayout
from kdx.envs.view_spec import View
from kdx.runtime.manifest import load_manifest, write_manifest
from kdx.runtime.manifest_view import AgentView
from kdx.runtime.testing import make_test_bundle

LAYOUT = ObservationLayout.concat([
    ("self", Entity("self"), ["vel_x", "vel_y"]),
    ("landmark.0", Entity("landmark", 0), ["dx", "dy"]),
    ("landmark.1", Entity("landmark", 1), ["dx", "dy"]),
    ("comm.0", Entity("communication", 0), ["c0", "c1"]),
])
#: raw 8 -> view 6: comm dropped, far landmarks zeroed, 8-bit sensors (noise: training only)
NARROWING = "-comm.* sight:2 quant:8 noise:0.1"
#: raw 8 -> view 8, values changed: a plain ACT cannot tell raw from viewed
SAME_WIDTH = "sight:2"


def make_viewed_bundle(path: Path, view_text: str, **options) -> Path:
    """A bundle of 2 students (no teacher) reading ``view_text`` of ``LAYOUT`` observations;
    ``options`` go to :func:`kdx.runtime.testing.make_test_bundle`."""
    view = AgentView.of(View.parse(view_text), LAYOUT)
    bundle = make_test_bundle(path, n_agents=2, obs_dim=view.width, student_hidden=(16,), teacher_hidden=None,
                              **options)
    manifest = load_manifest(bundle)
    for entry in manifest.agents:
        entry.view = AgentView.of(View.parse(view_text), LAYOUT)
    manifest.schema_version = manifest.needed_schema_version
    write_manifest(bundle, manifest)
    return bundle
