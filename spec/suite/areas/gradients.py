"""Gradients against central differences of the implementation's own float64 forward.

Along random directions v, <grad, v> must equal (f(w + h v) - f(w - h v)) / 2h with
f = sum(output * cotangent); tolerances in spec.tolerances. Two directions move every
trainable weight and every input at once (cheap: four forward calls); when they disagree, one
direction per tensor names the tensors whose gradient is wrong.
"""

from __future__ import annotations

from functools import partial

import numpy as np

from portspec.adapter import set_held_weights
from portspec.clauses import ClauseFailure
from portspec.ports.base import floating
from portspec.suite.areas.numerics import float64_failure, random_failure
from portspec.suite.checks import check
from portspec.tolerances import FD_STEP, FORWARD, GRADIENT, same_result

DIRECTIONS = 2


def _outside(handle) -> dict:
    """The port's weights outside its weight map, path -> value (a renormalisation's extra
    statistics, say), which a training call may move and ``set_weights`` does not restore;
    {} for a handle that maps every weight it holds, or one that does not say."""
    held = getattr(handle, "held", None)
    if held is None or not hasattr(handle, "_read"):
        return {}
    mapped = {path for entry in held.values() for path, _ in entry.pieces if path}
    return {p: np.array(v, copy=True) for p, v in handle._read().items() if p not in mapped
            and floating(np.asarray(v).dtype)}


def _objective(handle, weights, x, cot, training, outside=None):
    if outside:  # the state outside the map as it was: each call starts from the same
        handle._write_all(list(outside.items()))
    handle.set_weights(weights)  # also restores moving statistics a training call moved
    out = np.asarray(handle.forward(x, training=training), dtype=np.float64)
    return float(np.sum(out * cot))


def _at(point, *, handle, weights, x, cot, training, outside=None):
    """The objective with weights and inputs taken from ``point`` (names as in ``grads``)."""
    inputs = [point[f"input {i}"] for i in range(len(x) if isinstance(x, list) else 1)]
    moved = {**weights, **{k: v for k, v in point.items() if not k.startswith("input ")}}
    return _objective(handle, moved, inputs if isinstance(x, list) else inputs[0], cot, training,
                      outside)


def _unit(rng, shape):
    v = rng.standard_normal(shape)
    return v / np.linalg.norm(v)


def _shape_first(handle, x, cot, training) -> None:
    """Where the gradient raised, an output of another shape than the cotangent's is what
    made it fail (sum(output * cotangent) does not broadcast): say that, not the framework's
    broadcasting error."""
    try:
        got = tuple(np.shape(handle.forward(x, training=training)))
    except Exception:  # noqa: BLE001 - the forward raises too: the gradient's error stands
        return
    if got != tuple(np.shape(cot)):
        raise ClauseFailure(f"training={training}: output shape {got}, expected "
                            f"{tuple(np.shape(cot))} (the gradient of sum(output * cotangent) "
                            "takes the input's shape)")


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
            weights = ctx.random_weights(config, case.input_shapes, rng)
            x = ctx.inputs(case, rng, "float64")
            cot = rng.standard_normal(case.input_shapes[0])
            # against the port's own central differences: weights it lacks keep its values
            weights = set_held_weights(handle, weights)
            # a weight the adapter declares absent has no gradient to give: FM/GFF-WEIGHTS
            # and -PARAMS say the port lacks it, once
            held = [n for n in trainable if n not in weights.absent]
            outside = _outside(handle) if training else {}
            try:
                gx, gw = handle.grad(x, cot, training=training)
            except Exception:
                _shape_first(handle, x, cot, training)
                raise
            missing = sorted(set(held) - set(gw))
            if missing:
                raise ClauseFailure(f"no gradient returned for trainable {missing}")
            xs = x if isinstance(x, list) else [x]
            gxs = gx if isinstance(gx, list) else [gx]
            grads = {**{n: gw[n] for n in held},
                     **{f"input {i}": g for i, g in enumerate(gxs)}}
            point = {**{n: weights[n] for n in held},
                     **{f"input {i}": v for i, v in enumerate(xs)}}

            f = partial(_at, handle=handle, weights=weights, x=x, cot=cot, training=training,
                        outside=outside)

            # All tensors at once along random directions (a wrong gradient anywhere shows,
            # almost surely); one tensor at a time only to say which one is wrong.
            if any(_agrees(f, point, grads, _directions(rng, point, point))
                   for _ in range(DIRECTIONS)):
                _deterministic(handle, weights, x, training, outside, case.label,
                               config.get("dropout"))
                problems = [p for name in point
                            for p in _agrees(f, point, grads, _directions(rng, point, [name]),
                                             name)]
                mode = _grad_mode(handle, weights, x, training, outside)
                if mode:  # not the backward: two forwards, one differentiated, one measured
                    raise ClauseFailure(f"{case.label} training={training}: "
                                        + "; ".join(problems[:4]), diagnosis=mode,
                                        details={"problems": problems}, checked=True)
                said = _diagnosis(problems, training, ctx.spec.prefix)
                failure = ClauseFailure(
                    f"{case.label} training={training}: " + "; ".join(problems[:4]),
                    diagnosis=said, details={"problems": problems},
                    # a boundary in the backward is read off which gradients agree: checked
                    checked=bool(said and said.endswith("the port defines)")),
                )
                if _coarse_step_agrees(f, point, grads, rng):
                    failure.diagnosis = NOISE
                    raise float64_failure(ctx, failure, handle, config, weights, x,
                                          training=training)
                none = _no_gradient(problems, grads, training)
                if none:
                    raise ClauseFailure(str(failure), diagnosis=none, details=failure.details,
                                        checked=True)
                # a hypothesis of the spec's function: none with weights the port keeps
                hypotheses = [] if weights.own else _held_fixed(ctx.spec, config, weights, x,
                                                                cot, training)
                for said, held in hypotheses:
                    if all(not _agrees(held, point, grads, _directions(rng, point, point))
                           for _ in range(DIRECTIONS)):
                        raise ClauseFailure(str(failure), diagnosis=said,
                                            details=failure.details, checked=True)
                skip = _skip_detached(f, point, grads, cot, rng)
                if skip:
                    raise ClauseFailure(str(failure), diagnosis=skip, details=failure.details,
                                        checked=True)
                raise failure
    if ctx.spec.name == "GatedFeatureFusion":
        _saturated_gradients(ctx)


