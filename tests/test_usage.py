"""The portspec command as a user runs it: a subprocess, its exit code and what it prints.

Every wrong usage is one line on stderr and exit code 2 before any clause runs; a port file's
sibling modules come from the port's own folder; reports say what was checked. The ports here
are NumPy ports (tests/ports_fixtures/numpy_port.py), so no framework is imported.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from xml.etree import ElementTree as ET

import pytest

FIXTURES = Path(__file__).parent / "ports_fixtures"
NUMPY_PORT = str(FIXTURES / "numpy_port.py")
SCRIPT = Path(sys.executable).parent / "portspec"
COMMAND = [str(SCRIPT)] if SCRIPT.exists() else [sys.executable, "-m", "portspec.cli"]


def portspec(*args, cwd=None, env=None):
    run = subprocess.run(
        [*COMMAND, *map(str, args)],
        capture_output=True,
        text=True,
        cwd=cwd,
        # DeprecationWarnings shown as a user of a library sees them (Python hides them in
        # __main__ only)
        env={**os.environ, "PYTHONWARNINGS": "default::DeprecationWarning", **(env or {})},
        timeout=300,
    )
    return run.returncode, run.stdout, run.stderr


# -- a port and its siblings ---------------------------------------------------------------


def _port(folder: Path, name: str) -> Path:
    """folder/PORT.py importing its sibling folder/mylayer.py, whose adapter is named ``name``."""
    folder.mkdir(parents=True)
    shutil.copy(NUMPY_PORT, folder / "numpy_base.py")
    (folder / "mylayer.py").write_text(
        "from numpy_base import NumpyAdapter\n\n\n"
        f"class Layer(NumpyAdapter):\n    name = {name!r}\n"
    )
    (folder / "PORT.py").write_text("from mylayer import Layer\n\n\nclass Port(Layer):\n    pass\n")
    return folder / "PORT.py"


def _header(out: str) -> list[str]:
    """The words of the table's header: the implementations verified, in order."""
    return next(line.split() for line in out.splitlines() if line.startswith("clause "))


@pytest.fixture
def folders(tmp_path):
    """A/PORT.py and B/PORT.py, each with a mylayer.py of its own, and an unrelated C/."""
    (tmp_path / "C").mkdir()
    return tmp_path, _port(tmp_path / "A", "from-A"), _port(tmp_path / "B", "from-B")


@pytest.mark.parametrize("cwd", ["A", "C"])
@pytest.mark.parametrize("isolation", [[], ["--no-isolation"]])
def test_a_port_imports_its_siblings_from_its_own_folder(folders, cwd, isolation):
    root, _, port_b = folders
    code, out, err = portspec(
        "verify", os.path.relpath(port_b, root / cwd), "--clause", "FM-CONFIG", *isolation,
        cwd=root / cwd,
    )
    assert code == 0, err
    assert _header(out) == ["clause", "from-B"]


def test_two_ports_with_same_named_siblings_in_one_process(folders):
    root, port_a, port_b = folders
    code, out, err = portspec(
        "verify", port_a, port_b, "--clause", "FM-CONFIG", "--no-isolation", cwd=root / "C"
    )
    assert code == 0, err
    assert _header(out) == ["clause", "from-A", "from-B"]


def test_the_pytest_plugin_imports_siblings_from_the_ports_folder(folders):
    root, _, _ = folders
    code, out, err = portspec(
        "test", "--impl", "../B/PORT.py", "--clause", "FM-CONFIG", "-v", "-p", "no:cacheprovider",
        cwd=root / "A",
    )
    assert code == 0, out + err
    assert "FM-CONFIG[from-B] PASSED" in out


# -- wrong usages: one line, exit code 2, nothing run ---------------------------------------


