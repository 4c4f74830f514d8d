"""Packaging contracts: the base install is torch-free, extras say what they add, the two README
commands and CI are wired as documented."""

import configparser
import importlib
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _setup_cfg() -> configparser.ConfigParser:
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    return cfg


def _requirements(text: str) -> list[str]:
    names = []
    for line in text.strip().splitlines():
        line = line.split("#")[0].strip()
        if line:
            names.append(re.split(r"[<>=!;\s\[]", line, maxsplit=1)[0].lower())
    return names


def test_base_install_is_the_torch_free_runtime_core():
    base = _requirements(_setup_cfg()["options"]["install_requires"])
    assert {"numpy", "typer", "rich"} <= set(base)
    assert "torch" not in base and "onnxruntime" not in base


def test_extras_carry_what_each_stage_needs():
    extras = _setup_cfg()["options.extras_require"]
    assert _requirements(extras["runtime"]) == ["onnxruntime"]
    train = set(_requirements(extras["train"]))
    assert {"torch", "pettingzoo", "mpe2", "onnx", "onnxscript", "onnxruntime",
            "safetensors", "matplotlib", "tensorboard"} <= train
    assert {"pytest", "hypothesis", "ruff", "ptflops"} <= set(_requirements(extras["dev"]))
    assert _requirements(extras["tensorrt"]) == []  # provided by JetPack on the device
    assert ">=2.3" in extras["train"].split("torch", 1)[1].splitlines()[0]


def test_console_scripts_resolve_to_callables():
    scripts = _setup_cfg()["options.entry_points"]["console_scripts"]
    found = dict(line.split("=", 1) for line in scripts.strip().splitlines())
    assert set(k.strip() for k in found) == {"kdx", "kdx-runtime"}
    for target in found.values():
        module, func = target.strip().split(":")
        assert callable(getattr(importlib.import_module(module), func))


def test_makefile_pins_torch_first_and_ci_runs_make_test():
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"^demo:", makefile, re.M) and re.search(r"^test:", makefile, re.M)
    torch_line = makefile.index('"torch==$(TORCH_VERSION)"')
    package_line = makefile.index('-e ".[train,dev]"')
    assert torch_line < package_line
    assert "TORCH_VERSION := 2.13.0" in makefile
    assert "ruff check" in makefile
    ci = (ROOT / ".ci" / "run").read_text()
    assert "set -euo pipefail" in ci and "make test" in ci
    readme = (ROOT / "README.md").read_text()
    assert "make demo" in readme and "make test" in readme
