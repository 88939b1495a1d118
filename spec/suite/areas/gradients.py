"""Gradients against central differences of the implementation's own float64 forward.

Along two random unit directions v per tensor, <grad, v> must equal
(f(w + h v) - f(w - h v)) / 2h with f = sum(output * cotangent); tolerances in spec.tolerances.
"""

from __future__ import annotations

import numpy as np

from spec.clauses import ClauseFailure
from spec.suite.checks import check
from spec.tolerances import FD_STEP, GRADIENT

DIRECTIONS = 2


def _objective(handle, weights, x, cot, training):
    handle.set_weights(weights)  # also restores moving statistics a training call moved
    out = np.asarray(handle.forward(x, training=training), dtype=np.float64)
    return float(np.sum(out * cot))


def _unit(rng, shape):
    v = rng.standard_normal(shape)
    return v / np.linalg.norm(v)


@check("gradients")
def gradients(ctx):
    rng = np.random.default_rng(14)
    modes = (False, True) if ctx.spec.clauses_of("training") else (False,)
    for case in ctx.spec.cases():
        config = {**case.config, "dropout": 0.0} if "dropout" in case.config else case.config
        trainable = [
            w.name for w in ctx.spec.weight_table(config, case.input_shapes) if w.trainable
        ]
        for training in modes:
            handle = ctx.build(case, dtype="float64", config=config)
            weights = ctx.spec.random_weights(config, case.input_shapes, rng)
            x = ctx.inputs(case, rng, "float64")
            out_shape = case.input_shapes[0]
            cot = rng.standard_normal(out_shape)
            handle.set_weights(weights)
            gx, gw = handle.grad(x, cot, training=training)
            missing = sorted(set(trainable) - set(gw))
            if missing:
                raise ClauseFailure(f"no gradient returned for trainable {missing}")
            problems = []
            for name in trainable:
                for _ in range(DIRECTIONS):
                    v = _unit(rng, weights[name].shape)
                    plus = _objective(
                        handle, {**weights, name: weights[name] + FD_STEP * v}, x, cot, training
                    )
                    minus = _objective(
                        handle, {**weights, name: weights[name] - FD_STEP * v}, x, cot, training
                    )
                    problems += _compare(
                        name, np.sum(np.asarray(gw[name]) * v), (plus - minus) / (2 * FD_STEP)
                    )
            xs = x if isinstance(x, list) else [x]
            gxs = gx if isinstance(gx, list) else [gx]
            for i, (xi, gi) in enumerate(zip(xs, gxs, strict=True)):
                v = _unit(rng, xi.shape)
                plus = _objective(handle, weights, _shifted(x, i, FD_STEP * v), cot, training)
                minus = _objective(handle, weights, _shifted(x, i, -FD_STEP * v), cot, training)
                problems += _compare(
                    f"input {i}", np.sum(np.asarray(gi) * v), (plus - minus) / (2 * FD_STEP)
                )
            if problems:
                raise ClauseFailure(
                    f"{case.label} training={training}: " + "; ".join(problems[:4]),
                    diagnosis=_diagnosis(problems, training),
                )


def _shifted(x, i, delta):
    """``x`` (an array or a list of arrays) with ``delta`` added to input ``i``."""
    if not isinstance(x, list):
        return x + delta
    return [xj + delta if j == i else xj for j, xj in enumerate(x)]


def _compare(name, analytic, numeric):
    if abs(analytic - numeric) <= GRADIENT * (1 + abs(numeric)):
        return []
    return [f"d/d{name}: autodiff {analytic:.8g}, central difference {numeric:.8g}"]


def _diagnosis(problems, training):
    if training and all("norm." in p or "input" in p for p in problems):
        return (
            "only the input and BatchNorm gradients are off in training: the batch "
            "statistics are treated as constants (stop_gradient/detach)"
        )
    return None