def _saturated_gradients(ctx):
    """GatedFeatureFusion's gradients are finite where the gate saturates: its weights scaled
    so that |pre-activation| reaches 1000 (``numerics.SATURATED``), as the saturated forward
    calls of GFF-ACTIVATIONS, for each activation."""
    from portspec.suite.areas.numerics import SATURATED, saturated

    for case in ctx.spec.config_cases():
        rng = np.random.default_rng(15)
        handle, held, x, z = saturated(ctx, case, rng, held=True)  # a weight it lacks is 0
        if set(held.own) - set(held.absent):  # a gate held at another shape keeps its own
            raise held.refused  # values: not saturated (one without a bias is, its bias 0)
        cot = rng.standard_normal(case.input_shapes[0])
        gx, gw = handle.grad(x, cot, training=False)
        grads = {**{f"input {i}": g for i, g in enumerate(gx)}, **gw}
        bad = sorted(k for k, g in grads.items() if not np.all(np.isfinite(g)))
        if not bad:
            continue
        activation = case.config["activation"]
        said = _unguarded_derivative(activation, z, grads)
        raise ClauseFailure(
            f"{case.label} saturated (|pre-activation| up to {SATURATED:g}): non-finite "
            f"gradients of {', '.join(bad)}, where the spec's are finite (its gate's derivative "
            "is 0 there)", diagnosis=said, checked=bool(said))


# the pre-activations where exp(-z) (sigmoid) or exp(z), exp(-z) (tanh, softmax) overflow
_EXP_MAX = float(np.log(np.finfo(np.float64).max))


def _unguarded_derivative(activation, z, grads) -> str | None:
    """Where the samples with non-finite gradients are exactly those with a pre-activation
    past exp's float64 overflow, the activation written from its formula: its forward is
    right (1 / inf = 0), its derivative inf / inf."""
    over = {"sigmoid": -z > _EXP_MAX, "tanh": np.abs(z) > _EXP_MAX,
            "softmax": np.abs(z) > _EXP_MAX}.get(activation)
    if over is None:
        return None
    rows = over.reshape(-1, z.shape[-1]).any(axis=-1)
    nonfinite = [(~np.isfinite(g)).reshape(-1, np.shape(g)[-1]).any(axis=-1)
                 for k, g in grads.items() if k.startswith("input ")]
    if not nonfinite or any(not np.array_equal(n, rows) for n in nonfinite):
        return None
    formula = {"sigmoid": "1 / (1 + exp(-z))", "tanh": "(exp(z) - exp(-z)) / (exp(z) + "
               "exp(-z))", "softmax": "exp(z) / sum(exp(z))"}[activation]
    return (f"the {activation} is written from its formula, {formula}: its forward saturates "
            f"to the right value, but where exp overflows (|pre-activation| past "
            f"{_EXP_MAX:.2f}) autodiff's derivative is inf / inf, NaN ({int(rows.sum())} of "
            f"{rows.size} samples, exactly those); the framework's own {activation} "
            "(jax.nn.sigmoid, torch.sigmoid, keras.ops.sigmoid) has a finite derivative there")


