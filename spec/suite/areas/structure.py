"""Shapes, the residual path, the weight table and parameter counts."""

from __future__ import annotations

import itertools
import re

import numpy as np

from portspec import diagnose
from portspec.adapter import set_held_weights
from portspec.clauses import ClauseFailure
from portspec.layers import Case
from portspec.ports.base import SPLIT_HINT
from portspec.suite.checks import check
from portspec.tolerances import FORWARD, close, same_result


@check("shape")
def shape(ctx):
    rng = np.random.default_rng(0)
    for case in ctx.spec.cases():
        seen = []  # (expected, got, call) of every call: what a diagnosis is tested on
        try:
            for variant in _shape_variants(ctx.spec, case):
                handle = ctx.build(variant)
                x = ctx.inputs(variant, rng)
                for training in (False, True):
                    out = handle.forward(x, training=training)
                    seen.append((tuple(variant.input_shapes[0]), tuple(np.shape(out)),
                                 f"{variant.label} training={training}"))
        except Exception:
            if all(want == got for want, got, _ in seen):
                raise
            # a call after a wrong shape raised: the wrong shape is the failure, as before
        wrong = [(want, got, what) for want, got, what in seen if got != want]
        if wrong:
            want, got, what = wrong[0]
            raise ClauseFailure(f"{what}: output shape {got}, expected {want}",
                                diagnosis=_shape_diagnosis(seen), checked=True)
    _reused(ctx, ctx.spec.cases()[0], rng)


# A layer that keeps a shape of its first call (or of the input_shape its build was given, batch
# axis included) and reshapes later calls to it runs every fresh-layer call above, and fails the
# first time a training loop's last, smaller batch reaches it.
BATCH_KEPT = (
    "the layer keeps a shape from its first call or its build (the batch axis included) and "
    "uses it in later calls, so another batch size fails once the layer has run: read the "
    "batch size from each call's own input (x.shape[0], or -1 in a reshape), not from "
    "build()'s input_shape or an attribute set at the first call"
)


def _reused(ctx, case, rng):
    """One layer called in inference at batch 1, then at batch 3 (a training loop's batches
    differ), then at batch 1 again: each call must run, with its own shape, and the last must
    give what the first gave (float32's ``FORWARD``: the same computation on the same numbers,
    the weights untouched by inference). No second layer, so no weights are copied: a port
    whose weights read back otherwise than they are written is not judged here."""
    small, large = _shape_variants(ctx.spec, case)[:2]
    handle = ctx.build(small)
    x_small, x_large = ctx.inputs(small, rng), ctx.inputs(large, rng)
    first = np.asarray(handle.forward(x_small, training=False), np.float64)
    calls = (f"one layer called with inputs {tuple(small.input_shapes[0])}, then "
             f"{tuple(large.input_shapes[0])}, then {tuple(small.input_shapes[0])} again")
    try:
        middle = np.asarray(handle.forward(x_large, training=False), np.float64)
        again = np.asarray(handle.forward(x_small, training=False), np.float64)
    except Exception as exc:  # noqa: BLE001 - the failure is the clause's, with its words
        raise ClauseFailure(f"{calls}: a later call raised {type(exc).__name__}: "
                            f"{str(exc)[:200]}, where the first ran", diagnosis=BATCH_KEPT,
                            checked=True) from None
    for got, want in ((middle.shape, tuple(large.input_shapes[0])),
                      (again.shape, first.shape)):
        if got != tuple(want):
            raise ClauseFailure(f"{calls}: output shape {got}, expected {tuple(want)}",
                                diagnosis=BATCH_KEPT, checked=True)
    tol = FORWARD["float32"]
    if not same_result(again, first, tol):
        # the same input twice more, from one state: where those two differ, inference is
        # random (a dropout left on); where they agree but differ from the call before, each
        # inference call changes the state the next reads (moving statistics updated); either
        # way not a shape kept from the first call
        from portspec.suite.areas.numerics import random_failure

        try:
            state = handle.get_weights()
            repeat = np.asarray(handle.forward(x_small, training=False), np.float64)
            handle.set_weights(state)
            twice = np.asarray(handle.forward(x_small, training=False), np.float64)
        except Exception:  # noqa: BLE001 - a state the clause cannot restore: as it was
            repeat = twice = again
        random = random_failure(
            repeat, twice, f"{calls}: two inference calls", None,
            "the calls cannot show whether the layer keeps a shape from the first",
            "a shape kept from the first call is not shown")
        if random is not None:
            raise random
        if not same_result(repeat, again, tol):
            raise ClauseFailure(
                f"{calls}: each inference call changes what the next computes (two calls on "
                "the same input from the same weights agree; two in a row differ by up to "
                f"{np.nanmax(np.abs(repeat - again)):.3g})", diagnosis=STATEFUL, checked=True)
        raise ClauseFailure(f"{calls}: the last call's output differs from the first's (max "
                            f"|difference| {np.nanmax(np.abs(again - first)):.3g} beyond "
                            f"{tol:g}*(1+|x|))", diagnosis=BATCH_KEPT, checked=True)


