"""BatchNorm state: the moving-statistics update, its momentum sense, epsilon, batch of one."""

from __future__ import annotations

from functools import partial

import numpy as np

from portspec import diagnose, profiles
from portspec.adapter import set_held_weights
from portspec.clauses import ClauseFailure
from portspec.layers import Case
from portspec.suite.areas.numerics import float64_failure
from portspec.suite.checks import check
from portspec.tolerances import FORWARD, close

MEAN, VAR, GAMMA = "norm.moving_mean", "norm.moving_variance", "norm.gamma"


def _primed(ctx, case, rng, **overrides):
    config = {**case.config, "dropout": 0.0}
    handle = ctx.build(case, dtype="float64", config=config)
    weights = ctx.random_weights(config, case.input_shapes, rng)
    weights.update(overrides)
    handle.set_weights(weights)
    return handle, config, weights


@check("bn-update")
def bn_update(ctx):
    rng = np.random.default_rng(8)
    for case in ctx.spec.cases():
        handle, config, weights = _primed(ctx, case, rng)
        x = ctx.inputs(case, rng, "float64")
        handle.forward(x, training=True)
        got = handle.get_weights()
        _, expected = ctx.spec.forward(config, weights, x, training=True)
        tol = FORWARD["float64"]
        explain = partial(
            diagnose.bn_update,
            ctx.spec.momentum,
            weights[MEAN],
            weights[VAR],
            x.reshape(x.shape[0], -1),
            got[MEAN],
            got[VAR],
            tol,
        )
        flat = x.reshape(x.shape[0], -1)
        other = profiles.better_fit(weights[MEAN], flat.mean(axis=0), got[MEAN])
        try:
            for name in (MEAN, VAR):
                ctx.expect_close(
                    f"{case.label}: {name} after one training call",
                    got[name],
                    expected[name],
                    tol,
                    diagnosis=lambda *_, f=explain: f(),
                )
        except ClauseFailure as failure:
            design = _seeded(ctx, case, handle, config, weights, got, flat, tol)
            if design is not None:
                raise ClauseFailure(str(failure), diagnosis=design.format(
                    keep=f"{ctx.spec.momentum:g}", new=f"{1 - ctx.spec.momentum:g}"),
                    details=failure.details,
                    checked=True) from None
            if (failure.diagnosis or "").startswith(diagnose.MOMENTUM_ROUNDED.split("(")[0]):
                raise ClauseFailure(str(failure), diagnosis=failure.diagnosis,
                                    details=failure.details, checked=True) from None
            if other is not None:
                # Judged by the wrong profile, not a porting error: say which one fits.
                failure.details["better_profile"] = other.name
                # The other reading stays: for a port of this profile's layer it is the mistake.
                failure.diagnosis = "; ".join(filter(None, [
                    f"profile {other.name} fits better: its momentum ({other.source}) is what "
                    f"the update kept of the old moving mean; a port of that block is judged "
                    f"with --profile {other.name}",
                    failure.diagnosis,
                ]))
            raise
    _state_after_gradient(ctx)


SEEDED = (
    "the first training call copies the batch's mean and variance into the moving statistics "
    "(an initialisation from the first batch, on a flag or a counter such as "
    "num_batches_tracked == 0), where the spec's first call keeps {keep} of the initial "
    "moving mean 0 and variance 1, as every call does; from the second training call on, the "
    "port's update is the spec's"
)


CUMULATIVE = (
    "the moving statistics are a cumulative average of the training batches seen (PyTorch's "
    "BatchNorm with momentum=None): the n-th training call keeps (n-1)/n of the old value, 0 "
    "at the first call, 1/2 at the second, 2/3 at the third, where the spec keeps {keep} at "
    "every call; give the momentum a value: momentum={new} in PyTorch's sense (the new "
    "batch's share), {keep} in Keras's and Flax's (the old value's)"
)