RECORDED = ("the port's forward with gradients recorded differs from the same call under "
            "torch.no_grad")


def _grad_mode(handle, weights, x, training, outside) -> str | None:
    """``RECORDED``, with the difference, where the handle's call with autograd recording
    (``forward_recorded``, PyTorch's) gives other outputs than its no_grad call: autodiff then
    differentiates one computation and the central differences measure the other, and the
    backward is not what is wrong. None otherwise, and for handles without a grad mode."""
    if not hasattr(handle, "forward_recorded"):
        return None
    plain, again, recorded = _calls(handle, weights, x, training, outside, (
        handle.forward, handle.forward, handle.forward_recorded))
    if not same_result(again, plain, FORWARD["float64"]):
        return None  # two no_grad calls differ: no one computation to compare with
    if same_result(recorded, plain, FORWARD["float64"]):
        return None
    said = (f"shape {recorded.shape} against {plain.shape}" if recorded.shape != plain.shape
            else f"max |difference| "
            f"{float(np.nanmax(np.abs(plain - recorded), initial=0)):.3g}")
    return (f"{RECORDED} ({said}): autodiff differentiates the recorded "
            "computation and the central differences measure the no_grad one, so the "
            "gradients disagree without a wrong backward; the layer's computation follows "
            "autograd's grad mode (torch.is_grad_enabled())")


def _calls(handle, weights, x, training, outside, calls) -> list[np.ndarray]:
    """Each of ``calls`` (the handle's forward methods) on ``x`` from the same weights and
    state, as float64; the weights set again after."""
    outs = []
    for call in calls:
        if outside:  # the state outside the weight map as it was, as ``_objective`` starts
            handle._write_all(list(outside.items()))
        handle.set_weights(weights)
        outs.append(np.asarray(call(x, training=training), np.float64))
    handle.set_weights(weights)
    return outs


def _deterministic(handle, weights, x, training, outside, label, dropout) -> None:
    """Raises where two calls with the same weights, input and state give other outputs:
    central differences of a random forward measure its randomness (a dropout rate fixed in
    the port draws masks at the config's dropout 0.0; noise the layer adds), so no gradient
    can be judged by them, and the backward is not what is shown wrong."""
    failure = random_failure(
        *_calls(handle, weights, x, training, outside, (handle.forward, handle.forward)),
        f"{label} training={training}: two calls", dropout,
        "central differences cannot check the gradient",
        "the central differences measure that randomness, and the backward is not shown wrong")
    if failure is not None:
        raise failure


NO_GRADIENT = "get no gradient"


def _no_gradient(problems, grads, training) -> str | None:
    """Where the wrong gradients are exactly some weights', each 0 everywhere while the
    central differences of the port's own forward are not, and every other tensor's matches:
    the forward reads those weights detached. None otherwise."""
    wrong = sorted({p.split(":", 1)[0].removeprefix("d/d") for p in problems})
    if not wrong or any(n.startswith("input ") or n not in grads for n in wrong):
        return None
    if any(np.any(np.asarray(grads[n]) != 0) for n in wrong):
        return None
    names = ", ".join(wrong)
    return (f"{names} {NO_GRADIENT} in {'training' if training else 'inference'}: autodiff "
            "gives exactly 0 where central differences of the port's own forward do not, and "
            "every other gradient matches them: the forward reads them detached (.data, "
            ".detach(), stop_gradient, or a copy taken under no_grad) or a custom backward "
            "(torch.autograd.Function, jax.custom_vjp) returns no gradient for them, so an "
            "optimizer never moves them")


SKIP_DETACHED = ("the residual's own gradient is missing: the input's gradient is the "
                 "branch's alone, without the identity the skip connection adds (the input "
                 "detached on the skip path, x.detach() + branch, or a residual added under "
                 "no_grad)")


def _skip_detached(f, point, grads, cot, rng) -> str | None:
    """``SKIP_DETACHED`` where the port's input gradient plus the cotangent (the gradient of
    the identity term of x + branch) agrees with its own central differences in every
    direction, the weights' gradients as they are; None otherwise, and for a layer whose
    output is not its input's shape."""
    if "input 1" in point or np.shape(point.get("input 0")) != np.shape(cot):
        return None
    mended = {**grads, "input 0": np.asarray(grads["input 0"]) + cot}
    if all(not _agrees(f, point, mended, _directions(rng, point, point))
           for _ in range(DIRECTIONS)):
        return SKIP_DETACHED
    return None


