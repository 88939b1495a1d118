"""Run an implementation's clauses in a worker process, so that a port cannot take the run down.

A port under test may hang, segfault or call ``os._exit``; the verdict on every other clause
must still be written. ``run`` starts ``python -m portspec.isolation``, sends it the job as JSON on
stdin and reads one JSON event per line from its stdout:

    {"event": "error", "message": ...}                   the target cannot be loaded (one line)
    {"event": "plan", "tasks": [[impl, clause], ...],    what the worker will run, in order,
     "layers": [layer, ...]}                              and the layers its adapters have
    {"event": "start", "impl": ..., "clause": ...}        a clause begins (its timeout starts)
    {"event": "result", "result": {...}}                  Result.to_dict()

When no result arrives within ``timeout`` seconds of a start, or the worker dies, that clause is
failed and a fresh worker runs the clauses still pending. The worker writes its protocol to a
duplicate of fd 1 and points fd 1 at stderr, so whatever a port prints cannot corrupt it.
"""

from __future__ import annotations

import contextlib
import faulthandler
import io
import json
import os
import queue
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from portspec import forkserver, registry, rootcause
from portspec.cache import enable_compilation_caches
from portspec.diagnose import explain_result
from portspec.layers import LAYERS
from portspec.suite.areas import portability
from portspec.suite.checks import work_items
from portspec.suite.runner import Result, layer_selected, run_clause, select, wanted

DEFAULT_TIMEOUT = 120.0
LOAD = "LOAD"  # the pseudo-clause of a worker that died or hung before it had a plan
PER_JOB = (portability.EXCHANGE,)  # set per job in a warm worker, not per process
# One compute thread per worker (a user's own setting wins): the clauses' arrays are tiny, and
# workers run side by side on every core (portspec.schedule). A parallel kernel's OpenMP
# barrier on an oversubscribed machine cost 28.8 ms against 0.04 ms for one torch
# FeatureMixing call of shape (2, 6, 5) (F.batch_norm, 2 cores, load average 7).
ONE_THREAD = {
    "OMP_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "OPENBLAS_NUM_THREADS": "1",
    "TF_NUM_INTRAOP_THREADS": "1",
    "TF_NUM_INTEROP_THREADS": "1",
    "XLA_FLAGS": "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1",
}


def worker_env(target: str, extra: dict | None = None) -> dict:
    env = dict(os.environ)
    env["TF_CPP_MIN_LOG_LEVEL"] = "3"
    enable_compilation_caches(env)  # JAX's and Inductor's, kept between runs
    for key, value in ONE_THREAD.items():
        env.setdefault(key, value)
    base, _, variant = target.partition("-")
    if base == "keras" and variant:
        env["KERAS_BACKEND"] = variant  # Keras reads its backend once, at import
    env.update(extra or {})
    return env


def run(
    target: str,
    *,
    clauses=None,
    layers=None,
    tasks=None,
    timeout: float = DEFAULT_TIMEOUT,
    on_result=None,
    env: dict | None = None,
    export_dir: str | None = None,
    required: bool = False,
    on_plan=None,
    stop=None,
    on_layers=None,
    probed=(),
) -> list[Result]:
    """Run ``target`` (a built-in name or an adapter file) clause by clause in workers.

    Raises registry.LoadError, before any clause runs, when the worker cannot load ``target``
    (with ``required``, also when it is merely not available here). ``on_plan`` is called with
    the (impl, clause) pairs of the first worker's plan, ``on_result`` with each result.
    ``stop``, a ``threading.Event``, set while the job runs kills its worker: the clause
    running fails as "stopped" and none after it starts. ``on_layers`` is called with the
    layers the loaded adapters have (every plan's, so also a load-only job's: ``tasks=[]``).
    ``probed`` names the layers whose root-cause probe an earlier job of the same target ran:
    it is not run again.
    """
    job = {"target": target, "clauses": clauses, "layers": layers, "export_dir": export_dir,
           "required": required, "probed": list(probed)}
    results: list[Result] = []
    pending = [tuple(t) for t in tasks] if tasks is not None else None

    def record(result: Result):
        results.append(result)
        if pending is not None and (result.impl, result.clause) in pending:
            pending.remove((result.impl, result.clause))
        if on_result:
            on_result(result)

    while True:
        worker = _Worker({**job, "tasks": pending}, worker_env(target, env))
        planned = False
        try:
            for event in worker.events(timeout, stop):
                if event["event"] == "error":
                    raise registry.LoadError(event["message"])
                if event["event"] == "plan":
                    if on_layers:
                        on_layers(event.get("layers", []))
                    if pending is None and on_plan:
                        on_plan(event["tasks"])
                    pending, planned = [tuple(t) for t in event["tasks"]], True
                elif event["event"] == "result":
                    record(Result(**event["result"]))
        except _Stopped as stopped:
            if pending is None or not (planned or pending):  # died or hung while loading: no
                # clause list to go on with (or none asked for: verify.preload's load-only run)
                record(Result(LOAD, target, "failed", f"{stopped.reason} while loading", None))
                return results
            culprits = [worker.current] if worker.current else list(pending)
            reason = stopped.reason if worker.current else f"{stopped.reason} while loading"
            for impl, clause in culprits:
                record(Result(clause, impl, "failed", reason, details=stopped.details))
            if worker.current and pending and not (stop is not None and stop.is_set()):
                continue  # a fresh worker for the clauses still pending
            return results
        finally:
            worker.close()
        for impl, clause in list(pending or []):  # a port that exited 0 between clauses
            record(Result(clause, impl, "failed", "worker exited without reporting"))
        return results


