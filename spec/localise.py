"""Where a port differs, when no variant of the oracle reproduces it: the staged probe.

The root-cause search (``portspec.rootcause``) names a port's mistake when one of the oracle's
variants reproduces every recorded call. A mistake outside the variant space gets no variant;
what the port's layer computes can still be measured part by part. The staged probe sets
weights that make each part of the layer visible in the output on its own, and reads the part
back (all float64, through the port's own adapter):

FeatureMixing, on (32, 6, 5) inputs with ff_dim 16 and dropout 0:

- ``residual``: the second Dense's kernel and bias 0. The spec returns the input, ``x``.
- ``bias``: the second Dense's kernel 0, its bias ``c``. The spec returns ``x + c``.
- ``hidden``: the normalisation's scale gamma 0, so that it outputs its offset beta ``u``
  whatever the input and statistics; the second Dense copies hidden unit ``j`` to channel ``j``.
  The output minus the input is the activation of the first Dense, ``act(u @ K1 + b1)``, at 30
  known pre-activations (ReLU in the spec).
- ``norm``: gamma 1, beta 0, the first Dense copying channel ``j`` to hidden unit ``j`` plus 32
  (every ReLU open), the second copying it back minus 32. The output minus the input is the
  standardised input ``(x - mean) / scale``, in inference and in training, with the moving
  statistics after the training call.
- ``affine``: as ``norm`` with a random gamma (either sign) and beta, in inference: the output
  minus the input is ``gamma z + beta``, z the standardised input the norm stage read back.

Each stage reads its part through the ones after it in the data flow, so a part is read only
where those are the spec's (the hidden stage, which reads beta through the affine with gamma
0, only where the affine is). Then the dropout probe the search already records
(``rootcause.DROP_CASE``): the branch is ``m2 s (m1 s + 1)`` there, with the keep decisions m1,
m2 and the kept units' scale s, and the values it takes otherwise are set against the spec's.
Its first Dense's kernel is 0, so a dropout on that Dense's input cannot show there: one more
training call at its case (``dropout-input``: the first Dense the identity with bias 1, the
second the identity) makes the branch ``[m2 s] [m1 s] relu([m0 s] 1 + 1)``, and the search
adds that site to the sites it found where these values need it (``rootcause._input_site``).

GatedFeatureFusion, on (64, 6) inputs, sigmoid: a call with ``a == b`` (the spec returns ``a``:
a convex combination), and inference and training calls on random inputs, from which the gate
the port applied is read back, ``g = (out - b) / (a - b)``, and its pre-activation
``logit(g)`` regressed on ``concat(a, b)``.

Each statement is a hypothesis checked against these outputs: a named alternative (LeakyReLU,
``sqrt(var) + epsilon``, the gate's bias added twice) is said only where it reproduces the part
to 1e-7 relative; otherwise the part is located and its difference measured. The statements
travel with the finding (``Finding.located``) and stand in the verdict where no cause is named.
"""

from __future__ import annotations

import re

import numpy as np

from portspec import variants
from portspec.layers import LAYERS, Case
from portspec.rootcause import (
    DROP_CASE,
    DROP_X,
    INPUT_DROP,
    MEAN,
    VAR,
    _arr,
    _build,
    _call,
    _dropout_weights,
    _g,
    _predict,
    _record,
    _restore,
    _set,
    at_rates,
)

STAGE = "stage:"  # label prefix of the staged probe's records
OPEN = 32.0  # the offset keeping every ReLU of the norm stage open (|z| < 32)
FM_STAGE = Case({"n_series": 5, "input_size": 6, "dropout": 0.0, "ff_dim": 16},
                ((32, 6, 5),), "stage")
GFF_STAGE = Case({"activation": "sigmoid"}, ((64, 6), (64, 6)), "stage")
SAME = 1e-7  # relative: a named alternative reproduces the part (float64 arithmetic)
MATCH = 1e-5  # relative: a part matches the spec (float32 tolerance: precision is its own
# finding, and the parts a mistake changes differ by far more)


# -- the probe (worker side) -----------------------------------------------------------------


def _identity(rows: int, cols: int) -> np.ndarray:
    k = np.zeros((rows, cols))
    k[np.arange(min(rows, cols)), np.arange(min(rows, cols))] = 1.0
    return k


def fm_weights(stage: str, rng) -> dict[str, np.ndarray]:
    """The canonical weights of one FeatureMixing stage (see the module docstring)."""
    n, length, h = (FM_STAGE.config[k] for k in ("n_series", "input_size", "ff_dim"))
    w = {"norm.gamma": np.ones(length * n), "norm.beta": np.zeros(length * n),
         "norm.moving_mean": rng.normal(0.0, 0.5, length * n),
         "norm.moving_variance": rng.uniform(0.5, 2.0, length * n),
         "dense1.kernel": rng.normal(0.0, 0.5, (n, h)), "dense1.bias": rng.normal(0.0, 0.3, h),
         "dense2.kernel": rng.normal(0.0, 0.5, (h, n)), "dense2.bias": rng.normal(0.0, 0.3, n)}
    if stage == "residual":
        w.update({"dense2.kernel": np.zeros((h, n)), "dense2.bias": np.zeros(n)})
    elif stage == "bias":
        w["dense2.kernel"] = np.zeros((h, n))
        w["dense2.bias"] = rng.choice([-1.0, 1.0], n) * rng.uniform(0.5, 1.5, n)
    elif stage == "hidden":
        w.update({"norm.gamma": np.zeros(length * n), "norm.beta": rng.normal(0.0, 1.0,
                                                                             length * n),
                  "dense1.kernel": rng.normal(0.0, 1.0, (n, h)),
                  "dense2.kernel": _identity(h, n), "dense2.bias": np.zeros(n)})
    elif stage in ("norm", "affine"):
        w.update({"dense1.kernel": _identity(n, h), "dense1.bias": np.full(h, OPEN),
                  "dense2.kernel": _identity(h, n), "dense2.bias": np.full(n, -OPEN)})
    if stage == "affine":  # a scale of either sign and an offset: gamma z + beta
        w.update({"norm.gamma": rng.choice([-1.0, 1.0], length * n)
                  * rng.uniform(0.5, 2.0, length * n),
                  "norm.beta": rng.normal(0.0, 1.0, length * n)})
    return w


FM_STAGES = (("residual", (False, True)), ("bias", (False, True)), ("hidden", (False,)),
             ("norm", (False, True)), ("affine", (False, True)))


def probe_fm(adapter, spec) -> list[dict]:
    """The staged probe's records of a FeatureMixing port (none where it cannot be built at
    the stage config or refuses the weights: the other records say why)."""
    rng, records = np.random.default_rng(41), []
    x = spec.make_inputs(FM_STAGE, rng)
    try:
        handle, dtype, _ = _build(adapter, spec, FM_STAGE, FM_STAGE.config)
    except Exception:  # noqa: BLE001
        return []
    for stage, modes in FM_STAGES:
        try:
            w = _set(handle, fm_weights(stage, rng))
        except Exception:  # noqa: BLE001
            return records
        for training in modes:
            try:
                _restore(handle, w)
            except Exception:  # noqa: BLE001
                return records
            out, error = _call(handle, x, training)
            state = None
            if error is None:
                now = handle.get_weights()
                state = {k: _arr(now[k]) for k in (MEAN, VAR) if k in now}
            records.append(_record(STAGE + stage, FM_STAGE.config, x, w, training, out, error,
                                   dtype, state))
    return records + _input_dropout_record(adapter, spec)


def _input_dropout_record(adapter, spec) -> list[dict]:
    """A training call that shows a dropout on the first Dense's input, which the dropout
    probe cannot (its first Dense's kernel is 0): the dropout probe's case with beta 1 and
    gamma 0 (every normalised feature 1), the first Dense the identity with bias 1 and the
    second the identity with bias 0, so the branch is [m2 s] [m1 s] relu([m0 s] 1 + 1)
    (``rootcause.site_levels``; read by ``rootcause._input_site``)."""
    config = DROP_CASE.config
    n, h = config["n_series"], config["ff_dim"]
    w = {**_dropout_weights(config), "dense1.kernel": _identity(n, h),
         "dense2.bias": np.zeros(n)}
    try:
        handle, dtype, _ = _build(adapter, spec, DROP_CASE, config)
        w = _set(handle, w)
        x = np.full(DROP_CASE.input_shapes[0], DROP_X)
        out, error = _call(handle, x, True)
    except Exception:  # noqa: BLE001 - the other records say why
        return []
    return [_record(STAGE + INPUT_DROP, config, x, w, True, out, error, dtype)]


