"""Golden vectors: stored oracle outputs a port can be checked against without the oracle."""

from __future__ import annotations

from functools import partial

import numpy as np

from portspec import diagnose, profiles
from portspec import golden as vectors
from portspec.clauses import ClauseFailure
from portspec.layers import Case
from portspec.suite.checks import cast, check
from portspec.tolerances import FORWARD


@check("vectors")
def golden_vectors(ctx):
    files = vectors.files_for(ctx.spec.name)
    if not files:
        raise ClauseFailure(f"no golden vectors for {ctx.spec.name} in {vectors.DIRECTORY}")
    tol = FORWARD["float32"]
    for path in files:
        v = vectors.read(path)
        case = Case(v.config, v.input_shapes, path.name)
        for training, expected in v.expected.items():
            handle = ctx.build(case)
            handle.set_weights(cast(v.weights, "float32"))
            x = cast(v.inputs, "float32")
            out = handle.forward(x, training=training)
            ctx.expect_close(
                f"{path.name} training={training}", out, expected, tol,
                diagnosis=lambda actual, _, training=training, x=x, v=v: diagnose.explain_output(
                    ctx.spec, v.config, cast(v.weights, "float32"), cast(x, "float64"), actual,
                    training=training, tol=tol))
            state = handle.get_weights()
            for name, value in _state(ctx.spec, v, training).items():
                ctx.expect_close(f"{path.name}: {name} after a training call", state[name],
                                 value, tol, diagnosis=partial(_state_diagnosis, ctx.spec, v,
                                                               state, tol))


def _state(spec, v, training) -> dict:
    """The stored moving statistics after the call; under another profile than the one the
    vectors were made with (kmr), the oracle's from the stored inputs and weights instead."""
    stored = v.state.get(training, {})
    if not stored or profiles.active().name == profiles.DEFAULT:
        return stored
    _, new = spec.forward(v.config, v.weights, v.inputs, training=training)
    return {name: new[name] for name in stored}


def _state_diagnosis(spec, v, state, tol, *_):
    mean, var = "norm.moving_mean", "norm.moving_variance"
    flat = np.asarray(v.inputs, np.float64).reshape(len(v.inputs), -1)
    return diagnose.bn_update(spec.momentum, v.weights[mean], v.weights[var], flat,
                              state[mean], state[var], tol)