def _directions(rng, point, names):
    """Unit random directions for the tensors in ``names``, zero for the others."""
    return {n: (_unit(rng, np.shape(v)) if n in names else np.zeros(np.shape(v)))
            for n, v in point.items()}


def _agrees(f, point, grads, v, name="all tensors"):
    """[] when <grad, v> matches the central difference of f along v, else the problem."""
    plus = f({n: point[n] + FD_STEP * v[n] for n in point})
    minus = f({n: point[n] - FD_STEP * v[n] for n in point})
    analytic = sum(float(np.sum(np.asarray(grads[n]) * v[n])) for n in point)
    return _compare(name, analytic, (plus - minus) / (2 * FD_STEP))


def _compare(name, analytic, numeric):
    if abs(analytic - numeric) <= GRADIENT * (1 + abs(numeric)):
        return []
    return [f"d/d{name}: autodiff {analytic:.8g}, central difference {numeric:.8g}"]


COARSE_STEP = 1e-3  # truncation O(h^2) ~ 1e-6; float32 rounding O(u/h) ~ 1e-4
NOISE = (
    "the central differences at step 1e-6 disagree but those at step 1e-3 agree: they are "
    "rounding noise, so the float64 forward is not computed in float64 (part of it runs in "
    "float32)"
)


def _coarse_step_agrees(f, point, grads, rng) -> bool:
    """Do the gradients agree with central differences of a step large enough to rise above
    float32 rounding? Then the fine step's disagreement is the forward's precision."""
    v = _directions(rng, point, point)
    plus = f({n: point[n] + COARSE_STEP * v[n] for n in point})
    minus = f({n: point[n] - COARSE_STEP * v[n] for n in point})
    analytic = sum(float(np.sum(np.asarray(grads[n]) * v[n])) for n in point)
    numeric = (plus - minus) / (2 * COARSE_STEP)
    return abs(analytic - numeric) <= 1e-3 * (1 + abs(numeric))


# -- what a port that stops the gradient somewhere computes -----------------------------------
#
# A stop_gradient (detach) leaves the forward pass as it is and gives the gradients of the same
# function with some intermediate held at its value: the batch statistics, the gate's input.
# That function is written with the oracle, and its central differences along the clause's
# random directions must match every gradient the port returned.
STATS_HELD = (
    "the batch mean and variance are treated as constants in backprop (stop_gradient/detach): "
    "the port's gradients are those of the spec with the batch statistics held fixed"
)
# one of the two statistics held: a detach on it, or a hand-written BatchNorm backward that
# leaves out its term (the input gradient of a batch norm has one term through the mean and
# one through the variance)
ONE_STAT_HELD = (
    "the batch {held} is treated as a constant in backprop, its {kept}'s term kept (a "
    "detach on the {held}, or a hand-written BatchNorm backward without the {held}'s term): "
    "the port's gradients are those of the spec with the batch {held} held fixed"
)
STANDARDISED_HELD = (
    "the standardised features are treated as constants in backprop ((x - mean) / sqrt(var + "
    "epsilon) computed under torch.no_grad(), or detached): gamma, beta and the Dense layers "
    "get their gradients, but the input gets only the residual's, none through the "
    "normalisation"
)
GATE_INPUT_HELD = (
    "the gate's input is treated as a constant in backprop (stop_gradient/detach on concat([a, "
    "b])): the port's gradients are those of the spec with the inputs held fixed inside the gate"
)
GATE_HELD = (
    "the gate is treated as a constant in backprop (stop_gradient/detach on the gate): no "
    "gradient reaches the gate's kernel and bias, and a and b get only gate and 1 - gate"
)


