"""pytest plugin: every clause x every implementation chosen with ``--impl``.

Collected from the area modules in ``spec/suite/areas`` (run
``pytest --pyargs portspec.suite.areas``
or ``portspec test``). Test IDs read ``CLAUSE-ID[impl]``. An implementation asked for with
``--impl`` that cannot be loaded, and a ``--clause`` or ``--layer`` that names nothing, are
usage errors (pytest exits 4 before collecting). Without ``--impl``, a built-in whose framework
is not installed yields skipped items that carry the reason: a missing framework is never a pass.

A run with failing clauses ends with the root-cause stage of ``portspec verify``
(``portspec.rootcause``): after the tests, the probe of each implementation and layer with a
failing clause runs in this process, ``rootcause.attach`` attributes every failure, and the
terminal summary opens with a "Root causes" section (before pytest's FAILURES and short test
summary), one line per root cause with the clauses it explains, the unexplained failures last,
as ``verify``'s terminal has them. Each failing test's JUnit ``<testcase>`` (``--junitxml``)
carries its root cause as the property ``root_cause``. Under pytest-xdist a worker sends each
failure (as ``run_clause`` would give it) on its report; the controller runs the stage. A
passing run runs no probe.
"""

from __future__ import annotations

import json
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from _pytest import junitxml

from portspec import profiles, registry
from portspec.cache import enable_compilation_caches
from portspec.clauses import ClauseFailure, NotApplicable
from portspec.layers import LAYERS
from portspec.report import detail_lists, root_cause_lines
from portspec.suite.checks import Context, work_items
from portspec.suite.runner import Result, _describe, select, unknown_selection, wanted
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
        self.failure: Result | None = None  # what run_clause would give, for the root causes
        self.add_marker(pytest.mark.clause(clause.id))

    def runtest(self):
        if self.adapter is None:
            pytest.skip(f"implementation unavailable: {self.unavailable}")
        start = time.perf_counter()
        try:
            with clause_state():  # as run_clause: no state left for the next item
                self.fn(Context(self.spec, self.clause, self.adapter))
        except NotApplicable as exc:
            pytest.skip(f"not applicable: {exc}")
        except Exception as exc:
            self.failure = self._failed(exc, round(time.perf_counter() - start, 4))
            raise

    def _failed(self, exc, seconds) -> Result:
        """The failed Result ``run_clause`` and the CLI's workers give (their message and
        diagnoses: ``explain_result``), which the root-cause stage attributes."""
        from portspec.diagnose import explain_result

        if isinstance(exc, ClauseFailure):
            result = Result(self.clause.id, self.adapter.name, "failed", str(exc), exc.diagnosis,
                            seconds, exc.details)
        else:  # a port that raises: pytest shows its traceback, the stage its one line
            result = Result(self.clause.id, self.adapter.name, "failed",
                            f"raised {_describe(exc)}", seconds=seconds)
        return explain_result(result, self.clause, self.adapter, self.spec)

    def repr_failure(self, excinfo):
        if isinstance(excinfo.value, ClauseFailure):
            lines = [f"{self.clause.id}: {self.clause.text}", f"failed: {excinfo.value}"]
            diagnosis = self.failure.diagnosis if self.failure else excinfo.value.diagnosis
            if diagnosis:
                lines.append(f"diagnosis: {diagnosis}")
            for key, items in detail_lists(excinfo.value.details):  # whole: the message has 4
                lines += [f"{key} ({len(items)}):", *(f"  - {item}" for item in items)]
            return "\n".join(lines)
        return super().repr_failure(excinfo)

    def reportinfo(self):
        return self.path, None, self.name


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    """A failing clause's Result travels on its report (JSON: an xdist worker sends the report
    to the controller, which runs the root-cause stage)."""
    report = yield
    failure = item.failure if isinstance(item, ClauseItem) else None
    if call.when == "call" and failure is not None:
        from portspec.isolation import _plain  # the NumPy values of details, as workers send

        report.portspec_failure = json.dumps(failure.to_dict(), default=_plain)
    return report


