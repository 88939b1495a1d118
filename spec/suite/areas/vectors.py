"""Golden vectors: stored oracle outputs a port can be checked against without the oracle."""

from __future__ import annotations

from spec import golden as vectors
from spec.clauses import ClauseFailure
from spec.layers import Case
from spec.suite.checks import cast, check
from spec.tolerances import FORWARD


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
            out = handle.forward(cast(v.inputs, "float32"), training=training)
            ctx.expect_close(f"{path.name} training={training}", out, expected, tol)
            for name, value in v.state.get(training, {}).items():
                got = handle.get_weights()[name]
                ctx.expect_close(f"{path.name}: {name} after a training call", got, value, tol)