STATEFUL = ("an inference call changes the layer's state (its moving statistics, or a "
            "buffer of its own), so each call computes with what the one before left, where "
            "the spec's inference changes nothing")


def _shape_variants(spec, case):
    """The case at batch 1 and 3 and, for a multi-input layer, at ranks 2, 3 and 4."""
    first = case.input_shapes[0]
    features = first[1:] if not spec.multi_input else first[-1:]
    if spec.multi_input:
        shapes = [(1, *features), (3, *features), (2, 3, *features), (2, 2, 3, *features)]
    else:
        shapes = [(1, *features), (3, *features)]
    n = len(case.input_shapes)
    return [Case(case.config, (s,) * n, f"inputs {s} (case {case.label})") for s in shapes]


# What a port does to the output's shape, each as the shape it gives for the expected one.
_RESHAPES = {
    "the output is squeezed: its axes of size 1 are dropped, so a batch of one loses its "
    "batch axis": lambda want: tuple(d for d in want if d != 1),
    "inputs of rank > 2 come out flattened to (-1, features): the leading axes are not "
    "restored": lambda want: (int(np.prod(want[:-1])), want[-1]),
    "inputs of rank > 2 come out flattened to (batch, -1): the axes after the batch axis are "
    "not restored": lambda want: (want[0], int(np.prod(want[1:]))),
}


def _shape_diagnosis(seen) -> str | None:
    """The one reshape in ``_RESHAPES`` that predicts every call's output shape, right and
    wrong alike, with the calls it was tested on; None when none or several do."""
    fits = [why for why, reshape in _RESHAPES.items()
            if all(reshape(want) == got for want, got, _ in seen)]
    if len(fits) != 1:
        return None
    return f"{fits[0]} ({reshaped(seen)})"


def reshaped(seen) -> str:
    """The wrong shapes of ``seen`` ((expected, got, call) triples) as ``want -> got``, and
    whether the other calls' were right."""
    wrong = sorted({f"{want} -> {got}" for want, got, _ in seen if want != got})
    rest = "; the other shapes right" if len(wrong) < len({w for w, _, _ in seen}) else ""
    return ", ".join(wrong) + rest


def misshaped(seen) -> str | None:
    """What the port does to the output's shape, where some call's is not the spec's:
    the one reshape of ``_RESHAPES`` that predicts them all, else the shapes themselves."""
    if all(want == got for want, got, _ in seen):
        return None
    return _shape_diagnosis(seen) or (
        f"the output's shape is not the input's, as the spec's is ({reshaped(seen)})")


def branch_zeroed(weights: dict) -> dict:
    """``weights`` with the second Dense's kernel and bias 0: a FeatureMixing's branch is
    then 0, and the layer returns what its residual path alone gives."""
    return {k: (np.zeros_like(v) if k.startswith("dense2.") else v) for k, v in weights.items()}


@check("residual")
def residual(ctx):
    rng = np.random.default_rng(1)
    case = ctx.spec.cases()[0]
    handle = ctx.build(case)
    weights = ctx.random_weights(case.config, case.input_shapes, rng)
    weights = branch_zeroed(weights)
    x = ctx.inputs(case, rng)
    for training in (False, True):
        # dense2 zero: the output is the input whatever the norm holds (any it lacks may stay)
        set_held_weights(handle, weights)
        out = handle.forward(x, training=training)
        if not np.array_equal(out, x):
            err = float(np.max(np.abs(np.asarray(out, np.float64) - x)))
            dropped = training and _input_dropped(out, x, case.config.get("dropout"))
            raise ClauseFailure(
                f"training={training}: with the second Dense zeroed the output differs from the "
                f"input by up to {err:.3g}",
                diagnosis=dropped or _residual_diagnosis(out, x, training),
                checked=bool(dropped),
            )


INPUT_DROPPED = "in training the layer's input is dropped out before the residual reads it"


def _input_dropped(out, x, p) -> str | None:
    """Where a training call with the second Dense zeroed returns dropout(x): each value 0 or
    x / (1 - p), the zeros at rate p (6 sd), the words ``INPUT_DROPPED`` with that evidence."""
    if not p or not 0 < p < 1:
        return None
    x64, out64 = np.asarray(x, np.float64), np.asarray(out, np.float64)
    seen = np.abs(x64) > 1e-3
    ratio = out64[seen] / x64[seen]
    zero = np.abs(ratio) <= 1e-6
    kept = np.abs(ratio - 1.0 / (1.0 - p)) <= 1e-5 * (1.0 + 1.0 / (1.0 - p))
    n = ratio.size
    if not np.all(zero | kept) or abs(zero.mean() - p) > 6 * np.sqrt(p * (1 - p) / n):
        return None
    return (f"{INPUT_DROPPED} (a dropout on the input itself, which the skip path then adds: "
            f"with the second Dense zeroed a training call returns dropout(x), {zero.mean():.0%}"
            f" of the values 0 and the others x / (1 - p), p = {p:g}), where the spec drops "
            "only inside the branch")


