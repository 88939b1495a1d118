"""Fork servers: a port file's worker started with its framework already imported, run after run.

A warm ``portspec verify`` of a small PyTorch port spent 5.6 of its 6.7 s in the port's worker
importing PyTorch (2.0 s) and, for FM-COMPILE, Dynamo and Inductor (3.6 s); every clause
together took 0.2 s (2 cores, 2026-12-02). A fork server is a process that has imported them
once and forks a worker per request, as ``multiprocessing``'s "forkserver" start method does
with ``set_forkserver_preload``; unlike that one it outlives the run that started it, so the
port author's next run finds it. The worker it forks is the same worker (``portspec.isolation``
``_serve``, the same protocol, timeouts and crash reports): only the imports are done before.

- **When.** ``portspec verify`` and ``matrix`` use one for each port file (not for the
  built-ins, whose clauses are not a tight loop), unless ``$PORTSPEC_FORK_SERVER`` is ``0`` or
  ``$CI`` is set (a one-off run would only pay for starting it); ``PORTSPEC_FORK_SERVER=1``
  turns them on anywhere, the library and the tests included. Linux only (it reads
  ``/proc/self/task``).
- **Which.** A server preloads what the port file imports (read from its source, not run):
  PyTorch with Dynamo and Inductor, JAX with Flax, Keras on the backend of the worker's
  environment; and portspec's clause suite. Its key (the socket's name, under
  ``<cache>/forkserver/``, ``portspec.cache``) hashes the Python executable, portspec's sources
  and the framework versions (``cache.source_key``), the worker's environment and the modules.
  Any change to them is another server; the old one ends when idle.
- **First run.** No server yet: the run starts one and takes its worker from it. The server
  listens before it imports, so the worker waits for the imports a started worker would make
  anyway (the port's framework, and Dynamo and Inductor for FM-COMPILE), and the next run,
  however soon, finds the server ready. A second ``verify`` started the moment the first
  ended took 6.8-8.6 s when servers were started after a run, and 2.6-3.7 s now; the first
  run's time did not change (BENCHMARKS.md, 2026-12-03). Where the server cannot serve (it
  dies, or refuses after its imports), the run starts its worker as before; so it does where
  the port imports a module that is not installed (``unresolved``), whose load then fails
  without waiting for the server's imports (3.2 s against 7.6 s, a first run).
- **Safety.** Forking a process that runs several threads can deadlock the child (a lock held
  by a thread that does not exist there). The server checks, after its imports, that it is one
  thread; TensorFlow starts one at import, so a port importing TensorFlow is never preloaded
  (``<key>.refused`` says why, and no server is started for that key again). The child starts a
  session of its own (as ``start_new_session``: a timeout kills its compile workers too), takes
  the run's environment and working directory, and the server reports its exit status, so a
  crash reads as it did.
- **End.** A server exits after ``IDLE_SECONDS`` with no request and no worker alive, and
  removes its socket. Deleting its socket ends it within 5 s (it looks every 5 s), and killing
  it loses nothing: the next run finds the socket nobody answers, and the server it starts
  takes the name over.
"""

from __future__ import annotations

import ast
import errno
import hashlib
import importlib.util
import json
import os
import selectors
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from portspec import cache

SETTING = "PORTSPEC_FORK_SERVER"
IDLE_SECONDS = 900.0
BASE = ("numpy", "portspec.isolation")  # the clause suite, the registry, the root-cause probe
# What each framework a port imports brings: its own import and what its clauses import later.
TORCH = ("torch", "torch._dynamo", "torch._inductor.compile_fx", "portspec.ports.torch")
JAX = ("jax", "flax.nnx", "portspec.ports.flax")
PRELOADS = {"torch": TORCH, "jax": JAX, "flax": JAX}
KERAS = {"jax": ("keras", *JAX, "portspec.ports.keras"),
         "torch": ("keras", *TORCH, "portspec.ports.keras")}
# Imports that start threads: a server is never made for them.
THREADED = ("tensorflow", "tf_keras")
VOLATILE = ("PWD", "OLDPWD", "_", "SHLVL")  # differ between shells, read by no framework
# Seconds a run waits for a server it started to listen (a Python start and portspec.cache),
# and for a server to fork its worker (its imports, on a loaded machine)
LISTEN_WAIT = 10.0
FORK_WAIT = 120.0
_STARTED: list[subprocess.Popen] = []