def probe_gff(adapter, spec) -> list[dict]:
    """The staged probe's records of a GatedFeatureFusion port: random inputs in inference
    and in training, and ``a == b`` in inference."""
    rng = np.random.default_rng(42)
    try:
        handle, dtype, _ = _build(adapter, spec, GFF_STAGE, GFF_STAGE.config)
        w = _set(handle, spec.random_weights(GFF_STAGE.config, GFF_STAGE.input_shapes, rng))
    except Exception:  # noqa: BLE001
        return []
    a, b = spec.make_inputs(GFF_STAGE, rng)
    records = []
    for label, x, training in (("gate", [a, b], False), ("gate", [a, b], True),
                               ("equal", [a, a.copy()], False)):
        out, error = _call(handle, x, training)
        records.append(_record(STAGE + label, GFF_STAGE.config, x, w, training, out, error,
                               dtype))
    return records


# -- the reading (parent side) ---------------------------------------------------------------


def _rel(got, want) -> float:
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    if got.shape != want.shape:
        return float("inf")
    err = np.abs(got - want) / (1.0 + np.abs(want))
    return float(err.max(initial=0.0)) if np.isfinite(err).all() else float("inf")


def _mode(training: bool) -> str:
    return "training" if training else "inference"


def _modes(found: list[bool]) -> str:
    return " and ".join(_mode(t) for t in sorted(set(found)))


def _fit_line(x, y):
    """Least squares y ~ alpha x + c over all elements: (alpha, c, max residual)."""
    x, y = np.ravel(x), np.ravel(y)
    design = np.stack([x, np.ones_like(x)], axis=1)
    (alpha, c), *_ = np.linalg.lstsq(design, y, rcond=None)
    return float(alpha), float(c), float(np.abs(design @ [alpha, c] - y).max())


def _oracle(spec, r):
    """The spec oracle's (output, new weights) for a record (the search's own prediction)."""
    return _predict(spec, variants.SPACES[spec.name], r, {})


def _round(v: float) -> str:
    """A fitted constant as a port writes it where it is round: 2, 0.5, 0.01."""
    for digits in (1, 2, 3):
        if abs(v - round(v, digits)) <= 1e-6 * max(1.0, abs(v)):
            return f"{round(v, digits):g}"
    return f"{v:.4g}"


# the activations of the variant space (variants._ACT), in words, and others ports write
_WORDS = {"identity": "identity (no activation)", "gelu": "GELU (erf)",
          "gelu-tanh": "GELU (tanh approximation)", "relu6": "ReLU6", "silu": "SiLU (swish)",
          "tanh": "tanh", "sigmoid": "sigmoid", "elu": "ELU"}
ACTIVATIONS = {
    **{_WORDS[k]: (lambda p, f=f: f(p, variants.FAST)) for k, f in variants._ACT.items()
       if k in _WORDS},
    "LeakyReLU(0.01)": lambda p: np.where(p > 0, p, 0.01 * p),
    "LeakyReLU(0.1)": lambda p: np.where(p > 0, p, 0.1 * p),
    "LeakyReLU(0.2)": lambda p: np.where(p > 0, p, 0.2 * p),
    "LeakyReLU(0.3) (Keras's default negative slope)": lambda p: np.where(p > 0, p, 0.3 * p),
    "softplus": lambda p: np.logaddexp(0.0, p),
    "SELU": lambda p: 1.0507009873554805 * np.where(
        p > 0, p, 1.6732632423543772 * np.expm1(np.minimum(p, 0.0))),
    "hard swish": lambda p: p * np.clip(p + 3.0, 0.0, 6.0) / 6.0,
    "Mish": lambda p: p * np.tanh(np.logaddexp(0.0, p)),
    "squared ReLU": lambda p: np.maximum(p, 0.0) ** 2,
    "absolute value": np.abs,
}


def _hidden_units(r):
    """(pre-activations p, hidden units read back) of the hidden stage's record: the first N
    hidden units, which the second Dense copies to the channels."""
    w, x = r["weights"], r["x"]
    n, length = x.shape[2], x.shape[1]
    u = np.asarray(w["norm.beta"]).reshape(length, n)
    p = (u @ np.asarray(w["dense1.kernel"]) + np.asarray(w["dense1.bias"]))[:, :n]
    return p, (np.asarray(r["out"]) - x).mean(axis=0)


def _fm_hidden(r) -> str | None:
    """The activation read back at the hidden stage's pre-activations; None where the hidden
    units differ from sample to sample or do not depend on beta at all (the normalisation
    does not output beta with gamma 0: the hidden stage cannot read the MLP)."""
    w, x = r["weights"], r["x"]
    n, length = x.shape[2], x.shape[1]
    u = np.asarray(w["norm.beta"]).reshape(length, n)
    p = (u @ np.asarray(w["dense1.kernel"]) + np.asarray(w["dense1.bias"]))[:, :n]
    each = np.asarray(r["out"]) - x
    got = each.mean(axis=0)  # every sample alike: gamma is 0
    if _rel(each, np.broadcast_to(got, each.shape)) > SAME:
        return None
    for name, act in ACTIVATIONS.items():
        if _rel(got, act(p)) <= SAME:
            return (f"the activation after the first Dense is {name}, not ReLU (the hidden "
                    f"units read back at {p.size} pre-activations in [{_g(p.min())}, "
                    f"{_g(p.max())}] match it to {_g(SAME)})")
    # ReLU of another pre-activation: alpha (u @ K1) + beta b1 where it is positive, 0 elsewhere
    q = (u @ np.asarray(w["dense1.kernel"]))[:, :n]
    b1 = np.broadcast_to(np.asarray(w["dense1.bias"])[:n], q.shape)
    u_relu = np.maximum(u, 0.0)
    structural = {
        "the first Dense's bias added after the activation (ReLU(x @ kernel) + bias)":
        np.maximum(q, 0.0) + b1,
        "a ReLU on the normalised features before the first Dense as well (ReLU(ReLU(x) @ "
        "kernel + bias))": np.maximum((u_relu @ np.asarray(w["dense1.kernel"]))[:, :n] + b1,
                                      0.0),
    }
    name = _named(got, structural)
    if name:
        return (f"the MLP computes {name}, where the spec's first Dense is ReLU(x @ kernel + "
                f"bias) (the hidden units read back at {p.size} pre-activations)")
    on = got > 1e-9
    if on.sum() >= 4:
        design = np.stack([q[on], b1[on]], axis=1)
        (alpha, beta), *_ = np.linalg.lstsq(design, got[on], rcond=None)
        pre = alpha * q + beta * b1
        if abs(alpha) <= 1e-6:
            return None
        if _rel(got, np.maximum(pre, 0.0)) <= SAME:
            if abs(alpha - beta) <= 1e-6 * abs(alpha):
                return (f"the MLP's output is {_round(alpha)} times the spec's (a Dense kernel, "
                        "its bias and the activation scaled alike; the hidden units read back "
                        f"at {p.size} pre-activations are {_round(alpha)} ReLU(p))")
            bias = ("its bias added twice" if abs(beta - 2) < 1e-6 else
                    f"{_round(beta)} times its bias")
            kernel = "" if abs(alpha - 1) < 1e-6 else f"{_round(alpha)} times its kernel, "
            return (f"the first Dense computes with {kernel}{bias} (the hidden units read back "
                    f"at {p.size} pre-activations are ReLU({_round(alpha)} x @ kernel + "
                    f"{_round(beta)} bias))")
    neg, pos = p < -1e-3, p > 1e-3
    said = []
    if pos.any():
        ratio = got[pos] / p[pos]
        said.append(f"f(p)/p from {_g(ratio.min())} to {_g(ratio.max())} for p > 0")
    if neg.any():
        said.append(f"f(p) from {_g(got[neg].min())} to {_g(got[neg].max())} for p < 0 "
                    "(ReLU: 0)")
    return ("the activation after the first Dense is not ReLU: at the hidden stage's "
            "pre-activations p the port's hidden units take " + ", ".join(said))