def _residual_diagnosis(out, x, training):
    """What the output shows (the inference call passed where ``training``): no guess at
    what the residual adds instead; the root-cause stage names that."""
    if np.allclose(out, 0):
        return "the output is zero when the branch is: no residual connection"
    if training:
        return ("the residual sum changes in training only (an inference call returns the "
                "input)")
    return "the residual adds something other than the raw input"


@check("weight-table")
def weight_table(ctx):
    for case in ctx.spec.cases():
        handle = ctx.build(case)
        table = ctx.spec.weight_table(case.config, case.input_shapes)
        want = {w.name: (tuple(w.shape), w.trainable) for w in table}
        try:
            info = handle.weight_info()
        except Exception as exc:  # noqa: BLE001 - the port's weights do not map: say which
            holding = _holding(ctx, case, handle, None)
            if holding is None:
                raise
            raise ClauseFailure(f"{case.label}: the weights cannot be listed: "
                                f"{type(exc).__name__}: {exc}", diagnosis=holding,
                                checked=True) from exc
        got = {k: (tuple(s), bool(t)) for k, (s, t) in info.items()}
        problems = [f"missing {n}" for n in want if n not in got]
        problems += [f"unexpected {n}" for n in got if n not in want]
        problems += [
            f"{n}: shape {got[n][0]} trainable={got[n][1]}, spec {want[n][0]} "
            f"trainable={want[n][1]}"
            for n in want
            if n in got and got[n] != want[n]
        ]
        if problems:
            transposed = [
                n
                for n in want
                if n in got and got[n][0] == want[n][0][::-1] and got[n][0] != want[n][0]
            ]
            if transposed:
                raise ClauseFailure(
                    f"{case.label}: " + "; ".join(problems),
                    diagnosis=f"{', '.join(transposed)} in (out, in) layout: the adapter must "
                    "transpose to the canonical (in, out)",
                )
            holding = (_split(handle, want, got, problems) or _declared_absent(
                handle, want, got, problems) or _bigger(table, info, ctx=ctx, handle=handle)
                       or _holding(ctx, case, handle, info))
            raise ClauseFailure(f"{case.label}: " + "; ".join(problems), diagnosis=holding,
                                checked=holding is not None)


BIGGER = "the port's module holds weights outside the layer's table"

DECLARED_ABSENT = "the weight map declares {name} absent{why}, but the port holds it"


def _map_entry(path: str, transform) -> str:
    """How a weight map writes ``path`` read with ``transform`` (portspec.ports)."""
    name = getattr(transform, "name", "identity")
    if name == "identity":
        return repr(path)
    order = re.fullmatch(r"reshape\((\w)\)", name)
    call = f'reshape("{order[1]}")' if order else name
    return f"({path!r}, portspec.ports.{call})"


def _declared_absent(handle, want, got, problems) -> str | None:
    """Where the weight map declares a weight of the table ``absent`` and the port holds one
    weight no entry maps, with as many values and the same trainability (a BatchNorm offset
    the map calls missing): that weight, which the map most likely meant, for every problem.
    Among several such weights, the one beside a weight the map names of the same sublayer
    (``norm.``); its layout suggested from that neighbour's where the shapes agree."""
    try:
        layout = handle.weight_layout()
    except Exception:  # noqa: BLE001 - no layout: no declaration to read
        return None
    held = getattr(handle, "held", {}) or {}
    missing = [n for n in want if n not in got
               and getattr(layout.get(n), "kind", None) == "absent"]
    extra = {p: v for p, v in got.items() if p not in want}
    if not missing or len(problems) != len(missing) + len(extra):
        return None
    said, taken = [], set()
    for name in missing:
        shape, trainable = want[name]
        fits = [p for p, (s, t) in extra.items()
                if p not in taken and int(np.prod(s)) == int(np.prod(shape)) and t == trainable]
        neighbours = {n: e for n, e in held.items()
                      if n.split(".")[0] == name.split(".")[0] and getattr(e, "path", None)}
        if len(fits) > 1:
            near = [p for p in fits if any(p.rsplit(".", 1)[0] == e.path.rsplit(".", 1)[0]
                                           for e in neighbours.values())]
            fits = near if len(near) == 1 else fits
        if len(fits) != 1:
            return None
        path = fits[0]
        taken.add(path)
        like = next((e.transform for n, e in neighbours.items()
                     if n in got and tuple(got[n][0]) == tuple(shape)
                     and _native_shape(handle, e.path) == tuple(extra[path][0])), None)
        why = getattr(layout[name], "reason", "") or ""
        said.append(
            DECLARED_ABSENT.format(name=name, why=f" ({why!r})" if why else "")
            + f": {path} {tuple(extra[path][0])}, "
            f"{'trainable' if trainable else 'not trainable'}, has the {int(np.prod(shape))} "
            f"values of the spec's {name} {shape} and no entry maps it: map {name!r} to "
            + (_map_entry(path, like) if like is not None else repr(path)
               + " (with the layout its values are in)"))
    return "; ".join(said)