class _Stopped(Exception):  # noqa: N818 - the worker stopped, for the reason given
    def __init__(self, reason: str, details: dict):
        super().__init__(reason)
        self.reason, self.details = reason, details


class _Worker:
    """One job on a worker process: a fresh one, or inside ``warm_workers()`` an idle one
    that ran a job for the same implementation family in the same environment before."""

    def __init__(self, job: dict, env: dict):
        self.key = _family(job["target"]), tuple(
            sorted((k, v) for k, v in env.items() if k not in PER_JOB)
        )
        self.done = False
        reused = _POOL.take(self.key) if _POOL is not None else None
        if reused is not None:
            self.proc, self.stderr, self.lines = reused
        else:
            self.stderr = tempfile.TemporaryFile()
            # a port file's worker with its framework imported already, where a fork server
            # runs (portspec.forkserver); its environment is the key, but for the per-job part
            self.proc = registry.is_file(job["target"]) and forkserver.start_worker(
                job["target"], {k: v for k, v in env.items() if k not in PER_JOB}, self.stderr)
            if not self.proc:
                # A session of its own: on a timeout the whole group goes, compile workers too.
                self.proc = subprocess.Popen(
                    [sys.executable, "-m", "portspec.isolation", "--serve"],
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    stderr=self.stderr,
                    env=env,
                    start_new_session=True,
                )
            self.lines: queue.Queue = queue.Queue()
            threading.Thread(target=self._read, daemon=True).start()
        job = {**job, "environ": {k: env.get(k) for k in PER_JOB}}
        self.proc.stdin.write(json.dumps(job).encode() + b"\n")
        self.proc.stdin.flush()
        if _POOL is None:
            self.proc.stdin.close()  # the worker exits after this one job

    def _read(self):
        for line in self.proc.stdout:
            self.lines.put(line)
        self.lines.put(None)

    def events(self, timeout: float, stop=None):
        """Yield events; raise _Stopped when the worker dies, a clause runs past ``timeout``
        or ``stop`` (a ``threading.Event``) is set.

        ``self.current`` is the (impl, clause) started and not yet reported, if any.
        """
        self.current = None
        deadline = time.monotonic() + timeout
        while True:
            if stop is not None and stop.is_set():
                self.kill()
                raise _Stopped("stopped", {})
            left = max(0.0, deadline - time.monotonic())
            try:  # with a stop event: looked at every 0.05 s
                line = self.lines.get(timeout=left if stop is None else min(left, 0.05))
            except queue.Empty:
                if time.monotonic() < deadline:
                    continue
                self.kill()
                raise _Stopped(f"timed out after {timeout:g} s", self._details()) from None
            if line is None:
                code = self.proc.wait()
                if code == 0 and self.current is None:
                    return
                details = self._details()
                where = _crash_site(details.get("stderr_tail", []))
                raise _Stopped(f"worker died with {_describe_exit(code)}{where}", details)
            event = json.loads(line)
            deadline = time.monotonic() + timeout
            if event["event"] == "done":
                self.done = True
                return
            if event["event"] == "start":
                self.current = (event["impl"], event["clause"])
            elif event["event"] == "result":
                self.current = None
            yield event

    def _details(self) -> dict:
        self.stderr.seek(0)
        lines = [ln for ln in self.stderr.read().decode(errors="replace").splitlines() if ln]
        fatal = [i for i, ln in enumerate(lines) if ln.startswith("Fatal Python error")]
        # faulthandler's dump starts at "Fatal Python error", innermost frame first
        tail = lines[fatal[-1] : fatal[-1] + 4] if fatal else lines[-6:]
        return {"stderr_tail": tail} if tail else {}

    def kill(self):
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait()

    def close(self):
        """Back to the pool when the job ended cleanly inside ``warm_workers()``; else gone."""
        if _POOL is not None and self.done and self.proc.poll() is None:
            _POOL.give(self.key, (self.proc, self.stderr, self.lines))
            return
        _end(self.proc, self.stderr)


