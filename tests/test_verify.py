"""portspec verify survives the port it checks: raising, hanging, crashing, wrong outputs.

The fixtures are NumPy ports (tests/ports_fixtures), so no framework is imported and every
worker starts in well under a second. The misbehaving ports go wrong only in ``get_config``,
which only the config round trip clause calls: that clause must fail with the reason, and every
clause before and after it must still be reported.
"""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save_file

from portspec import registry, report
from portspec.adapter import read_weights
from portspec.suite.checks import work_items
from portspec.verify import matrix, verify

FIXTURES = Path(__file__).parent / "ports_fixtures"
NUMPY_PORT = str(FIXTURES / "numpy_port.py")
MISBEHAVING = str(FIXTURES / "misbehaving.py")
CLAUSES = ["FM-SHAPE", "FM-WEIGHTS", "FM-CONFIG-ROUNDTRIP", "FM-WEIGHTS-ROUNDTRIP", "FM-INFERENCE"]
CULPRIT = "FM-CONFIG-ROUNDTRIP"


def _run(port: str, timeout: float = 20) -> dict:
    results = verify([MISBEHAVING], tasks=[(port, c) for c in CLAUSES], timeout=timeout)
    return {r.clause: r for r in results}


def test_the_numpy_port_passes():
    results = verify([NUMPY_PORT], clauses=CLAUSES, timeout=20)
    assert [(r.clause, r.status) for r in results] == [(c, "passed") for c in CLAUSES]


# each misbehaving port, and how its clause's failure begins (tests/test_forkserver.py too)
MISBEHAVIOURS = [
    ("raise", "raised RuntimeError: this port cannot report its config"),
    ("hang", "timed out after 2 s"),
    ("segfault", "worker died with signal SIGSEGV (11) in _segfault"),
    ("os-exit", "worker died with exit code 3"),
    ("sys-exit", "worker died with exit code 0"),
]


@pytest.mark.parametrize("port, reason", MISBEHAVIOURS)
def test_a_misbehaving_port_fails_that_clause_and_only_that(port, reason, tmp_path):
    results = _run(port, timeout=2 if port == "hang" else 20)
    assert list(results) == CLAUSES  # every clause reported, in spec order
    assert results[CULPRIT].status == "failed"
    assert results[CULPRIT].message.startswith(reason)
    assert all(r.status == "passed" for c, r in results.items() if c != CULPRIT)
    # and the reports are written for all of them
    paths = {fmt: str(tmp_path / f"report.{fmt}") for fmt in report.WRITERS}
    report.write(list(results.values()), paths)
    text = Path(paths["markdown"]).read_text()
    assert text.count("| ✓ |") == len(CLAUSES) - 1 and f"| {CULPRIT} | ✗ |" in text
    assert reason.split(" in ")[0] in Path(paths["junit"]).read_text()


def test_the_timeout_is_per_clause_and_a_fresh_worker_goes_on():
    results = _run("hang", timeout=2)
    # the clauses after the hang ran in a new worker, within their own timeout
    assert results["FM-INFERENCE"].status == "passed"


def test_wrong_shape_or_type_fails_the_clauses_that_see_it():
    for port in ("wrong-shape", "wrong-type"):
        results = _run(port)
        assert results["FM-SHAPE"].status == "failed"
        assert "output shape" in results["FM-SHAPE"].message
        assert results["FM-INFERENCE"].status == "failed"
        assert results["FM-WEIGHTS"].status == "passed"


def test_what_a_port_prints_cannot_forge_a_result():
    results = verify([MISBEHAVING], tasks=[("print", c) for c in CLAUSES], timeout=20)
    assert {r.impl for r in results} == {"print"}
    assert all(r.status == "passed" for r in results)


@pytest.mark.parametrize("isolate", [True, False])
def test_a_port_that_cannot_be_imported_is_one_load_error(tmp_path, isolate):
    port = tmp_path / "PORT.py"
    port.write_text("import numpy\nimport not_a_module_anywhere\n")
    with pytest.raises(registry.LoadError, match="line 2 imports 'not_a_module_anywhere'"):
        verify([str(port)], clauses=["FM-SHAPE", "GFF-SHAPE"], timeout=20, isolate=isolate)