def _native_shape(handle, path) -> tuple | None:
    """The shape the port holds its weight ``path`` at, None where it cannot say."""
    try:
        return tuple(handle._native()[path][0])
    except Exception:  # noqa: BLE001 - a handle without native access
        return None


JOINED = "as several weights and the weight map names one of them"


def joined(name: str, call: str, evidence: str) -> str:
    """The one wording of a canonical weight the port holds as several, which the weight map
    names one of (a gate kernel written as two Dense layers), whatever shows it (the weight
    table here; the map refusing the spec's weight in the root-cause probe, ``split_refusal``):
    one root cause, the evidence in brackets, which the report merges."""
    evidence = evidence.replace("[", "(").replace("]", ")")
    return (f"the port holds {name} {JOINED}: join them with {call}, in the order the layer "
            f"uses them [{evidence}]")


def _split(handle, want, got, problems) -> str | None:
    """``joined`` for each canonical weight whose map names one of several port weights that
    make it up (``PortHandle.split_guess``), where that accounts for every problem."""
    guess = getattr(handle, "split_guess", None)
    if guess is None:
        return None
    calls = {n: guess(n) for n in want if n in got and got[n][0] != want[n][0]}
    if not calls or None in calls.values():
        return None
    parts = {p for call in calls.values() for p in re.findall(r"'([^']+)'", call)}
    unexplained = [p for p in problems if not (
        any(p.startswith(f"{n}: shape ") for n in calls)
        or (p.startswith("unexpected ") and p[len("unexpected "):] in parts))]
    if unexplained:
        return None
    return "; ".join(joined(n, call, "; ".join(problems)) for n, call in calls.items())


# PortHandle's refusal with SPLIT_HINT, read back: the one wording in ports.base
_SPLIT_REFUSAL = re.compile(
    r"'(?P<name>[^']+)' maps to \S+ of shape \([^)]*\)(?: for the spec's \([^)]*\))?; "
    + re.escape(SPLIT_HINT).replace(re.escape("{call}"),
                                    r"(?P<call>portspec\.ports\.concat\(.*?\))"))


def split_refusal(error: str) -> str | None:
    """``joined`` for a port whose adapter refuses the spec's weight because the map names
    one of several port weights that make it up (portspec.ports.base's ``SPLIT_HINT``)."""
    m = _SPLIT_REFUSAL.search(error or "")
    if not m:
        return None
    said = error[:m.start()] + error[m.start():m.end()].split(";")[0]
    return joined(m["name"], m["call"], f"the spec's weights refused ({said.strip()})")


_REDUCES: dict = {}


def _source(ctx, extra) -> str | None:
    """The framework's own account of the weights outside the table (``extra_source``: a
    Keras option that adds state), read off a built layer."""
    try:
        handle = ctx.build(ctx.spec.cases()[0])
        return getattr(handle, "extra_source", lambda paths: None)(extra)
    except Exception:  # noqa: BLE001 - a port that cannot be built says so elsewhere
        return None


# A weight outside the table that zeroes the branch as built (rootcause._dead_branch)
IDENTITY = (
    "as built the layer returns its input unchanged: its branch is scaled by a weight outside "
    "the table that starts at 0 (ReZero's alpha, a layer scale initialised to 0), so every "
    "check of what the branch computes sees none of it"
)


HYPERPARAMETER = (
    "a hyperparameter held as state: {said}; as a registered buffer or a variable it is "
    "counted, saved and loaded with the weights, and it takes the weights' dtype (a float32 "
    "buffer rounds it); hold it as a plain Python number"
)
# the same held in a plain tensor attribute (self.eps = torch.tensor(eps)), no buffer
HYPERPARAMETER_PLAIN = (
    "a hyperparameter held as a tensor: {said}, a plain tensor attribute (torch.tensor(...), "
    "float32 by default), which Module.to() neither moves nor casts, so a float64 layer "
    "computes with its float32 rounding; hold it as a plain Python number"
)


def _hyperparameters(ctx, extra) -> str | None:
    """``HYPERPARAMETER``, where every weight outside the table (``extra``, all
    non-trainable) is a scalar whose value as built is one of the layer's hyperparameters: the
    config's numbers, the momentum in either sense, epsilon (float32's rounding of it
    too). As words, or None."""
    if not extra:
        return None
    case = ctx.spec.cases()[0]
    named = {k: v for k, v in case.config.items()
             if isinstance(v, float | int) and not isinstance(v, bool)}
    if ctx.spec.clauses_of("bn-update"):
        named.update({"momentum": ctx.spec.momentum, "momentum (PyTorch's sense)":
                      1.0 - ctx.spec.momentum, "epsilon": ctx.spec.epsilon})
    try:
        handle = ctx.build(case)
        values = handle._read()
        plain = set(getattr(handle, "_plain", dict)())
    except Exception:  # noqa: BLE001 - a port that cannot be built says so elsewhere
        return None
    said = []
    for path in extra:
        value = np.ravel(np.asarray(values.get(path, []), np.float64))
        hit = [n for n, v in named.items() if value.size == 1 and v != 0 and float(value[0])
               in (float(v), float(np.float32(v)))]
        if not hit:
            return None
        said.append(f"{path} holds {float(value[0]):.10g}, the {hit[0]}")
    if not set(extra) <= plain:
        return HYPERPARAMETER.format(said="; ".join(said))
    return HYPERPARAMETER_PLAIN.format(said="; ".join(said)) + _computes_with(ctx, values, extra)