def _seeded(ctx, case, handle, config, weights, got, flat, tol) -> str | None:
    """``SEEDED`` or ``CUMULATIVE``, else None: the first training call's moving statistics
    are the batch's own (its variance biased or unbiased), and from the state it left a
    second training call updates them as the spec does (``SEEDED``), or keeps 1/2 of the old
    value and a third 2/3 (``CUMULATIVE``: the share 1/n of the n-th batch)."""
    mean = flat.mean(axis=0)
    if not (np.shape(got[MEAN]) == mean.shape and close(got[MEAN], mean, tol) and any(
            close(got[VAR], flat.var(axis=0, ddof=d), tol) for d in (0, 1)
            if flat.shape[0] > d)):
        return None
    rng = np.random.default_rng(81)
    state = {**weights, MEAN: got[MEAN], VAR: got[VAR]}
    for n in (2, 3):
        x = ctx.inputs(case, rng, "float64")
        handle.forward(x, training=True)
        after = handle.get_weights()
        if n == 2:
            _, expected = ctx.spec.forward(config, state, x, training=True)
            if all(close(after[k], expected[k], tol) for k in (MEAN, VAR)):
                return SEEDED
        keep = (n - 1) / n
        if not diagnose.update_fits(state[MEAN], state[VAR], x.reshape(x.shape[0], -1),
                                    after[MEAN], after[VAR], keep, 1 - keep, tol):
            return None
        state = {**state, MEAN: after[MEAN], VAR: after[VAR]}
    return CUMULATIVE


TRACKED = (
    "the moving statistics are updated outside torch.no_grad() from batch statistics autograd "
    "records (a rebinding self.running_mean = (1 - m) * self.running_mean + m * mean, or an "
    "in-place update on a value that requires grad): each training step's graph stays in "
    "them and chains to the next, and an inference call with gradients on, or "
    "copy.deepcopy of the layer, then raises; update them under torch.no_grad() "
    "(running_mean.mul_(1 - m).add_(mean.detach(), alpha=m))"
)


# tensors the call keeps on the layer, none of them a moving statistic of the weight map
KEPT_GRAPH = (
    "the call keeps {paths} on the layer as a tensor of the training step's autograd graph (a "
    "value cached for inspection, self.x = tensor, without .detach()): the step's graph and "
    "its activations stay alive until the next call, and copy.deepcopy of the layer raises "
    "(only leaf tensors support it); keep a detached copy, or none"
)


UPDATED_TWICE = (
    "a training call that computes gradients updates the moving statistics twice: the backward "
    "pass runs the normalisation's forward again (activation checkpointing, "
    "torch.utils.checkpoint or jax.checkpoint/nnx.remat around the BatchNorm, recomputes it "
    "with its update); keep the BatchNorm outside the checkpointed part, or skip the update "
    "when recomputing"
)


