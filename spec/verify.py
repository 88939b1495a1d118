"""Verify implementations clause by clause: a port's adapter file, or every built-in (the matrix).

``verify`` runs each target in its own worker (``portspec.isolation``), so a port that hangs or
crashes fails the clause it was in and nothing else. ``matrix`` runs every built-in that can
run here, Keras once per importable backend, after each has exported portable weights into one
exchange folder: the portability clause of every reader then sees every writer.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import tempfile

from portspec import isolation, registry, rootcause
from portspec.adapter import read_weights
from portspec.isolation import DEFAULT_TIMEOUT
from portspec.suite.areas.portability import EXCHANGE
from portspec.suite.checks import work_items
from portspec.suite.runner import Result, wanted

KERAS_BACKENDS = {"jax": "jax", "torch": "torch", "tensorflow": "tensorflow"}


def check_target(target: str) -> None:
    """Refuse a weights file given where an adapter is expected, and never unpickle one."""
    if target.endswith(".py") or not os.path.isfile(target):
        return
    read_weights(target)  # raises the clear message for a pickle
    raise ValueError(
        f"{target} is a weights file, not an implementation: pass an adapter file (PORT.py) "
        "or a built-in name"
    )


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
) -> list[Result]:
    """Run the clauses (ID prefixes ``clauses``, layer names ``layers``) against each target.

    ``tasks``, when given, restricts the run to these (implementation name, clause ID) pairs.
    ``exchange`` is a folder of portable weights (as ``matrix`` writes) for the portability
    clause to read. ``isolate=False`` runs in this process: no timeout, no crash protection.
    """
    for target in targets:
        check_target(target)
    if exchange:
        check_exchange(exchange)
    env = {EXCHANGE: os.path.abspath(exchange)} if exchange else None
    results: list[Result] = []
    for target in targets:
        if isolate:
            results += isolation.run(
                target,
                clauses=clauses,
                layers=layers,
                tasks=tasks,
                timeout=timeout,
                on_result=on_result,
                env=env,
            )
        else:
            results += _in_process(target, clauses, layers, tasks, on_result, env)
    return rootcause.attach(results)  # the root-cause stage, after every clause


def _in_process(target, clauses, layers, tasks, on_result, env) -> list[Result]:
    results = []
    wanted_tasks = None if tasks is None else {tuple(t) for t in tasks}

    def emit(result):
        results.append(result)
        if on_result:
            on_result(result)

    with _environ(env or {}):
        for adapter in registry.load(target):
            if isinstance(adapter, registry.Unavailable):
                skips = isolation.unavailable_results(adapter.name, adapter.reason, clauses, layers)
                for r in skips:
                    if wanted_tasks is None or (r.impl, r.clause) in wanted_tasks:
                        emit(r)
                continue
            for _, run in isolation.items_for(adapter, clauses, layers, tasks):
                emit(run())
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
) -> list[Result]:
    """Every available built-in (or ``names``: built-ins or adapter files), each in its own
    worker, after all have exported portable weights into one exchange folder.

    Failed exports are returned as results of the pseudo-clause ``export:<Layer>``.
    """
    names = list(names or available_builtins())
    for name in names:
        check_target(name)
    results: list[Result] = []
    with tempfile.TemporaryDirectory(prefix="portspec-exchange-") as exchange:
        if _wants_portability(clauses, layers):
            for name in names:
                exported = isolation.run(
                    name, layers=layers, timeout=timeout, export_dir=exchange, on_result=on_export
                )
                results += [r for r in exported if r.status != "passed"]
        for name in names:
            results += isolation.run(
                name,
                clauses=clauses,
                layers=layers,
                timeout=timeout,
                on_result=on_result,
                env={EXCHANGE: exchange},
            )
    return rootcause.attach(results)  # the root-cause stage, after every clause


def _wants_portability(clauses, layers) -> bool:
    return any(
        clause.family == "portable" and wanted(spec, clause, clauses, layers)
        for spec, clause, _ in work_items(None)
    )