# what a float64 call computes with an epsilon held in float32: checked, the words say so
# (rootcause._held_epsilon files the float64 failures of the layer under this cause)
COMPUTES_WITH = (" (checked: the port's float64 inference output is the spec's with epsilon "
                 "{held:.10g} in place of {eps:g})")


def _computes_with(ctx, values, extra) -> str:
    """``COMPUTES_WITH``, where one of ``extra`` holds the epsilon rounded otherwise than the
    spec's and the port's float64 inference output is the spec oracle's with that epsilon
    (and not with the spec's); else nothing."""
    if ctx.spec.name != "FeatureMixing":
        return ""
    from portspec import variants

    eps = ctx.spec.epsilon
    held = [float(np.ravel(np.asarray(values[p], np.float64))[0]) for p in extra
            if np.size(values.get(p, [])) == 1]
    held = next((v for v in held if v != eps and v == float(np.float32(eps))), None)
    if held is None:
        return ""
    try:
        handle, _, config, weights, x = _float64_call(ctx)
        got = np.asarray(handle.forward(x, training=False), np.float64)
        want = variants.fm_forward(config, weights, x, training=False, eps=held)[0]
        spec = ctx.spec.forward(config, weights, x, training=False)[0]
    except Exception:  # noqa: BLE001 - a port that cannot be run so is not read so
        return ""
    if close(got, want, FORWARD["float64"]) and not close(got, spec, FORWARD["float64"]):
        return COMPUTES_WITH.format(held=held, eps=eps)
    return ""


# values a normalisation caches from its moving variance (epsilon the spec's)
_CACHED = {"1/sqrt(moving_variance + epsilon)": lambda v, e: 1.0 / np.sqrt(v + e),
           "sqrt(moving_variance + epsilon)": lambda v, e: np.sqrt(v + e),
           "moving_variance + epsilon": lambda v, e: v + e}


def _derived(handle, native, extra, weights, off, tol) -> str | None:
    """A weight outside the table that holds a value derived from the moving variance
    (``_CACHED``): written as derived from the weights just set, the port's float64 inference
    output is the spec's. As words, or None."""
    var = weights.get("norm.moving_variance")
    if var is None:
        return None
    from portspec.layers.feature_mixing import EPSILON

    var = np.ravel(np.asarray(var, np.float64))
    for path in extra:
        shape = tuple(native[path][0])
        if int(np.prod(shape)) != var.size:
            continue
        for words, fn in _CACHED.items():
            handle._write_all([(path, fn(var, EPSILON).reshape(shape))])
            if off() <= tol:
                return (f"{path} caches {words}, a value derived from the layer's weights, as "
                        "state of its own: set_weights and a load write the moving variance "
                        "and leave the cache as it was, so inference reads a stale value "
                        f"(written as {words} of the weights set, the port's float64 inference "
                        "output is the spec's): compute it in the call")
    return None


def _reduction(ctx, extra) -> str | None:
    """Values of the port's weights outside the table (``extra``, paths) under which its
    float64 inference output is the spec's, where it is not with the values it is built
    with: each square 2-D weight the identity, each other 0 or 1 (a residual projection,
    a layer scale, a second bias each reduce so); as words, or None. Read once per port and
    layer, so that FM-WEIGHTS and FM-PARAMS word it alike."""
    key = (ctx.adapter.name, ctx.spec.name, tuple(extra))
    if key in _REDUCES:
        return _REDUCES[key]
    _REDUCES[key] = None
    try:
        handle, native, config, weights, x = _float64_call(ctx)
        expected, _ = ctx.spec.forward(config, weights, x, training=False)
        tol = 1e-9 * (1.0 + float(np.abs(expected).max()))

        def off():
            return float(np.abs(np.asarray(handle.forward(x, training=False)) - expected).max())

        if off() <= tol:  # the extra weights change nothing as built: no reading of them
            return None
        # the branch dead as built: the output is the input itself
        dead = np.array_equal(np.asarray(handle.forward(x, training=False), np.float64), x)
        derived = _derived(handle, native, extra, weights, off, tol)
        if derived:
            _REDUCES[key] = derived
            return derived
        options = []
        for path in extra:
            shape = tuple(native[path][0])
            options.append([("the identity", np.eye(shape[0]))] if len(shape) == 2
                           and shape[0] == shape[1] else
                           [("0", np.zeros(shape)), ("1", np.ones(shape))])
        for combo in itertools.islice(itertools.product(*options), 16):
            handle._write_all([(p, v) for p, (_, v) in zip(extra, combo, strict=True)])
            if off() <= tol:
                said = " and ".join(f"{p} {w}" for p, (w, _) in zip(extra, combo, strict=True))
                _REDUCES[key] = ((f"{IDENTITY}; " if dead else "") + "a computation the spec "
                                 f"has not, on those weights: with {said} the port's float64 "
                                 "inference output is the spec's")
                break
    except Exception:  # noqa: BLE001 - a port that cannot be read so is not read so
        return None
    return _REDUCES[key]


