"""Fork servers (portspec.forkserver): a forked worker reports as a started one does.

The misbehaving NumPy ports of tests/test_verify.py run through a fork server that preloads
only portspec (the real servers preload a framework, which these ports do not import), so that
a crash, an exit, a hang or a raise reads the same through it; the PyTorch port runs through a
real one, FM-COMPILE included.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_verify import MISBEHAVIOURS

from portspec import forkserver
from portspec.verify import verify

FIXTURES = Path(__file__).parent / "ports_fixtures"
MISBEHAVING = str(FIXTURES / "misbehaving.py")
TORCH_PORT = str(FIXTURES / "torch_fm_port.py")
CLAUSES = ["FM-SHAPE", "FM-CONFIG-ROUNDTRIP", "FM-INFERENCE"]

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="fork servers are Linux only")


def _forked(monkeypatch) -> list:
    """Record the workers a fork server gives."""
    given = []
    start = forkserver.start_worker

    def recording(*args, **kwargs):
        worker = start(*args, **kwargs)
        given.append(worker)
        return worker

    monkeypatch.setattr(forkserver, "start_worker", recording)
    return given


@pytest.fixture
def served(monkeypatch, tmp_path):
    """A run that starts the fork server of its port file, as the CLI does, and takes its
    worker from it; the workers of the runs after it are then recorded. The servers are
    stopped afterwards."""
    monkeypatch.setenv("PORTSPEC_CACHE", str(tmp_path))
    monkeypatch.setenv(forkserver.SETTING, "1")
    monkeypatch.setattr(forkserver, "_STARTED", [])

    def serve(port: str, impl: str | None = None):
        # no server yet: the run starts one and waits for it (FM-SHAPE: no misbehaving port
        # misbehaves there)
        first = _forked(monkeypatch)
        results = verify([port], clauses=["FM-SHAPE"], tasks=impl and [(impl, "FM-SHAPE")],
                         timeout=60)
        logs = [p.read_text() for p in (tmp_path / "forkserver").glob("*.[lr]*")]
        assert [r.status for r in results] == ["passed"], logs
        assert len(forkserver.started()) == 1, "the run started no fork server"
        assert first and all(isinstance(w, forkserver.ForkedWorker) for w in first), logs
        return _forked(monkeypatch)

    yield serve
    for server in forkserver.started():
        server.terminate()
        server.wait(timeout=30)
    assert not list((tmp_path / "forkserver").glob("*.sock")), "a server left its socket"


@pytest.mark.parametrize("port, reason", MISBEHAVIOURS)
def test_a_forked_worker_fails_as_a_started_one(served, monkeypatch, port, reason):
    monkeypatch.setattr(forkserver, "preloads", lambda *_: forkserver.BASE)
    tasks = [(port, clause) for clause in CLAUSES]
    forked = served(MISBEHAVING, port)
    results = {r.clause: r for r in verify([MISBEHAVING], tasks=tasks,
                                           timeout=2 if port == "hang" else 20)}
    assert forked and all(isinstance(w, forkserver.ForkedWorker) for w in forked)
    assert list(results) == CLAUSES
    assert results["FM-CONFIG-ROUNDTRIP"].message.startswith(reason)
    assert [results[c].status for c in CLAUSES] == ["passed", "failed", "passed"]


def test_a_pytorch_port_through_its_fork_server_gets_the_same_verdicts(served, monkeypatch):
    clauses = ["FM-CONFIG", "FM-SHAPE", "FM-COMPILE", "FM-GRAD"]
    monkeypatch.setenv(forkserver.SETTING, "0")
    started = verify([TORCH_PORT], clauses=clauses, timeout=120)
    monkeypatch.setenv(forkserver.SETTING, "1")
    forked = served(TORCH_PORT)
    again = verify([TORCH_PORT], clauses=clauses, timeout=120)
    assert forked and all(isinstance(w, forkserver.ForkedWorker) for w in forked)
    assert [(r.clause, r.status, r.message) for r in again] == [
        (r.clause, r.status, r.message) for r in started]
    assert [r.status for r in again] == ["failed", "passed", "passed", "passed"]


def test_what_a_server_preloads_is_read_from_the_port_file(tmp_path):
    def of(source: str, **env) -> tuple:
        port = tmp_path / "PORT.py"
        port.write_text(source)
        return forkserver.preloads(str(port), env)

    assert of("import torch\n") == (*forkserver.BASE, *forkserver.TORCH)
    assert of("from portspec.ports import TorchPortAdapter\n") == (
        *forkserver.BASE, *forkserver.TORCH)
    assert of("from flax import nnx\n")[-1] == "portspec.ports.flax"
    assert "jax" in of("import keras\n", KERAS_BACKEND="jax")
    # TensorFlow starts a thread at import: no server; nor for a file with no framework
    assert of("import keras\n") == of("import keras\n", KERAS_BACKEND="tensorflow") == ()
    assert of("import torch\nimport tensorflow as tf\n") == ()
    assert of("import numpy\n") == of("def broken(:\n") == ()


def test_a_process_with_threads_is_not_made_a_server(tmp_path, monkeypatch):
    (tmp_path / "threaded.py").write_text(
        "import threading, time\nthreading.Thread(target=time.sleep, args=(60,), daemon=True)"
        ".start()\n")
    sock = tmp_path / "k.sock"
    done = subprocess.run(
        [sys.executable, "-m", "portspec.forkserver", str(sock), "threaded"],
        env={**os.environ, "PYTHONPATH": str(tmp_path)}, cwd="/", capture_output=True,
        timeout=60)
    assert done.returncode == 1 and not sock.exists()
    assert "runs 2 threads" in (tmp_path / "k.refused").read_text()
    # and no run starts that server again
    monkeypatch.setenv("PORTSPEC_CACHE", str(tmp_path))
    monkeypatch.setenv(forkserver.SETTING, "1")
    monkeypatch.setattr(forkserver, "key", lambda *_: "k")
    monkeypatch.setattr(forkserver, "folder", lambda: tmp_path)
    monkeypatch.setattr(forkserver, "_STARTED", [])
    assert forkserver.start_worker(TORCH_PORT, {}, None) is None
    assert forkserver.started() == []


def _serving(sock: Path, idle: str = "600") -> subprocess.Popen:
    code = "import sys; from portspec.forkserver import serve; sys.exit(serve(sys.argv[1], [], "
    return subprocess.Popen([sys.executable, "-c", code + f"idle={idle}))", str(sock)])


def _await(condition, what: str) -> None:
    deadline = time.monotonic() + 60
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


def test_a_server_ends_when_idle_or_when_its_socket_is_removed(tmp_path):
    idle = _serving(tmp_path / "a", idle="1")
    removed = _serving(tmp_path / "b")
    _await((tmp_path / "b").exists, "the server did not listen")
    (tmp_path / "b").unlink()
    assert idle.wait(timeout=60) == 0 and removed.wait(timeout=60) == 0
    assert not (tmp_path / "a").exists()


def test_fork_servers_are_the_clis_unless_turned_off_or_under_ci(monkeypatch):
    monkeypatch.delenv(forkserver.SETTING, raising=False)
    monkeypatch.delenv("CI", raising=False)
    monkeypatch.setattr(forkserver, "_DEFAULT", {"on": False})
    assert not forkserver.enabled()  # the library and the tests
    forkserver.set_default(True)  # portspec verify, portspec matrix
    assert forkserver.enabled() == (sys.platform == "linux")
    monkeypatch.setenv("CI", "true")
    assert not forkserver.enabled()
    monkeypatch.setenv(forkserver.SETTING, "1")
    assert forkserver.enabled() == (sys.platform == "linux")
    monkeypatch.setenv(forkserver.SETTING, "0")
    monkeypatch.delenv("CI")
    assert not forkserver.enabled()


def test_a_socket_left_by_a_killed_server_is_taken_over(tmp_path):
    sock = tmp_path / "k.sock"
    killed = _serving(sock)
    _await(sock.exists, "the first server did not listen")
    killed.kill()
    killed.wait(timeout=30)
    assert sock.exists()  # SIGKILL: nothing removed it, and nothing listens there
    second = _serving(sock)
    _await(lambda: forkserver._answers(sock), "the second server did not listen")
    # a live server's socket is not taken over
    third = _serving(sock)
    assert third.wait(timeout=60) == 1
    assert forkserver._answers(sock)
    sock.unlink()
    assert second.wait(timeout=60) == 0


def test_a_run_started_while_its_server_imports_waits_for_it(tmp_path, monkeypatch):
    """The server listens before its imports: a request made meanwhile is answered once they
    are done, and one made to a server that then refuses falls back to a started worker."""
    modules = tmp_path / "modules"  # not the server's folder, which it takes off sys.path
    modules.mkdir()
    (modules / "slow.py").write_text("import time\ntime.sleep(3)\n")
    (modules / "threaded.py").write_text(
        "import threading, time\nthreading.Thread(target=time.sleep, args=(60,), daemon=True)"
        ".start()\n")
    monkeypatch.setenv("PYTHONPATH", str(modules))
    monkeypatch.setenv("PORTSPEC_CACHE", str(tmp_path))
    monkeypatch.setenv(forkserver.SETTING, "1")
    monkeypatch.setattr(forkserver, "folder", lambda: tmp_path)
    monkeypatch.setattr(forkserver, "_STARTED", [])
    for module, served in (("slow", True), ("threaded", False)):
        monkeypatch.setattr(forkserver, "key", lambda *_, m=module: m)
        monkeypatch.setattr(forkserver, "preloads", lambda *_, m=module: (m,))
        with open(tmp_path / f"{module}.err", "wb") as stderr:
            began = time.monotonic()
            worker = forkserver.start_worker(TORCH_PORT, dict(os.environ), stderr)
        if served:
            assert isinstance(worker, forkserver.ForkedWorker), (tmp_path / "slow.log").read_text()
            assert time.monotonic() - began > 2.5  # it waited for the import
            worker.stdin.close()  # no job: the worker's serve loop ends
            assert worker.wait() == 0
        else:
            assert worker is None
            assert (tmp_path / "threaded.refused").exists()
            assert not (tmp_path / "threaded.sock").exists()
    for server in forkserver.started():
        server.terminate()
        server.wait(timeout=30)


def test_a_port_importing_what_is_not_installed_starts_no_server(tmp_path, monkeypatch):
    """Its load fails in the worker: a server's imports first would only delay the one line."""
    (tmp_path / "helper.py").write_text("")
    port = tmp_path / "PORT.py"
    port.write_text("import torch\nimport helper\nimport not_installed_xyz.sub\n"
                    "try:\n    import optional_xyz\nexcept ImportError:\n    pass\n")
    assert forkserver.unresolved(str(port)) == ["not_installed_xyz"]
    monkeypatch.setenv("PORTSPEC_CACHE", str(tmp_path))
    monkeypatch.setenv(forkserver.SETTING, "1")
    monkeypatch.setattr(forkserver, "_STARTED", [])
    assert forkserver.start_worker(str(port), dict(os.environ), None) is None
    assert forkserver.started() == []
    port.write_text("import torch\nimport helper\n")
    assert forkserver.unresolved(str(port)) == []