class RootCauses:
    """The root-cause stage of a failing run, in the process that reports it (the only one, or
    the xdist controller): see the module docstring."""

    def __init__(self, config):
        self.config = config
        self.failures: dict[str, Result] = {}  # node ID -> the failed Result
        self.lines: list[str] = []

    def pytest_runtest_logreport(self, report):
        sent = getattr(report, "portspec_failure", None)
        if report.when == "call" and report.failed and sent:
            self.failures[report.nodeid] = Result(**json.loads(sent))

    @pytest.hookimpl(tryfirst=True)  # before the JUnit file is written
    def pytest_sessionfinish(self, session, exitstatus):
        if not self.failures or exitstatus == pytest.ExitCode.INTERRUPTED:
            return
        from portspec import rootcause  # a failing run's stage; a passing one never imports it

        adapters = {a.name: a for a in _adapters(self.config)
                    if not isinstance(a, registry.Unavailable)}
        order = {c.id: i for i, c in enumerate(c for s in LAYERS.values() for c in s.clauses)}
        failed = sorted(self.failures.items(), key=lambda kv: (
            list(adapters).index(kv[1].impl) if kv[1].impl in adapters else len(adapters),
            order.get(kv[1].clause, len(order))))
        layers = {spec.prefix: spec for spec in LAYERS.values()}
        probed = dict.fromkeys((r.impl, r.clause.split("-")[0]) for _, r in failed)
        probes = [rootcause.probe_result(adapters[impl], layers[prefix])
                  for impl, prefix in probed if impl in adapters and prefix in layers]
        attached = rootcause.attach([r for _, r in failed] + probes)
        self.lines = root_cause_lines(attached)
        _junit_root_causes(self.config, {
            node: r.cause for (node, _), r in zip(failed, attached, strict=True) if r.cause})

    @pytest.hookimpl(wrapper=True, tryfirst=True)  # around pytest's: before its FAILURES
    def pytest_terminal_summary(self, terminalreporter):
        if self.lines:
            terminalreporter.write_sep("=", "Root causes")
            for line in self.lines:
                terminalreporter.write_line(line)
        return (yield)


def _junit_root_causes(config, causes: dict[str, str]) -> None:
    """The property ``root_cause`` on each failing ``<testcase>`` of ``--junitxml``. pytest
    reads a test's ``user_properties`` at its teardown, before any root cause is known; the
    stage runs after the last test, so it adds the property to the testcases pytest has built
    (``_pytest.junitxml``'s, pytest pinned in constraints.txt) before pytest writes the file."""
    xml = config.stash.get(junitxml.xml_key, None)
    if xml is None or not causes:
        return
    wanted = {}
    for node, cause in causes.items():
        names = junitxml.mangle_test_address(node)
        classnames = ([xml.prefix] if xml.prefix else []) + names[:-1]
        wanted[(".".join(classnames), names[-1])] = cause
    for reporter in xml.node_reporters_ordered:
        case = reporter.to_xml()
        cause = wanted.get((case.get("classname"), case.get("name")))
        if cause is None:
            continue
        properties = case.find("properties")
        if properties is None:
            properties = ET.Element("properties")
            case.insert(0, properties)
        properties.append(ET.Element("property", name="root_cause",
                                     value=junitxml.bin_xml_escape(cause)))


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
    if not hasattr(config, "workerinput"):  # an xdist worker sends its failures on
        config.pluginmanager.register(RootCauses(config), "portspec-root-causes")
    # The frameworks' own deprecations (torch.jit at import, Keras' TensorFlow backend calling
    # __array__ without copy=) say nothing about the implementation under test; a user cannot
    # act on them. Ours and a port's own still show. Later lines win; -W on the command line
    # wins over all.
    for module in FRAMEWORK_MODULES:
        config.addinivalue_line("filterwarnings", f"ignore::DeprecationWarning:{module}")