def _statistics(x, w, training: bool, state=None):
    """The named candidates for the mean and the scale a normalisation of ``x`` (batch, L, N)
    per flattened feature uses, from the batch and the moving statistics ``w`` (and those the
    port holds after the call, ``state``: a port that updates them first and then normalises
    with them)."""
    from portspec.layers.feature_mixing import EPSILON as eps

    length, n = x.shape[1:]
    mm = np.asarray(w.get("norm.moving_mean", np.zeros(length * n))).reshape(length, n)
    mv = np.asarray(w.get("norm.moving_variance", np.ones(length * n))).reshape(length, n)
    mean, var = x.mean(axis=0), x.var(axis=0)
    unbiased = x.var(axis=0, ddof=1)
    about = ((x - mm) ** 2).mean(axis=0)
    means = {"the batch mean": mean, "the moving mean": mm, "no mean (0)": np.zeros_like(mean)}
    # the variance about another centre than each feature's batch mean (named by the centre)
    centres = {"the whole batch's mean (one scalar over every feature)": x.mean(),
               "each channel's mean over the batch and time": x.mean(axis=(0, 1)),
               "each time step's mean over the batch and channels": x.mean(axis=(0, 2),
                                                                         keepdims=True)[0],
               "0 (the mean square, not centred)": 0.0}
    scales = {
        "sqrt(var + epsilon)": np.sqrt(var + eps),
        "sqrt(var) + epsilon": np.sqrt(var) + eps,
        "sqrt(var), without epsilon": np.sqrt(var),
        "sqrt(var + epsilon^2)": np.sqrt(var + eps**2),
        "sqrt(var) + sqrt(epsilon)": np.sqrt(var) + np.sqrt(eps),
        "var + epsilon, without the square root": var + eps,
        "sqrt(the unbiased var + epsilon)": np.sqrt(unbiased + eps),
        "sqrt(the unbiased var) + epsilon": np.sqrt(unbiased) + eps,
        "sqrt(the variance about the moving mean + epsilon)": np.sqrt(about + eps),
        "sqrt(the moving var + epsilon)": np.sqrt(mv + eps),
        "sqrt(the moving var) + epsilon": np.sqrt(mv) + eps,
        "sqrt(the moving var), without epsilon": np.sqrt(mv),
        "the moving var + epsilon, without the square root": mv + eps,
        "1 (not scaled)": np.ones_like(var),
        **{f"sqrt(the variance about {c} + epsilon)": np.sqrt(((x - v) ** 2).mean(axis=0) + eps)
           for c, v in centres.items()},
    }
    if state and {MEAN, VAR} <= set(state) and training:
        um = np.asarray(state[MEAN]).reshape(length, n)
        uv = np.asarray(state[VAR]).reshape(length, n)
        means["the moving mean as this call updated it (updated first, then used)"] = um
        scales["sqrt(the moving var as this call updated it + epsilon)"] = np.sqrt(uv + eps)
    spec = ("the batch mean", "sqrt(var + epsilon)") if training else (
        "the moving mean", "sqrt(the moving var + epsilon)")
    base = {"mean": mean, "var": var, "unbiased": unbiased, "about": about, "mm": mm, "mv": mv,
            "centres": centres}
    return means, scales, spec, base


def _named(value, named: dict) -> str | None:
    return next((k for k, v in named.items() if _rel(value, v) <= SAME), None)


def _fm_norm(r) -> str | None:
    """What the norm stage's standardised input says of one call, or None where it is the
    spec's."""
    x, training = r["x"], r["training"]
    z = np.asarray(r["out"]) - x
    means, scales, spec, base = _statistics(x, r["weights"], training, r["state"])
    want = (x - means[spec[0]]) / scales[spec[1]]
    if _rel(z, want) <= MATCH:
        return None
    mode = _mode(training)
    # per flattened feature, over the batch: z = s x + t, so mean -t/s and scale 1/s
    xm, zm = x.mean(axis=0), z.mean(axis=0)
    dx = x - xm
    sxx = (dx * dx).sum(axis=0)
    s = (dx * (z - zm)).sum(axis=0) / np.where(sxx > 0, sxx, 1.0)
    t = zm - s * xm
    residual = _rel(z, s * x + t)
    if residual > MATCH or not np.all(np.abs(s) > 1e-12):
        spread = float(np.abs(z - want).max())
        return (f"in {mode} the normalisation is not the spec's, and not a standardisation of "
                f"each flattened feature over the batch either (max |error| {_g(spread)}; "
                "its statistics are taken over other axes, or differ from sample to sample)")
    mean_used, scale_used = -t / s, 1.0 / s
    mean_name, scale_name = _named(mean_used, means), _named(scale_used, scales)
    if mean_name and scale_name:
        said = f"{mean_name} and divides by {scale_name}"
    elif mean_name:
        ratio = scale_used / scales[spec[1]]
        said = (f"{mean_name} and divides by {_g(ratio.min())} to {_g(ratio.max())} times "
                f"{spec[1]}")
        if mean_name == spec[0]:  # the spec's variance with another epsilon
            eps = scale_used**2 - base["var" if training else "mv"]
            if np.ptp(eps) <= 1e-6 * max(abs(float(eps.mean())), 1e-12):
                said = f"{mean_name} and divides by sqrt(var + {_round(float(eps.mean()))})"
    else:
        off = mean_used - means[spec[0]]
        said = (f"a mean {_g(off.min())} to {_g(off.max())} off {spec[0]}, and divides by "
                + (scale_name or f"{_g((scale_used / scales[spec[1]]).min())} to "
                   f"{_g((scale_used / scales[spec[1]]).max())} times {spec[1]}"))
    return (f"in {mode} the normalisation subtracts {said}; the spec subtracts {spec[0]} and "
            f"divides by {spec[1]}")


def _fm_permutation(rs) -> str | None:
    """Where the norm stage's training call standardises each feature as the spec does but
    puts it back on another (time, channel) cell: which cells, named where the permutation is a
    flatten and an unflatten that are not each other's inverse."""
    r = next((r for r in rs if r["training"]), None)
    if r is None:
        return None
    x = r["x"]
    batch, length, n = x.shape
    means, scales, spec, _ = _statistics(x, r["weights"], True)
    want = ((x - means[spec[0]]) / scales[spec[1]]).reshape(batch, -1)
    got = (np.asarray(r["out"]) - x).reshape(batch, -1)
    if _rel(got, want) <= MATCH:
        return None
    gap = np.abs(got[:, :, None] - want[:, None, :]).max(axis=0)  # (port cell, spec cell)
    src = gap.argmin(axis=1)
    if (sorted(src.tolist()) != list(range(length * n)) or np.all(src == np.arange(src.size))
            or _rel(got, want[:, src]) > MATCH):
        return None
    cell = np.arange(length * n)
    # the port's flat index i = l N + n at (l, n) holding the spec's cell whose channel-major
    # index n' L + l' is i, or the reverse
    l_, n_ = np.divmod(cell, n)
    channel_major = (cell % length) * n + cell // length  # spec cell of channel-major index i
    named = {
        "the features flattened channel-major (the input transposed to (batch, N, L) first) "
        "and reshaped back to (batch, L, N) without transposing back": channel_major,
        "the features flattened time-major, then reshaped to (batch, N, L) and transposed back "
        "to (batch, L, N): the unflatten is not the flatten's inverse": np.argsort(channel_major),
    }
    name = next((k for k, v in named.items() if np.array_equal(src, v)), None)
    moved = int(np.sum(src != cell))
    example = int(np.flatnonzero(src != cell)[0])
    where = (f"cell (l, n) = ({l_[example]}, {n_[example]}) holds the spec's ({src[example] // n}"
             f", {src[example] % n}), {moved} of the {length * n} cells moved")
    what = (f"{name}: the normalised features land on other (time, channel) cells than they "
            "came from" if name else "the normalised features land on other (time, channel) "
            "cells than they came from")
    return (f"{what} ({where}; the norm stage's training call, each feature standardised over "
            "the batch as the spec's, read back through an identity MLP)")


