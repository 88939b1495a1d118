"""How ``verify`` and ``matrix`` lay their jobs onto the machine: warm workers, every core.

Each job still runs in a worker process (``portspec.isolation``), so a port that hangs or
crashes fails the clause it was in and nothing else. What changes is the order and the
overlap:

- ``matrix``: the exports run on ``jobs()`` lanes at once, then the clauses, longest first;
  inside ``isolation.warm_workers()``, so an implementation's clauses run in the worker that
  exported its weights (one framework import per implementation instead of two).
- ``verify PORT.py``: the port exports its own weights and runs every clause but the
  portability ones on one lane, while the other lane exports the built-ins' weights into the
  cache (``portspec.cache``; reused until portspec or a framework changes), from the start,
  alongside the preload of the port (``EarlyExports``); then the portability clauses read
  both, in the port's warm worker. Before, the port's worker imported every built-in
  framework and exported them inside FM/GFF-PORTABLE, every run.

``$PORTSPEC_JOBS`` sets the number of lanes (default: the CPUs this process may use).
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from portspec import cache, isolation, registry
from portspec.layers import LAYERS
from portspec.rootcause import PROBE
from portspec.suite.areas.portability import EXCHANGE
from portspec.suite.checks import work_items
from portspec.suite.runner import wanted

# Seconds each built-in's clauses took in one matrix run (2 cores, quiet): only the order of
# the lanes' queue depends on it, the longest first, so that no lane is left with a long tail.
EXPECTED_SECONDS = {"jax": 51, "flax": 51, "keras-jax": 52, "keras-torch": 29, "torch": 12,
                    "keras-tensorflow": 9}


def jobs() -> int:
    """Lanes to run at once: ``$PORTSPEC_JOBS``, else the CPUs available to this process."""
    if os.environ.get("PORTSPEC_JOBS"):
        return max(1, int(os.environ["PORTSPEC_JOBS"]))
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:
        return max(1, os.cpu_count() or 1)


def parallel(calls, lanes: int) -> list:
    """Run the zero-argument ``calls`` on ``lanes`` threads (each call drives a worker process
    and mostly waits on it); their returns in the order given. An exception propagates."""
    if lanes <= 1 or len(calls) <= 1:
        return [call() for call in calls]
    with ThreadPoolExecutor(max_workers=lanes) as pool:
        futures = [pool.submit(call) for call in calls]
        return [f.result() for f in futures]


def serialised(callback):
    """``callback`` behind a lock: the lanes report results from several threads."""
    if callback is None:
        return None
    lock = threading.Lock()

    def call(*args):
        with lock:
            return callback(*args)

    return call


def matrix_runs(names, exchange: str, *, portability: bool, export_kwargs: dict,
                clause_kwargs: dict) -> list:
    """Results: the failed exports (when ``portability``), then every name's clauses, names in
    the order given. ``*_kwargs`` go to ``isolation.run``; callbacks are
    serialised here."""
    export_kwargs = _serialise(export_kwargs)
    clause_kwargs = _serialise({**clause_kwargs, "env": {EXCHANGE: exchange}})
    lanes, failed = jobs(), []
    with isolation.warm_workers():
        if portability:
            exports = parallel(
                [lambda n=n: isolation.run(n, export_dir=exchange, **export_kwargs)
                 for n in names], lanes)
            failed = [r for exported in exports for r in exported if r.status != "passed"]
            if not failed:
                keep_exports(names, exchange)
        order = sorted(names, key=lambda n: -EXPECTED_SECONDS.get(n, 0))
        ran = dict(zip(order, parallel(
            [lambda n=n: isolation.run(n, **clause_kwargs) for n in order], lanes), strict=True))
    return failed + [r for name in names for r in ran[name]]


def _split(clauses, layers) -> tuple[list[str], list[str]]:
    """The wanted clause IDs: those that are not portability clauses, and those that are."""
    ids = [clause.id for spec, clause, _ in work_items(None)
           if wanted(spec, clause, clauses, layers)]
    portable = {clause.id for spec, clause, _ in work_items(None) if clause.family == "portable"}
    return [i for i in ids if i not in portable], [i for i in ids if i in portable]


def portable_wanted(clauses=None, layers=None) -> bool:
    """Whether the selection asks for a portability clause."""
    return bool(_split(clauses, layers)[1])


def needs_builtin_exports(clauses=None, layers=None, tasks=None, env=None) -> bool:
    """Whether ``run_port`` reads the built-ins' exports: a portability clause is wanted, no
    exchange folder is given and ``tasks`` does not pin the run to some clauses."""
    return portable_wanted(clauses, layers) and tasks is None and not (env or {}).get(EXCHANGE)


class EarlyExports:
    """``builtin_exports`` on a thread of its own, started before ``verify`` preloads its
    ports: the built-ins do not depend on a port, and waiting for the preload (an import of
    the port's framework, 2 s on 2 cores) put that much onto the critical path of a cold
    ``verify``. The results are kept and reported by ``result``, so nothing of the exports is
    printed when the preload stops the run; ``cancel`` then kills the export's worker."""

    def __init__(self, timeout: float = isolation.DEFAULT_TIMEOUT):
        self._timeout, self._stop = timeout, threading.Event()
        self._results: list | None = []
        self._value = self._error = None
        self._layers, self._known = set(), threading.Event()  # set by want()
        self._thread = threading.Thread(target=self._run, name="builtin-exports", daemon=True)
        self._thread.start()

    def _run(self):
        try:
            self._value = builtin_exports(timeout=self._timeout, on_result=self._results.append,
                                          stop=self._stop, layers=self._wanted)
        except BaseException as exc:  # noqa: BLE001 - raised again by result()
            self._error = exc

    def want(self, layers) -> None:
        """The layers the ports have (``verify.preload``): a layer none of them has is not
        exported. The first layer (FeatureMixing, which the ports of a TSMixer block and of
        KMR's layers all have) starts at once, its exports cached for later runs whatever the
        answer; each later layer waits for it (the FeatureMixing exports take some 7 s from a
        cold cache, the preload about 2)."""
        self._layers = set(layers)
        self._known.set()

    def _wanted(self, layer: str) -> bool:
        if layer == next(iter(LAYERS)) and not self._known.is_set():
            return True
        self._known.wait()
        return layer in self._layers

    def result(self, on_result=None):
        """``builtin_exports``'s (folders, failed exports), once the thread is done; the
        export results go to ``on_result`` on the first call only (several targets share
        one set of exports)."""
        self._thread.join()
        if self._error is not None:
            raise self._error
        results, self._results = self._results or [], None
        for result in results if on_result else ():
            on_result(result)
        return self._value

    def cancel(self) -> None:
        """Stop the exports: the worker running one is killed, none is started after."""
        self._stop.set()
        self._known.set()
        self._thread.join()


def run_port(target: str, *, clauses=None, layers=None, tasks=None, env=None, exports=None,
             export_layers=None, **kwargs) -> list:
    """``isolation.run`` for one ``verify`` target, with the built-ins' exports of
    ``export_layers`` (default: every layer) made on the other lane (or by ``exports``, an
    ``EarlyExports``) or taken from the cache (module docstring). Falls back to one plain run
    when the portability clauses are not wanted, an exchange folder is given, or ``tasks``
    pins the run to some clauses."""
    others, readers = _split(clauses, layers)
    if not needs_builtin_exports(clauses, layers, tasks, env):
        return isolation.run(target, clauses=clauses, layers=layers, tasks=tasks, env=env,
                             **kwargs)
    timeout, on_result = kwargs.get("timeout", isolation.DEFAULT_TIMEOUT), kwargs.get("on_result")
    on_export = serialised(on_result)
    kwargs = _serialise(kwargs)
    own_kwargs = {k: v for k, v in kwargs.items() if k != "on_plan"}
    with isolation.warm_workers(), tempfile.TemporaryDirectory(prefix="portspec-exchange-") as tmp:

        def port_lane():
            exported = isolation.run(target, layers=layers, export_dir=tmp, env=env,
                                     **{**own_kwargs, "on_result": on_export})
            failed = [r for r in exported if r.status != "passed"]
            if not others:
                return failed
            return failed + isolation.run(target, clauses=others, env=env, **kwargs)

        def builtin_lane():
            if exports is not None:
                return exports.result(on_export)
            return builtin_exports(timeout=timeout, on_result=on_export,
                                   layers=None if export_layers is None
                                   else lambda layer: layer in export_layers)

        (results, (folders, failed_builtins)) = parallel([port_lane, builtin_lane], jobs())
        for path in (p for folder in folders for p in Path(folder).glob("*.safetensors")):
            link = Path(tmp) / path.name
            if not link.exists():  # a built-in verified as the port: its own export stands
                os.symlink(path, link)
        # the port's other clauses' job ran the probes of their layers already
        probed = {r.clause[len(PROBE):] for r in results if r.clause.startswith(PROBE)}
        results += isolation.run(target, clauses=readers, env={**(env or {}), EXCHANGE: tmp},
                                 probed=sorted(probed), **kwargs)
    return failed_builtins + results


def builtin_exports(*, timeout=isolation.DEFAULT_TIMEOUT, on_result=None, stop=None,
                    layers=None):
    """The folders holding every built-in's portable-weights exports (those importable here,
    Keras on this process's backend), one per layer, and the failed exports. Made once per
    layer, portspec source, framework versions and Keras backend, under the cache's
    ``exchange/``; a layer with a failed export keeps its folder out of the cache.
    ``layers(name)`` says whether a layer is wanted (default: every layer), asked in
    ``LAYERS``' order just before that layer; ``stop`` (a ``threading.Event``) set ends the
    export running (its worker is killed) and starts no other."""
    env = export_env()
    root = _exports_root(env)
    folders, failed = [], []
    with _EXPORTING:  # verify's targets, side by side, make them once
        for layer in LAYERS:
            if (stop is not None and stop.is_set()) or (layers and not layers(layer)):
                continue
            final = root / layer
            if (final / "COMPLETE").exists():
                folders.append(final)
                continue
            folder, bad = _make_exports(final, env, timeout, on_result, stop, layer)
            folders.append(folder)
            failed += bad
    return folders, failed


_EXPORTING = threading.Lock()


def cached_exports() -> list[str]:
    """The cache's folders of the built-ins' exports for this environment (``export_env``),
    one per layer whose folder is complete."""
    root = _exports_root(export_env())
    return [str(root / layer) for layer in LAYERS if (root / layer / "COMPLETE").exists()]


def _make_exports(final: Path, env: dict, timeout, on_result, stop, layer: str):
    final.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=f"{final.name}.", dir=final.parent))
    failed = []
    for name in registry.builtin_names():  # one environment: one warm worker for all
        if stop is not None and stop.is_set():
            break
        exported = isolation.run(name, export_dir=str(stage), timeout=timeout, layers=[layer],
                                 on_result=on_result, env=env, stop=stop)
        failed += [r for r in exported if r.status != "passed"]
    if stop is not None and stop.is_set():  # stopped: nothing of it is kept
        shutil.rmtree(stage, ignore_errors=True)
        return stage, failed
    if failed:
        return stage, failed
    _complete(stage, final)
    return final, []


