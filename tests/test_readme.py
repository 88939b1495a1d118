"""The README's quick start is what CI runs, so a missing install step fails CI first; its port
example is a port that verifies."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()
# What a fresh machine with only Python and pip has: python3 (with venv), the venv's activate
# script and pip; portspec and tox are what the lines install.
PROGRAMS = {"python3", ".", "pip", "portspec", "tox"}


def _section(title: str) -> str:
    return README.split(f"## {title}\n", 1)[1].split("\n## ", 1)[0]


def _quick_start_commands():
    block = _section("Quick start").split("```sh", 1)[1].split("```", 1)[0]
    return [line for line in block.splitlines() if line.strip() and not line.startswith("#")]


def test_quick_start_has_exactly_two_command_lines():
    section = _section("Quick start")
    assert section.count("```") == 2, "one code block, no commands elsewhere in the section"
    commands = _quick_start_commands()
    assert len(commands) == 2, commands
    assert "portspec matrix" in commands[0]
    assert re.search(r"\btox p$", commands[1])  # every env, two at a time (README)
    for command in commands:
        assert not command.endswith("\\"), "a continued line is more than one command line"
        programs = [part.split()[0] for part in command.split("&&")]
        assert programs[0] == "python3" and programs[1:3] == [".", "pip"], command
        assert set(programs) <= PROGRAMS, f"{command}: needs more than Python and pip"


def test_ci_runs_the_readmes_test_command():
    assert _quick_start_commands()[1] in (ROOT / ".ci" / "run").read_text()


def test_every_install_goes_through_the_constraints():
    assert "torch==2.13.0" in (ROOT / "constraints.txt").read_text()
    for command in _quick_start_commands():
        assert "pip install" in command and "-c constraints.txt" in command
    assert "-c {toxinidir}/constraints.txt" in (ROOT / "tox.ini").read_text()


def test_the_layout_links_the_guide_for_adding_a_layer():
    layout = _section("Layout")
    assert "[docs/adding-a-layer.md](docs/adding-a-layer.md)" in layout
    for target in re.findall(r"\]\(([^)#]+)\)", README):
        assert (ROOT / target).exists(), target


# A module the README's port example can wrap: the spec's GatedFeatureFusion in torch.nn.
MYGATE = """import torch
from torch import nn

ACTIVATIONS = {"sigmoid": torch.sigmoid, "tanh": torch.tanh, "relu": torch.relu,
               "softmax": lambda z: torch.softmax(z, -1)}


class GatedFusion(nn.Module):
    def __init__(self, input_dim, activation="sigmoid"):
        super().__init__()
        self.activation = activation
        self.gate = nn.Linear(2 * input_dim, input_dim)

    def forward(self, a, b):
        gate = ACTIVATIONS[self.activation](self.gate(torch.cat([a, b], -1)))
        return gate * a + (1 - gate) * b
"""


def test_the_port_example_verifies(tmp_path):
    pytest.importorskip("torch", reason="the README's example port is a PyTorch module")
    example = _section("Checking a port").split("```python\n", 1)[1].split("```", 1)[0]
    (tmp_path / "PORT.py").write_text(example)
    (tmp_path / "mygate.py").write_text(MYGATE)
    clauses = ["GFF-WEIGHTS", "GFF-WEIGHTS-ROUNDTRIP", "GFF-FORWARD", "GFF-GATE-ORDER",
               "GFF-ACTIVATIONS"]
    run = subprocess.run(
        [sys.executable, "-m", "portspec.cli", "verify", "PORT.py", "--no-isolation",
         *(a for c in clauses for a in ("--clause", c))],
        capture_output=True, text=True, cwd=tmp_path, timeout=600,
        env={**os.environ, "PYTHONWARNINGS": "ignore::DeprecationWarning"},
    )
    assert run.returncode == 0, run.stdout + run.stderr
    rows = [line.split() for line in run.stdout.splitlines() if line.startswith("GFF-")]
    assert rows == [[c, "✓"] for c in clauses]
    # and the same adapter over a wrong module fails: the check can fail
    (tmp_path / "mygate.py").write_text(MYGATE.replace("gate * a + (1 - gate) * b",
                                                       "gate * b + (1 - gate) * a"))
    run = subprocess.run(
        [sys.executable, "-m", "portspec.cli", "verify", "PORT.py", "--no-isolation",
         "--clause", "GFF-GATE-ORDER"],
        capture_output=True, text=True, cwd=tmp_path, timeout=600,
    )
    assert run.returncode == 1 and "✗ GFF-GATE-ORDER [my-port]" in run.stdout, run.stdout


def test_toxs_test_envs_have_the_workers_one_thread():
    """tox.ini's [one-thread] section is the workers' ``isolation.ONE_THREAD``, written out
    (tox cannot import it): the test processes share the cores as the workers do."""
    import configparser

    from portspec.isolation import ONE_THREAD

    tox = configparser.ConfigParser(interpolation=None)
    tox.read(ROOT / "tox.ini")
    lines = tox["one-thread"]["set_env"].strip().splitlines()
    assert dict(line.split(" = ", 1) for line in lines) == ONE_THREAD
