"""Unknown roles are errors in the API and every command; they never fall back to the teacher
(issue 17: ``serve --role students`` and ``role="Student"`` used to serve the teacher)."""

from __future__ import annotations

from pathlib import Path

import pytest

from kdx.errors import KdxError
from kdx.runtime.bundle import Bundle
from kdx.runtime.cli import app


@pytest.mark.parametrize("role", ["Student", "students", "teacher ", "", "all"])
def test_the_api_refuses_unknown_roles_and_lists_the_valid_ones(masked_abuse_bundle: Path, role: str) -> None:
    bundle = Bundle.load(masked_abuse_bundle)
    with pytest.raises(KdxError, match="choose one of student, teacher"):
        bundle.policy("agent_0", "numpy", role)
    with pytest.raises(KdxError, match="choose one of student, teacher"):
        bundle.manifest.agent("agent_0", role)


def test_each_role_gets_its_own_model(masked_abuse_bundle: Path) -> None:
    bundle = Bundle.load(masked_abuse_bundle)
    assert bundle.policy("agent_0", "numpy", "student").agent.role == "student"
    assert bundle.policy("agent_0", "numpy", "teacher").agent.role == "teacher"


@pytest.mark.parametrize("command", [
    ["serve", "--agent", "agent_0", "--port", "0"],
    ["run", "--episodes", "1"],
    ["bench", "--iters", "10"],
])
def test_every_command_refuses_an_unknown_role(masked_abuse_bundle: Path, command: list[str]) -> None:
    argv = [command[0], str(masked_abuse_bundle), *command[1:], "--role", "students"]
    with pytest.raises(KdxError, match=r"--role 'students' is not a role; choose one of student, teacher"):
        app(args=argv, standalone_mode=False)