def _end(proc, stderr):
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()
    stderr.close()


def _family(target: str) -> str:
    """Jobs of one family may share a warm worker: every built-in is one family (as they
    shared a process in the portability clause), each adapter file a family of its own."""
    is_file = target.endswith(".py") or os.sep in target
    return os.path.abspath(target) if is_file else "built-in"


class _Pool:
    def __init__(self):
        self.idle: dict[tuple, list] = {}
        self.lock = threading.Lock()

    def take(self, key):
        with self.lock:
            while self.idle.get(key):
                proc, stderr, lines = self.idle[key].pop()
                if proc.poll() is None:
                    return proc, stderr, lines
                _end(proc, stderr)
        return None

    def give(self, key, worker):
        with self.lock:
            self.idle.setdefault(key, []).append(worker)

    def close(self):
        """End the idle workers. Each has reported its job done, and every cache it writes
        (JAX's, Inductor's, the exports) is written before that, so it is killed at once:
        waiting for a graceful exit cost 0.2-0.8 s per worker at the end of every run
        (torch's, TensorFlow's and JAX's interpreter teardown), one after another."""
        with self.lock:
            for workers in self.idle.values():
                for proc, stderr, _ in workers:
                    _end(proc, stderr)
            self.idle.clear()


_POOL: _Pool | None = None


@contextlib.contextmanager
def warm_workers():
    """Keep workers warm for the block: a worker that finished its job cleanly waits for the
    next job of its family and environment (``_Worker``) instead of exiting, so a framework
    is imported, and its first calls compiled, once per run instead of once per job. A worker
    that crashed or timed out is never reused. Thread-safe; nested blocks share one pool."""
    global _POOL
    if _POOL is not None:
        yield
        return
    _POOL = _Pool()
    try:
        yield
    finally:
        pool, _POOL = _POOL, None
        pool.close()


def _crash_site(tail: list[str]) -> str:
    """' in fn (file:line)' from the innermost frame of a faulthandler dump, if there is one."""
    for line in tail:
        m = re.match(r'\s*File "(.+)", line (\d+) in (\S+)', line)
        if m:
            return f" in {m[3]} ({os.path.basename(m[1])}:{m[2]})"
    return ""


def _describe_exit(code: int) -> str:
    if code < 0:
        try:
            return f"signal {signal.Signals(-code).name} ({-code})"
        except ValueError:
            return f"signal {-code}"
    return f"exit code {code}"


# -- the worker side -----------------------------------------------------------------------


def items_for(adapter, clauses=None, layers=None, tasks=None, export_dir=None, probed=()):
    """(task id, thunk) pairs for ``adapter``: its clauses, or with ``export_dir`` its
    portable-weights exports (task ids ``export:<Layer>``), restricted to ``tasks``; each
    layer's probe after its clauses, but for the layers ``probed`` names."""
    if export_dir:
        out = [
            (f"export:{name}", lambda s=spec: _export(adapter, s, Path(export_dir)))
            for name, spec in LAYERS.items()
            if name in adapter.layers
            and layer_selected(spec, layers)
        ]
    else:
        items = select(work_items([adapter]), adapter, clauses, layers)
        out = [
            (clause.id, lambda s=spec, c=clause, f=fn: _run(adapter, s, c, f))
            for spec, clause, fn in items
        ]
        # after its clauses, each layer's probe: the records the root-cause stage fits
        out += [
            (f"{rootcause.PROBE}{spec.name}", lambda s=spec: rootcause.probe_result(adapter, s))
            for spec in dict.fromkeys(spec for spec, _, _ in items)
            if spec.name not in probed
        ]
    if tasks is not None:
        wanted_tasks = {tuple(t) for t in tasks}
        out = [
            (task, fn)
            for task, fn in out
            if (adapter.name, task) in wanted_tasks
            or rootcause.probe_wanted(adapter.name, task, wanted_tasks)
        ]
    return out


