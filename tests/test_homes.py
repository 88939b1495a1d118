"""tests/conftest.py: under tox each test runs in its home environment only, and a test its home
cannot run fails there instead of vanishing."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

CONFTEST = Path(__file__).parent / "conftest.py"

MODULES = {
    "test_plain.py": "def test_framework_free():\n    pass\n",
    "test_keras_named.py": "def test_keras_thing():\n    pass\n",
    "test_marked.py": (
        "import pytest\n\n"
        "@pytest.mark.home('flax', 'torch')\n"
        "def test_in_two():\n    pass\n"
    ),
    "test_runtime_skip.py": (
        "import pytest\n\n"
        "def test_needs_a_module():\n"
        "    pytest.importorskip('portspec_no_such_module')\n"
    ),
    "test_broken_elsewhere.py": "raise RuntimeError('imported in an env it has no test for')\n",
    "test_module_skip.py": (
        "import pytest\n\n"
        "pytestmark = pytest.mark.home('flax')\n"
        "pytest.importorskip('portspec_no_such_module')\n\n"
        "def test_never_collected():\n    pass\n"
    ),
}


def _run(tmp_path: Path, env_name: str | None, *names: str):
    for name in names:
        (tmp_path / name).write_text(MODULES[name])
    shutil.copy(CONFTEST, tmp_path / "conftest.py")
    env = {k: v for k, v in os.environ.items() if k != "PORTSPEC_TEST_ENV"}
    if env_name:
        env["PORTSPEC_TEST_ENV"] = env_name
    out = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-p", "no:xdist", "-rA",
         str(tmp_path)],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120,
    )
    return out.returncode, out.stdout


def test_each_test_runs_in_its_home_only(tmp_path):
    names = ("test_plain.py", "test_keras_named.py", "test_marked.py")
    code, out = _run(tmp_path, "torch", *names)
    assert code == 0, out
    assert "2 passed, 1 deselected" in out, out
    assert "PORTSPEC_TEST_ENV=torch: tests/ runs the tests whose home is torch" in out, out
    assert "PASSED test_plain.py::test_framework_free" in out
    assert "PASSED test_marked.py::test_in_two" in out
    code, out = _run(tmp_path, "keras-tensorflow", *names)
    assert code == 0 and "1 passed, 2 deselected" in out, out
    assert "PASSED test_keras_named.py::test_keras_thing" in out


def test_outside_tox_every_test_runs(tmp_path):
    code, out = _run(tmp_path, None, "test_plain.py", "test_keras_named.py", "test_marked.py")
    assert code == 0 and "3 passed" in out and "deselected" not in out, out


@pytest.mark.parametrize("module", ["test_runtime_skip.py", "test_module_skip.py"])
def test_a_test_its_home_cannot_run_fails_there(tmp_path, module):
    home = "torch" if module == "test_runtime_skip.py" else "flax"
    code, out = _run(tmp_path, home, module)
    assert code in (1, 2), out  # a failed test; a module that fails to collect interrupts
    assert f"deselected in every tox environment but its home, {home}" in out, out
    assert "portspec_no_such_module" in out
    # elsewhere it is simply not this env's test, and outside tox an ordinary skip
    code, out = _run(tmp_path, "keras-jax", module)
    assert code in (0, 5) and "failed" not in out and "error" not in out.lower(), out
    code, out = _run(tmp_path, None, module)
    assert code in (0, 5) and "skipped" in out, out


def test_the_clause_suite_run_from_the_project_is_left_alone():
    """tox runs ``pytest --pyargs portspec.suite.areas`` from the project's folder, where pytest
    loads tests/conftest.py too: its items are the suite's, not these tests', and all run."""
    env = {**os.environ, "PORTSPEC_TEST_ENV": "keras-jax"}
    out = subprocess.run(
        [sys.executable, "-m", "pytest", "--pyargs", "portspec.suite.areas", "--co", "-q",
         "-p", "no:cacheprovider", "--impl", "tests/ports_fixtures/numpy_twin.py"],
        capture_output=True, text=True, env=env, cwd=CONFTEST.parents[1], timeout=120,
    )
    assert out.returncode == 0 and "deselected" not in out.stdout, out.stdout + out.stderr
    assert "44 tests collected" in out.stdout, out.stdout


def test_an_env_homed_by_marker_only_imports_the_modules_naming_it(tmp_path):
    names = ("test_plain.py", "test_marked.py", "test_broken_elsewhere.py")
    code, out = _run(tmp_path, "keras-jax", *names)
    assert code == 5 and "RuntimeError" not in out, out  # nothing of keras-jax's, nothing imported
    code, out = _run(tmp_path, "flax", *names)  # homes by name: every module is imported
    assert code in (1, 2) and "RuntimeError" in out, out
