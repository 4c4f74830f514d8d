"""Dockerfile.jetson cannot be built here (no Docker engine, no arm64 L4T base); check that it
parses as a Dockerfile and that everything it COPYs exists."""

import re
import shlex
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
INSTRUCTIONS = {"FROM", "ARG", "ENV", "RUN", "WORKDIR", "COPY", "ENTRYPOINT", "CMD", "LABEL", "USER"}


def _instructions(text: str) -> list[tuple[str, str]]:
    """Join continuation lines, drop comments, split each line into (INSTRUCTION, arguments)."""
    logical, buf = [], ""
    for raw in text.splitlines():
        line = raw.strip()
        if not buf and (not line or line.startswith("#")):
            continue
        if line.endswith("\\"):
            buf += line[:-1] + " "
            continue
        logical.append(buf + line)
        buf = ""
    assert not buf, "a line continuation runs off the end of the file"
    out = []
    for line in logical:
        word, _, rest = line.partition(" ")
        out.append((word, rest.strip()))
    return out


def test_dockerfile_parses_and_builds_on_jetpack():
    steps = _instructions((ROOT / "Dockerfile.jetson").read_text())
    words = [w for w, _ in steps]
    assert set(words) <= INSTRUCTIONS, f"unknown instructions: {set(words) - INSTRUCTIONS}"
    first_from = words.index("FROM")
    assert all(w == "ARG" for w in words[:first_from]), "only ARG may precede FROM"
    base = steps[first_from][1]
    assert base.startswith("nvcr.io/nvidia/l4t-jetpack:")
    default_tag = dict(re.findall(r"ARG (\w+)=(\S+)", (ROOT / "Dockerfile.jetson").read_text()))["L4T_TAG"]
    assert default_tag.startswith("r36."), "JetPack 6 must be the default"
    entry = dict(steps)["ENTRYPOINT"]
    assert shlex.split(entry.strip("[]").replace(",", " ")) == ["kdx-runtime"]
    run_text = " ".join(arg for w, arg in steps if w == "RUN")
    assert "torch" not in run_text.replace("import kdx.runtime.cli", ""), "the runtime image must not install torch"
    assert "onnxruntime-gpu" in (ROOT / "Dockerfile.jetson").read_text()


def test_every_copied_path_exists():
    steps = _instructions((ROOT / "Dockerfile.jetson").read_text())
    copies = [arg for w, arg in steps if w == "COPY"]
    assert copies
    for arg in copies:
        parts = [p for p in shlex.split(arg) if not p.startswith("--")]
        for src in parts[:-1]:
            assert (ROOT / src).exists(), f"Dockerfile.jetson copies {src}, which does not exist"