def enabled() -> bool:
    """Whether workers for port files come from fork servers: ``$PORTSPEC_FORK_SERVER`` (0 or
    1), else the CLI's default set by ``set_default`` (on, but off under ``$CI``)."""
    setting = os.environ.get(SETTING, "")
    if sys.platform != "linux" or setting == "0":
        return False
    return setting == "1" or (_DEFAULT["on"] and not os.environ.get("CI"))


_DEFAULT = {"on": False}


def set_default(on: bool) -> None:
    """The CLI turns fork servers on for its runs; library calls and tests leave them off."""
    _DEFAULT["on"] = on


def preloads(port_file: str, env: dict) -> tuple[str, ...]:
    """The modules a server for ``port_file`` imports: none (no server) when the file cannot
    be read or parsed, or imports a framework that starts threads."""
    try:
        tree = ast.parse(Path(port_file).read_text(encoding="utf-8"))
    except (OSError, SyntaxError, ValueError):
        return ()
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.partition(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module.partition(".")[0])
            if node.module.startswith("portspec.ports"):  # TorchPortAdapter: torch, ...
                names.update(alias.name.removesuffix("PortAdapter").lower()
                             for alias in node.names)
    if names & {*THREADED, "tfkeras"}:
        return ()
    modules = list(BASE)
    for name in sorted(names):
        if name == "keras":
            backend = env.get("KERAS_BACKEND", "tensorflow")
            if backend not in KERAS:
                return ()
            modules += KERAS[backend]
        modules += PRELOADS.get(name, ())
    return tuple(dict.fromkeys(modules)) if len(modules) > len(BASE) else ()


