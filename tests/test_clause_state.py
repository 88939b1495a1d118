"""One clause's failure never changes another's verdict: a clause that fails half-way through a
framework call and leaves a name scope open (as a failed TensorFlow compile did) is followed by
a correct port's clause with the verdict that clause gets alone."""

from __future__ import annotations

import contextlib

import pytest

from portspec import registry
from portspec.suite import runner
from portspec.suite.checks import work_items
from portspec.suite.runner import run_clause

# Keras's name scopes, on each backend (tests/conftest.py)
pytestmark = pytest.mark.home("keras-tensorflow", "keras-jax", "keras-torch")

ITEMS = {clause.id: (spec, clause, fn) for spec, clause, fn in work_items(None)}


def _keras():
    adapters = [a for a in registry.load("keras") if not isinstance(a, registry.Unavailable)]
    if not adapters:
        pytest.skip("Keras is not installed here")
    return adapters[0]


def _leaks_a_name_scope(ctx):
    import keras

    keras.name_scope("left_behind").__enter__()  # never left: the clause fails first
    try:
        import tensorflow as tf

        tf.name_scope("left_behind").__enter__()
    except ImportError:
        pass
    raise RuntimeError("compilation failed")


def _weights_after_a_leak(adapter):
    spec, clause, fn = ITEMS["FM-WEIGHTS"]
    leaked = run_clause(adapter, spec, clause, _leaks_a_name_scope)
    assert leaked.status == "failed"
    return run_clause(adapter, spec, clause, fn)


def test_a_clause_after_a_leaking_failure_gets_its_own_verdict():
    adapter = _keras()
    spec, clause, fn = ITEMS["FM-WEIGHTS"]
    alone = run_clause(adapter, spec, clause, fn)
    after = _weights_after_a_leak(adapter)
    assert alone.status == "passed"
    assert (after.status, after.message) == (alone.status, alone.message)


def test_without_the_guard_the_leak_fails_the_next_clause(monkeypatch):
    """The test above can fail: with state carried over, the correct port's weights carry the
    leaked scope in their paths and FM-WEIGHTS fails."""
    adapter = _keras()
    monkeypatch.setattr(runner, "clause_state", contextlib.nullcontext)
    try:
        after = _weights_after_a_leak(adapter)
    finally:
        from keras.src.backend.common import global_state

        global_state.set_global_attribute("name_scope_stack", [])
        with contextlib.suppress(ImportError):
            from tensorflow.python.eager import context

            context.context().scope_name = ""
    assert after.status == "failed"