def _fm_update(r) -> str | None:
    """What the moving statistics after the norm stage's training call say, or None where
    they are the spec's (or not held)."""
    state = r["state"] or {}
    if not {MEAN, VAR} <= set(state):
        return None
    x, w = r["x"], r["weights"]
    _, want = _oracle(LAYERS["FeatureMixing"], r)
    length, n = x.shape[1:]
    if all(_rel(np.ravel(state[k]), np.ravel(want[k])) <= MATCH for k in (MEAN, VAR)):
        return None
    _, _, _, base = _statistics(x, w, True)
    mean, var, unbiased, about, mm, mv = (base[k] for k in ("mean", "var", "unbiased",
                                                             "about", "mm", "mv"))
    got_m = np.asarray(state[MEAN]).reshape(length, n)
    got_v = np.asarray(state[VAR]).reshape(length, n)
    said = []
    keep = np.divide(got_m - mean, mm - mean, out=np.full_like(mm, np.nan),
                     where=np.abs(mm - mean) > 1e-6)
    k = float(np.nanmedian(keep))
    if _rel(got_m, k * mm + (1 - k) * mean) > SAME:
        ratio = np.divide(got_m, mm, out=np.full_like(mm, np.nan), where=np.abs(mm) > 1e-6)
        k = float(np.nanmedian(ratio))
        a, b = _update_weights(mm, mean, got_m)
        if _rel(got_m, k * mm) <= SAME and abs(1 - k) > 1e-9:  # a running average of 0
            said.append("the moving mean averages 0, the standardised features' mean (the "
                        "normalisation's output where its input was meant: standardised, or "
                        "after gamma and beta, which the stage's gamma 1 and beta 0 cannot "
                        "tell apart; the spec: the batch mean)")
        elif a is not None:  # old and new weighted, but the weights do not sum to 1
            said.append(_unnormalised(a, b, LAYERS["FeatureMixing"].momentum))
            q = (got_v - a * mv) / b if abs(b) > 1e-9 else None
            if q is not None and _rel(q, var) > SAME:
                said.append("the moving variance is not updated with the same weights of the "
                            "batch variance")
            return "after a training call " + "; ".join(said)
        else:
            said.append("the moving mean is not a running average of the batch mean")
            k = None
    from portspec.layers.feature_mixing import EPSILON as eps

    candidates = {"the batch variance": var, "the unbiased batch variance": unbiased,
                  "the batch standard deviation": np.sqrt(var),
                  "the variance about the moving mean": about,
                  "the variance about the updated moving mean": ((x - got_m) ** 2).mean(axis=0),
                  "the batch mean (the mean's value where the variance was meant)": mean,
                  "the squared batch mean": mean ** 2,
                  "the batch variance + epsilon (the normalisation's denominator squared)":
                  var + eps,
                  "the unbiased batch variance + epsilon": unbiased + eps,
                  "sqrt(the batch variance + epsilon) (the normalisation's denominator)":
                  np.sqrt(var + eps),
                  "the variance of the standardised features, var / (var + epsilon) (the "
                  "normalisation's output where its input was meant, standardised or after "
                  "gamma and beta: the stage's gamma 1 and beta 0 cannot tell them apart)":
                  var / (var + eps),
                  **{f"the variance about {c}": ((x - v) ** 2).mean(axis=0)
                     for c, v in base["centres"].items()}}
    if k is not None and abs(1 - k) > 1e-9:
        q = (got_v - k * mv) / (1 - k)
        name = _named(q, candidates)
        spec_k = LAYERS["FeatureMixing"].momentum
        if abs(k - spec_k) > 1e-6:
            said.append(f"the moving statistics keep {_round(k)} of their old values (the "
                        f"spec: {_g(spec_k)})")
        if name and name != "the batch variance":
            said.append(f"the moving variance averages {name} (the spec: the batch variance)")
        elif not name:
            shift = q - var
            if np.ptp(shift) <= 1e-6 * max(abs(float(shift.mean())), 1e-9):
                said.append(f"the moving variance averages the batch variance + "
                            f"{_round(float(shift.mean()))} (the spec: the batch variance)")
            else:
                said.append("the moving variance is not a running average of the batch "
                            "variance with the mean's momentum")
    return "after a training call " + "; ".join(said) if said else None


def _update_weights(old, batch, new) -> tuple[float | None, float | None]:
    """``(a, b)`` with ``new = a old + b batch`` to float64 precision (least squares over the
    features, the old and batch values not proportional), where ``a + b`` is not 1; else
    ``(None, None)``: a running average (``a + b = 1``) is read by its share kept instead."""
    design = np.stack([np.ravel(old), np.ravel(batch)], axis=1)
    if np.linalg.matrix_rank(design) < 2:
        return None, None
    (a, b), *_ = np.linalg.lstsq(design, np.ravel(new), rcond=None)
    if _rel(np.ravel(new), design @ [a, b]) > SAME or abs(a + b - 1) <= 1e-6:
        return None, None
    return float(a), float(b)


def _unnormalised(a: float, b: float, momentum: float) -> str:
    """Words for a moving-statistics update ``a old + b batch`` whose weights do not sum to 1,
    against the spec's ``momentum old + (1 - momentum) batch`` (Keras's momentum, the share of
    the old value kept)."""
    said = (f"the moving statistics are updated as {_round(a)} old + {_round(b)} batch, "
            f"weights that do not sum to 1 (the spec: {_g(momentum)} old + "
            f"{_g(1 - momentum)} batch)")
    if abs(b - 1) <= 1e-6:
        said += (": the batch statistic is added in full, not scaled by the share of the new "
                 "value (an update's scale factor left out: PyTorch's add_(batch) without "
                 "alpha=)")
    elif abs(a - 1) <= 1e-6:
        said += ": the old value is kept in full, not scaled by the momentum"
    return said


def _dropout_probe(records) -> str | None:
    """The dropout probe's training calls against two alternatives outside the variant space
    that take the same values there: the second Dense's bias added after the second dropout,
    and the second dropout applied to the hidden units before the second Dense. Both make the
    branch m2 s (m1 s) + 1 where the spec's is m2 s (m1 s + 1). Where neither fits, the
    values the branch takes against the spec's (``_dropout_values``)."""
    drops = [r for r in records if r["label"] == "dropout" and r["training"]
             and r["out"] is not None]
    if not drops:
        return None
    if not _bias_outside_dropout(drops):
        return _dropout_values(drops)
    p = drops[0]["config"]["dropout"]
    return ("in training the second Dense's bias is added after the second dropout (not "
            "dropped with the Dense's output), or the second dropout is applied to the hidden "
            "units before the second Dense: the dropout probe's branch takes the values 1 and "
            f"1 + s^2 (s = 1/(1 - p), p = {p:g} and {drops[-1]['config']['dropout']:g}), kept "
            "at the rate of both decisions, where the spec's takes 0, s and s(s + 1); the "
            "probe cannot tell these two apart")


def _levels(y, p):
    """The spec's levels of the dropout probe's branch at rate p, with their probabilities,
    and whether ``y`` takes them at those rates (6 sd)."""
    s = 1.0 / (1.0 - p)
    spec = {0.0: p, s: (1 - p) * p, s * (s + 1): (1 - p) ** 2}
    return spec, at_rates(y, spec)


def _dropout_values(drops) -> str | None:
    """The dropout probe's branch values against the spec's, where they differ: the part that
    differs is the dropout in training (the calls without dropout the spec's)."""
    for r in drops:
        p = r["config"]["dropout"]
        y = np.ravel(np.asarray(r["out"]) - DROP_X)
        spec, ok = _levels(y, p)
        if ok:
            continue
        values, counts = np.unique(np.round(y, 9), return_counts=True)
        got = (", ".join(f"{_g(v)} ({c / y.size:.0%})" for v, c in zip(values, counts,
                                                                      strict=True))
               if len(values) <= 6 else
               f"{len(values)} distinct values in [{_g(values.min())}, {_g(values.max())}]")
        want = ", ".join(f"{_g(v)} ({q:.0%})" for v, q in spec.items())
        return (f"the dropout in training: with dropout {p:g} the dropout probe's branch (each "
                f"hidden unit 1, channel j = hidden unit j + 1) takes {got}, where the spec's "
                f"takes {want} (inverted dropout after the activation and after the second "
                "Dense); the calls without dropout are the spec's")
    return None


def _bias_outside_dropout(drops) -> bool:
    """Do the dropout probe's training calls take the values of the second Dense's bias added
    after its dropout (m2 s (m1 s) + 1), at the rates of both decisions?"""
    for r in drops:
        p = r["config"]["dropout"]
        s = 1.0 / (1.0 - p)
        y = np.asarray(r["out"]) - DROP_X
        one, both = np.abs(y - 1.0) <= 1e-9, np.abs(y - (1.0 + s * s)) <= 1e-9
        if not (one | both).all():
            return None
        share, want = float(both.mean()), (1.0 - p) ** 2
        if abs(share - want) > 6 * np.sqrt(want * (1 - want) / y.size):
            return False
    return True


