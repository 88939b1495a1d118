"""The portspec command: subcommands, reports written, exit codes."""

from __future__ import annotations

import json
import subprocess
import sys
import types
from pathlib import Path

import pytest

from portspec import cli

FIXTURES = Path(__file__).parent / "ports_fixtures"
NUMPY_PORT = str(FIXTURES / "numpy_port.py")
PASSING = ["--clause", "FM-SHAPE", "--clause", "FM-INFERENCE"]
FAILING = [*PASSING, "--clause", "FM-COMPILE", "--clause", "GFF-CALL"]  # a skip and a failure


def test_verify_writes_every_report_and_exits_0_when_all_pass(tmp_path, capsys):
    outputs = {fmt: tmp_path / f"report.{fmt}" for fmt in ("json", "markdown", "junit", "html")}
    args = [f"--{fmt}={path}" for fmt, path in outputs.items()]
    assert cli.main(["verify", NUMPY_PORT, *PASSING, *args]) == 0
    out, err = capsys.readouterr()
    assert ["FM-INFERENCE", "✓"] in [line.split() for line in out.splitlines()]
    assert out.rstrip().endswith("2 passed, 0 failed, 0 skipped")
    assert "✓    FM-INFERENCE [numpy-oracle]" in err  # progress, one line per clause
    assert all(path.stat().st_size > 0 for path in outputs.values())
    assert json.loads(outputs["json"].read_text())["summary"]["passed"] == 2


def test_verify_exits_1_on_a_failure(capsys):
    assert cli.main(["verify", NUMPY_PORT, *FAILING]) == 1
    out = capsys.readouterr().out
    assert "✗ GFF-CALL [numpy-oracle]" in out and "skip [numpy-oracle] FM-COMPILE" in out


def test_expect_compares_verdicts_instead(tmp_path, capsys):
    recorded = tmp_path / "verdicts.json"
    assert cli.main(["verify", NUMPY_PORT, *FAILING, "--save-verdicts", str(recorded)]) == 1
    assert json.loads(recorded.read_text())["numpy-oracle"]["GFF-CALL"] == "failed"
    # the same verdicts, failures included: the known state of a port, exit 0
    assert cli.main(["verify", NUMPY_PORT, *FAILING, "--expect", str(recorded)]) == 0
    # a verdict that changed (a clause now absent, here) is reported and exits 1
    assert cli.main(["verify", NUMPY_PORT, *PASSING, "--expect", str(recorded)]) == 1
    assert "GFF-CALL [numpy-oracle]: recorded failed, now absent" in capsys.readouterr().err


def test_verify_refuses_a_pickle_with_exit_2(tmp_path, capsys):
    path = tmp_path / "model.pt"
    path.write_bytes(b"\x80\x04K\x01.")
    assert cli.main(["verify", str(path)]) == 2
    assert "is a pickle" in capsys.readouterr().err


def test_matrix_with_files(capsys):
    twin = str(FIXTURES / "numpy_twin.py")
    assert cli.main(["matrix", "--impl", NUMPY_PORT, "--impl", twin, "--clause", "FM-SHAPE"]) == 0
    assert "numpy-oracle numpy-twin" in capsys.readouterr().out


def test_vectors_writes_the_golden_files(tmp_path, capsys):
    assert cli.main(["vectors", "--out", str(tmp_path)]) == 0
    written = sorted(p.name for p in tmp_path.iterdir())
    assert written == sorted(p.name for p in (Path(cli.__file__).parent / "vectors").iterdir())


def test_docs_calls_spec_docs_write(monkeypatch, capsys):
    calls = []
    fake = types.SimpleNamespace(write=lambda: calls.append(1) or "docs/spec.md")
    monkeypatch.setitem(sys.modules, "portspec.docs", fake)
    monkeypatch.setattr("portspec.docs", fake, raising=False)
    assert cli.main(["docs"]) == 0
    assert calls == [1] and "docs/spec.md" in capsys.readouterr().out


def test_test_runs_the_clause_suite_under_pytest():
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "portspec.cli",
            "test",
            "--impl",
            NUMPY_PORT,
            "--clause",
            "FM-SHAPE",
            "-q",
            "-p",
            "no:cacheprovider",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert "1 passed" in run.stdout


def test_no_subcommand_is_a_usage_error():
    with pytest.raises(SystemExit) as exc:
        cli.main([])
    assert exc.value.code == 2


def test_progress_estimates_time_left_from_the_clauses_not_the_start_up(monkeypatch, capsys):
    """The seconds before the first clause (imports, loading the port) are not a clause's
    cost: with 20 s of start-up and 1 s per clause, 6 of 10 done leaves ~4 s, not ~13 s."""
    from portspec import cli
    from portspec.suite.runner import Result

    now = [0.0]
    monkeypatch.setattr(cli.time, "monotonic", lambda: now[0])
    progress = cli.Progress(targets=1, per_target=10)
    lines = []
    for i in range(6):
        now[0] = 20.0 + i
        progress(Result(f"FM-C{i}", "port", "passed"))
        lines.append(capsys.readouterr().err)
    assert "left" not in lines[0] + lines[1]  # no rate yet
    assert lines[5].rstrip().endswith("~4s left")