def _state_after_gradient(ctx):
    """A training call that computes gradients moves the moving statistics as one training
    call does (or leaves them, where the framework's gradient call keeps state apart), and,
    on PyTorch, no state the port holds outside its trainable parameters then carries autograd
    history (``TorchPortHandle.tracked_state``; other handles hold values, not graph nodes)."""
    case = ctx.spec.cases()[0]
    rng = np.random.default_rng(18)
    handle, config, weights = _primed(ctx, case, rng)
    x = ctx.inputs(case, rng, "float64")
    handle.grad(x, np.ones_like(x), training=True)
    got = handle.get_weights()
    _, once = ctx.spec.forward(config, weights, x, training=True)
    tol = FORWARD["float64"]

    def near(a, b):
        return np.shape(a) == np.shape(b) and close(a, b, tol)

    if not all(near(got[k], weights[k]) or near(got[k], once[k]) for k in (MEAN, VAR)):
        _, twice = ctx.spec.forward(config, {**weights, **once}, x, training=True)
        again = all(near(got[k], twice[k]) for k in (MEAN, VAR))
        raise ClauseFailure(
            "after a training call that computes gradients the moving statistics are "
            + ("those of two training calls" if again else "neither those of one training "
               "call nor unchanged") + f" (moving mean off one call's by up to "
            f"{float(np.max(np.abs(np.ravel(got[MEAN]) - np.ravel(once[MEAN])))):.3g})",
            diagnosis=UPDATED_TWICE if again else None, checked=again)
    tracked = getattr(handle, "tracked_state", None)
    if tracked is None:
        return
    # a tensor that holds a trainable weight (one the port keeps outside nn.Parameter, which
    # the weight-table clauses find) requires grad as a weight should
    weights = {p for w in ctx.spec.weight_table(case.config, case.input_shapes) if w.trainable
               for p, _ in getattr(handle.held.get(w.name), "pieces", ())}
    # other tensors the call leaves on the layer (a value cached for inspection) count where
    # they are graph nodes: a leaf that requires grad (the call's input kept) holds no graph
    statistics = {p for k in (MEAN, VAR) for p, _ in getattr(handle.held.get(k), "pieces", ())}
    held = [path for path, node in tracked().items()
            if path not in weights and (node or path in statistics)]
    if held:
        kept = [path for path in held if path not in statistics]
        raise ClauseFailure(
            f"after a training call that computes gradients, {', '.join(held)} "
            + ("holds autograd history (requires_grad, grad_fn): it is a graph node"
               if len(held) == 1 else "hold autograd history (requires_grad, grad_fn): they "
               "are graph nodes") + ", not state",
            diagnosis=(TRACKED if len(kept) < len(held)
                       else KEPT_GRAPH.format(paths=", ".join(kept))), checked=True)



@check("bn-frozen")
def bn_frozen(ctx):
    rng = np.random.default_rng(9)
    case = ctx.spec.cases()[0]
    handle = ctx.build(case, dtype="float64", config={**case.config, "dropout": 0.0})
    # inference leaves the statistics as they are, whatever they are: held at another shape,
    # they keep the port's own (absent ones: reading them below does not apply)
    held = set_held_weights(handle, ctx.random_weights(case.config, case.input_shapes, rng))
    before = handle.get_weights()  # as stored: a float32 port rounds what was set
    x = ctx.inputs(case, rng, "float64")
    calls = {"an inference call": lambda: handle.forward(x, training=False),
             "an inference gradient call": lambda: handle.grad(x, np.ones_like(x),
                                                               training=False)}
    for what, call in calls.items():
        handle.set_weights(before)
        call()
        got = handle.get_weights()
        for name in (MEAN, VAR):
            if not np.array_equal(got[name], before[name]):
                # the spec's per-feature update: no hypothesis for statistics the port keeps
                updated = None if held.own else _training_update(before, got,
                                                                 x.reshape(x.shape[0], -1))
                raise ClauseFailure(
                    f"{name} changed in {what}",
                    diagnosis=updated or "the moving statistics update outside training",
                    checked=bool(updated),
                )


def _training_update(before, got, flat) -> str | None:
    """Is the change a moving update with the batch's statistics, as a training call makes
    (``m * old + (1 - m) * batch`` for one m in (0, 1), the variance biased or unbiased)?"""
    m = diagnose.fit_momentum(before[MEAN], flat.mean(axis=0), got[MEAN])
    if m is None or not 0.0 < m < 1.0:
        return None
    tol = FORWARD["float32"]  # the fit's own tolerance: a float32 port updates in float32
    if not _moved_by(before, got, m, m, flat, tol):
        return None
    return ("the moving statistics update outside training: an inference call updates them "
            "with the batch's mean and variance, as a training call does")


def _moved_by(before, after, m, v, rows, tol) -> bool:
    """Do the moving statistics ``after`` keep the shares ``m`` (the mean) and ``v`` (the
    variance) of their values ``before`` and take the rest from the batch ``rows`` (batch,
    features): its mean, and its variance biased or unbiased?"""
    n = rows.shape[0]
    return close(after[MEAN], m * before[MEAN] + (1 - m) * rows.mean(axis=0), tol) and any(
        close(after[VAR], v * before[VAR] + (1 - v) * rows.var(axis=0, ddof=d), tol)
        for d in (0, 1) if n > d)


