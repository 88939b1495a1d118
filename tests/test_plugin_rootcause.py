"""The clause suite under pytest ends a failing run with the root causes `portspec verify` gives:
a "Root causes" section opening the summary (before FAILURES), the same lines as verify's
terminal, each failing testcase's root cause in the JUnit XML, and the probes run once per
implementation and layer in the reporting process (the xdist controller under -n 2). A passing
run prints no such section and runs no probe."""

import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

FIXTURES = Path(__file__).parent / "ports_fixtures"
# one port, two mistakes: a momentum in PyTorch's sense (a variant explains FM-BN-UPDATE; a
# batch of one updates as the port's full batch, so FM-BN-BATCH1 passes) and a gate output
# halved (no variant reproduces it; the staged probe reads the fusion back, portspec.localise)
PORT = f"""
import sys
sys.path.insert(0, {str(FIXTURES)!r})
from single_mistakes_torch import GFF, port  # noqa: E402

Mixed = port("momentum-and-halved-gate", None, fm={{"keep": 0.99}},
             gff={{"forward": lambda self, a, b: 0.5 * GFF.forward(self, a, b)}})
ADAPTERS = [Mixed()]
"""
CLAUSES = ["FM-BN-UPDATE", "FM-BN-FROZEN", "FM-BN-BATCH1", "GFF-FORWARD", "GFF-CONVEX"]
# a plugin that logs every probe the root-cause stage runs: pid, implementation, layer
PROBE_LOG = """
import os
from portspec import rootcause

_probe = rootcause.probe_result


def _logged(adapter, spec):
    with open("probes.log", "a") as log:
        log.write(f"{os.getpid()} {adapter.name} {spec.name}\\n")
    return _probe(adapter, spec)


rootcause.probe_result = _logged
"""


@pytest.fixture(scope="module")
def port(tmp_path_factory):
    pytest.importorskip("torch")
    folder = tmp_path_factory.mktemp("port")
    (folder / "PORT.py").write_text(PORT)
    return folder / "PORT.py"


@pytest.fixture(scope="module")
def verified(port):
    """verify's results and the Root causes lines of its terminal."""
    from portspec import report
    from portspec.verify import verify

    results = verify([str(port)], clauses=CLAUSES, isolate=False)
    return results, report.root_cause_lines(results)


def _run(runner, args, cwd):
    (cwd / "probelog.py").write_text(PROBE_LOG)
    command = {"pytest": [sys.executable, "-m", "pytest", "--pyargs", "portspec.suite.areas"],
               "portspec test": [sys.executable, "-m", "portspec.cli", "test"]}[runner]
    done = subprocess.run(
        [*command, *args, "-p", "probelog", "-p", "no:cacheprovider",
         "-W", "ignore::DeprecationWarning"],
        cwd=cwd, capture_output=True, text=True, timeout=600)
    return done, done.stdout + done.stderr


@pytest.mark.parametrize("runner, xdist", [("pytest", []), ("portspec test", ["-n", "2"])],
                         ids=["pytest", "portspec-test-n2"])
def test_a_failing_run_ends_with_verifys_root_causes(port, verified, runner, xdist, tmp_path):
    if xdist:
        pytest.importorskip("xdist")
    results, lines = verified
    assert len(lines) == 2
    # the root cause explaining most clauses first
    assert lines[0].startswith("[momentum-and-halved-gate] GatedFeatureFusion: the fusion: the "
                               "port returns 0.5 (g a + (1 - g) b) (every output of a call on "
                               "random inputs fits it); with a = b the port returns 0.5 a")
    assert lines[0].endswith(": GFF-FORWARD, GFF-CONVEX")
    assert lines[1].startswith("[momentum-and-halved-gate] FeatureMixing: moving statistics keep "
                               "0.99 of their old value")
    assert lines[1].endswith(": FM-BN-UPDATE")
    selection = [a for c in CLAUSES for a in ("--clause", c)]
    done, out = _run(runner, ["--impl", str(port), *selection, *xdist,
                              "--junitxml", str(tmp_path / "junit.xml")], tmp_path)
    assert done.returncode == 1, out[-3000:]
    if xdist:
        assert "created: 2/2 workers" in out
    assert "3 failed, 2 passed" in out
    # the section, its lines exactly verify's, first: before FAILURES and the short summary
    section = out.split(" Root causes ", 1)[1].split("\n", 1)[1]
    assert section.split("\n=")[0].splitlines() == lines
    assert out.index(" Root causes ") < out.index(" FAILURES ") < out.index(" short test summary")
    # each failing testcase carries its root cause, as verify attributed it
    cause = {r.clause: r.cause for r in results}
    cases = ET.parse(tmp_path / "junit.xml").getroot().iter("testcase")
    said = {case.get("name"): [p.get("value") for p in case.iter("property")
                               if p.get("name") == "root_cause"] for case in cases}
    assert said == {f"{c}[momentum-and-halved-gate]": [cause[c]] if cause[c] else []
                    for c in CLAUSES}
    assert said["FM-BN-FROZEN[momentum-and-halved-gate]"] == []
    # one probe per implementation and layer with a failure, all in one process
    probes = (tmp_path / "probes.log").read_text().split()
    assert len(set(probes[0::3])) == 1, probes
    assert sorted(probes[2::3]) == ["FeatureMixing", "GatedFeatureFusion"]


def test_a_passing_run_prints_no_root_causes_and_runs_no_probe(tmp_path):
    pytest.importorskip("torch")
    done, out = _run("pytest", ["--impl", "torch", "--clause", "FM-BN-UPDATE",
                                "--clause", "GFF-FORWARD"], tmp_path)
    assert done.returncode == 0, out[-3000:]
    assert "2 passed" in out
    assert "Root causes" not in out
    assert not (tmp_path / "probes.log").exists()
