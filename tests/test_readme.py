"""The README's Quickstart and .ci/run must not drift apart."""

from __future__ import annotations

import re

from tests.conftest import REPO


def quickstart_commands() -> list[str]:
    text = (REPO / "README.md").read_text()
    section = text.split("## Quickstart", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```\n(.+?)\n```", section)


def test_quickstart_has_two_commands():
    commands = quickstart_commands()
    assert len(commands) == 2
    assert "rnnexport export --all" in commands[0] and "-c constraints.txt" in commands[0]
    assert "pytest" in commands[1] and "-c constraints.txt" in commands[1]


def test_ci_runs_the_readme_test_command_verbatim():
    ci_lines = (REPO / ".ci" / "run").read_text().splitlines()
    assert quickstart_commands()[1] in ci_lines


def test_constraints_pin_torch():
    assert "torch==2.13.0" in (REPO / "constraints.txt").read_text().splitlines()
