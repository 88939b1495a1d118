"""The README's quick start is what CI runs, so a missing install step fails CI first."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _quick_start_commands():
    text = (ROOT / "README.md").read_text()
    block = text.split("## Quick start", 1)[1].split("```sh", 1)[1].split("```", 1)[0]
    return [line for line in block.splitlines() if line.strip() and not line.startswith("#")]


def test_quick_start_has_exactly_two_command_lines():
    commands = _quick_start_commands()
    assert len(commands) == 2, commands
    assert "portspec matrix" in commands[0]
    assert re.search(r"\btox$", commands[1])


def test_ci_runs_the_readmes_test_command():
    assert _quick_start_commands()[1] in (ROOT / ".ci" / "run").read_text()


def test_every_install_goes_through_the_constraints():
    assert "torch==2.13.0" in (ROOT / "constraints.txt").read_text()
    for command in _quick_start_commands():
        assert "pip install" in command and "-c constraints.txt" in command
    assert "-c {toxinidir}/constraints.txt" in (ROOT / "tox.ini").read_text()
