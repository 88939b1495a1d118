"""Under tox, each test runs in one environment: its home.

tox runs these tests in five environments (keras-jax, keras-torch, keras-tensorflow, torch,
flax), the bench environment and the ports environment. Run everywhere, most tests would run
four or five times: a framework-free test passes alike wherever it runs, and a PyTorch test in
keras-torch repeats the torch environment. tox sets ``PORTSPEC_TEST_ENV`` to the
environment's name; a test whose home is another environment is then deselected (not skipped:
the count says where it runs). Without that variable, outside tox, every test is collected, as
always.

The home of a test:

- the environments named by its ``home`` marker, where it has one (tests of Keras's adapter
  on every backend name all three keras environments);
- else keras-tensorflow if its node ID names Keras (the single-mistake Keras ports' expected
  root causes are the TensorFlow backend's), flax if it names Flax or JAX, torch otherwise:
  the framework-free tests run with the PyTorch ones.

The envs no test gets by its name (keras-jax, keras-torch, bench, ports) import only the test
modules that name them, quoted: a ``home`` marker names its envs literally.

A home that cannot run the test would hide it: deselected everywhere else, skipped there. So
under tox a test skipped at home for a missing module or backend fails instead, naming what
is missing; give it a ``home`` marker.
"""

from __future__ import annotations

import ast
import os
import re
from pathlib import Path

import pytest

ENV = "PORTSPEC_TEST_ENV"
TESTS = Path(__file__).resolve().parent
# what a skip says when the environment lacks what the test needs
MISSING = re.compile(
    r"could not import|not installed|unavailable|not available here|backend", re.IGNORECASE
)


def pytest_configure(config):
    # no fork servers (portspec.forkserver) left behind by a test that runs the CLI in-process;
    # tests/test_forkserver.py turns them on where it tests them
    os.environ.setdefault("PORTSPEC_FORK_SERVER", "0")
    config.addinivalue_line(
        "markers",
        "home(*envs): the tox environments that run this test (tests/conftest.py)",
    )


def pytest_report_header(config):
    here = os.environ.get(ENV)
    if here:
        return (f"{ENV}={here}: tests/ runs the tests whose home is {here}; the others are "
                "deselected here and run in their own tox env (tests/conftest.py)")
    return None


def home(item) -> tuple[str, ...]:
    """The tox environments that run ``item``."""
    marker = item.get_closest_marker("home")
    return marker.args if marker else _by_name(item.nodeid)


BY_NAME = ("torch", "flax", "keras-tensorflow")  # the homes _by_name gives


def _by_name(node: str) -> tuple[str, ...]:
    node = node.lower()
    if "keras" in node:
        return ("keras-tensorflow",)
    if "flax" in node or "jax" in node:
        return ("flax",)
    return ("torch",)


def _module_home(path: Path) -> tuple[str, ...]:
    """A module's home before it is imported: its ``pytestmark = pytest.mark.home(...)``, read
    from the source (a module that skips on import never gets as far as its marker)."""
    for node in ast.parse(path.read_text()).body:
        if (
            isinstance(node, ast.Assign)
            and [getattr(t, "id", None) for t in node.targets] == ["pytestmark"]
            and isinstance(node.value, ast.Call)
            and ast.unparse(node.value.func) == "pytest.mark.home"
        ):
            return tuple(ast.literal_eval(a) for a in node.value.args)
    return _by_name(path.name)


def _ours(path) -> bool:
    """A path inside these tests: pytest also loads this file for other runs from the
    project's folder (``pytest --pyargs portspec.suite.areas`` in tox), whose items it leaves
    alone."""
    return TESTS in Path(path).resolve().parents


def pytest_ignore_collect(collection_path, config):
    """In an env no test gets by its name (keras-jax, keras-torch, bench, ports), a test module
    whose source does not name the env, quoted, holds none of its tests: it is not imported.
    (Importing every module to run the few homed there cost 6-8 s of each of those envs.) So a
    ``home`` marker names its envs literally."""
    here = os.environ.get(ENV)
    if not here or here in BY_NAME or collection_path.suffix != ".py":
        return None
    if not collection_path.name.startswith("test_"):
        return None
    if _ours(collection_path) and f'"{here}"' not in collection_path.read_text():
        return True
    return None


def pytest_collection_modifyitems(config, items):
    here = os.environ.get(ENV)
    if not here:
        return
    kept, elsewhere = [], []
    for item in items:
        (elsewhere if _ours(item.path) and here not in home(item) else kept).append(item)
    if elsewhere:
        config.hook.pytest_deselected(items=elsewhere)
        items[:] = kept


def _missing_at_home(report, homes) -> str | None:
    """What a skip at home says is missing here, under tox; None otherwise."""
    here = os.environ.get(ENV)
    if not (here and here in homes and report.skipped and isinstance(report.longrepr, tuple)):
        return None
    reason = str(report.longrepr[2])
    if not MISSING.search(reason):
        return None
    return (
        f"{report.nodeid} is deselected in every tox environment but its home, {here}, "
        f"where it was skipped: {reason}. Give it a home marker naming an environment that "
        f"can run it (tests/conftest.py)."
    )


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    report = (yield).get_result()
    if not _ours(item.path) or item.get_closest_marker("skipif"):  # skipif: the machine's condition
        return
    message = _missing_at_home(report, home(item))
    if message:
        report.outcome, report.longrepr = "failed", message


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector):
    report = (yield).get_result()
    if isinstance(collector, pytest.Module) and _ours(collector.path):
        message = _missing_at_home(report, _module_home(collector.path))
        if message:
            report.outcome, report.longrepr = "failed", message
