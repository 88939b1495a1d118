"""The clause suite under pytest-xdist: `pytest --pyargs portspec.suite.areas -n 2` collects
the same items on every xdist worker and runs them there (tox runs the suite in one process,
where its 5-15 s of CPU are cheaper than starting workers, and the tests with -n auto)."""

import subprocess
import sys

import pytest


def test_the_suite_runs_on_xdist_workers(tmp_path):
    pytest.importorskip("xdist")
    pytest.importorskip("torch")
    cmd = [sys.executable, "-m", "pytest", "--pyargs", "portspec.suite.areas", "-n", "2",
           "--impl", "torch", "--clause", "FM-SHAPE", "--clause", "FM-DROPOUT-SITES",
           "--clause", "GFF-SHAPE", "-p", "no:cacheprovider", "-W", "ignore::DeprecationWarning"]
    done = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    out = done.stdout + done.stderr
    assert done.returncode == 0, out[-3000:]
    assert "created: 2/2 workers" in out
    assert "3 passed" in out
