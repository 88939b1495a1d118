"""How verify and matrix share the built-ins' portable-weights exports through the cache."""

from __future__ import annotations

import pytest

from portspec import registry, schedule


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("PORTSPEC_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("KERAS_BACKEND", "tensorflow")
    return tmp_path


def _exchange(folder, names):
    folder.mkdir()
    for name in names:
        for layer in ("FeatureMixing", "GatedFeatureFusion"):
            for part in ("w0", "w1", "probe"):
                (folder / f"{name}.{layer}.{part}.safetensors").write_bytes(name.encode())
    return folder


def _verify_names():
    return ["keras-tensorflow" if n == "keras" else n for n in registry.builtin_names()]


def test_a_passing_matrix_fills_the_entry_verify_reads(cache):
    names = _verify_names() + ["keras-jax"]
    exchange = _exchange(cache / "x", names)
    schedule.keep_exports(names, str(exchange))
    for layer in ("FeatureMixing", "GatedFeatureFusion"):  # one entry per layer
        entry = schedule._exports_entry(schedule.export_env(), layer)
        assert (entry / "COMPLETE").exists()
        kept = {p.name.split(".")[0] for p in entry.glob("*.safetensors")}
        assert kept == set(_verify_names())  # keras on the other backends stays out
        assert {p.name.split(".")[1] for p in entry.glob("*.safetensors")} == {layer}
        assert len(list(entry.glob("*.safetensors"))) == 3 * len(kept)
    assert schedule.cached_exports() == [str(schedule._exports_entry(schedule.export_env(), n))
                                         for n in ("FeatureMixing", "GatedFeatureFusion")]


def test_a_matrix_without_every_builtin_verify_needs_fills_nothing(cache):
    names = _verify_names()[:-1]
    schedule.keep_exports(names, str(_exchange(cache / "x", names)))
    assert not schedule._exports_entry(schedule.export_env(), "FeatureMixing").exists()
    assert schedule.cached_exports() == []


def test_the_keras_backend_of_the_exports_is_the_users_where_set(monkeypatch):
    monkeypatch.setenv("KERAS_BACKEND", "jax")
    assert schedule.export_env() == {"KERAS_BACKEND": "jax"}
    monkeypatch.delenv("KERAS_BACKEND")
    assert schedule.export_env()["KERAS_BACKEND"] in ("tensorflow", "jax", "torch")


def test_a_stopped_job_kills_its_worker_at_once():
    """``isolation.run(stop=...)``: the clause running fails as "stopped", none starts after
    it, and the worker is gone (here one that hangs in FM-CONFIG-ROUNDTRIP)."""
    import threading
    import time
    from pathlib import Path

    from portspec import isolation

    port = str(Path(__file__).parent / "ports_fixtures" / "misbehaving.py")
    stop, out = threading.Event(), {}
    tasks = [("hang", "FM-CONFIG-ROUNDTRIP"), ("hang", "FM-INFERENCE")]
    thread = threading.Thread(
        target=lambda: out.update(r=isolation.run(port, tasks=tasks, timeout=60, stop=stop)))
    thread.start()
    time.sleep(3)  # the worker is loaded and hanging in get_config
    begun = time.monotonic()
    stop.set()
    thread.join(10)
    assert not thread.is_alive() and time.monotonic() - begun < 2
    assert [(r.clause, r.status, r.message) for r in out["r"]] == [
        ("FM-CONFIG-ROUNDTRIP", "failed", "stopped")]


def test_verify_stops_the_early_exports_when_the_port_cannot_be_loaded(cache, monkeypatch):
    """The built-ins' exports start alongside the preload (schedule.EarlyExports); a port
    that cannot be imported stops them: the one load error, at once, and none of their
    results reported."""
    import threading
    import time

    from portspec.verify import verify

    seen = {}

    def slow_exports(*, timeout, on_result=None, stop=None, layers=None):
        seen["started"] = True
        on_result(object())  # would be reported, were the run to go on
        seen["stopped"] = stop.wait(30)
        return [cache], []

    monkeypatch.setenv("PORTSPEC_JOBS", "2")
    monkeypatch.setattr(schedule, "builtin_exports", slow_exports)
    port = cache / "PORT.py"
    port.write_text("import numpy\nimport not_a_module_anywhere\n")
    reported = []
    begun = time.monotonic()
    with pytest.raises(registry.LoadError, match="not_a_module_anywhere"):
        verify([str(port)], clauses=["FM-SHAPE", "FM-PORTABLE"], timeout=20,
               on_result=reported.append)
    assert seen == {"started": True, "stopped": True}
    assert time.monotonic() - begun < 15 and not reported
    assert not [t for t in threading.enumerate() if t.name == "builtin-exports"]


def test_early_exports_report_their_results_to_the_first_reader_only(monkeypatch):
    def exports(*, timeout, on_result=None, stop=None, layers=None):
        on_result("export:FeatureMixing")
        return ["folder"], ["failed"]

    monkeypatch.setattr(schedule, "builtin_exports", exports)
    early = schedule.EarlyExports()
    first, second = [], []
    assert early.result(first.append) == (["folder"], ["failed"])
    assert early.result(second.append) == (["folder"], ["failed"])
    assert first == ["export:FeatureMixing"] and second == []


def test_early_exports_raise_what_the_exports_raised(monkeypatch):
    def exports(**kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(schedule, "builtin_exports", exports)
    with pytest.raises(OSError, match="disk full"):
        schedule.EarlyExports().result()


FLIPPED = '''
import numpy as np
from numpy_port import NumpyAdapter, NumpyHandle


class Flipped(NumpyHandle):
    """The moving statistics keep 0.99 of their old value, not 0.01. In float64 throughout,
    so that the central differences of its gradients hold."""

    def __init__(self, *args):
        super().__init__(*args)
        self.dtype = np.dtype("float64")
        self.weights = {k: v.astype(self.dtype) for k, v in self.weights.items()}

    def forward(self, inputs, *, training):
        old = dict(self.weights)
        out = super().forward(inputs, training=training)
        for k in ("norm.moving_mean", "norm.moving_variance"):
            self.weights[k] = old[k] + (self.weights[k] - old[k]) * (0.01 / 0.99)
        return out


class FlippedAdapter(NumpyAdapter):
    name, layers, handle = "flipped-momentum", ("FeatureMixing",), Flipped


ADAPTERS = [FlippedAdapter()]
'''


def test_a_portability_rerun_reads_the_exports_the_port_read(cache, monkeypatch):
    """The root-cause stage re-runs a failing FM-PORTABLE on the found variant against the
    built-ins' exports the port read (``attach(exchange=...)``), the variant's own written
    under the port's name: no built-in is loaded in the parent, and the cause is the one the
    live re-run (every built-in exported in this process) finds."""
    import shutil
    from pathlib import Path

    from portspec import rootcause
    from portspec import verify as verifying

    shutil.copy(Path(__file__).parent / "ports_fixtures" / "numpy_port.py", cache)
    (cache / "PORT.py").write_text(FLIPPED)
    seen = {}
    attach = rootcause.attach

    def spy(results, exchange=None):
        seen.update(results=results, exchange=exchange)
        return attach(results, exchange=exchange)

    monkeypatch.setattr(verifying.rootcause, "attach", spy)
    results = verifying.verify([str(cache / "PORT.py")], clauses=["FM-PORTABLE"], timeout=120)
    # the FeatureMixing exports alone: the port has no other layer
    assert seen["exchange"] == schedule.cached_exports() == [
        str(schedule._exports_entry(schedule.export_env(), "FeatureMixing"))]
    [portable] = [r for r in results if r.clause == "FM-PORTABLE"]
    assert portable.status == "failed" and "moving_mean after the step" in portable.message
    assert "keep 0.99 of their old value" in portable.cause, portable.cause

    def no_builtins():
        raise AssertionError("a built-in loaded in the parent")

    with monkeypatch.context() as m:
        m.setattr(registry, "default", no_builtins)
        again = attach(seen["results"], exchange=seen["exchange"])
    live = attach(seen["results"])
    assert [r.cause for r in again] == [r.cause for r in live] == [r.cause for r in results]


def test_another_port_of_the_run_is_shown_as_a_writer_but_fails_no_reader(cache):
    """Two ports in one file read each other's exports. The conforming one cannot reproduce
    what the flipped one wrote; that pair is shown and does not fail it. The flipped one
    fails on the built-ins' exports alone, the way its root cause fails, so the cause
    explains it."""
    import shutil
    from pathlib import Path

    from portspec import report
    from portspec import verify as verifying

    shutil.copy(Path(__file__).parent / "ports_fixtures" / "numpy_port.py", cache)
    (cache / "PORT.py").write_text(FLIPPED.replace("ADAPTERS = [FlippedAdapter()]", """
class Plain(Flipped):  # float64 too, the moving statistics as the spec moves them
    def forward(self, inputs, *, training):
        return NumpyHandle.forward(self, inputs, training=training)


class PlainAdapter(NumpyAdapter):
    name, layers, handle = "plain-float64", ("FeatureMixing",), Plain


ADAPTERS = [PlainAdapter(), FlippedAdapter()]
"""))
    results = verifying.verify([str(cache / "PORT.py")], clauses=["FM-PORTABLE"], timeout=120)
    by = {r.impl: r for r in results if r.clause == "FM-PORTABLE"}
    good, flipped = by["plain-float64"], by["flipped-momentum"]
    assert good.status == "passed", good.message
    assert good.details["not_judged"] == ["flipped-momentum -> plain-float64"]
    assert good.details["pairs"]["flipped-momentum -> plain-float64"] != "ok"  # shown
    assert flipped.status == "failed" and "plain-float64 ->" not in flipped.message
    assert "keep 0.99 of their old value" in flipped.cause, flipped.cause
    said = ("Rows flipped-momentum, plain-float64: another port of this run wrote them; "
            "shown, not judged")
    assert said in report.terminal(results, color=False)
    assert said in report.to_markdown(results)
    assert said in report.to_html(results)


def test_searches_on_two_lanes_find_what_one_finds(cache, monkeypatch):
    """``rootcause._search_all``: several searches run in processes of their own
    (``python -m portspec.rootcause``), one per lane, and find what the same searches find in
    this process, in the order given; a broken child's search is made here instead."""
    import json
    import shutil
    from pathlib import Path

    from portspec import rootcause
    from portspec.layers import LAYERS

    shutil.copy(Path(__file__).parent / "ports_fixtures" / "numpy_port.py", cache)
    (cache / "PORT.py").write_text(FLIPPED)
    [flipped] = registry.load(str(cache / "PORT.py"))
    records = rootcause.probe_result(flipped, LAYERS["FeatureMixing"]).details["records"]
    records = json.loads(json.dumps(records))  # as they come from a worker
    searches = [("FeatureMixing", records), ("FeatureMixing", [])]
    monkeypatch.setenv("PORTSPEC_JOBS", "1")
    here = rootcause._search_all(searches)
    monkeypatch.setenv("PORTSPEC_JOBS", "2")
    with monkeypatch.context() as m:  # nothing of it searched in this process
        m.setattr(rootcause, "_search_records", None)
        apart = rootcause._search_all(searches)
    assert apart == here and not here[1].fits
    assert list(here[0].diff) == ["momentum"] and here[0].diff["momentum"] == pytest.approx(0.99)
    monkeypatch.setattr("sys.executable", "/bin/false")  # every child fails
    assert rootcause._search_all(searches) == here


@pytest.mark.parametrize("lanes", ["1", "2"])
def test_verify_exports_only_the_layers_a_port_has_and_the_run_asks_for(cache, monkeypatch,
                                                                         lanes):
    """The built-ins' exports are made per layer: those of a layer no port has, or the run
    does not select, are not made (with 2 lanes the exports start before the port's layers are
    known, and the second layer waits for them)."""
    from pathlib import Path

    from portspec.verify import verify

    monkeypatch.setenv("PORTSPEC_JOBS", lanes)
    port = str(Path(__file__).parent / "ports_fixtures" / "numpy_port.py")  # both layers
    results = verify([port], clauses=["FM-SHAPE", "FM-PORTABLE", "GFF-PORTABLE"],
                     layers=["FM"], timeout=120)
    assert [r.clause for r in results] == ["FM-SHAPE", "FM-PORTABLE"]
    entry = schedule._exports_entry(schedule.export_env(), "FeatureMixing")
    assert schedule.cached_exports() == [str(entry)]
    assert {p.name.split(".")[1] for p in entry.glob("*.safetensors")} == {"FeatureMixing"}


def test_verify_runs_each_layers_probe_once(cache):
    """The portability clauses run in a job of their own, after the port's other clauses;
    the probe those ran for a layer is not run (nor reported) again. Selected alone, they run
    it themselves."""
    from pathlib import Path

    from portspec.verify import verify

    port = str(Path(__file__).parent / "ports_fixtures" / "numpy_port.py")
    for clauses, want in ((["FM-SHAPE", "FM-PORTABLE"], ["FM-SHAPE", "FM-PORTABLE"]),
                          (["FM-PORTABLE"], ["FM-PORTABLE"])):
        seen = []
        results = verify([port], clauses=clauses, layers=["FM"], timeout=120,
                         on_result=lambda r, seen=seen: seen.append(r.clause))
        assert [r.clause for r in results] == want
        assert seen.count("probe:FeatureMixing") == 1, seen