MAP_PORT = """
from portspec.ports import PortAdapter, transpose


class Port(PortAdapter):
    layers = ("FeatureMixing",)
    weights = {{"FeatureMixing": {{"dense1.bias": "fc1.bias",
                                  "dense1.kernel": {kernel}}}}}
"""


@pytest.mark.parametrize("kernel", ['("fc1.weight", "transpose")', '("fc1.weight",)',
                                    '("fc1.weight", transpose, 0)', "3"])
def test_a_malformed_weight_map_entry_is_one_load_error_naming_it(tmp_path, kernel):
    """Refused when the file loads, before any clause runs (each clause would otherwise fail on
    the same entry), by its layer and canonical name."""
    port = tmp_path / "PORT.py"
    port.write_text(MAP_PORT.format(kernel=kernel))
    with pytest.raises(registry.LoadError) as caught:
        verify([str(port)], clauses=["FM-SHAPE"], timeout=20)
    said = str(caught.value)
    assert "\n" not in said
    assert "Port.weights['FeatureMixing']['dense1.kernel']" in said, said
    assert "is not a weight-map entry" in said, said


def test_a_path_alone_maps_a_weight_as_the_spec_holds_it(tmp_path):
    from portspec.ports import identity

    port = tmp_path / "PORT.py"
    port.write_text(MAP_PORT.format(kernel='("fc1.weight", transpose)'))
    (adapter,) = registry.load_file(str(port))
    entries = adapter.weight_map("FeatureMixing", {})
    assert (entries["dense1.bias"].path, entries["dense1.bias"].transform) == ("fc1.bias",
                                                                               identity)
    assert entries["dense1.kernel"].transform.name == "transpose"


def test_a_port_that_hangs_while_loading_is_a_load_error(tmp_path):
    port = tmp_path / "PORT.py"
    port.write_text("import time\ntime.sleep(600)\n")
    with pytest.raises(registry.LoadError, match="PORT.py: timed out after 1 s while loading$"):
        verify([str(port)], clauses=["FM-SHAPE"], timeout=1)


def test_in_process_gives_the_same_verdicts():
    isolated = verify([NUMPY_PORT], clauses=CLAUSES, timeout=20)
    inline = verify([NUMPY_PORT], clauses=CLAUSES, isolate=False)
    assert [(r.clause, r.status) for r in inline] == [(r.clause, r.status) for r in isolated]


def test_several_ports_run_side_by_side_and_report_in_the_order_given(monkeypatch):
    """Two port files on two lanes: each file's results as it gets alone, the first file's
    first; the callbacks are never entered by two lanes at once."""
    import threading
    import time

    twin = str(FIXTURES / "numpy_twin.py")
    monkeypatch.setenv("PORTSPEC_JOBS", "2")
    busy, overlaps, seen = threading.Lock(), [], []

    def on_result(result):
        if not busy.acquire(blocking=False):
            overlaps.append(result.clause)
            return
        time.sleep(0.01)  # long enough for a second lane to run into it
        seen.append(result.impl)
        busy.release()

    both = verify([twin, NUMPY_PORT], clauses=CLAUSES, timeout=60, on_result=on_result)
    alone = [verify([port], clauses=CLAUSES, timeout=60) for port in (twin, NUMPY_PORT)]
    key = [(r.impl, r.clause, r.status) for r in both]
    assert key == [(r.impl, r.clause, r.status) for results in alone for r in results]
    assert [impl for impl, _, _ in key] == ["numpy-twin"] * 5 + ["numpy-oracle"] * 5
    assert not overlaps and set(seen) == {"numpy-twin", "numpy-oracle"}


def test_the_matrix_crosses_every_writer_with_every_reader():
    twin = str(FIXTURES / "numpy_twin.py")
    results = matrix([NUMPY_PORT, twin], clauses=["FM-PORTABLE"], timeout=60)
    assert [(r.impl, r.status) for r in results] == [
        ("numpy-oracle", "passed"),
        ("numpy-twin", "passed"),
    ]
    writers, readers, cells = report.portability(results)["FM"]
    assert set(writers) == set(readers) == {"numpy-oracle", "numpy-twin"}
    assert set(cells.values()) == {"ok"} and len(cells) == 4



