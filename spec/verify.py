"""Verify implementations clause by clause: a port's adapter file, or every built-in (the matrix).

``verify`` runs each target in its own worker (``portspec.isolation``), so a port that hangs or
crashes fails the clause it was in and nothing else. ``matrix`` runs every built-in that can
run here, Keras once per importable backend, after each has exported portable weights into one
exchange folder: the portability clause of every reader then sees every writer.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import os
import tempfile

from portspec import isolation, registry, rootcause, schedule
from portspec.adapter import read_weights
from portspec.isolation import DEFAULT_TIMEOUT
from portspec.layers import LAYERS
from portspec.suite.areas.portability import EXCHANGE
from portspec.suite.runner import Result, layer_selected

KERAS_BACKENDS = {"jax": "jax", "torch": "torch", "tensorflow": "tensorflow"}


def check_target(target: str) -> None:
    """Refuse, with one line and before anything runs, a target that cannot be an
    implementation: an unknown built-in name, a missing, empty or uncompilable adapter file, a
    directory (registry.LoadError), or a weights file (ValueError; a pickle is never unpickled)."""
    if not (registry.is_file(target) or os.path.exists(target)):
        registry.check_name(target)
        return
    if os.path.isfile(target) and not target.endswith(".py"):
        try:
            read_weights(target)  # raises the clear message for a pickle
        except ValueError:
            raise
        except Exception:  # noqa: BLE001 - not safetensors either: judged as Python below
            pass
        else:
            raise ValueError(
                f"{target} is a weights file, not an implementation: pass an adapter file "
                "(PORT.py) or a built-in name"
            )
    registry.check_file(target)


def preload(targets, timeout: float = DEFAULT_TIMEOUT, lanes: int = 1) -> set[str]:
    """Load every adapter file among ``targets`` in a worker that runs nothing (on ``lanes``
    at once), so that a port which cannot be imported, or hangs or crashes while it is, stops
    the run with its one line (registry.LoadError; the first such target in the order given)
    before any of its exports or clauses starts. (The built-ins' exports, which need no port,
    start alongside: ``schedule.EarlyExports``, stopped then.) Built-in names were checked by
    check_target. Returns the layers the targets' adapters have (a built-in name: every
    layer)."""
    files = [target for target in targets if registry.is_file(target)]
    layers = set(LAYERS) if len(files) < len(targets) else set()
    loads = [functools.partial(isolation.run, target, tasks=[], timeout=timeout, required=True,
                               on_layers=layers.update)
             for target in files]
    for target, loaded in zip(files, schedule.parallel(loads, lanes), strict=True):
        for r in loaded:
            if r.status == "failed":  # the worker hung or died while importing the port
                raise registry.LoadError(f"{target}: {r.message}")
    return layers


def check_exchange(directory: str) -> None:
    """Every file in a portable-weights folder must be safetensors; a pickle is refused."""
    for name in sorted(os.listdir(directory)):
        path = os.path.join(directory, name)
        if os.path.isfile(path):
            read_weights(path)


def verify(
    targets,
    clauses=None,
    layers=None,
    tasks=None,
    timeout: float = DEFAULT_TIMEOUT,
    isolate: bool = True,
    on_result=None,
    exchange: str | None = None,
    on_plan=None,
) -> list[Result]:
    """Run the clauses (IDs or globs ``clauses``, layer names ``layers``) against each target.

    Every target is checked, and each adapter file loaded, before anything runs: one that
    cannot be used raises registry.LoadError (or ValueError for a weights file).

    ``tasks``, when given, restricts the run to these (implementation name, clause ID) pairs.
    ``exchange`` is a folder of portable weights (as ``matrix`` writes) for the portability
    clause to read. ``isolate=False`` runs in this process: no timeout, no crash protection.
    """
    for target in targets:
        check_target(target)
    if exchange:
        check_exchange(exchange)
    if not isolate:  # every target loaded before any clause runs
        loaded = {target: registry.load(target, required=True) for target in targets}
    env = {EXCHANGE: os.path.abspath(exchange)} if exchange else None
    results: list[Result] = []
    if not isolate:
        for target in targets:
            results += _in_process(loaded[target], clauses, layers, tasks, on_result, env, on_plan)
        return rootcause.attach(results)  # the root-cause stage, after every clause
    # Several targets run side by side on schedule.jobs() lanes (one target: on this thread),
    # each in its own worker; the callbacks are called from one lane at a time, and the
    # results come in the targets' order.
    kwargs = dict(clauses=clauses, layers=layers, tasks=tasks, timeout=timeout, env=env,
                  required=True, on_result=schedule.serialised(on_result),
                  on_plan=schedule.serialised(on_plan))
    lanes = schedule.jobs()
    # warm workers: the worker that preloaded a port runs its clauses
    with isolation.warm_workers():
        early = None  # the built-ins' exports, alongside the preload where there are 2 lanes
        if lanes > 1 and schedule.needs_builtin_exports(clauses, layers, tasks, env):
            early = schedule.EarlyExports(timeout)
        try:
            found = preload(targets, timeout, lanes)
        except BaseException:
            if early is not None:
                early.cancel()
            raise
        # the built-ins' exports of the layers some port has (and the selection asks for)
        export_layers = {name for name, spec in LAYERS.items()
                         if name in found and layer_selected(spec, layers)}
        if early is not None:
            early.want(export_layers)
        runs = [functools.partial(schedule.run_port, target, exports=early,
                                  export_layers=export_layers, **kwargs)
                for target in targets]
        for part in schedule.parallel(runs, lanes):
            results += part
    # the root-cause stage, after every clause; the portability clauses' re-runs read the
    # built-ins' exports the ports read (a user's exchange folder: exported live, as before)
    return rootcause.attach(results, exchange=None if exchange else schedule.cached_exports())


def _in_process(adapters, clauses, layers, tasks, on_result, env, on_plan) -> list[Result]:
    results = []
    plan = [(a, isolation.items_for(a, clauses, layers, tasks)) for a in adapters]
    if on_plan:
        on_plan([[a.name, task] for a, items in plan for task, _ in items])
    with _environ(env or {}):
        for _, items in plan:
            for _, run in items:
                result = run()
                results.append(result)
                if on_result:
                    on_result(result)
    return results


@contextlib.contextmanager
def _environ(values: dict):
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def available_builtins() -> list[str]:
    """Built-in names to run here: Keras once per importable backend, the others as named."""
    names = []
    for name in registry.builtin_names():
        if name != "keras":
            names.append(name)
        elif importlib.util.find_spec("keras"):
            names += [
                f"keras-{backend}"
                for backend, module in KERAS_BACKENDS.items()
                if importlib.util.find_spec(module)
            ]
    return names


def matrix(
    names=None,
    clauses=None,
    layers=None,
    timeout: float = DEFAULT_TIMEOUT,
    on_result=None,
    on_export=None,
    on_plan=None,
) -> list[Result]:
    """Every available built-in (or ``names``: built-ins or adapter files), each in its own
    worker, after all have exported portable weights into one exchange folder.

    Failed exports are returned as results of the pseudo-clause ``export:<Layer>``.
    """
    required = bool(names)  # asked for by name: one that cannot load is an error, not skips
    names = list(names or available_builtins())
    for name in names:
        check_target(name)
    results: list[Result] = []
    exchange_dir = tempfile.TemporaryDirectory(prefix="portspec-exchange-")
    with isolation.warm_workers(), exchange_dir as exchange:
        preload(names, timeout)
        results += schedule.matrix_runs(
            names,
            exchange,
            portability=schedule.portable_wanted(clauses, layers),
            export_kwargs=dict(layers=layers, timeout=timeout, on_result=on_export,
                               required=required),
            clause_kwargs=dict(clauses=clauses, layers=layers, timeout=timeout,
                               on_result=on_result, required=required, on_plan=on_plan),
        )
        # the root-cause stage, after every clause, with the writers every name read
        return rootcause.attach(results, exchange=[exchange])
