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
    """A run that starts the fork server of its port file, as the CLI does, and waits for it;
    the workers are then recorded. The server is stopped afterwards."""
    monkeypatch.setenv("PORTSPEC_CACHE", str(tmp_path))
    monkeypatch.setenv(forkserver.SETTING, "1")
    servers = []

    def serve(port: str, impl: str | None = None):
        # no server yet: the run starts one (FM-SHAPE: no misbehaving port misbehaves there)
        verify([port], clauses=["FM-SHAPE"], tasks=impl and [(impl, "FM-SHAPE")], timeout=60)
        servers.extend(forkserver.spawn_pending())
        assert servers, "the run asked for no fork server"
        deadline = time.monotonic() + 120
        while not list((tmp_path / "forkserver").glob("*.sock")):
            assert servers[-1].poll() is None, [
                p.read_text() for p in (tmp_path / "forkserver").glob("*.[lr]*")]
            assert time.monotonic() < deadline, "the fork server did not start"
            time.sleep(0.2)
        return _forked(monkeypatch)

    yield serve
    for server in servers:
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


def test_a_pytorch_port_through_its_fork_server_gets_the_same_verdicts(served):
    clauses = ["FM-CONFIG", "FM-SHAPE", "FM-COMPILE", "FM-GRAD"]
    started = verify([TORCH_PORT], clauses=clauses, timeout=120)
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
    assert forkserver.start_worker(TORCH_PORT, {}, None) is None
    assert forkserver.spawn_pending() == []


def test_a_server_ends_when_idle_or_when_its_socket_is_removed(tmp_path):
    code = "import sys; from portspec.forkserver import serve; sys.exit(serve(sys.argv[1], [], {}))"
    idle = subprocess.Popen([sys.executable, "-c", code.format("idle=1"), str(tmp_path / "a")])
    removed = subprocess.Popen([sys.executable, "-c", code.format("idle=600"),
                                str(tmp_path / "b")])
    deadline = time.monotonic() + 60
    while not (tmp_path / "b").exists() and time.monotonic() < deadline:
        time.sleep(0.1)
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