def _second_bias(ctx, handle, extra, got) -> str | None:
    """Where the weights outside the table are biases of Dense layers whose kernels are parts
    of one of the spec's (``concat``: a gate written as two Dense layers) and whose bias the
    map reads from another part's layer, and where writing c to them moves the float64
    inference output as adding c to the spec's bias moves the oracle's: the layer adds a bias
    per part where the spec's adds one. None otherwise."""
    held = getattr(handle, "held", None) or {}
    said, names = [], []
    for path in extra:
        layer, _, leaf = path.rpartition(".")
        if leaf not in ("bias", "b") or not got[path][1]:
            return None
        kernel = next((n for n, e in held.items() if len(getattr(e, "parts", ())) > 1
                       and any(p.rpartition(".")[0] == layer for p, _ in e.parts)), None)
        bias = kernel and held.get(kernel.replace(".kernel", ".bias"))
        if not bias or not getattr(bias, "path", None) or bias.path.rpartition(".")[0] == layer:
            return None
        said.append(f"{path} is the bias of {layer}, one of the layers that make up {kernel}, "
                    f"whose bias ({kernel.replace('.kernel', '.bias')}) the map reads from "
                    f"{bias.path}")
        names.append(kernel.replace(".kernel", ".bias"))
    if not said or not _adds_to(ctx, extra, names):
        return None
    return ("a bias per part where the spec's layer adds one: " + "; ".join(said)
            + ": the layer adds both (c written to the extra bias moves the output as c added "
            "to the spec's bias; build the other layers without a bias: use_bias=False, "
            "bias=False)")


def _float64_call(ctx):
    """(handle, its native weights, config, the random spec weights set, an input) for a
    float64 inference call of the first case at dropout 0: the reads of weights outside the
    table."""
    case = ctx.spec.cases()[0]
    config = {**case.config, "dropout": 0.0} if "dropout" in case.config else dict(case.config)
    handle = ctx.build(case, dtype="float64", config=config)
    rng = np.random.default_rng(5)
    weights = ctx.random_weights(config, case.input_shapes, rng)
    handle.set_weights(dict(weights))
    return handle, handle._native(), config, weights, ctx.inputs(case, rng, "float64")


def _adds_to(ctx, extra, names) -> bool:
    """Whether writing 0.25 to the port's weights ``extra`` (paths) moves its float64
    inference output as adding 0.25 to the spec's weights ``names`` moves the oracle's."""
    try:
        built, native, config, weights, x = _float64_call(ctx)
        built._write_all([(p, np.full(tuple(native[p][0]), 0.25)) for p in extra])
        got = np.asarray(built.forward(x, training=False), np.float64)
        moved = {k: (v + 0.25 * names.count(k) if k in names else v) for k, v in weights.items()}
        want, _ = ctx.spec.forward(config, moved, x, training=False)
    except Exception:  # noqa: BLE001 - a port that cannot be run so is not read so
        return False
    return bool(np.abs(got - want).max() <= 1e-9 * (1.0 + float(np.abs(want).max())))


def _bigger(table, info, counts=None, spec_counts=None, ctx=None, handle=None) -> str | None:
    """``BIGGER``, where the port holds every weight of the table as the spec has it and
    others besides (a whole block's sublayers, say), and, given ``counts``, where those
    others account exactly for the (trainable, non-trainable) counts over ``spec_counts``.
    FM-WEIGHTS and FM-PARAMS word it identically: one root cause."""
    want = {w.name: (tuple(w.shape), w.trainable) for w in table}
    got = {k: (tuple(s), bool(t)) for k, (s, t) in (info or {}).items()}
    extra = [k for k in got if k not in want]
    if not extra or any(got.get(n) != w for n, w in want.items()):
        return None
    sizes = [sum(int(np.prod(got[k][0])) for k in extra if got[k][1] == t) for t in (True, False)]
    if counts is not None and tuple(counts) != (spec_counts[0] + sizes[0],
                                                spec_counts[1] + sizes[1]):
        return None
    names = ", ".join(extra[:4]) + (f" and {len(extra) - 4} more" if len(extra) > 4 else "")
    reduced = _source(ctx, extra) if ctx is not None else None
    reduced = reduced or (_hyperparameters(ctx, [k for k in extra if not got[k][1]])
                          if ctx is not None and sizes[0] == 0 else None)
    reduced = reduced or (_reduction(ctx, extra) if ctx is not None and len(extra) <= 4
                          else None)
    reduced = reduced or (_second_bias(ctx, handle, extra, got)
                          if handle is not None and ctx is not None else None)
    if reduced:
        return (f"{BIGGER} ({names}: {sizes[0]} trainable and {sizes[1]} non-trainable "
                f"values): {reduced}")
    return (f"{BIGGER} ({names}: {sizes[0]} trainable and {sizes[1]} non-trainable values): "
            "the adapter builds more than the layer (a whole block: build the sublayer that "
            "is the layer), or the layer has a parameter the spec's has not (a second bias)")