def _files(tmp: Path) -> dict:
    (tmp / "empty.py").write_text("")
    (tmp / "syntax.py").write_text("import numpy\n\nclass Port(:\n    pass\n")
    (tmp / "noadapter.py").write_text("class NotAnAdapter:\n    pass\n")
    (tmp / "mylayer.py").write_text("X = 1\n")
    (tmp / "importerror.py").write_text("import numpy\nfrom mylayer import Missing\n")
    (tmp / "missingdep.py").write_text("import numpy\nimport not_installed_anywhere\n")
    (tmp / "raises.py").write_text("raise RuntimeError('no GPU here')\n")
    (tmp / "dies.py").write_text("import os\nos._exit(3)\n")
    (tmp / "hangs.py").write_text("import time\ntime.sleep(600)\n")
    (tmp / "bad.json").write_text("{not json")
    (tmp / "list.json").write_text("[1, 2]")
    shutil.copy(NUMPY_PORT, tmp / "numpy_base.py")
    (tmp / "fmonly.py").write_text(
        "from numpy_base import NumpyAdapter\n\n\nclass Port(NumpyAdapter):\n"
        "    name = 'fm-only'\n    layers = ('FeatureMixing',)\n"
    )
    (tmp / "adir").mkdir()
    (tmp / "afile").write_text("")
    return {}


WRONG = [
    # (arguments, the one line's expected text)
    (["verify", "nofile.py"], "portspec verify: error: nofile.py: no such file"),
    (["verify", "adir"], "portspec verify: error: adir: is a directory, not an adapter file"),
    (["verify", "empty.py"], "portspec verify: error: empty.py: the file is empty"),
    (["verify", "noadapter.py"], "portspec verify: error: noadapter.py: defines no Adapter"),
    (["verify", "syntax.py"], "portspec verify: error: syntax.py:3: syntax error: invalid syntax"),
    (["verify", "importerror.py"],
     "portspec verify: error: importerror.py:2: ImportError: cannot import name 'Missing'"),
    (["verify", "missingdep.py"],
     "portspec verify: error: missingdep.py cannot be loaded here: line 2 imports "
     "'not_installed_anywhere', which is not installed here"),
    (["verify", "raises.py"], "portspec verify: error: raises.py:1: RuntimeError: no GPU here"),
    (["verify", "dies.py"],
     "portspec verify: error: dies.py: worker died with exit code 3 while loading"),
    (["verify", "hangs.py", "--timeout", "1"],
     "portspec verify: error: hangs.py: timed out after 1 s while loading"),
    (["matrix", "--impl", "importerror.py"], "portspec matrix: error: importerror.py:2: Import"),
    (["verify", "syntax.py", "--no-isolation"], "syntax.py:3: syntax error"),
    (["verify", "importerror.py", "--no-isolation"], "importerror.py:2: ImportError"),
    (["matrix", "--impl", "nosuch"],
     "portspec matrix: error: unknown implementation 'nosuch' (known: flax, flax-gpu, keras,"),
    (["matrix", "--impl", "jax"], "unknown implementation 'jax' (known: flax,"),
    (["matrix", "--impl", "keras-nosuch"], "unknown implementation 'keras-nosuch'"),
    (["verify", NUMPY_PORT, "--clause", "FM-NOPE"],
     "portspec verify: error: no clause matches 'FM-NOPE' (an ID or a glob such as FM-BN-*; "
     "known: FM-CONFIG, FM-CALL,"),
    (["verify", NUMPY_PORT, "--clause", "FM-BN-BATCH9"],
     "portspec verify: error: no clause matches 'FM-BN-BATCH9' (did you mean FM-BN-BATCH1? an "
     "ID or a glob such as FM-BN-*; known: FM-CONFIG,"),
    (["verify", NUMPY_PORT, "--clause", "fm-bn"],
     "portspec verify: error: no clause is 'fm-bn': for the family, give the glob FM-BN-*"),
    (["verify", NUMPY_PORT, "--layer", "Foo"],
     "portspec verify: error: unknown layer 'Foo' (known: FeatureMixing (FM), "
     "GatedFeatureFusion (GFF))"),
    (["verify", NUMPY_PORT, "--timeout", "0"],
     "portspec verify: error: argument --timeout: must be a positive number of seconds, got 0"),
    (["verify", NUMPY_PORT, "--timeout", "-1"], "must be a positive number of seconds, got -1"),
    (["verify", NUMPY_PORT, "--timeout", "soon"], "not a number of seconds: 'soon'"),
    (["verify", NUMPY_PORT, "--expect", "nofile.json"],
     "portspec verify: error: --expect nofile.json: no such file"),
    (["verify", NUMPY_PORT, "--expect", "bad.json"],
     "portspec verify: error: --expect bad.json: not JSON (line 1"),
    (["verify", NUMPY_PORT, "--expect", "list.json"], "--expect list.json: not a verdicts file"),
    (["verify", NUMPY_PORT, "--json", "adir"],
     "portspec verify: error: --json adir: is a directory, not a file"),
    (["verify", NUMPY_PORT, "--html", "afile/report.html"],
     "--html afile/report.html: "),
    (["verify", NUMPY_PORT, "--save-verdicts", "adir"], "--save-verdicts adir: is a directory"),
    (["verify", NUMPY_PORT, "--markdown", "/proc/r.md"],
     "portspec verify: error: --markdown /proc/r.md: not writable (/proc: "),
    (["verify", NUMPY_PORT, "--exchange", "nodir"], "--exchange nodir: no such directory"),
    (["verify", NUMPY_PORT, "--bogus"],
     "portspec verify: error: unrecognized arguments: --bogus (see portspec verify --help)"),
    (["verify", "--bogus", "x.py"], "portspec verify: error: unrecognized arguments: --bogus"),
    (["--bogus", "list"], "portspec: error: unrecognized arguments: --bogus (see portspec --help)"),
    (["verify", NUMPY_PORT, "--clase", "FM-CONFIG"],
     "portspec verify: error: unrecognized arguments: --clase FM-CONFIG (did you mean --clause?)"),
    (["verify", NUMPY_PORT, "--impl", "torch"],
     "--impl torch (verify takes port files and built-in names as arguments: portspec verify "
     "PORT.py torch)"),
    (["verify", "fmonly"], "portspec verify: error: fmonly: no such file or built-in; did you "
     "mean fmonly.py?"),
    (["verify", NUMPY_PORT, "--clause", "FM-CALL,FM-SHAPE"],
     "portspec verify: error: --clause FM-CALL,FM-SHAPE: one ID or glob per --clause; repeat it: "
     "--clause FM-CALL --clause FM-SHAPE"),
    (["verify", NUMPY_PORT, "--layer", "GFF", "--clause", "FM-CONFIG"],
     "portspec verify: error: --clause FM-CONFIG and --layer GFF select no clause together"),
    (["verify"], "portspec verify: error: the following arguments are required: PORT.py"),
    ([], "portspec: error: the following arguments are required: COMMAND"),
    (["nosuchcommand"], "portspec: error: argument COMMAND: invalid choice: 'nosuchcommand'"),
    (["verfy", NUMPY_PORT],
     "portspec: error: argument COMMAND: invalid choice: 'verfy' (did you mean 'verify'?)"),
    (["verify", NUMPY_PORT, "--profile", "tsmixr"], "portspec verify: error: argument --profile"),
    (["test", "--impl", "nosuch"], "portspec test: error: unknown implementation 'nosuch'"),
    (["test", "--impl", "importerror.py"], "portspec test: error: importerror.py:2: ImportError"),
    (["test", "--clause", "FM-NOPE"], "portspec test: error: no clause matches 'FM-NOPE'"),
    (["test", "--bogus"],
     "portspec test: error: unrecognized arguments: --bogus (see portspec test --help)"),
]