def export_env() -> dict:
    """The environment of the built-in exports: Keras on the user's KERAS_BACKEND where set,
    else on TensorFlow, JAX or PyTorch, the first installed. Keras writes one weights format
    on every backend, so the backend decides whose arithmetic wrote the file, not what a
    reader must accept (the matrix crosses all three); TensorFlow first because its export
    costs least (3.7 s of CPU from a cold cache, against 5.6 on PyTorch and 7.4 on JAX, whose
    programs compile first). Naming it, instead of leaving it to Keras's own configuration,
    lets ``portspec matrix`` fill the same cache entry (``keep_exports``)."""
    if os.environ.get("KERAS_BACKEND"):
        return {"KERAS_BACKEND": os.environ["KERAS_BACKEND"]}
    for backend in ("tensorflow", "jax", "torch"):
        if importlib.util.find_spec(backend):
            return {"KERAS_BACKEND": backend}
    return {}


def keep_exports(names, exchange: str) -> None:
    """After a matrix whose exports all passed: the files ``builtin_exports`` would write,
    copied from the matrix's exchange folder into the cache, so that the first ``verify``
    after the quick start's matrix reads them instead of exporting again (the same
    ``export`` of the same built-ins, seeds and environment: the same files). Does nothing
    where the matrix did not run each of those built-ins or the entry exists."""
    env = export_env()
    backend = env.get("KERAS_BACKEND")
    wanted = {f"keras-{backend}" if name == "keras" else name
              for name in registry.builtin_names() if name != "keras" or backend}
    if not wanted <= set(names):
        return
    root = _exports_root(env)
    for layer in LAYERS:
        final = root / layer
        files = [p for p in Path(exchange).glob(f"*.{layer}.*.safetensors")
                 if p.name.split(".")[0] in wanted]
        if (final / "COMPLETE").exists() or {p.name.split(".")[0] for p in files} != wanted:
            continue
        final.parent.mkdir(parents=True, exist_ok=True)
        stage = Path(tempfile.mkdtemp(prefix=f"{final.name}.", dir=final.parent))
        for path in files:
            shutil.copyfile(path, stage / path.name)
        _complete(stage, final)


def _exports_root(env: dict) -> Path:
    """``exchange/<key>``, whose ``<layer>`` folders hold one layer's exports each, complete
    or absent (the key hashes every portspec source: computed once per call site)."""
    key = cache.source_key(f"KERAS_BACKEND={env.get('KERAS_BACKEND', '')}")
    return cache.cache_dir() / "exchange" / key


def _exports_entry(env: dict, layer: str) -> Path:
    """``exchange/<key>/<layer>``: one layer's exports, complete or absent."""
    return _exports_root(env) / layer


def _complete(stage: Path, final: Path) -> None:
    (stage / "COMPLETE").write_text("")
    try:
        os.rename(stage, final)
    except OSError:  # another run filled the same entry first: same key, same files
        shutil.rmtree(stage, ignore_errors=True)


def _serialise(kwargs: dict) -> dict:
    return {k: serialised(v) if k.startswith("on_") else v for k, v in kwargs.items()}
