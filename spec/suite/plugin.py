"""pytest plugin: every clause x every implementation chosen with ``--impl``.

Collected from the area modules in ``spec/suite/areas`` (run
``pytest --pyargs portspec.suite.areas``
or ``portspec test``). Test IDs read ``CLAUSE-ID[impl]``. An implementation asked for with
``--impl`` that cannot be loaded, and a ``--clause`` or ``--layer`` that names nothing, are
usage errors (pytest exits 4 before collecting). Without ``--impl``, a built-in whose framework
is not installed yields skipped items that carry the reason: a missing framework is never a pass.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from portspec import profiles, registry
from portspec.cache import enable_compilation_caches
from portspec.clauses import ClauseFailure, NotApplicable
from portspec.report import detail_lists
from portspec.suite.checks import Context, work_items
from portspec.suite.runner import select, unknown_selection, wanted
from portspec.suite.state import clause_state

AREAS_DIR = (Path(__file__).parent / "areas").resolve()
FRAMEWORK_MODULES = ("keras", "torch", "jax", "jaxlib", "flax", "tensorflow", "tf_keras", "absl")


def pytest_addoption(parser):
    group = parser.getgroup("portspec", "portspec conformance suite")
    group.addoption(
        "--impl",
        action="append",
        default=[],
        metavar="NAME_OR_FILE",
        help="implementation to check: a built-in name (keras, keras-jax, torch, flax; see "
        "`portspec list`) or an adapter file (PORT.py); repeatable. Default: every built-in, "
        "those not installed here skipped with the reason.",
    )
    group.addoption(
        "--clause",
        action="append",
        default=[],
        metavar="ID",
        help="only this clause: an ID (FM-BN-UPDATE) or a glob (FM-BN-*), any case; repeatable",
    )
    group.addoption(
        "--profile",
        default=None,
        choices=sorted(profiles.PROFILES),
        help="the conventions to judge by: kmr (default; the seeds' momentum) or tsmixer (the "
        "TSMixer reference's Keras defaults); see portspec.profiles",
    )
    group.addoption(
        "--layer",
        action="append",
        default=[],
        metavar="NAME",
        help="only this layer: FeatureMixing or FM, GatedFeatureFusion or GFF; repeatable",
    )


def pytest_sessionstart(session):
    """Usage errors before collection: a selection that names nothing, an implementation asked
    for by name that cannot be loaded (LoadError's one line)."""
    config = session.config
    problem = unknown_selection(config.getoption("clause"), config.getoption("layer"))
    if problem:
        raise pytest.UsageError(problem)
    if config.getoption("impl"):
        try:
            _adapters(config)
        except registry.LoadError as exc:
            raise pytest.UsageError(str(exc)) from None


def _adapters(config):
    if not hasattr(config, "_portspec_adapters"):
        config._portspec_adapters = registry.resolve(config.getoption("impl"))
    return config._portspec_adapters


def pytest_collect_file(file_path, parent):
    if (
        file_path.suffix == ".py"
        and file_path.name != "__init__.py"
        and file_path.resolve().parent == AREAS_DIR
    ):
        return AreaFile.from_parent(parent, path=file_path)
    return None


class AreaFile(pytest.File):
    def collect(self):
        config = self.config
        area = f"portspec.suite.areas.{self.path.stem}"
        clauses = config.getoption("clause")
        layers = config.getoption("layer")
        items = [it for it in work_items(None) if it[2].__module__ == area]
        for adapter in _adapters(config):
            name = adapter.name
            if isinstance(adapter, registry.Unavailable):
                # a missing framework shows as skipped items with the reason, never as passes
                chosen = [it for it in items if wanted(it[0], it[1], clauses, layers)]
                adapter, reason = None, adapter.reason
            else:
                chosen, reason = select(items, adapter, clauses, layers), None
            for spec, clause, fn in chosen:
                yield ClauseItem.from_parent(
                    self, name=f"{clause.id}[{name}]", spec=spec, clause=clause, fn=fn,
                    adapter=adapter, unavailable=reason,
                )


class ClauseItem(pytest.Item):
    def __init__(self, *, spec, clause, fn, adapter, unavailable, **kwargs):
        super().__init__(**kwargs)
        self.spec, self.clause, self.fn = spec, clause, fn
        self.adapter, self.unavailable = adapter, unavailable
        self.add_marker(pytest.mark.clause(clause.id))

    def runtest(self):
        if self.adapter is None:
            pytest.skip(f"implementation unavailable: {self.unavailable}")
        try:
            with clause_state():  # as run_clause: no state left for the next item
                self.fn(Context(self.spec, self.clause, self.adapter))
        except NotApplicable as exc:
            pytest.skip(f"not applicable: {exc}")

    def repr_failure(self, excinfo):
        if isinstance(excinfo.value, ClauseFailure):
            lines = [f"{self.clause.id}: {self.clause.text}", f"failed: {excinfo.value}"]
            if excinfo.value.diagnosis:
                lines.append(f"diagnosis: {excinfo.value.diagnosis}")
            for key, items in detail_lists(excinfo.value.details):  # whole: the message has 4
                lines += [f"{key} ({len(items)}):", *(f"  - {item}" for item in items)]
            return "\n".join(lines)
        return super().repr_failure(excinfo)

    def reportinfo(self):
        return self.path, None, self.name


def pytest_report_header(config):
    """The profile the clauses judge by, as every portspec report names it."""
    return f"portspec profile: {profiles.active().describe()}"


def pytest_configure(config):
    # JAX's and Inductor's compilation caches, as the CLI's workers have them (portspec.cache):
    # set before collection imports a framework, never over the user's own setting.
    enable_compilation_caches()
    # The profile the clauses judge by: the oracle reads it from the environment.
    profiles.select(config.getoption("profile", None))
    config.addinivalue_line("markers", "clause(id): the spec clause a test checks")
    # The frameworks' own deprecations (torch.jit at import, Keras' TensorFlow backend calling
    # __array__ without copy=) say nothing about the implementation under test; a user cannot
    # act on them. Ours and a port's own still show. Later lines win; -W on the command line
    # wins over all.
    for module in FRAMEWORK_MODULES:
        config.addinivalue_line("filterwarnings", f"ignore::DeprecationWarning:{module}")