@pytest.mark.parametrize("args, line", WRONG, ids=[" ".join(a[:1] + a[-2:]) for a, _ in WRONG])
def test_a_wrong_usage_is_one_line_and_exit_code_2(tmp_path, args, line):
    _files(tmp_path)
    code, out, err = portspec(*args, cwd=tmp_path)
    assert code == 2, (code, out, err)
    assert err.count("\n") == 1 and err.endswith("\n") and line in err, err  # no blank line
    assert "Traceback" not in err
    if args[:1] != ["test"]:
        assert out == ""  # no clause ran: no table


LAX_PORT = """from numpy_base import NumpyAdapter, NumpyHandle
from portspec.layers import LAYERS


class Lax(NumpyHandle):
    def __init__(self, layer, config, input_shapes, seed, dtype):
        try:
            super().__init__(layer, config, input_shapes, seed, dtype)
        except (ValueError, TypeError):  # a bad config builds the first case's layer
            super().__init__(layer, LAYERS[layer].cases()[0].config, input_shapes, seed, dtype)


class Port(NumpyAdapter):
    name = "accepts-any-config"
    layers = ("FeatureMixing",)
    handle = Lax
"""


def test_a_long_list_is_whole_in_the_report_and_counted_on_the_terminal(tmp_path):
    shutil.copy(NUMPY_PORT, tmp_path / "numpy_base.py")
    (tmp_path / "PORT.py").write_text(LAX_PORT)
    code, out, err = portspec("verify", "PORT.py", "--clause", "FM-CONFIG", "--markdown", "r.md",
                              cwd=tmp_path)
    assert code == 1, err
    line = next(x for x in out.splitlines() if x.startswith("✗ FM-CONFIG"))
    tried = int(line.split(": ", 1)[1].split()[0])  # 'N of M bad inputs not rejected'
    assert tried > 4 and line.endswith(f" ({tried - 4} more, see the report: r.md)"), line
    markdown = (tmp_path / "r.md").read_text()
    listed = [x for x in markdown.splitlines() if x.startswith("    - config ")]
    assert f"  - problems ({tried}):" in markdown and len(listed) == tried
    first = line.split("requires: ", 1)[1].split(" | ")[0]
    assert f"    - {first}" in listed  # the terminal's first four are among them