def _run(adapter, spec, clause, fn) -> Result:
    return explain_result(run_clause(adapter, spec, clause, fn), clause, adapter, spec)


def _export(adapter, spec, directory: Path) -> Result:
    start = time.perf_counter()
    portability.export(adapter, spec, directory)
    return Result(f"export:{spec.name}", adapter.name, "passed", seconds=_since(start))


def unavailable_results(name: str, reason: str, clauses=None, layers=None) -> list[Result]:
    """Skips, with the reason, for every wanted clause of an implementation that cannot load."""
    return [
        Result(clause.id, name, "skipped", f"implementation unavailable: {reason}")
        for spec, clause, _ in work_items(None)
        if wanted(spec, clause, clauses, layers)
    ]


def _main() -> None:
    job = json.loads(sys.stdin.read())
    # ``python -m`` put the caller's directory first; a port imports from its own folder only
    cwd = os.getcwd()
    sys.path[:] = [p for p in sys.path if p not in ("", ".", cwd)]
    proto = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # whatever the port prints goes to stderr, never into the protocol
    faulthandler.enable()  # a segfault leaves its traceback in the stderr tail

    def send(event):
        proto.write(json.dumps(event, default=_plain) + "\n")

    export_dir, tasks = job.get("export_dir"), job["tasks"]
    plan, skips, layers = [], [], set()
    try:
        loaded = registry.load(job["target"], required=job.get("required", False))
    except registry.LoadError as exc:
        send({"event": "error", "message": str(exc)})
        proto.close()
        return
    for adapter in loaded:
        if isinstance(adapter, registry.Unavailable):
            if not export_dir:
                skips += unavailable_results(
                    adapter.name, adapter.reason, job["clauses"], job["layers"]
                )
            continue
        items = items_for(adapter, job["clauses"], job["layers"], tasks, export_dir,
                          job.get("probed", ()))
        plan += [(adapter.name, task, fn) for task, fn in items]
        layers.update(adapter.layers)
    if tasks is not None:
        skips = [r for r in skips if (r.impl, r.clause) in {tuple(t) for t in tasks}]
    send({"event": "plan", "tasks": [[r.impl, r.clause] for r in skips] + [p[:2] for p in plan],
          "layers": [name for name in LAYERS if name in layers]})
    for result in skips:
        send({"event": "result", "result": result.to_dict()})
    for impl, task, fn in plan:
        send({"event": "start", "impl": impl, "clause": task})
        try:
            result = fn()
        except Exception as exc:  # an export that raises; clauses catch their own
            result = Result(task, impl, "failed", f"raised {type(exc).__name__}: {exc}")
        send({"event": "result", "result": result.to_dict()})
    proto.close()


def _plain(value):
    """JSON for the NumPy scalars and arrays that clause details may hold."""
    if hasattr(value, "tolist"):
        return value.tolist()
    return str(value)


def _since(start: float) -> float:
    return round(time.perf_counter() - start, 4)


def _serve() -> None:
    """The worker's loop: one JSON job per line on stdin, each answered as ``_main`` answers
    it, then ``{"event": "done"}``; it ends with its input. ``_main`` reads its job from
    ``sys.stdin`` and writes the protocol to a duplicate of fd 1, which is pointed back at the
    protocol before each job."""
    protocol, jobs = os.dup(1), sys.stdin
    for line in jobs:
        job = json.loads(line)
        for key, value in job.pop("environ", {}).items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        os.dup2(protocol, 1)
        sys.stdin = io.StringIO(json.dumps(job))
        _main()
        with os.fdopen(os.dup(protocol), "w") as out:
            out.write(json.dumps({"event": "done"}) + "\n")


if __name__ == "__main__":
    _serve() if sys.argv[1:] == ["--serve"] else _main()