@check("bn-batch1")
def bn_batch1(ctx):
    rng = np.random.default_rng(10)
    base = ctx.spec.cases()[0]
    case = Case(base.config, ((1, *base.input_shapes[0][1:]),), "batch 1")
    handle, config, weights = _primed(ctx, case, rng)
    x = ctx.inputs(case, rng, "float64")
    out = handle.forward(x, training=True)  # must not raise
    got = handle.get_weights()
    expected, state = ctx.spec.forward(config, weights, x, training=True)
    tol = FORWARD["float64"]
    try:
        if not _as_inference_at_its_mean(handle, weights, x, out, tol):
            ctx.expect_close("batch-1 training output", out, expected, tol)
        try:
            for name in (MEAN, VAR):
                ctx.expect_close(f"batch-1 {name}", got[name], state[name], tol)
        except ClauseFailure:
            # judged against the port's own update of a full batch first: the momentum is
            # FM-BN-UPDATE's
            if not _updates_as_any_batch(ctx, base, config, weights, x, got, tol):
                raise
    except ClauseFailure as failure:
        raise float64_failure(ctx, failure, handle, config, weights, x, training=True,
                              state=True) from None
    _finite_gradients(ctx, handle, weights, x, rng)


def _as_inference_at_its_mean(handle, weights, x, out, tol) -> bool:
    """Is the output of a training call on the batch of one ``x`` the port's own inference
    output with ``x`` as its moving mean? Both normalise to beta (x - mean is 0), so a port
    that passes computes the batch of one as the spec does up to the normalisation, whatever
    the rest of the layer does with beta: that is FM-INFERENCE's and -TRAINING's to judge.
    False where it does not, or cannot be asked (the oracle then judges the output)."""
    try:
        handle.set_weights({**weights, MEAN: np.ravel(x)})
        again = handle.forward(x, training=False)
    except Exception:  # noqa: BLE001 - a port that cannot be asked this is judged by the oracle
        return False
    return close(np.asarray(again, np.float64), np.asarray(out, np.float64), tol)


def _updates_as_any_batch(ctx, base, config, weights, x, got, tol) -> bool:
    """Does the batch of one ``x`` move the moving statistics as the port moves them for a
    batch of ``base``'s size? Each statistic keeps a share of its old value: the mean moves to
    m * old + (1 - m) * x and the variance to v * old (a batch of one's biased variance is 0),
    m and v fitted to the batch of one. The same shares must give a fresh layer's moving
    statistics after its first training call on a full batch, from the same weights (the
    variance biased or unbiased there: which one is FM-BN-UPDATE's to judge, as is whether m
    and v are the profile's momentum). So a flipped momentum fails FM-BN-UPDATE, not this
    clause, and an unbiased variance left unguarded at n = 1 (0 / 0) fails both. False where
    the port does not pass, or cannot be asked (the oracle then judges)."""
    flat = np.ravel(x)
    if not all(np.shape(got[k]) == np.shape(weights[k]) == flat.shape for k in (MEAN, VAR)):
        return False  # statistics held at another shape: no share to fit
    zero = np.zeros_like(flat)
    m = diagnose.fit_momentum(weights[MEAN], flat, got[MEAN])
    v = diagnose.fit_momentum(weights[VAR], zero, got[VAR])
    if m is None or v is None or not (close(got[MEAN], m * weights[MEAN] + (1 - m) * flat, tol)
                                      and close(got[VAR], v * weights[VAR], tol)):
        return False
    try:
        handle = ctx.build(base, dtype="float64", config=config)
        handle.set_weights(weights)
        full = ctx.inputs(base, np.random.default_rng(101), "float64")
        handle.forward(full, training=True)
        after = handle.get_weights()
    except Exception:  # noqa: BLE001 - a port that cannot be asked this is judged by the oracle
        return False
    return _moved_by(weights, after, m, v, full.reshape(full.shape[0], -1), tol)