@check("param-counts")
def param_counts(ctx):
    for case in ctx.spec.cases():
        handle = ctx.build(case)
        got = tuple(handle.param_counts())
        want = ctx.spec.param_counts(case.config, case.input_shapes)
        if got != tuple(want):
            try:
                info = handle.weight_info()
            except Exception:  # noqa: BLE001 - the counts alone are then the evidence
                info = None
            holding = _holding(ctx, case, handle, info)
            raise ClauseFailure(f"{case.label}: (trainable, non-trainable) = {got}, spec {want}",
                                diagnosis=holding, checked=holding is not None,
                                details={"counts": list(got), "spec": list(want)})


def no_weight(names: str, evidence: str) -> str:
    """The one wording of canonical weights ``names`` the port does not hold, whatever shows
    it (the counts here; the adapter's weight map refusing the spec's weights in the
    root-cause probe, ``unheld``): one root cause, the evidence in brackets, which the report
    merges. Square brackets inside ``evidence`` become round ones."""
    evidence = evidence.replace("[", "(").replace("]", ")")
    return (f"the port holds no {names} (where it really has none, the adapter's weight map "
            f"declares it absent(\"why\")) [{evidence}]")


_MAP_REFUSAL = re.compile(r"the weight map names '(?P<path>[^']+)' for '(?P<name>[^']+)', but "
                          r"the port has(?: no '[^']+' \(did you mean '[^']+'\?\): it has)? "
                          r"only \[(?P<held>[^\]]*)\]")


def unheld(spec, error: str) -> str | None:
    """``no_weight`` for a port whose adapter refuses the spec's weights because the weight
    map names a path the port lacks (portspec.ports.base's message), where the port holds one
    path for each of the spec's other weights: a weight missing, not one held under another
    name (then it would hold a path more). None otherwise."""
    m = _MAP_REFUSAL.search(error or "")
    if not m:
        return None
    held = [p.strip().strip("'\"") for p in m["held"].split(",") if p.strip()]
    case = spec.cases()[0]
    if len(held) != len(spec.weight_table(case.config, case.input_shapes)) - 1:
        return None
    return no_weight(m["name"], f"the spec's weights refused ({error.strip()})")


def _dims(held: tuple, want: tuple, config: dict, input_shapes=()) -> str:
    """The config parameters, or else the input axes, that size a weight the port holds at
    another shape, where the case's values tell them apart: " (sized by input_size where the
    spec's is by n_series)" for a Dense over the time axis, " (sized by the inputs' axis 1
    where the spec's is by the inputs' last axis)" for a gate sized off the wrong axis, " (an
    extra axis of input_size: one per time step)"; '' where the dimensions name nothing or
    the same parameters."""
    flat = config.get("input_size", 0) * config.get("n_series", 0)
    if flat and tuple(want) == (flat,) and len(held) == 1 and len({
            config["input_size"], config["n_series"]}) == 2:
        # a normalisation's vector: the spec's one value per flattened (time, channel) feature
        per = {config["n_series"]: "channel (n_series): statistics per channel over the batch "
               "and time, as BatchNorm1d or BatchNormalization() over the last axis computes "
               "them on (batch, time, channel)",
               config["input_size"]: "time step (input_size): statistics per time step over "
               "the batch and channels"}.get(held[0])
        if per:
            return (f" (one per {per}, where the spec's has one per flattened (time, channel) "
                    "feature, input_size * n_series)")
    names = {}
    for k, v in config.items():
        if isinstance(v, int) and not isinstance(v, bool):
            names.setdefault(v, []).append(k)
    if any(len(n) > 1 for n in names.values()):
        return ""  # two parameters of one value: a dimension names neither
    shape = tuple(input_shapes[0]) if input_shapes else ()
    axes = {}
    for i in range(1, len(shape)):
        axes.setdefault(shape[i], []).append(
            "the inputs' last axis" if i == len(shape) - 1 else f"the inputs' axis {i}")
    for v, said in axes.items():
        if v not in names and len(said) == 1:  # a config parameter names it first
            names[v] = said

    def named(dims):
        return [names[d][0] if d in names else None for d in dims]

    h, w = named(held), named(want)
    if len(held) == len(want):
        moved = {(b, a) for a, b in zip(h, w, strict=True) if a != b}
        if len(moved) == 1 and None not in next(iter(moved)):
            spec_name, port_name = next(iter(moved))
            return f" (sized by {port_name} where the spec's is by {spec_name})"
        return ""
    if len(held) == len(want) + 1 and held[1:] == want and h[0]:
        per = {"input_size": "time step", "n_series": "channel"}.get(h[0], h[0])
        return f" (an extra axis of {h[0]}: one per {per})"
    return ""


OVER_TIME = ("the channel MLP mixes along the time axis: its Dense layers map the input_size "
             "time steps where the spec's map the n_series channels (the layer's input not "
             "transposed back, or a transpose or Permute before them, as a time-mixing MLP "
             "has): ")


