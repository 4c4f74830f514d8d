"""``build_engines.sh`` in a Jetson bundle: the ``trtexec`` commands equivalent to
``kdx-runtime build-engines`` (engine paths from :mod:`kdx.runtime.tensorrt_build`)."""

from __future__ import annotations

import shlex
from pathlib import PurePosixPath

from kdx.devices.targets import PRECISIONS
from kdx.runtime.manifest import Manifest
from kdx.runtime.tensorrt_build import ENGINE_DIR, TIMING_CACHE, engine_path_for, group_by_source


def _variable(precision: str) -> str:
    """The script's shell variable holding trtexec's options for ``precision`` (``FP16``)."""
    return precision.upper()


def trtexec_script(manifest: Manifest) -> str:
    """``build_engines.sh``: the ``trtexec`` commands equivalent to ``build-engines``.

    It reads the TensorRT major version on the device and passes ``--stronglyTyped`` on 11+
    (no precision flags there), ``--fp16``/``--int8`` before. It does not edit the manifest:
    ``kdx-runtime build-engines`` does that.
    """
    lines = [
        "#!/bin/sh",
        "# TensorRT engines for this bundle with trtexec: the equivalent of",
        "#   kdx-runtime build-engines .",
        "# Engines only run on the GPU and TensorRT version that built them: run this ON the device.",
        "# (kdx-runtime build-engines also lists the engines in manifest.json; this script does not.)",
        "set -eu",
        'cd "$(dirname "$0")"',
        'TRTEXEC="${TRTEXEC:-/usr/src/tensorrt/bin/trtexec}"',
        '[ -x "$TRTEXEC" ] || TRTEXEC=trtexec',
        'TRT_MAJOR="${TRT_MAJOR:-$(python3 -c \'import tensorrt; print(tensorrt.__version__.split(".")[0])\')}"',
        'if [ "$TRT_MAJOR" -ge 11 ]; then',
        "  # TensorRT 11: no precision flags; strongly typed, precision from the ONNX",
        "  " + "; ".join(f'{_variable(p.name)}="--stronglyTyped"' for p in PRECISIONS.values()),
        "else",
        "  " + "; ".join(f'{_variable(p.name)}="{p.trtexec_option}"' for p in PRECISIONS.values()),
        "fi",
        f"mkdir -p {ENGINE_DIR}",
    ]
    for onnx_path, users in group_by_source(manifest.entries()).items():
        engine = engine_path_for(onnx_path)
        parent = str(PurePosixPath(engine).parent)
        if parent != ENGINE_DIR:
            lines.append(f"mkdir -p {shlex.quote(parent)}")
        lines.append(
            f'"$TRTEXEC" --onnx={shlex.quote(onnx_path)} --saveEngine={shlex.quote(engine)} '
            f"--timingCacheFile={TIMING_CACHE} ${_variable(users[0].precision)}"
        )
    lines.append('echo "engines written to ' + ENGINE_DIR + '/"')
    return "\n".join(lines) + "\n"