def _epsilon_as_scale(handle, weights, x, out, epsilon, tol) -> bool:
    """Does the port's inference with moving variance 0 (``out``) equal its inference with
    moving variance 1 - epsilon and the scale divided by sqrt(epsilon)? It does where epsilon
    is added to the variance inside the square root, at the spec's value: both normalise to
    gamma (x - mean) / sqrt(epsilon), whatever the rest of the layer does with that. False where
    it does not, or cannot be asked (the oracle then judges; each later call sets its weights
    first, as ``_as_inference_at_its_mean``'s do)."""
    try:
        handle.set_weights({**weights, VAR: np.full_like(weights[VAR], 1.0 - epsilon),
                            GAMMA: np.asarray(weights[GAMMA]) / np.sqrt(epsilon)})
        again = handle.forward(x, training=False)
    except Exception:  # noqa: BLE001 - a port that cannot be asked this is judged by the oracle
        return False
    return close(np.asarray(again, np.float64), np.asarray(out, np.float64), tol)


# The spec's gradient at a batch of one is finite: x - mean is 0 and so is the batch
# variance's derivative, 2 (x - mean) / n, so 1 / sqrt(var + epsilon) multiplies zeros.
GRADIENT_AT_ZERO_VARIANCE = (
    "at a training batch of one (batch variance 0) the gradients are not finite where the "
    "output is: the normalisation differentiates a function whose derivative is infinite at "
    "variance 0 (a square root of the variance: the standard deviation, std ** 2 for the "
    "variance, sqrt(var) + epsilon), where the spec's 1 / sqrt(var + epsilon) is finite"
)


def _finite_gradients(ctx, handle, weights, x, rng):
    """The gradients of a training call on a batch of one are finite, as the spec's are."""
    handle.set_weights(weights)
    cot = rng.standard_normal(np.shape(x))
    try:
        gx, gw = handle.grad(x, cot, training=True)
    except Exception:  # noqa: BLE001 - a port without gradients fails FM-GRAD, not this
        return
    bad = [n for n, g in (("input", gx), *gw.items()) if not np.all(np.isfinite(g))]
    if bad:
        raise ClauseFailure(f"batch-1 training gradients of {', '.join(bad)} are not finite "
                            "(the output is)", diagnosis=GRADIENT_AT_ZERO_VARIANCE, checked=True)


@check("bn-epsilon")
def bn_epsilon(ctx):
    rng = np.random.default_rng(11)
    case = ctx.spec.cases()[0]
    flat = int(np.prod(case.input_shapes[0][1:]))
    handle, config, weights = _primed(ctx, case, rng, **{VAR: np.zeros(flat)})
    x = ctx.inputs(case, rng, "float64")
    out = handle.forward(x, training=False)
    expected, _ = ctx.spec.forward(config, weights, x, training=False)
    tol = FORWARD["float64"]
    varied = {**weights, VAR: rng.uniform(0.25, 2.0, flat)}
    # epsilon judged against the port itself first: what the layer does with the normalised
    # values (the MLP, the residual) is FM-INFERENCE's
    if _epsilon_as_scale(handle, weights, x, out, ctx.spec.epsilon, tol):
        return

    def estimate(actual, _):
        fitted = next(a for _, a in ctx.spec.alternatives() if isinstance(a, diagnose.Fitted))
        eps = fitted.fit(config, weights, x, actual, training=False)
        if eps is None or abs(eps / ctx.spec.epsilon - 1.0) < 0.1:
            return None
        # With moving variance 0 an epsilon added outside the square root reads as its square
        # inside: the fitted value must also reproduce a call with a non-zero variance.
        handle.set_weights(varied)
        again = handle.forward(x, training=False)
        if not close(again, fitted.oracle(config, varied, x, False, eps), FORWARD["float32"]):
            return None
        return fitted.describe(eps)

    try:
        ctx.expect_close("inference with moving variance 0", out, expected, tol,
                         diagnosis=estimate)
    except ClauseFailure as failure:
        if failure.diagnosis:  # another epsilon, tested against a second call
            raise
        raise float64_failure(ctx, failure, handle, config, weights, x,
                              training=False) from None