def localise_fm(spec, records) -> list[str]:
    """The staged probe's statements of a FeatureMixing port, in the order of the data flow
    that the stages rely on (each stage reads its part through the later ones)."""
    stages = {}
    for r in records:
        if r["label"].startswith(STAGE) and r["out"] is not None \
                and r["label"] != STAGE + INPUT_DROP:  # read by the search (rootcause)
            stages.setdefault(r["label"][len(STAGE):], []).append(r)
    said = []
    bad = {}
    for name, rs in stages.items():
        bad[name] = []
        for r in rs:
            try:
                want, _ = _oracle(spec, r)
            except (KeyError, ValueError, TypeError):
                continue
            if _rel(r["out"], want) > MATCH:
                bad[name].append(r)
    if bad.get("residual"):
        modes = _modes([r["training"] for r in bad["residual"]])
        r = bad["residual"][0]
        alpha, c, res = _fit_line(r["x"], r["out"])
        outs = [(np.asarray(q["out"]), np.asarray(q["x"])) for q in bad["residual"]]
        what = (f"{_round(alpha)} x" + (f" + {_g(c)}" if abs(c) > 1e-9 else "")
                if res <= SAME * (1 + np.abs(r["out"]).max()) else
                "max(x, 0) (a ReLU applied after the residual, to x + branch)"
                if all(_rel(out, np.maximum(x, 0.0)) <= MATCH for out, x in outs) else
                IN_PLACE_INPUT if all(_rel(np.asarray(q["out"]), _standardised(q)) <= MATCH
                                      for q in bad["residual"]) else
                f"an output {_g(float(np.abs(r['out'] - r['x']).max()))} off its input")
        return [(f"the residual: with the second Dense's kernel and bias 0 the port returns "
                 f"{what} in {modes}, where the spec returns its input x",
                 _scope(bad["residual"]))]
    if bad.get("bias"):
        r = bad["bias"][0]
        c = np.asarray(r["weights"]["dense2.bias"])
        added = (np.asarray(r["out"]) - r["x"]).mean(axis=(0, 1))
        beta = float(added @ c / (c @ c))
        modes = _modes([r["training"] for r in bad["bias"]])
        named = {"max(c, 0) (a ReLU after the second Dense)": np.maximum(c, 0.0),
                 "tanh(c) (a tanh after the second Dense)": np.tanh(c),
                 "sigmoid(c) (a sigmoid after the second Dense)": 1.0 / (1.0 + np.exp(-c)),
                 f"{_round(beta)} c" if abs(beta) > 1e-9 else "no bias": beta * c}
        what = _named(added, named) or f"values {_g(float(np.abs(added - c).max()))} off c"
        scaled = _rel(added, beta * c) <= SAME and abs(beta) > 1e-9
        said.append((f"the second Dense's output: with its kernel 0 and its bias c the port "
                     f"adds {what} in {modes}, where the spec adds c", _scope(bad["bias"])))
    # the affine stage of a mode is read where the norm stage of that mode is the spec's
    # (by mode, not by record: a record holds arrays, whose == is elementwise)
    norm_bad = {r["training"] for r in bad.get("norm", [])}
    norm_ok = {r["training"] for r in stages.get("norm", [])} - norm_bad
    affine = [r for r in bad.get("affine", []) if r["training"] in norm_ok]
    moved = _fm_permutation(bad.get("norm", []))
    if moved:  # every later reading sees the cells moved: this is the one to say
        return [(moved, "both")]
    # the hidden stage reads beta through the affine, and its units through the second Dense's
    # output, which the bias stage has found otherwise
    if bad.get("hidden") and not affine and bad.get("bias"):
        # the bias path scaled by beta: where the kernel path is too, the whole MLP output is
        if scaled and _rel(_hidden_units(bad["hidden"][0])[1],
                           beta * np.maximum(_hidden_units(bad["hidden"][0])[0], 0.0)) <= SAME:
            said[-1] = (("the MLP's output is subtracted from the input (x - branch) where the "
                         "spec adds it" if abs(beta + 1) < 1e-9 else
                         f"the MLP's output is {_round(beta)} times the spec's") + (
                         ": its bias path (the second Dense's kernel 0 and bias c: the port "
                         f"adds {_round(beta)} c) and its kernel path (the hidden units read "
                         f"back are {_round(beta)} ReLU(p)) alike"), said[-1][1])
    elif bad.get("hidden") and not affine:
        text = _fm_hidden(bad["hidden"][0])
        if text:
            said.append((text, "both"))
    for r in stages.get("norm", []):
        if said and not r["training"]:  # the norm stage reads through the MLP
            break
        text = _fm_norm(r)
        if text:
            said.append((text, _mode(r["training"])))
        if r["training"]:
            text = _fm_update(r)
            if text:
                said.append((text, "update"))
    skipped = _fm_skipped(stages) or _fm_shifted_scale(stages)
    if skipped:  # the norm stage's reading, which sees no standardisation, said in full
        said = [t for t in said if not t[0].startswith("in ") or "normalisation" not in t[0]]
        said.append((skipped, "both"))
        affine = []
    if affine:
        texts = {_fm_affine(r) for r in affine}
        if len(texts) == 1:  # alike in the modes that differ
            said.append((f"in {_modes([r['training'] for r in affine])} " + texts.pop(),
                         _scope(affine)))
        else:
            said.extend((f"in {_mode(r['training'])} " + _fm_affine(r), _mode(r["training"]))
                        for r in affine)
    if not said:
        text = _dropout_probe(records)
        if text:
            said.append((text, "dropout"))
    return said


# The residual stage's output where the input itself is standardised: the normalisation's
# sub_/div_ on the input or a view of it (x.view(b, -1).sub_(mean)), which the residual then
# reads. PyTorch's autograd refuses the in-place change of an input that requires grad, so the
# gradient clauses' refusal (diagnose.IN_PLACE) is this mistake too (rootcause.attach).
IN_PLACE_INPUT = ("the input standardised, (x - mean) / sqrt(var + epsilon) by the call's "
                  "statistics: the normalisation standardises its input in place (sub_, div_, "
                  "-=, /= on x or a view of it), so the residual adds the changed x")


def _standardised(r) -> np.ndarray:
    """The input of record ``r`` standardised as the spec's normalisation of that call does
    (batch statistics in training, moving ones in inference), without gamma and beta."""
    x = np.asarray(r["x"])
    means, scales, spec, _ = _statistics(x, r["weights"], r["training"])
    return (x - means[spec[0]]) / scales[spec[1]]


def _fm_skipped(stages) -> str | None:
    """Where the norm stage reads back the input itself in both modes (no mean subtracted,
    divided by 1), the affine stage says what else of the normalisation is left: nothing (the
    first Dense reads the input: the normalisation's output unused, or never applied), or
    the scale and offset alone. None otherwise."""
    norm, affine = stages.get("norm", []), stages.get("affine", [])
    if len(norm) < 2 or not affine or not all(
            _rel(np.asarray(r["out"]) - r["x"], r["x"]) <= MATCH for r in norm):
        return None
    got = []
    for r in affine:
        x = np.asarray(r["x"])
        length, n = x.shape[1:]
        gamma, beta = (np.asarray(r["weights"][k]).reshape(length, n)
                       for k in ("norm.gamma", "norm.beta"))
        got.append((np.asarray(r["out"]) - x, x, gamma * x + beta))
    if all(_rel(out, x) <= MATCH for out, x, _ in got):
        return ("the normalisation is not applied: the first Dense reads the input x itself, "
                "neither standardised nor scaled by gamma and shifted by beta, in inference "
                "and training (the normalisation's output unused, or the layer skipped; read "
                "back with gamma 1 and beta 0, and with random gamma and beta)")
    if all(_rel(out, affine_x) <= MATCH for out, _, affine_x in got):
        return ("the normalisation does not standardise: it computes gamma x + beta on the "
                "input itself, no mean subtracted and no division by sqrt(var + epsilon), in "
                "inference and training (read back with gamma 1 and beta 0, and with random "
                "gamma and beta)")
    return None


def _fm_shifted_scale(stages) -> str | None:
    """Where every norm and affine stage call, in both modes, is (1 + gamma) z + beta (z the
    spec's standardised input): the scale applied as an offset from 1 while it starts at 1,
    which the norm stage alone (gamma 1) reads as a division by half the spec's scale. None
    otherwise."""
    rs = stages.get("norm", []) + stages.get("affine", [])
    if len(stages.get("affine", [])) < 1 or len({r["training"] for r in rs}) < 2:
        return None
    for r in rs:
        x = np.asarray(r["x"])
        length, n = x.shape[1:]
        means, scales, spec, _ = _statistics(x, r["weights"], r["training"])
        z = (x - means[spec[0]]) / scales[spec[1]]
        gamma, beta = (np.asarray(r["weights"][k]).reshape(length, n)
                       for k in ("norm.gamma", "norm.beta"))
        if _rel(np.asarray(r["out"]) - x, (1.0 + gamma) * z + beta) > SAME:
            return None
    return ("the normalisation scales by (1 + gamma), not gamma: the scale applied as an "
            "offset from 1 (a zero-centred parametrisation) while it starts at 1 as the "
            "spec's does, in inference and training (read back with gamma 1 and beta 0, and "
            "with random gamma and beta)")


