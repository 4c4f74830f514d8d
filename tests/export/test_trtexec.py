"""build_engines.sh: the trtexec commands a Jetson bundle ships, checked without TensorRT."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from kdx.export.trtexec import trtexec_script
from kdx.runtime.manifest import load_manifest
from kdx.runtime.testing import make_test_bundle


def test_trtexec_script(tmp_path: Path) -> None:
    bundle = make_test_bundle(tmp_path / "b")
    manifest = load_manifest(bundle)
    script = trtexec_script(manifest)
    assert script.startswith("#!/bin/sh")
    assert script.count('"$TRTEXEC" --onnx=') == 4
    assert "--saveEngine=engines/agent_1.fp32.engine" in script
    assert subprocess.run(["sh", "-n"], input=script, text=True).returncode == 0
    path = bundle / "build_engines.sh"
    path.write_text(script)
    for major, expected in (("10", "--onnx=agent_0.fp32.onnx"), ("11", "--stronglyTyped")):
        # echo stands in for trtexec: this checks the commands the script would run
        env = {**os.environ, "TRTEXEC": "/bin/echo", "TRT_MAJOR": major}
        out = subprocess.run(["sh", str(path)], env=env, capture_output=True, text=True, check=True).stdout
        assert expected in out and out.count("--saveEngine=") == 4
        assert ("--stronglyTyped" in out) == (major == "11")
