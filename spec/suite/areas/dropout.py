"""Dropout: both sites, inverted scaling, off in inference, rate 1.

The probe makes every dropout decision visible in the output. With gamma = 0 and beta = 1
BatchNorm outputs 1; with the first Dense's kernel 0 and bias 1 every hidden unit is 1; with
the second Dense's kernel the identity on the first N hidden units and bias 1, channel c of the
branch is m2 / (1-p) * (m1 / (1-p) + 1), where m1 and m2 are the keep decisions of site 1
(hidden unit c) and site 2 (output c). The branch therefore takes one of three values:
0 (site 2 dropped), 1/(1-p) (site 1 dropped) and (1/(1-p) + 1)/(1-p) (both kept).
"""

from __future__ import annotations

import numpy as np

from portspec.clauses import ClauseFailure
from portspec.layers import Case
from portspec.suite.checks import check
from portspec.tolerances import FORWARD

P = 0.3
# 64 x 8 x 16 = 8192 site-2 decisions: the binomial sd of a rate is 0.005; tested at 6 sd.
CASE = Case(
    {"n_series": 16, "input_size": 8, "dropout": P, "ff_dim": 32}, ((64, 8, 16),), "dropout probe"
)


def _probe_weights(config):
    n, length, h = config["n_series"], config["input_size"], config["ff_dim"]
    k2 = np.zeros((h, n))
    k2[np.arange(n), np.arange(n)] = 1.0
    return {
        "norm.gamma": np.zeros(length * n),
        "norm.beta": np.ones(length * n),
        "norm.moving_mean": np.zeros(length * n),
        "norm.moving_variance": np.ones(length * n),
        "dense1.kernel": np.zeros((n, h)),
        "dense1.bias": np.ones(h),
        "dense2.kernel": k2,
        "dense2.bias": np.ones(n),
    }


def _branch(handle, x, training):
    return np.asarray(handle.forward(x, training=training), dtype=np.float64) - x


def _rate_ok(count, n, p):
    return abs(count / n - p) <= 6 * np.sqrt(p * (1 - p) / n)


@check("dropout-sites")
def dropout_sites(ctx):
    config = CASE.config
    handle = ctx.build(CASE, seed=3, dtype="float64")
    handle.set_weights(_probe_weights(config))
    x = np.zeros(CASE.input_shapes[0])
    branch = _branch(handle, x, True)
    keep = 1.0 / (1.0 - P)
    levels = {"site 2 dropped": 0.0, "site 1 dropped": keep, "both kept": (keep + 1) * keep}
    labels = np.full(branch.shape, "", dtype=object)
    for name, value in levels.items():
        labels[np.isclose(branch, value, rtol=1e-6, atol=1e-9)] = name
    stray = labels == ""
    if stray.any():
        seen = np.unique(np.round(branch[stray], 4))[:6]
        raise ClauseFailure(
            f"branch values {seen.tolist()} are none of {sorted(set(levels.values()))}",
            diagnosis=_scaling_diagnosis(branch),
        )
    n = branch.size
    dropped2 = int((labels == "site 2 dropped").sum())
    kept2 = n - dropped2
    dropped1 = int((labels == "site 1 dropped").sum())
    problems = []
    if not _rate_ok(dropped2, n, P):
        problems.append(f"site 2 (after the second Dense) drops {dropped2 / n:.3f}, p = {P}")
    if not _rate_ok(dropped1, kept2, P):
        problems.append(f"site 1 (after the ReLU) drops {dropped1 / kept2:.3f}, p = {P}")
    if problems:
        raise ClauseFailure(
            "; ".join(problems), diagnosis=_rate_diagnosis(dropped2 / n, dropped1 / kept2)
        )
    if np.array_equal(branch, _branch(handle, x, True)):
        raise ClauseFailure(
            "two training calls drew the same dropout masks",
            diagnosis="the dropout RNG key/seed is reused instead of advanced",
        )


def _scaling_diagnosis(branch):
    values = np.unique(branch)
    keep = 1.0 / (1.0 - P)

    def only(*allowed):
        return all(np.isclose(v, allowed, rtol=1e-6, atol=1e-9).any() for v in values)

    if only(0.0, 1.0, 2.0):
        return "kept values are not scaled by 1/(1-p): dropout is not inverted"
    if only(0.0, 2 * keep):
        return "nothing is dropped after the ReLU: the first dropout site is missing"
    if only(1.0, keep + 1):
        return "nothing is dropped after the second Dense: the second dropout site is missing"
    return None


def _rate_diagnosis(rate2, rate1):
    if abs(rate2 - (1 - P)) < 0.05 or abs(rate1 - (1 - P)) < 0.05:
        return f"the drop fraction is near 1-p = {1 - P}: the rate is used as a keep probability"
    if rate1 < 0.05 or rate2 < 0.05:
        return "one of the two dropout sites drops nothing: a dropout layer is missing"
    return None


@check("dropout-inference")
def dropout_inference(ctx):
    rng = np.random.default_rng(12)
    config = {**CASE.config, "dropout": 0.5}
    handle = ctx.build(CASE, dtype="float64", config=config)
    weights = ctx.spec.random_weights(config, CASE.input_shapes, rng)
    handle.set_weights(weights)
    x = ctx.spec.make_inputs(CASE, rng)
    first = handle.forward(x, training=False)
    if not np.array_equal(first, handle.forward(x, training=False)):
        raise ClauseFailure(
            "inference with dropout 0.5 is not deterministic",
            diagnosis="dropout is active in inference",
        )
    expected, _ = ctx.spec.forward(config, weights, x, training=False)
    ctx.expect_close(
        "inference with dropout 0.5",
        first,
        expected,
        FORWARD["float64"],
        diagnosis="dropout is active in inference",
    )


@check("dropout-one")
def dropout_one(ctx):
    rng = np.random.default_rng(13)
    config = {**CASE.config, "dropout": 1.0}
    handle = ctx.build(CASE, dtype="float64", config=config)
    handle.set_weights(ctx.spec.random_weights(config, CASE.input_shapes, rng))
    x = ctx.spec.make_inputs(CASE, rng)
    out = handle.forward(x, training=True)
    if not np.array_equal(out, x):
        raise ClauseFailure(
            f"dropout 1.0 in training: output differs from the input by up to "
            f"{np.max(np.abs(np.asarray(out, np.float64) - x)):.3g}"
        )
    gx, gw = handle.grad(x, np.ones_like(x), training=True)
    bad = [k for k, v in gw.items() if not np.all(np.isfinite(v))]
    if not np.all(np.isfinite(gx)):
        bad.append("input")
    if bad:
        raise ClauseFailure(
            f"dropout 1.0: non-finite gradients for {bad}",
            diagnosis="dropout divides by the keep probability 1 - p = 0",
        )