def _fm_affine(r) -> str:
    """The affine stage (inference; the standardisation itself the spec's): how the scale
    gamma and the offset beta are applied to the standardised input z."""
    x, w = r["x"], r["weights"]
    length, n = x.shape[1:]
    means, scales, spec, _ = _statistics(x, w, r["training"])
    z = (x - means[spec[0]]) / scales[spec[1]]
    gamma, beta = (np.asarray(w[k]).reshape(length, n) for k in ("norm.gamma", "norm.beta"))
    got = np.asarray(r["out"]) - x
    named = {"beta z + gamma: gamma and beta exchanged": beta * z + gamma,
             "gamma (z + beta): the offset added before the scale": gamma * (z + beta),
             "z: neither gamma nor beta applied": z,
             "z + beta: gamma not applied": z + beta,
             "gamma z: beta not added": gamma * z,
             "|gamma| z + beta: the scale's sign lost": np.abs(gamma) * z + beta,
             "z / gamma + beta: the scale divided by": z / gamma + beta}
    name = _named(got, named)
    if name:
        return (f"the normalisation's scale and offset: the port computes {name}, where the "
                "spec computes gamma z + beta (z the standardised input, read back with gamma "
                "1 and beta 0 as the spec's)")
    return ("the normalisation's scale and offset: with gamma 1 and beta 0 the standardised "
            "input is the spec's, with other gamma and beta the port's is not gamma z + beta "
            f"(max |error| {_g(float(np.abs(got - (gamma * z + beta)).max()))})")


def _scope(rs) -> str:
    modes = {_mode(r["training"]) for r in rs}
    return modes.pop() if len(modes) == 1 else "both"


def localise_gff(spec, records) -> list[str]:
    """The staged probe's statements of a GatedFeatureFusion port."""
    stages = {}
    for r in records:
        if r["label"].startswith(STAGE) and r["out"] is not None:
            stages.setdefault((r["label"][len(STAGE):], r["training"]), r)
    said = []
    equal = stages.get(("equal", False))
    named = _gff_outputs([r for r in stages.values() if not r["training"]]) if equal else None
    if named:  # a fusion formula reproduces the gate and the a = b calls alike
        return [(named, "both")]
    if equal is not None:
        a = equal["x"][0]
        out = np.asarray(equal["out"])
        if _rel(out, a) > MATCH:
            alpha, c, res = _fit_line(a, out)
            what = (f"{_round(alpha)} a" + (f" + {_g(c)}" if abs(c) > 1e-9 else "")
                    if res <= SAME * (1 + np.abs(out).max()) else "another value")
            extra = _gff_added(spec, stages.get(("gate", False)))
            return [(f"the fusion: {extra + '; ' if extra else ''}with a = b the port returns "
                     f"{what}, where the spec's convex combination g a + (1 - g) b returns a "
                     "whatever the gate", "both")]
    inference, training = stages.get(("gate", False)), stages.get(("gate", True))
    if inference is None:
        return said
    if training is not None and _rel(training["out"], inference["out"]) > MATCH:
        said.append((_gff_training(inference, training), "training"))
    text = _gff_gate(spec, inference)
    if text:
        said.insert(0, (text, "both"))
    return said


def _gff_added(spec, r) -> str:
    """The port's output as c1 (the spec's output) + c2 a + c3 b, where that fits every element
    of the gate stage's inference call: an input added around the fusion."""
    if r is None:
        return ""
    a, b = r["x"]
    want, _ = _oracle(spec, r)
    design = np.stack([np.ravel(want), np.ravel(a), np.ravel(b)], axis=1)
    coef, *_ = np.linalg.lstsq(design, np.ravel(r["out"]), rcond=None)
    if _rel(design @ coef, np.ravel(r["out"])) > SAME:
        return ""
    c1, c2, c3 = (float(v) for v in coef)
    def times(v, what):
        return what if abs(v - 1) <= 1e-6 else f"{_round(v)} {what}"

    terms = [times(v, what) for v, what in ((c1, "(g a + (1 - g) b)"), (c2, "a"), (c3, "b"))
             if abs(v) > 1e-6]
    terms[0] = terms[0].removeprefix("(").removesuffix(")") if terms[0].startswith(
        "(g") else terms[0]
    named = {(1, 1, 0): ": the first input added back (a residual around the fusion)",
             (1, 0, 1): ": the second input added back (a residual around the fusion)"}
    key = tuple(round(v, 6) for v in (c1, c2, c3))
    return ("the port returns " + " + ".join(terms).replace("+ -", "- ")
            + named.get(key, "") + " (every output of a call on random inputs fits it)")


def _permuted(k_used, k) -> str | None:
    """Where the kernel the port computes with is the spec's with its rows permuted: which,
    named where the permutation interleaves a and b (a stack and flatten for a concat)."""
    n = k.shape[0]
    tol = 1e-6 * (1.0 + float(np.abs(k).max()))
    perm = []
    for row in k_used:
        hits = [j for j in range(n) if np.abs(row - k[j]).max() <= tol]
        if len(hits) != 1:
            return None
        perm.append(hits[0])
    if sorted(perm) != list(range(n)) or perm == list(range(n)):
        return None
    f = n // 2
    interleaved = [2 * i for i in range(f)] + [2 * i + 1 for i in range(f)]
    if perm == interleaved:
        return ("the gate's input interleaves a and b (a0, b0, a1, b1, ...: a stack and flatten "
                "where the spec concatenates [a, b]): the kernel the port computes with is the "
                "spec's with its rows in that order")
    return (f"the gate's kernel rows are permuted: the port multiplies concat(a, b)'s feature i "
            f"by the spec's row {perm} (the gate's input arranged otherwise than concat(a, b))")


def _gate_of(r):
    """The gate a port applied, read back from g a + (1 - g) b, where |a - b| > 0.1 (NaN
    elsewhere)."""
    a, b = r["x"]
    d = a - b
    return np.divide(np.asarray(r["out"]) - b, d, out=np.full_like(d, np.nan),
                     where=np.abs(d) > 0.1)


def _gff_training(inference, training) -> str:
    g0, g1 = _gate_of(inference), _gate_of(training)
    ok = np.isfinite(g0) & np.isfinite(g1) & (np.abs(g0) > 1e-3)
    ratio = g1[ok] / g0[ok]
    zero = np.abs(ratio) <= 1e-9
    kept = ratio[~zero]
    if zero.any() and kept.size and np.ptp(kept) <= 1e-7 * abs(kept.mean()):
        rate = 1.0 - 1.0 / float(kept.mean())
        return (f"in training the gate is dropped out: {zero.mean():.0%} of its values are 0 "
                f"and the rest are scaled by {_g(float(kept.mean()))} (inverted dropout at "
                f"rate {_round(rate)}), where the spec's layer computes the same in training "
                "as in inference")
    out0, out1 = np.asarray(inference["out"]), np.asarray(training["out"])
    okay = np.abs(out0) > 1e-3
    r = out1[okay] / out0[okay]
    zero = np.abs(r) <= 1e-9
    kept = r[~zero]
    if zero.any() and kept.size and np.ptp(kept) <= 1e-7 * abs(kept.mean()):
        return (f"in training the output is dropped out: {zero.mean():.0%} of its values are 0 "
                f"and the rest scaled by {_g(float(kept.mean()))}, where the spec's layer "
                "computes the same in training as in inference")
    return (f"in training the port computes otherwise than in inference (max |difference| "
            f"{_g(float(np.abs(out1 - out0).max()))}), where the spec's layer has no training "
            "behaviour")