def _over_time(other_shape, got, config) -> str:
    """``OVER_TIME`` where the weights held at other shapes are the MLP's alone, each the
    spec's with input_size where the spec has n_series (a Dense over the time axis); ''
    otherwise, and where the two are equal (the shapes tell nothing)."""
    length, n = config.get("input_size"), config.get("n_series")
    if not other_shape or length == n or not all(w.name.startswith("dense")
                                                  for w in other_shape):
        return ""
    over = all(got[w.name][0] == tuple(length if d == n else d for d in w.shape)
               for w in other_shape)
    kernels = {"dense1.kernel", "dense2.kernel"} <= {w.name for w in other_shape}
    return OVER_TIME if over and kernels else ""


def _holding(ctx, case, handle, info) -> str | None:
    """What the port holds differently from the weight table, where that accounts exactly for
    its (trainable, non-trainable) counts: canonical weights held with the other trainability
    (read from ``info``, the port's weight_info), or, where the port's weights cannot be
    listed (``info`` None), the one set of canonical weights whose absence gives the counts.
    Weights the adapter declares absent or held at another shape are its documented design,
    not a finding here. FM-WEIGHTS and FM-PARAMS word it identically: one root cause."""
    table = ctx.spec.weight_table(case.config, case.input_shapes)
    counts = tuple(handle.param_counts())
    spec_counts = tuple(ctx.spec.param_counts(case.config, case.input_shapes))
    size = {w.name: int(np.prod(w.shape)) for w in table}

    def moved(names, flip=False):
        """The spec's counts with ``names`` moved to the other class (or removed)."""
        t, n = spec_counts
        for w in table:
            if w.name in names:
                t, n = (t - size[w.name], n) if w.trainable else (t, n - size[w.name])
                if flip:
                    t, n = (t, n + size[w.name]) if w.trainable else (t + size[w.name], n)
        return t, n

    evidence = f"(trainable, non-trainable) = {counts} where the spec has {spec_counts}"
    # the counts' own reading, where it says the same (the statistics counted as trainable or
    # not held as weights, gamma and beta out of the trainable count), leads
    lead = diagnose.explain_counts(f"{counts}, spec {spec_counts}")
    lead = f"{lead}: " if lead else ""
    if info is None:
        fits = [names for k in range(1, len(table) + 1)
                for names in itertools.combinations([w.name for w in table], k)
                if moved(names) == counts]
        if len(fits) != 1:
            return None
        return lead + no_weight(", ".join(fits[0]), evidence)
    bigger = _bigger(table, info, counts, spec_counts, ctx=ctx, handle=handle)
    if bigger:
        return bigger
    got = {k: (tuple(s), bool(t)) for k, (s, t) in info.items()}
    other_shape = [w for w in table if w.name in got and got[w.name][0] != tuple(w.shape)]
    # weights of one shape each, held at one other shape for one reason, in one phrase
    groups: dict = {}
    for w in other_shape:
        key = (got[w.name][0], tuple(w.shape))
        groups.setdefault(key, []).append(w.name)
    reshaped = [f"{', '.join(names)} {held} for the spec's {want}"
                + _dims(held, want, case.config, case.input_shapes)
                for (held, want), names in groups.items()]
    if reshaped and counts == spec_counts:  # the counts need no reading; the shapes may
        same = all(int(np.prod(got[w.name][0])) == size[w.name] for w in other_shape)
        if not same or any(k not in size for k in got):
            return None
        return (f"{'; '.join(reshaped)}: the same number of values in another shape, which "
                "the weight map must reshape (portspec.ports.reshape())")
    if reshaped:  # the counts of the weights as the port holds them, plus a counter or not
        own = [sum(int(np.prod(s)) for s, t in got.values() if t == trainable)
               for trainable in (True, False)]
        extra = counts[1] - own[1]
        if counts[0] != own[0] or extra not in (0, 1):
            return None
        counter = (", and one non-trainable scalar more: a bookkeeping counter held as state "
                   "(torch BatchNorm's num_batches_tracked)") if extra else ""
        held = getattr(handle, "held", {})
        why = [f"{w.name}: {held[w.name].why}" for w in other_shape
               if w.name in held and getattr(held[w.name], "why", "")]
        said = f" (the adapter says why: {'; '.join(why)})" if why else ""
        return (f"{_over_time(other_shape, got, case.config)}the port holds "
                f"{'; '.join(reshaped)}{said}, and its counts are those of the weights at its "
                f"own shapes{counter}: {evidence}")
    if any(k not in size for k in got):
        return None  # other names: not a matter of trainability alone
    flipped = [w for w in table if w.name in got and got[w.name][1] != w.trainable]
    missing = [w.name for w in table if w.name not in got]
    if not flipped or missing or moved({w.name for w in flipped}, flip=True) != counts:
        return None
    said = [f"{w.name} held non-trainable (the spec trains it)" if w.trainable
            else f"{w.name} held trainable (the spec does not train it)" for w in flipped]
    return lead + f"{'; '.join(said)}: {evidence}"