def test_under_pytest_a_failure_lists_its_problems_whole(tmp_path):
    shutil.copy(NUMPY_PORT, tmp_path / "numpy_base.py")
    (tmp_path / "PORT.py").write_text(LAX_PORT)
    code, out, err = portspec("test", "--impl", "PORT.py", "--clause", "FM-CONFIG", "-q",
                              "-p", "no:cacheprovider", cwd=tmp_path)
    assert code == 1, out + err
    tried = int(out.split("failed: ", 1)[1].split()[0])  # 'N of M bad inputs not rejected'
    assert tried > 4 and f"\nproblems ({tried}):\n" in out
    listed = out.split(f"\nproblems ({tried}):\n", 1)[1].splitlines()
    listed = listed[: next((i for i, x in enumerate(listed) if not x.startswith("  - ")), None)]
    assert len(listed) == tried and all(x.startswith("  - config ") for x in listed)


def test_a_layer_the_port_lacks_is_a_usage_error_not_an_empty_pass(tmp_path):
    _files(tmp_path)
    code, out, err = portspec("verify", "fmonly.py", "--layer", "GFF", cwd=tmp_path)
    assert (code, out) == (2, ""), (code, out, err)
    assert err.splitlines()[-1] == (
        "portspec verify: error: no clause applies: the implementations provide no layer that "
        "--layer/--clause select (fmonly.py; `portspec list` names each clause's layer)")
    assert "GFF-" not in err.replace("export:GatedFeatureFusion", "")  # no clause ran


def test_an_unwritable_report_folder_is_refused_before_the_run(tmp_path):
    if os.geteuid() == 0:
        pytest.skip("root writes into a read-only folder")
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o555)
    code, out, err = portspec("verify", NUMPY_PORT, "--json", locked / "r.json")
    assert (code, out) == (2, "") and "not writable" in err


def test_pytest_itself_calls_an_unloadable_impl_a_usage_error(tmp_path):
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "--pyargs", "portspec.suite.areas", "--impl", "nosuch",
         "-p", "no:cacheprovider"],
        capture_output=True, text=True, cwd=tmp_path, timeout=300,
    )
    assert run.returncode == 4  # pytest's USAGE_ERROR, not 44 skips and 0
    assert "ERROR: unknown implementation 'nosuch'" in run.stderr


# -- a command that explains itself ----------------------------------------------------------


def test_version():
    from portspec import __version__

    assert portspec("--version") == (0, f"portspec {__version__}\n", "")


def test_help_names_the_tool_and_the_exit_codes():
    code, out, err = portspec("--help")
    assert code == 0 and err == ""
    assert "against their executable spec" in out
    assert "2  a usage or setup error" in out and "list" in out
    code, out, _ = portspec("verify", "--help")
    assert code == 0 and "exit codes:" in out and "FM-BN-*" in out
    assert "Checking a port" in out and "TorchPortAdapter" in out  # what a port file is
    from portspec import golden

    code, out, _ = portspec("vectors", "--help")  # where it writes, before it overwrites
    # argparse wraps the path at "/" and "-" (a tox env's keras-jax): compare without spaces
    assert code == 0 and "".join(str(golden.DIRECTORY).split()) in "".join(out.split())
    assert "0  done" in out and "clause failed" not in out
    code, out, _ = portspec("docs", "--help")
    assert code == 0 and "under the current folder" in " ".join(out.split())