def _gff_gate(spec, r) -> str | None:
    """The gate read back against the spec's: its range, and its pre-activation regressed on
    concat(a, b)."""
    a, b = r["x"]
    g = _gate_of(r)
    w = r["weights"]
    k, bias = np.asarray(w["gate.kernel"]), np.asarray(w["gate.bias"])
    f = a.shape[-1]
    if k.shape != (2 * f, f) or bias.shape != (f,):
        return None
    v = np.concatenate([a, b], axis=-1)
    z_spec = v @ k + bias
    g_spec = 1.0 / (1.0 + np.exp(-z_spec))
    ok = np.isfinite(g)
    if _rel(g[ok], g_spec[ok]) <= MATCH:
        return None
    if np.ptp(g[ok]) <= 1e-9:
        which = {1.0: ": the output is a, b ignored", 0.0: ": the output is b, a ignored"}
        v = float(np.mean(g[ok]))
        return (f"the gate read back from the output as (out - b) / (a - b) is {_g(v)} "
                f"everywhere{which.get(round(v, 9), '')}, where the spec's gate depends on "
                "concat(a, b)")
    c = float(np.sum(g[ok] * g_spec[ok]) / np.sum(g_spec[ok] ** 2))
    if _rel(g[ok], c * g_spec[ok]) <= 1e-6:
        return (f"the gate is {_round(c)} times the spec's (read back from the output as "
                "(out - b) / (a - b)), where the spec's gate is activation(concat(a, b) @ "
                "kernel + bias) itself")
    named = {"sigmoid(concat(a, b) @ kernel) + bias: the bias added after the activation":
             1.0 / (1.0 + np.exp(-(v @ k))) + bias,
             "sigmoid(concat(a, b) @ kernel + bias) + bias: the bias added again after the "
             "activation": g_spec + bias,
             "sigmoid(concat(a, b) @ kernel - bias): the bias subtracted":
             1.0 / (1.0 + np.exp(-(v @ k - bias))),
             "1 - sigmoid(concat(a, b) @ kernel + bias): the complement used as the gate":
             1.0 - g_spec,
             "sigmoid(sigmoid(concat(a, b) @ kernel + bias)): the activation applied twice (a "
             "Dense given the activation, and the activation again on its output)":
             1.0 / (1.0 + np.exp(-g_spec))}
    name = _named(g[ok], {key: val[ok] for key, val in named.items()})
    if name:
        return (f"the gate the port applies (read back from its output as (out - b) / (a - b)) "
                f"is {name}, where the spec's is sigmoid(concat(a, b) @ kernel + bias)")
    lo, hi = float(g[ok].min()), float(g[ok].max())
    if lo < -1e-6 or hi > 1 + 1e-6:
        return (f"the gate the port applies (read back from its output as (out - b) / (a - b)) "
                f"takes values in [{_g(lo)}, {_g(hi)}], outside the sigmoid's (0, 1)")
    inside = ok & (g > 1e-9) & (g < 1 - 1e-9)
    z = np.log(np.where(inside, g, 0.5)) - np.log1p(-np.where(inside, g, 0.5))
    rows = inside.all(axis=1)
    if rows.sum() < 2 * f + 4:
        return None
    design = np.concatenate([v[rows], np.ones((int(rows.sum()), 1))], axis=1)
    coef, *_ = np.linalg.lstsq(design, z[rows], rcond=None)
    residual = float(np.abs(design @ coef - z[rows]).max())
    scale = 1.0 + float(np.abs(z[rows]).max())
    if residual > 1e-6 * scale:
        for label, extra in (("a * b", a * b), ("|a - b|", np.abs(a - b)), ("a^2 and b^2",
                                                                         None)):
            cols = [extra[rows]] if extra is not None else [a[rows] ** 2, b[rows] ** 2]
            more = np.concatenate([design, *cols], axis=1)
            c2, *_ = np.linalg.lstsq(more, z[rows], rcond=None)
            if float(np.abs(more @ c2 - z[rows]).max()) <= 1e-6 * scale:
                return (f"the gate's pre-activation is not affine in concat(a, b): it depends "
                        f"on {label} as well (logit of the gate read back, regressed on a, b "
                        f"and {label}: max residual below 1e-6), where the spec's is "
                        "concat(a, b) @ kernel + bias")
        def standardised(v, eps):  # a LayerNorm without its scale and offset, per row
            return (v - v.mean(-1, keepdims=True)) / np.sqrt(v.var(-1, keepdims=True) + eps)

        for eps in (1e-3, 1e-5, 1e-6, 0.0):  # Keras's, PyTorch's, Flax's LayerNorm epsilon
            for label, seen in (
                    ("LayerNorm(concat(a, b))", standardised(v, eps)),
                    ("concat(LayerNorm(a), LayerNorm(b))", np.concatenate(
                        [standardised(a, eps), standardised(b, eps)], axis=-1))):
                fit = np.concatenate([seen[rows], np.ones((int(rows.sum()), 1))], axis=1)
                c2, *_ = np.linalg.lstsq(fit, z[rows], rcond=None)
                if float(np.abs(fit @ c2 - z[rows]).max()) <= 1e-6 * scale:
                    return (f"the gate sees normalised inputs: its pre-activation is affine in "
                            f"{label} (epsilon {eps:g}; logit of the gate read back, regressed: "
                            "max residual below 1e-6), where the spec's is concat(a, b) @ "
                            "kernel + bias on the inputs as they are")
        return ("the gate's pre-activation (the logit of the gate read back) is not affine in "
                f"concat(a, b) (max residual {_g(residual)} of the best affine fit), where the "
                "spec's is concat(a, b) @ kernel + bias")
    k_used, b_used = coef[:-1], coef[-1]
    same_k = _rel(k_used, k) <= 1e-6
    if same_k:
        c = float(b_used @ bias / (bias @ bias))
        if _rel(b_used, c * bias) <= 1e-6:
            what = ("no bias" if abs(c) < 1e-9 else "the bias added twice" if abs(c - 2) < 1e-6
                    else f"{_round(c)} times the bias")
            return (f"the gate computes concat(a, b) @ kernel with {what}, where the spec adds "
                    "the bias once (the gate's pre-activation read back and regressed on "
                    "concat(a, b): the kernel matches the spec's)")
        extra = b_used - bias
        return (f"the gate's bias as used is the spec's plus [{', '.join(_g(e) for e in extra)}]"
                ": a second bias the adapter's map does not reach, or a bias offset (the "
                "pre-activation read back and regressed on concat(a, b): the kernel matches)")
    permuted = _permuted(k_used, k) if _rel(b_used, bias) <= 1e-6 else None
    if permuted:
        return permuted + " (the pre-activation read back and regressed on concat(a, b))"
    c = float(np.sum(k_used * k) / np.sum(k * k))
    if _rel(k_used, c * k) <= 1e-6 and _rel(b_used, c * bias) <= 1e-6:
        return (f"the gate's pre-activation is {_round(c)} times the spec's (a temperature): "
                "read back and regressed on concat(a, b)")
    return (f"the gate's pre-activation is affine in concat(a, b) but with another kernel (max "
            f"|difference| {_g(float(np.abs(k_used - k).max()))}) and bias (max |difference| "
            f"{_g(float(np.abs(b_used - bias).max()))}) than the spec's")


# The clause families each scope of a statement can fail: a part that differs in training
# alone fails no inference clause, a dropout no clause without it, the moving statistics' update
# the clauses that read them. Clauses of how the layer is built or called are never the staged
# probe's (their own diagnoses are checked).
_COMPUTED = {"residual", "inference", "training", "bn-update", "bn-frozen", "bn-batch1",
             "bn-epsilon", "dropout-sites", "dropout-inference", "dropout-one", "gradients",
             "vectors", "portable", "gate-order", "activations", "convex", "dtype"}
_FM_INFERENCE = {"inference", "bn-frozen", "bn-epsilon", "dropout-inference", "dtype"}
SCOPES = {
    "both": _COMPUTED,
    "training": _COMPUTED - _FM_INFERENCE,
    "inference": _FM_INFERENCE | {"residual", "gradients", "vectors", "portable", "dtype"},
    "update": {"bn-update", "bn-batch1", "vectors", "portable"},
    "dropout": {"dropout-sites", "dropout-one"},
    # weights held as one (rootcause.aliased): every computation, and the weights read back
    # and counted
    "weights": _COMPUTED | {"weights-roundtrip", "param-counts", "init"},
}


def explains(spec, located, clause_id: str, message: str = "") -> bool:
    """Can one of the ``located`` (text, scope) statements fail the clause ``clause_id``, whose
    failure reads ``message``? GatedFeatureFusion's forward clause judges training as well as
    inference; FM-DTYPE calls both, so a part that differs in training alone fails it where
    each of its failing calls is a training one."""
    family = spec.clause(clause_id.split("-", 1)[1]).family
    scopes = {scope for _, scope in located}
    if spec.prefix == "GFF" and "training" in scopes:
        scopes.add("both")
    if family == "dtype" and "training" in scopes and message and all(
            "training=True" in part for part in message.split("; ")):
        return True
    return any(family in SCOPES[s] for s in scopes)