def test_a_builtin_verified_as_a_port_reads_the_other_builtins_exports(tmp_path, monkeypatch):
    """verify exports the port's weights and links the built-ins' beside them; a built-in
    verified by name is among those built-ins, and its own export must stand, not collide."""
    pytest.importorskip("torch")
    monkeypatch.setenv("PORTSPEC_CACHE", str(tmp_path))
    results = verify(["torch"], clauses=["FM-PORTABLE"], timeout=120)
    assert [(r.impl, r.clause, r.status) for r in results] == [
        ("torch", "FM-PORTABLE", "passed")
    ]
    writers, readers, cells = report.portability(results)["FM"]
    assert "torch" in writers and set(cells.values()) == {"ok"}, cells

# -- pickles are refused, never unpickled ----------------------------------------------------


def _pickles(tmp_path):
    plain = tmp_path / "weights.pkl"
    plain.write_bytes(pickle.dumps({"gate.bias": np.zeros(3)}))
    zipped = tmp_path / "weights.pt"  # torch.save writes a zip of pickles
    with zipfile.ZipFile(zipped, "w") as z:
        z.writestr("archive/data.pkl", pickle.dumps({"gate.bias": np.zeros(3)}))
    return [plain, zipped]


def test_read_weights_refuses_a_pickle(tmp_path):
    for path in _pickles(tmp_path):
        with pytest.raises(ValueError, match="is a pickle .* never unpickles"):
            read_weights(path)


def test_verify_refuses_a_pickle_given_as_the_port(tmp_path):
    for path in _pickles(tmp_path):
        with pytest.raises(ValueError, match="is a pickle"):
            verify([str(path)])


def test_verify_refuses_a_pickle_among_the_portable_weights(tmp_path):
    exchange = tmp_path / "exchange"
    exchange.mkdir()
    save_file({"x": np.zeros(2)}, str(exchange / "ok.safetensors"))
    (exchange / "sneaky.safetensors").write_bytes(pickle.dumps({"x": np.zeros(2)}))
    with pytest.raises(ValueError, match="sneaky.safetensors is a pickle"):
        verify([NUMPY_PORT], clauses=["FM-PORTABLE"], exchange=str(exchange))


def test_verify_refuses_a_weights_file_given_as_the_port(tmp_path):
    path = tmp_path / "weights.safetensors"
    save_file({"gate.bias": np.zeros(3)}, str(path))
    with pytest.raises(ValueError, match="weights file, not an implementation"):
        verify([str(path)])


# -- spec.ports: a conforming module behind each base class passes ---------------------------

SPEC_CLAUSES = [c.id for _, c, _ in work_items(None) if c.family != "portable"]  # portable: slow
UNVALIDATED = {"FM-CONFIG", "FM-CALL", "GFF-CONFIG", "GFF-CALL"}


@pytest.mark.parametrize(
    "file, port, framework, failing",
    [
        ("diagnosis_mutants_torch.py", "good", "torch", UNVALIDATED),  # it validates nothing
        ("ports_flax.py", "good-flax", "flax", set()),
        # the Keras adapter on each backend (tests/conftest.py)
        pytest.param("ports_keras.py", "good-keras", "keras", set(),
                     marks=pytest.mark.home("keras-tensorflow", "keras-jax", "keras-torch")),
    ],
)
def test_a_conforming_module_behind_each_port_base_class_passes(file, port, framework, failing):
    pytest.importorskip(framework)
    tasks = [(port, c) for c in SPEC_CLAUSES]
    results = verify([str(FIXTURES / file)], tasks=tasks, timeout=300)
    assert len(results) == len(SPEC_CLAUSES)
    wrong = [
        f"{r.clause}: {r.status} {r.message}"
        for r in results
        if r.clause not in failing and r.status != "passed"
    ]
    assert not wrong, "\n".join(wrong)
    assert {r.clause for r in results if r.status == "failed"} == failing