def unresolved(port_file: str) -> list[str]:
    """The top-level modules ``port_file``'s own top-level imports name that resolve nowhere
    (not installed, not next to it): the port cannot load, and its run says so without first
    waiting for a server's imports. Imports inside a ``try`` (optional ones) are not asked."""
    try:
        tree = ast.parse(Path(port_file).read_text(encoding="utf-8"))
    except (OSError, SyntaxError, ValueError):
        return []
    tops = set()
    for node in tree.body:
        if isinstance(node, ast.Import):
            tops.update(alias.name.partition(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            tops.add(node.module.partition(".")[0])
    from portspec.registry import sibling_names

    here = sibling_names(os.path.dirname(os.path.abspath(port_file)))
    return sorted(top for top in tops if top not in sys.modules and top not in here
                  and importlib.util.find_spec(top) is None)


def folder() -> Path:
    return cache.cache_dir() / "forkserver"


def key(env: dict, modules: tuple[str, ...]) -> str:
    environ = sorted((k, v) for k, v in env.items() if k not in VOLATILE)
    digest = hashlib.sha256(json.dumps([sys.executable, modules, environ]).encode())
    digest.update(cache.source_key().encode())
    return digest.hexdigest()[:20]


class ForkedWorker:
    """A worker a fork server forked, with what ``isolation`` uses of ``subprocess.Popen``:
    ``pid``, ``stdin``, ``stdout``, ``poll()``, ``wait()``. It is not this process's child; its
    exit status comes from the server, on the request's connection."""

    def __init__(self, conn: socket.socket, pid: int, stdin, stdout):
        self.conn, self.pid, self.stdin, self.stdout = conn, pid, stdin, stdout
        self.returncode = None

    def _status(self, block: bool):
        if self.returncode is not None:
            return self.returncode
        self.conn.setblocking(block)
        try:
            data = self.conn.recv(256)
        except BlockingIOError:
            return None
        except OSError:
            data = b""
        if not data:  # the server is gone: the worker was its child, so it is gone too
            self.returncode = -signal.SIGKILL
        else:
            self.returncode = json.loads(data)["exit"]
        self.conn.close()
        return self.returncode

    def poll(self):
        return self._status(block=False)

    def wait(self, timeout=None):
        return self._status(block=True)


def start_worker(port_file: str, env: dict, stderr) -> ForkedWorker | None:
    """A worker for ``port_file`` from its fork server, serving ``isolation``'s protocol on its
    stdin and stdout, its stderr on the file ``stderr``; None (start one as usual) when fork
    servers are off, none is wanted for this file, or its server cannot serve. Where none
    runs yet, one is started and this worker waits for its imports."""
    if not enabled():
        return None
    modules = preloads(port_file, env)
    if not modules:
        return None
    name = key(env, modules)
    path = folder() / f"{name}.sock"
    conn = _connected(path)
    if conn is None:
        if (folder() / f"{name}.refused").exists() or unresolved(port_file):
            return None
        conn = _connected(path, server=_spawn(name, env, modules))
        if conn is None:
            return None
    in_r, in_w = os.pipe()
    out_r, out_w = os.pipe()
    try:
        request = json.dumps({"env": env, "cwd": os.getcwd()}).encode()
        socket.send_fds(conn, [request], [in_r, out_w, stderr.fileno()])
        conn.settimeout(FORK_WAIT)  # a server still importing answers once it has
        pid = json.loads(conn.recv(256))["pid"]
    except (OSError, ValueError, KeyError):  # it died, or refused after its imports
        conn.close()
        for fd in (in_w, out_r):
            os.close(fd)
        return None
    finally:
        os.close(in_r)
        os.close(out_w)
    return ForkedWorker(conn, pid, os.fdopen(in_w, "wb"), os.fdopen(out_r, "rb"))


def _connected(path: Path, server: subprocess.Popen | None = None) -> socket.socket | None:
    """A connection to the server listening on ``path``; None where none does. With
    ``server``, the one just started: wait for it to listen while it runs."""
    deadline = time.monotonic() + LISTEN_WAIT
    while True:
        conn = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            conn.settimeout(10)
            _connect(conn, path)
            return conn
        except OSError:
            conn.close()
        if server is None or server.poll() is not None or time.monotonic() > deadline:
            return None
        time.sleep(0.02)


def _connect(conn: socket.socket, path: Path) -> None:
    """Connect to the socket ``path`` through its folder's descriptor: a socket's address
    holds at most 107 bytes, which a cache folder under pytest's or a user's long path
    exceeds (the server binds the bare name in that folder)."""
    fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        conn.connect(f"/proc/self/fd/{fd}/{path.name}")
    finally:
        os.close(fd)


def _spawn(name: str, env: dict, modules: tuple[str, ...]) -> subprocess.Popen:
    """Start the server ``name`` in the background; it outlives this process."""
    where = folder()
    where.mkdir(parents=True, exist_ok=True, mode=0o700)
    with open(where / f"{name}.log", "ab") as log:
        server = subprocess.Popen(
            [sys.executable, "-m", "portspec.forkserver", str(where / f"{name}.sock"), *modules],
            stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=env, cwd=where,
            start_new_session=True,
        )
    _STARTED.append(server)
    return server


def started() -> list[subprocess.Popen]:
    """The servers this process started."""
    return list(_STARTED)


# -- the server side --------------------------------------------------------------------------


def _threads() -> int:
    return len(os.listdir("/proc/self/task"))


def serve(path: str, modules: list[str], idle: float = IDLE_SECONDS) -> int:
    """Listen on the socket ``path``, import ``modules``, then fork a worker per request until
    ``idle`` seconds pass with no request and no worker alive. A run that connects during the
    imports waits for them. Exit status 0; 1 where it cannot serve (``<path>.refused`` says
    why when it is the modules)."""
    import importlib

    path = os.path.abspath(path)
    sys.path[:] = [p for p in sys.path if p not in ("", ".", os.getcwd())]
    listener = _listen(path)
    if listener is None:
        return 1
    mine = os.stat(path).st_ino
    try:
        for module in modules:
            importlib.import_module(module)
        if _threads() != 1:
            Path(path).with_suffix(".refused").write_text(
                f"after importing {', '.join(modules)} this process runs {_threads()} threads; "
                "a fork could deadlock its child\n")
            return 1
        _loop(listener, path, mine, idle)
    finally:
        # the name first: a run that reads the end below finds no socket left behind
        if _inode(path) == mine:
            os.unlink(path)
        listener.close()  # a run still waiting reads the end, and starts its worker itself
    return 0


def _inode(path: str) -> int | None:
    try:
        return os.stat(path).st_ino
    except OSError:
        return None


def _listen(path: str) -> socket.socket | None:
    """A socket listening on ``path``, whose address it binds by the bare name in its folder
    (an address holds 107 bytes); a socket nobody answers there, left by a server that was
    killed, is taken over. None where another server listens."""
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    os.chdir(os.path.dirname(path))
    name = os.path.basename(path)
    try:
        listener.bind(name)
    except OSError as exc:
        if exc.errno != errno.EADDRINUSE or _answers(Path(path)):
            print(f"cannot serve on {path}: {exc}", file=sys.stderr)
            listener.close()
            return None
        os.unlink(name)
        listener.bind(name)
    listener.listen(16)
    return listener


def _answers(path: Path) -> bool:
    """Whether a server listens on ``path`` (the connection a run would make, closed)."""
    conn = _connected(path)
    if conn is not None:
        conn.close()
    return conn is not None


def _loop(listener: socket.socket, path: str, mine: int, idle: float) -> None:
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    selector = selectors.DefaultSelector()
    selector.register(listener, selectors.EVENT_READ)
    selector.register(wake_r, selectors.EVENT_READ)
    children: dict[int, socket.socket] = {}
    last = time.monotonic()
    while children or time.monotonic() - last < idle:
        if _inode(path) != mine:
            break  # removed, or taken over: end now
        for item, _ in selector.select(timeout=5.0):
            if item.fileobj is listener:
                conn, _ = listener.accept()
                last = time.monotonic()
                pid = _fork(conn, [listener, wake_r, wake_w], selector)
                if pid:
                    children[pid] = conn
            else:
                os.read(wake_r, 4096)
        _reap(children)
        if children:
            last = time.monotonic()


def _fork(conn: socket.socket, close: list, selector) -> int | None:
    """Fork a worker for the request on ``conn``; its pid, or None for a bad request."""
    try:
        conn.settimeout(10)
        message, fds, _, _ = socket.recv_fds(conn, 1 << 20, 3)
        request = json.loads(message)
    except (OSError, ValueError):
        conn.close()
        return None
    if len(fds) != 3:
        for fd in fds:
            os.close(fd)
        conn.close()
        return None
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:
        _child(request, fds, [conn, *close], selector)
    for fd in fds:
        os.close(fd)
    try:
        conn.sendall(json.dumps({"pid": pid}).encode())
    except OSError:
        pass
    return pid


def _child(request: dict, fds: list[int], close: list, selector) -> None:
    """The worker: fds 0-2 from the request, the run's environment and folder, a session of
    its own; then ``isolation``'s serve loop, and exit as the interpreter would."""
    code = 1
    try:
        selector.close()
        signal.set_wakeup_fd(-1)
        for sig in (signal.SIGCHLD, signal.SIGTERM):
            signal.signal(sig, signal.SIG_DFL)
        for item in close:
            item.close() if hasattr(item, "close") else os.close(item)
        os.setsid()
        for target, fd in enumerate(fds):
            os.dup2(fd, target)
            os.close(fd)
        sys.stdin = os.fdopen(0, "r", closefd=False)  # nothing of the server's buffered
        os.environ.clear()
        os.environ.update(request["env"])
        os.chdir(request["cwd"])
        from portspec import isolation

        isolation._serve()
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        if not isinstance(exc.code, int | None):
            print(exc.code, file=sys.stderr)
    except BaseException:
        import traceback

        traceback.print_exc()
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)


def _reap(children: dict[int, socket.socket]) -> None:
    """Send each ended worker's exit status (as ``Popen.returncode``) to its run."""
    while children:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        conn = children.pop(pid, None)
        if conn is not None:
            try:
                conn.sendall(json.dumps({"exit": os.waitstatus_to_exitcode(status)}).encode())
            except OSError:
                pass
            conn.close()


if __name__ == "__main__":
    sys.exit(serve(sys.argv[1], sys.argv[2:]))