def localise(spec, records, calls=()) -> list[tuple[str, str]]:
    """The staged probe's (statement, scope) pairs for a port no variant reproduces; [] where
    it says nothing (no stage record ran, or every stage is the spec's). A scope is the calls
    the part differs in: "inference", "training", "both", "update" (the moving statistics
    after a training call) or "dropout" (training with dropout). Where every stage is the
    spec's, the root-cause probe's own ``calls`` (their weights filled in) say which of its
    cases differ and which match."""
    try:
        if spec.prefix == "FM":
            return _floor(spec, localise_fm(spec, records), calls) or _calls_differ(spec, calls)
        return localise_gff(spec, records) or _calls_differ(spec, calls)
    except (KeyError, ValueError, TypeError, IndexError, np.linalg.LinAlgError):
        return []


_NO_EPS = re.compile(r"sqrt\((var|the moving var)\), without epsilon")


def _floor(spec, said, calls) -> list[tuple[str, str]]:
    """A normalisation read as dividing by sqrt(var) without epsilon (the stage's variances
    all above epsilon) that matches the spec where the moving variance is 0 (the probe's call
    of that name): it divides by sqrt(max(var, epsilon)) there, epsilon a floor under the
    variance; without epsilon it would divide by 0."""
    zero = next((r for r in calls if r["label"] == "moving variance 0"), None)
    if zero is None or not any(_NO_EPS.search(text) for text, _ in said):
        return said
    try:
        want, _ = _oracle(spec, zero)
    except (KeyError, ValueError, TypeError):
        return said
    if _rel(zero["out"], want) > MATCH:
        return said
    return [(_NO_EPS.sub(lambda m: f"sqrt(max({m[1]}, epsilon)) (epsilon a floor under the "
                                   "variance: with a moving variance of 0 the port divides by "
                                   "sqrt(epsilon) as the spec does)", text), scope)
            for text, scope in said]


def _calls_differ(spec, calls) -> list[tuple[str, str]]:
    """Which of the probe's calls differ from the spec oracle and which match, where some do
    each: what sets them apart (the inputs' shapes, the mode, else the cases) locates what the
    port handles otherwise."""
    differ, match = [], []
    for r in calls:
        try:
            want, _ = _oracle(spec, r)
        except (KeyError, ValueError, TypeError):
            continue
        err = float(np.nanmax(np.abs(np.asarray(r["out"]) - want))) if np.shape(
            r["out"]) == np.shape(want) else float("inf")
        (differ if _rel(r["out"], want) > MATCH else match).append((r, err))
    if not differ or not match:
        return []
    if spec.prefix == "GFF":
        named = _gff_outputs([r for r, _ in differ + match])
        if named:
            return [(named, "both")]
    worst = _g(max(e for _, e in differ))
    guarded = _zero_guard(spec, [r for r, _ in differ])
    if guarded:
        return [(f"{guarded} (max |error| {worst}; the other calls match the spec oracle)",
                 "inference")]
    modes = {_mode(r["training"]) for r, _ in differ}
    scope = modes.pop() if len(modes) == 1 else "both"
    for key, what in ((lambda r: _shape_of(r["x"]), "inputs"),
                      (lambda r: _mode(r["training"]), "calls in")):
        bad, good = ({key(r) for r, _ in group} for group in (differ, match))
        if not bad & good:
            cases = ", ".join(dict.fromkeys(r["label"] for r, _ in differ))
            return [(f"the {what} {' and '.join(sorted(bad))} differ from the spec oracle "
                     f"(max |error| {worst}; cases {cases}), where the {what} "
                     f"{' and '.join(sorted(good))} match it: the port handles "
                     + ("inputs of that shape" if what == "inputs" else "that mode")
                     + " otherwise", scope)]
    cases = ", ".join(dict.fromkeys(f"{r['label']} ({_mode(r['training'])})" for r, _ in differ))
    fine = ", ".join(dict.fromkeys(f"{r['label']} ({_mode(r['training'])})" for r, _ in match))
    return [(f"the calls of the cases {cases} differ from the spec oracle (max |error| "
             f"{worst}), where {fine} match it: the port handles what sets those cases apart "
             "otherwise (their config, their shapes or their mode)", scope)]


def _zero_guard(spec, differ) -> str | None:
    """Where only the calls with a moving variance of 0 differ, and each is the spec's with
    the standardised features 0 (the oracle with gamma 0: the output's normalisation is beta):
    a guard that maps a zero variance to 0, where the spec divides by sqrt(epsilon)."""
    if spec.prefix != "FM" or not differ or any(
            r["label"] != "moving variance 0" for r in differ):
        return None
    for r in differ:
        w = dict(r["weights"])
        w["norm.gamma"] = np.zeros_like(np.asarray(w["norm.gamma"], np.float64))
        try:
            want, _ = spec.forward(r["config"], w, r["x"], training=False)
        except (KeyError, ValueError, TypeError):
            return None
        if _rel(r["out"], want) > MATCH:
            return None
    return ("where the variance is 0 the port sets the standardised features to 0 (a guard "
            "such as where(var > 0, rsqrt(var + eps), 0)), where the spec divides x - mean by "
            "sqrt(epsilon): epsilon is the guard against a zero variance, and a constant "
            "feature stays as far from its moving mean as it is")


def _gff_outputs(records) -> str | None:
    """A fusion formula outside the variants that reproduces every call of the probe, each
    with its configured activation: named where one does."""
    from portspec.layers.gated_feature_fusion import activate

    if all(_rel(r["out"], _oracle(LAYERS["GatedFeatureFusion"], r)[0]) <= MATCH
           for r in records):
        return None  # the spec's own outputs: no other formula is the port's
    formulas = {
        "": None,  # the spec's fusion, its gate computed from other inputs (below)
        "act(z) a + act(-z) b: the complement written as act(-z), which is 1 - act(z) for the "
        "sigmoid alone": lambda g, gm, a, b: g * a + gm * b,
        "act(z) a + (1 - act(-z)) b: the complement of act(-z)":
        lambda g, gm, a, b: g * a + (1.0 - gm) * b,
        "act(z) a - (1 - act(z)) b: the complement's sign flipped (act(z) a + (act(z) - 1) b)":
        lambda g, gm, a, b: g * a - (1.0 - g) * b,
        "act(z) a: the (1 - act(z)) b term left out (a gated linear unit on a)":
        lambda g, gm, a, b: g * a,
        "act(z) a + b: b added whole, not weighted by 1 - act(z)":
        lambda g, gm, a, b: g * a + b,
    }
    def pooled(how):  # the gate's inputs reduced over the axes between batch and features
        def inputs(v):
            axes = tuple(range(1, v.ndim - 1))
            return how(v, axis=axes, keepdims=True) if axes else v
        return inputs

    gate_inputs = {"": lambda v: v,
                   " with the gate computed from the inputs averaged over the axes between "
                   "the batch and the features (one gate per sample, broadcast over them)":
                   pooled(np.mean),
                   " with the gate computed from the inputs' maximum over the axes between "
                   "the batch and the features (one gate per sample, broadcast over them)":
                   pooled(np.max)}
    deep = any(np.ndim(r["x"][0]) > 2 for r in records)
    for name, fuse in formulas.items():
        for how, seen in gate_inputs.items():
            # the spec itself; a pooled gate where no input has axes to pool (the spec then)
            if (not how and fuse is None) or (how and not deep):
                continue
            for r in records:
                a, b = r["x"]
                k, bias = np.asarray(r["weights"]["gate.kernel"]), np.asarray(r["weights"][
                    "gate.bias"])
                z = np.concatenate([seen(a), seen(b)], axis=-1) @ k + bias
                act = r["config"]["activation"]
                g, gm = activate(act, z, axis=-1), activate(act, -z, axis=-1)
                out = (g * a + (1.0 - g) * b) if fuse is None else fuse(g, gm, a, b)
                if _rel(r["out"], out) > SAME:
                    break
            else:
                return (f"the fusion computes {name or 'act(z) a + (1 - act(z)) b'}{how}, where "
                        "the spec's is act(z) a + (1 - act(z)) b (z = concat(a, b) @ kernel + "
                        "bias at every position; every call of the probe, each with its "
                        "activation, matches it)")
    return None


def _shape_of(x) -> str:
    return " and ".join(str(tuple(np.shape(v))) for v in (x if isinstance(x, list) else [x]))