def _held_fixed(spec, config, weights, x, cot, training):
    """[(diagnosis, objective of the point)] for the layer's function with an intermediate
    held at its value at ``x``, each a hypothesis; [] where the layer has none."""
    if spec.name == "FeatureMixing":
        x0 = np.asarray(x, np.float64)
        flat = x0.reshape(np.shape(x)[0], -1)
        # inference with the batch's own statistics as moving ones: the training output at x,
        # with the statistics constant
        stats = {"norm.moving_mean": flat.mean(axis=0),
                 "norm.moving_variance": flat.var(axis=0)} if training else {}

        def weights_at(point):
            return {**weights, **{k: v for k, v in point.items() if not k.startswith("input ")},
                    **stats}

        def held(point):
            out = spec.forward(config, weights_at(point), point["input 0"], training=False)[0]
            return float(np.sum(out * cot))

        def one_held(which):
            def objective(point):
                xp = np.asarray(point["input 0"], np.float64)
                own = xp.reshape(xp.shape[0], -1)
                moving = {"norm.moving_mean": own.mean(axis=0),
                          "norm.moving_variance": own.var(axis=0), **{which: stats[which]}}
                out = spec.forward(config, {**weights_at(point), **moving}, xp,
                                   training=False)[0]
                return float(np.sum(out * cot))
            return objective

        def standardised_held(point):
            # the branch reads the standardised x0 whatever the input; the residual adds it
            branch = spec.forward(config, weights_at(point), x0, training=False)[0] - x0
            return float(np.sum((point["input 0"] + branch) * cot))

        return ([(STATS_HELD, held),
                 (ONE_STAT_HELD.format(held="variance", kept="mean"),
                  one_held("norm.moving_variance")),
                 (ONE_STAT_HELD.format(held="mean", kept="variance"),
                  one_held("norm.moving_mean"))] if training else []) + [
            (STANDARDISED_HELD, standardised_held)]
    if spec.name == "GatedFeatureFusion":
        from portspec.layers.gated_feature_fusion import activate

        gate_input = np.concatenate([np.asarray(v, np.float64) for v in x], axis=-1)

        def gate_of(w, inputs):
            return activate(config["activation"], inputs @ w["gate.kernel"] + w["gate.bias"])

        fixed_gate = gate_of(weights, gate_input)

        def input_held(point):
            w = {**weights, **point}
            gate, a, b = gate_of(w, gate_input), w["input 0"], w["input 1"]
            return float(np.sum((gate * a + (1.0 - gate) * b) * cot))

        def gate_held(point):
            a, b = point["input 0"], point["input 1"]
            return float(np.sum((fixed_gate * a + (1.0 - fixed_gate) * b) * cot))

        return [(GATE_INPUT_HELD, input_held), (GATE_HELD, gate_held)]
    return []


# Each layer's trainable tensors and inputs in the order the backward pass reaches them, each
# group with the part of the backward that lies between it and the group before: where the
# gradients of the first groups match the central differences and those of every later group do
# not, the backward goes wrong in the part the first wrong group names.
BACKWARD = {
    "FM": [(("dense2.bias",), "the backward of the output itself (the residual sum or the "
            "second dropout)"),
           (("dense2.kernel",), "the backward to the second Dense's kernel (the hidden units "
            "the backward multiplies by)"),
           (("dense1.bias", "dense1.kernel"), "the backward between the second Dense and the "
            "first Dense's output: the second Dense's input gradient, the first dropout's or "
            "the activation's derivative"),
           (("norm.beta", "norm.gamma"), "the backward between the first Dense and the "
            "normalisation's output: the first Dense's input gradient"),
           (("input 0",), "the backward through the normalisation to its input")],
    "GFF": [(("gate.bias", "gate.kernel"), "the backward through the gate: the activation's "
             "derivative, or the fusion's derivative with respect to the gate"),
            (("input 0", "input 1"), "the backward to the inputs: the fusion's derivative with "
             "respect to a and b, or the gate's to its concatenated input")],
}


def _diagnosis(problems, training, prefix=None):
    # which part of the backward is wrong, read off which gradients agree; what held the
    # batch statistics (or one of them) fixed is a hypothesis of _held_fixed, checked there
    return _backward_part(problems, prefix)


def _backward_part(problems, prefix) -> str | None:
    """Where the wrong gradients are exactly the groups from one on (``BACKWARD``): that
    group's part of the backward, with the gradients that match and those that do not."""
    groups = BACKWARD.get(prefix)
    wrong = {p.split(":", 1)[0].removeprefix("d/d") for p in problems}
    if not groups or not wrong:
        return None
    for i, (_, part) in enumerate(groups):
        later = {n for g, _ in groups[i:] for n in g}
        if wrong != later:
            continue
        if i == 0:  # every gradient off: the part nearest the output, which all pass through
            return (f"{part} is wrong: every gradient ({', '.join(sorted(later))}) is off "
                    "against central differences of the port's own forward, and all of them "
                    "pass through it (a custom backward, or an operation whose derivative the "
                    "port defines)")
        right = ", ".join(n for g, _ in groups[:i] for n in g)
        return (f"{part} is wrong: the gradients of {right} match central differences of "
                f"the port's own forward, and those of {', '.join(sorted(later))} do not "
                "(a custom backward, or an operation whose derivative the port defines)")
    return None