def test_test_help_is_pytests_without_a_warning():
    code, out, err = portspec("test", "--help")
    assert code == 0 and "--impl=NAME_OR_FILE" in out
    assert "PytestAssertRewriteWarning" not in out + err and "DeprecationWarning" not in err


def test_list_shows_layers_clauses_and_implementations():
    code, out, err = portspec("list", env={"KERAS_BACKEND": "torch"})
    assert code == 0, err
    assert "FeatureMixing (FM)" in out and "GatedFeatureFusion (GFF)" in out
    config = next(line for line in out.splitlines() if line.split()[:1] == ["FM-CONFIG"])
    assert len(config.split()) > 3  # the clause's sentence follows its ID
    names = {line.split()[0] for line in out.split("Implementations")[1].splitlines()[1:]}
    assert {"keras", "keras-jax", "keras-torch", "keras-tensorflow", "torch", "flax"} <= names
    assert "jax" not in names
    import importlib.util

    torch = next(line for line in out.splitlines() if line.split()[:1] == ["torch"])
    installed = importlib.util.find_spec("torch") is not None
    assert torch.split(None, 1)[1] == ("installed here" if installed else
                                        "not installed here (needs torch)")


def test_list_into_a_closed_pipe_is_quiet():
    """`portspec list | head`: the reader is gone before the first write (closed here before
    the command has started), which must not print an error."""
    proc = subprocess.Popen([*COMMAND, "list"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()
    err = proc.stderr.read()
    assert (proc.wait(timeout=300), err) == (0, b"")


@pytest.mark.parametrize(
    "patterns, ran",
    [
        (["FM-CONFIG"], ["FM-CONFIG"]),  # exact: not FM-CONFIG-ROUNDTRIP as well
        (["fm-config-*"], ["FM-CONFIG-ROUNDTRIP"]),
        (["FM-BN-*"], ["FM-BN-UPDATE", "FM-BN-FROZEN", "FM-BN-BATCH1", "FM-BN-EPSILON"]),
        (["*-weights", "GFF-SHAPE"], ["FM-WEIGHTS", "GFF-SHAPE", "GFF-WEIGHTS"]),
    ],
)
def test_clause_takes_ids_and_globs_in_any_case(patterns, ran):
    args = [a for p in patterns for a in ("--clause", p)]
    code, out, err = portspec("verify", NUMPY_PORT, *args, "--no-isolation")
    rows = [line.split()[0] for line in out.splitlines() if line.startswith(("FM-", "GFF-"))]
    assert rows == ran, err


def test_progress_shows_done_total_and_time_left():
    code, out, err = portspec("verify", NUMPY_PORT, "--clause", "FM-CONFIG*", "--clause",
                              "GFF-SHAPE", "--clause", "GFF-PORTABLE")
    numbered = [line for line in err.splitlines() if line.startswith("  [")]
    counts = [line.split("]")[0].strip(" [").split("/") for line in numbered]
    # the 4 clauses counted from the first line on (GFF-PORTABLE, which verify runs after the
    # built-ins' exports, included); export:/probe: lines are shown without a number
    assert counts == [[str(i), "4"] for i in range(1, 5)], err
    ran = [line.split()[2] for line in numbered]
    assert sorted(ran) == ["FM-CONFIG", "FM-CONFIG-ROUNDTRIP", "GFF-PORTABLE", "GFF-SHAPE"]
    others = [line.split()[1] for line in err.splitlines()  # not TensorFlow's own log lines
              if line.startswith("  ") and not line.startswith("  [")]
    assert others and all(o.startswith(("export:", "probe:")) for o in others), err
    # time left from the clauses' own pace: from the third of the four on, not after the last
    assert ["left" in line for line in numbered] == [False, False, True, False], err


def test_a_normal_run_warns_of_nothing():
    code, out, err = portspec("verify", NUMPY_PORT, "--clause", "FM-SHAPE", "--no-isolation")
    assert code == 0 and "Warning" not in err, err
    code, out, err = portspec("test", "--impl", NUMPY_PORT, "--clause", "FM-SHAPE", "-q",
                              "-p", "no:cacheprovider")
    assert code == 0 and "warning" not in (out + err).lower(), out + err


# -- reports say what was checked ------------------------------------------------------------


def test_every_report_carries_the_metadata_block(tmp_path):
    paths = {fmt: tmp_path / f"r.{fmt}" for fmt in ("json", "markdown", "junit", "html")}
    args = [a for fmt, p in paths.items() for a in (f"--{fmt}", p)]
    code, out, err = portspec("verify", NUMPY_PORT, "--clause", "FM-SHAPE", "--clause",
                              "GFF-CALL", *args)
    assert code == 1, err  # the NumPy port fails GFF-CALL
    sha = hashlib.sha256(Path(NUMPY_PORT).read_bytes()).hexdigest()
    meta = json.loads(paths["json"].read_text())["meta"]
    assert meta["ports"] == [{"target": NUMPY_PORT, "path": NUMPY_PORT, "sha256": sha}]
    assert meta["portspec"]["version"] and "commit" in meta["portspec"]
    assert meta["frameworks"]["numpy"] and meta["python"].split()[0] in ("CPython", "PyPy")
    assert set(meta["cpu"]["features"]) >= {"avx2", "avx512f"} and meta["platform"]
    assert meta["profile"] == "kmr" and meta["options"]["clause"] == ["FM-SHAPE", "GFF-CALL"]
    assert meta["date"].endswith("+00:00")
    assert sha in paths["markdown"].read_text()
    properties = ET.parse(paths["junit"]).getroot().find("testsuite/properties")
    assert any(sha in p.get("value") for p in properties)
    html = paths["html"].read_text()
    assert "<title>portspec: ports_fixtures/numpy_port.py</title>" in html and sha in html
    # the failed cell links to its entry
    assert '<a href="#fail-GFF-CALL--numpy-oracle">' in html
    assert '<li id="fail-GFF-CALL--numpy-oracle">' in html


def test_a_port_names_the_package_it_wraps(tmp_path):
    port = tmp_path / "PORT.py"
    port.write_text(
        Path(NUMPY_PORT).read_text().replace(
            '    name = "numpy-oracle"\n', '    name = "numpy-oracle"\n    package = "numpy"\n'
        )
    )
    code, _, err = portspec("verify", port, "--clause", "FM-SHAPE", "--json", tmp_path / "r.json")
    assert code == 0, err
    (info,) = json.loads((tmp_path / "r.json").read_text())["meta"]["ports"]
    import numpy

    assert (info["package"], info["package_version"]) == ("numpy", numpy.__version__)


def _pytest_without_frameworks(tmp_path, *args):
    """pytest on the clause suite in a process where torch, keras, jax and flax cannot be
    imported, as on a machine that has none of them."""
    blocked = "import sys\nfor m in ('torch', 'keras', 'jax', 'flax'):\n    sys.modules[m] = None\n"
    return subprocess.run(
        [sys.executable, "-c", blocked + "import pytest\nsys.exit(pytest.main(sys.argv[1:]))",
         "--pyargs", "portspec.suite.areas", "--clause", "GFF-SHAPE", "-rs",
         "-p", "no:cacheprovider", *args],
        capture_output=True, text=True, cwd=tmp_path, timeout=300,
    )


def test_without_impl_a_framework_missing_here_is_a_skip_with_its_reason(tmp_path):
    run = _pytest_without_frameworks(tmp_path)
    assert run.returncode == 0 and "3 skipped" in run.stdout, run.stdout + run.stderr
    assert run.stdout.count("implementation unavailable: ") == 3  # keras, torch, flax


def test_asked_for_by_name_a_framework_missing_here_is_a_usage_error(tmp_path):
    run = _pytest_without_frameworks(tmp_path, "--impl", "torch")
    assert run.returncode == 4, run.stdout + run.stderr
    assert "ERROR: torch cannot be loaded here: ModuleNotFoundError" in run.stderr
