"""students/sizing.json: written atomically, read back intact."""

from __future__ import annotations

import json
import os

import pytest

from kdx.devices.cost import COST_RULE
from kdx.devices.registry import PROFILES
from kdx.devices.sizing import (
    SIZING_SCHEMA_VERSION,
    StudentArch,
    mlp_teacher_costs,
    read_sizing_json,
    read_stored_sizing,
    size_students,
    write_sizing_json,
)
from kdx.errors import KdxError
from kdx.layout import RunLayout

AGENTS = [("speaker_0", 3, 3), ("listener_0", 11, 5), ("agent_2", 80, 14)]


def _rows():
    return size_students(AGENTS, PROFILES["rpi5"], {"listener_0": StudentArch((24, 8))},
                         teacher=mlp_teacher_costs(AGENTS, (256, 256, 256)))


def test_round_trip(tmp_path):
    rows = _rows()
    path = write_sizing_json(RunLayout(tmp_path / "run").students.sizing, rows, PROFILES["rpi5"])
    assert path.is_file()
    assert read_sizing_json(path) == rows == read_stored_sizing(path)
    doc = json.loads(path.read_text())
    assert doc["schema_version"] == SIZING_SCHEMA_VERSION
    assert doc["profile"] == "rpi5" and doc["target"] == "rpi" and doc["precision"] == "int8"
    assert doc["budget"]["max_macs_per_agent"] == 8192
    assert doc["cost_rule"] == COST_RULE
    listener = doc["agents"][1]
    assert listener["hidden"] == [24, 8] and listener["source"] == "override"
    assert listener["macs"] == 11 * 24 + 24 * 8 + 8 * 5 and listener["flops"] == 2 * listener["macs"]
    assert listener["teacher_macs"] == 11 * 256 + 2 * 256 * 256 + 256 * 5
    assert listener["teacher_params"] == listener["teacher_macs"] + 3 * 256 + 5


def test_write_replaces_atomically_and_leaves_no_temporary_files(tmp_path, monkeypatch):
    path = tmp_path / "sizing.json"
    write_sizing_json(path, _rows(), PROFILES["rpi5"])
    before = path.read_text()

    def failing_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(OSError, match="disk full"):
        write_sizing_json(path, _rows()[:1], PROFILES["rpi5"])
    assert path.read_text() == before  # the old file is untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sizing.json"]


def test_reading_a_bad_file_says_what_to_do(tmp_path):
    path = tmp_path / "sizing.json"
    with pytest.raises(KdxError, match="cannot read"):
        read_sizing_json(path)
    path.write_text("{not json")
    with pytest.raises(KdxError, match="not valid JSON"):
        read_sizing_json(path)
    path.write_text(json.dumps({"schema_version": 99, "agents": []}))
    with pytest.raises(KdxError, match="schema version 99"):
        read_sizing_json(path)
    path.write_text(json.dumps({"schema_version": SIZING_SCHEMA_VERSION, "agents": [{"agent": "a"}]}))
    with pytest.raises(KdxError, match="malformed agent entry"):
        read_sizing_json(path)


def test_a_run_without_stored_costs_reads_as_none(tmp_path):
    """No sizing.json, or one from before costs were stored (schema 1): the caller counts them."""
    path = tmp_path / "sizing.json"
    assert read_stored_sizing(path) is None
    path.write_text(json.dumps({"schema_version": 1, "agents": [{"agent": "a"}]}))
    assert read_stored_sizing(path) is None
    with pytest.raises(KdxError, match="schema version 1"):
        read_sizing_json(path)
    path.write_text("{not json")
    with pytest.raises(KdxError, match="not valid JSON"):  # damaged is not the same as old
        read_stored_sizing(path)
