"""One clause's leftovers never reach the next: process-wide framework state, per clause.

Clauses of one implementation run one after another in one worker process. A clause that fails
half-way through a framework call can leave that framework's process-wide state changed: a
Keras name scope entered and never left (Keras 3 keeps its stack in ``global_state``; every
variable created afterwards gets the scope in its path, so a correct port's weights no longer
match its weight map), a TensorFlow eager name scope, a Keras dtype policy. ``clause_state``
records that state before a clause and puts it back after it, whatever the clause did, so a
verdict depends on its own clause alone.

Only frameworks already imported are touched; nothing here imports one.
"""

from __future__ import annotations

import contextlib
import sys

# Keras 3 global_state attributes that scope later calls (not counters or caches).
KERAS_SCOPED = ("name_scope_stack", "dtype_policy", "stateless_scope", "symbolic_scope",
                "autocast_scope", "sharding_scope", "distribution")


def _keras_restore():
    if "keras" not in sys.modules:
        return None
    try:
        from keras.src.backend.common import global_state
    except ImportError:  # a Keras without that module keeps no such stack
        return None
    tracker = global_state.GLOBAL_STATE_TRACKER
    saved = {}
    for name in KERAS_SCOPED:
        value = getattr(tracker, name, None)
        saved[name] = list(value) if isinstance(value, list) else value

    def restore():
        for name, value in saved.items():
            if value is None:
                if hasattr(tracker, name):
                    delattr(tracker, name)
            else:
                setattr(tracker, name, list(value) if isinstance(value, list) else value)

    return restore


def _tensorflow_restore():
    if "tensorflow" not in sys.modules:
        return None
    try:
        from tensorflow.python.eager import context
    except ImportError:
        return None
    ctx = context.context()
    scope = ctx.scope_name

    def restore():
        ctx.scope_name = scope

    return restore


@contextlib.contextmanager
def clause_state():
    """Run a clause; afterwards restore the framework state it may have left changed."""
    restores = [r for r in (_keras_restore(), _tensorflow_restore()) if r is not None]
    try:
        yield
    finally:
        for restore in restores:
            restore()
