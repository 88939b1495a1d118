"""Root causes: what a port computes, found by fitting the oracle's variants to its behaviour.

A failing clause says *that* a port differs from the spec; a root cause says *what it does
instead*, once for all the clauses that difference fails. Two stages:

1. ``probe(adapter, spec)`` runs in the worker after the clauses: it builds the layer from a
   few spec cases with the port's own initialisers, sets random weights (those of the canonical
   table the port has), reads them back through the port's adapter, and records inference and
   training outputs, the state after a training call, a call with moving variance 0, a batch of
   one, and the structured dropout probe (every drop decision visible in the output). The
   records travel to the parent as the details of a ``probe:<Layer>`` result (JSON).

2. ``attach(results)`` runs in the parent: per port and layer it searches the variant space of
   ``portspec.variants`` with the records (the spec; every single deviation, continuous
   constants fitted; pairs only when no single one fits). A variant *reproduces* the port when
   every recorded output and state is within the float64 tolerance of ``spec.tolerances``
   (the float32 one, reported as a precision finding, when nothing fits at float64). Each
   failing clause is then re-run against a NumPy implementation of the found variant: the
   root cause *explains* the clause when the variant fails it the same way (same message, the
   same numbers within 5 %; a half-precision finding in size only); otherwise the clause is
   unexplained. A portability clause is re-run against the writers' exports the port read
   (``attach(results, exchange=...)``), the variant's own written under the port's name.
   Where no variant fits, no cause is named. A canonical weight the port does not
   hold is evidence too: the choice that leaves exactly that weight unused (no gate bias, no
   bias in the first Dense) is part of every candidate. A variant that changes independent
   parts of the layer (the normalisation and the MLP, say: ``variants.parts``) is one root
   cause per part, each clause pointing to the part that fails it alone.

A root cause is written as a diff from the spec: "LayerNorm over (L, N), normalising after the
residual add instead of BatchNorm over each of the L*N flattened features, normalising before
the MLP", followed by its evidence (max error against the spec oracle and against the variant).
"""

from __future__ import annotations

import itertools
import os
import re
import tempfile
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from unittest import mock

import numpy as np

from portspec import variants
from portspec.layers import LAYERS, Case
from portspec.meta import config_text
from portspec.report import quote
from portspec.tolerances import FORWARD, close, same_result

PROBE = "probe:"  # clause-ID prefix of the probe's pseudo-results
UNEXPLAINED = "unexplained"
MEAN, VAR = "norm.moving_mean", "norm.moving_variance"
DROP_P = 0.3
DROP_CASE = Case({"n_series": 16, "input_size": 4, "dropout": DROP_P, "ff_dim": 16},
                 ((64, 4, 16),), "dropout probe")
DROP_X = 0.375  # the dropout probe's input, every element (nonzero: the residual shows)
# a second dropout rate, training only: a rate fixed in the port drops alike at both
DROP_P2 = 0.6


# -- 1. the probe (worker side) -------------------------------------------------------------


def _arr(v):
    return None if v is None else np.asarray(v, dtype=np.float64)


def _describe(exc) -> str:
    """As a clause's message says it (terminal colours off), so the two can be compared."""
    from portspec.suite.runner import _describe as described

    return described(exc, 300)


def _build(adapter, spec, case, config):
    """A float64 build (float32 when the port refuses float64), and the dtype it got."""
    try:
        handle = adapter.build(spec.name, dict(config), input_shapes=case.input_shapes, seed=0,
                               dtype="float64")
        return handle, "float64", None
    except Exception as exc:  # noqa: BLE001 - a port's refusal is evidence, recorded below
        handle = adapter.build(spec.name, dict(config), input_shapes=case.input_shapes, seed=0,
                               dtype="float32")
        return handle, "float32", _describe(exc)


def _call(handle, x, training):
    try:
        return np.asarray(handle.forward(x, training=training), dtype=np.float64), None
    except Exception as exc:  # noqa: BLE001
        return None, _describe(exc)


def _set(handle, weights):
    """Set the weights the port has (random values of the spec's distribution, at the port's
    own shape where it holds a weight at another); return what it reads back."""
    have = handle.get_weights()
    try:
        handle.set_weights({k: v for k, v in weights.items() if k in have})
    except Exception as refused:  # noqa: BLE001 - held at another shape: try the port's own
        resized = {k: _as_held(v, np.shape(have[k])) for k, v in weights.items() if k in have}
        if all(np.shape(resized[k]) == np.shape(weights[k]) for k in resized):
            raise
        try:
            handle.set_weights(resized)
        except Exception:  # noqa: BLE001 - the canonical refusal is the evidence
            if not _write_native(handle, weights):
                raise refused from None
    return {k: np.asarray(v, np.float64) for k, v in handle.get_weights().items()}


def _restore(handle, weights):
    """Set weights as ``_set`` read them back."""
    try:
        handle.set_weights(weights)
    except Exception:  # noqa: BLE001 - read back through a layout the port does not hold
        if not _write_native(handle, weights):
            raise


def _write_native(handle, weights) -> bool:
    """Write each canonical value straight into the port's own weight where the adapter's
    layout map says another shape (a kernel mapped with ``transpose`` that the port holds
    (in, out)): the port then computes with the canonical values, and what its adapter reads
    back shows the layout by the computation. False where the handle is no port's or a value
    fits neither as it is nor transposed."""
    held, write = getattr(handle, "held", None), getattr(handle, "_write_all", None)
    if held is None or write is None:
        return False
    native, staged = handle._native(), []
    for name, value in weights.items():
        entry = held.get(name)
        if entry is None or entry.path not in native:
            continue
        if entry.parts:  # held as several weights: their split is the adapter's
            try:
                staged.extend(handle._to_native(name, np.asarray(value), native))
            except (ValueError, KeyError):
                return False
            continue
        value, own = np.asarray(value), tuple(native[entry.path][0])
        if value.shape != own and value.ndim == 2 and value.T.shape == own:
            value = value.T
        if value.shape != own:
            return False
        staged.append((entry.path, value))
    write(staged)
    return True


def _as_held(value, shape):
    """A canonical value at the shape a port holds it: as is, transposed (a kernel kept
    (out, in)), or its values repeated to fill (a statistic kept per channel or as a scalar)."""
    value = np.asarray(value)
    if value.shape == tuple(shape):
        return value
    if value.ndim == 2 and value.T.shape == tuple(shape):
        return value.T
    return np.resize(value, shape)


def _record(label, config, x, weights, training, out, error, dtype, state=None):
    return {"label": label, "config": config, "x": x, "weights": weights, "training": training,
            "out": out, "error": error, "dtype": dtype, "state": state}


def _refused(label, config, exc, handle) -> dict:
    """The record of a case the port refused before any call: at the build (``handle`` None)
    or at setting the spec's weights, the stage in its state."""
    state = {"stage": "build" if handle is None else "weights"}
    if handle is None:
        state["where"] = _port_frame(exc)
    return _record(label, config, None, None, False, None, _describe(exc), None, state=state)


def _port_frame(exc) -> tuple[str, int, str] | None:
    """(file, line, function) of the innermost frame of ``exc``'s traceback in the port's own
    code: not portspec's, not an installed package's (site-packages), not Python's own."""
    import sysconfig

    skip = [os.path.realpath(sysconfig.get_paths()[k]) for k in ("stdlib", "platstdlib",
                                                                  "purelib", "platlib")]
    skip.append(os.path.realpath(os.path.dirname(variants.__file__)))
    found, tb = None, exc.__traceback__
    while tb is not None:
        path = os.path.realpath(tb.tb_frame.f_code.co_filename)
        if not path.startswith("<") and not any(path.startswith(d + os.sep) for d in skip):
            found = (path, tb.tb_lineno, tb.tb_frame.f_code.co_name)
        tb = tb.tb_next
    return found


def probe(adapter, spec) -> list[dict]:
    """The records of one port's layer (see the module docstring); arrays as NumPy float64.
    Where a call is refused, the probe is made again with each pair of the layer's integer
    config parameters swapped before the adapter sees them: the first swap under which every
    call runs (an adapter passing each to the other's parameter; the calls whose config has
    the two equal run either way) gives the records, and a "config swap" record names it."""
    if spec.name not in variants.SPACES:  # a layer with no variant space: nothing to search
        return []
    run = _probe_fm if spec.prefix == "FM" else _probe_gff
    records = run(adapter, spec)
    if any(r["error"] for r in records):
        for pair in _swappable(spec):
            swapped = _Swapped(adapter, pair)
            again = run(swapped, spec)
            if not any(r["error"] for r in again):
                refused = next(r["error"] for r in records if r["error"])
                return again + _layout(swapped, spec) + _staged(swapped, spec) + [_record(
                    "config swap", None, None, None, False, None, refused, None,
                    state={"swap": list(pair)})]
    return (records + _layout(adapter, spec) + _aliases(adapter, spec)
            + _float32_call(adapter, spec, records) + _plain(adapter, spec, records)
            + _output_dtype(adapter, spec) + _narrowing(adapter, spec, records)
            + _grad_mode(adapter, spec, records) + _stuck(adapter, spec)
            + _input_changed(adapter, spec)
            + _narrowed32(adapter, spec, records) + _staged(adapter, spec))


NARROWED32 = "float32 narrowed"  # the probe's record of a float32 call computed narrower


def _narrowed32(adapter, spec, records) -> list[dict]:
    """Where every float64 call of the probe is the spec's, one float32 inference call of the
    first case compared with the oracle on the same (float32) numbers: where it errs beyond
    float32's tolerance, a record of its error (``state["error"]``, relative) and of the first
    operation that turns a float32 value float16 or bfloat16 (``state["where"]``, where the
    handle can trace it; an autocast region the layer opens itself)."""
    calls = [r for r in records if r["dtype"] == "float64" and r["out"] is not None
             and r["label"] != "dropout"]
    if not calls or not all(_as_spec(spec, r) for r in calls):
        return []
    try:
        handle, x, config = _first_case(adapter, spec, "float32")
        got = np.asarray(handle.forward(x, training=False), np.float64)
        weights = {k: np.asarray(v, np.float64) for k, v in handle.get_weights().items()}
        wide = [np.asarray(v, np.float64) for v in x] if isinstance(x, list) else (
            np.asarray(x, np.float64))
        want = np.asarray(spec.forward(config, weights, wide, training=False)[0])
    except Exception:  # noqa: BLE001 - the clauses say what a refused call is
        return []
    if got.shape != want.shape:
        return []
    err = float(np.max(np.abs(got - want) / (1.0 + np.abs(want)), initial=0.0))
    if not err > FORWARD["float32"] * 10:
        return []
    try:
        where = getattr(handle, "narrowing", lambda *a, **k: None)(x, training=False)
    except Exception:  # noqa: BLE001 - no trace, no words
        where = None
    return [_record(NARROWED32, None, None, None, False, None, None, None,
                    state={"error": err, "where": where or ""})]


STUCK = "stuck in training"  # the probe's record of submodules .eval() leaves training
INPUT_CHANGED = "input changed"  # the probe's record of a call that changes its input

# the residual reading the normalised input, where the probe saw a call change its input in
# place: one mistake, which the gradient clauses meet as autograd's refusal (diagnose.IN_PLACE)
IN_PLACE_NORMALISED = (
    "the normalisation changes the layer's input in place (sub_, div_, -=, /= on x or a view "
    "of it: after a call the caller's tensor holds the normalised values), so the residual "
    "adds the normalised input, and autograd refuses the gradient through that in-place "
    "change; normalise a new tensor (z = (x - mean) / ...)")


# the residual sum written into the layer's input, where the output is the spec's
IN_PLACE_RESIDUAL = (
    "the residual sum is written into the layer's input in place (res = x; res += y, or "
    "x.add_(y)): the output is the spec's, but after every call, inference included, the "
    "caller's tensor holds the output too, and autograd refuses the gradient through that "
    "in-place change of the input; add out of place (out = x + y)")


def _input_changed(adapter, spec) -> list[dict]:
    """Where a call of the port's layer changes its input tensor in place
    (``PortHandle.changes_input``: PyTorch's tensors are mutable, NumPy-, JAX- and
    TensorFlow-backed inputs are not), a record of the modes it does so in, and whether the
    caller's tensor then holds the output in both modes (``state["output"]``)."""
    try:
        handle, x, _ = _first_case(adapter, spec, "float64")
        check = getattr(handle, "changes_input", None)
        seen = {t: check(x, training=t) for t in (False, True)} if check is not None else {}
    except Exception:  # noqa: BLE001 - no build or call, no evidence
        return []
    modes = [t for t, how in seen.items() if how]
    return [_record(INPUT_CHANGED, None, None, None, False, None, None, None,
                    state={"training": modes, "output": len(modes) == 2 and all(
                        seen[t] == "output" for t in modes)})] if modes else []


def _stuck(adapter, spec) -> list[dict]:
    """Where the port's layer, switched to inference (``PortHandle.stuck_in_training``: a
    PyTorch module's ``train(False)``), leaves submodules in training mode, a record of their
    paths (``state["paths"]``): a layer that trains in every call is then put down to that."""
    try:
        handle, _, _ = _first_case(adapter, spec, "float64")
        paths = getattr(handle, "stuck_in_training", list)()
    except Exception:  # noqa: BLE001 - no build, no evidence
        return []
    return [_record(STUCK, None, None, None, False, None, None, None,
                    state={"paths": list(paths)})] if paths else []


NARROWING = "narrowing"  # the probe's record of where a float64 call turns float32
GRAD_MODE = "grad mode"  # the probe's record of a call whose output follows autograd's mode


def _grad_mode(adapter, spec, records) -> list[dict]:
    """The first case's float64 calls made again with autograd recording, where the handle
    can (``forward_recorded``: a PyTorch port's value calls run under torch.no_grad): a
    record of each whose output differs from the same call's under no_grad, with both
    outputs in its state (its own ``out`` None: the search fits the no_grad calls)."""
    calls = [r for r in records if r["out"] is not None and r["dtype"] == "float64"
             and r["x"] is not None]
    calls = [r for r in calls if r["label"] == calls[0]["label"]] if calls else []
    found = []
    for r in calls:
        try:
            handle = adapter.build(spec.name, dict(r["config"]), seed=0, dtype="float64",
                                   input_shapes=[np.shape(v) for v in _as_list(r["x"])])
            if not hasattr(handle, "forward_recorded"):
                return []
            outs = []
            for call in (handle.forward, handle.forward, handle.forward_recorded):
                _restore(handle, r["weights"])
                outs.append(np.asarray(call(r["x"], training=r["training"]), np.float64))
        except Exception:  # noqa: BLE001 - a recorded call that raises: the clauses say it
            continue
        plain, again, got = outs
        if not same_result(plain, again, FORWARD["float64"]):
            continue  # two no_grad calls differ (a rate fixed in the port draws at dropout 0)
        if same_result(plain, got, FORWARD["float64"]):
            continue
        found.append(_record(GRAD_MODE, r["config"], None, None, r["training"], None, None,
                             "float64", state={"recorded": got, "no_grad": plain,
                                               "spec": _as_spec(spec, {**r, "out": got})}))
    return found


def grad_mode_words(records) -> str:
    """What the ``GRAD_MODE`` records show, in words; "" where there are none."""
    said = [r for r in records if r["label"] == GRAD_MODE]
    if not said:
        return ""
    modes = " and ".join(dict.fromkeys("training" if r["training"] else "inference"
                                       for r in said))
    diff = max(float(np.nanmax(np.abs(np.asarray(r["state"]["recorded"])
                                      - np.asarray(r["state"]["no_grad"])), initial=0.0))
               for r in said)
    spec = [("training" if r["training"] else "inference") for r in said if r["state"]["spec"]]
    return (f"the layer's computation follows autograd's grad mode, not the training flag "
            f"alone: its {modes} call{'s give' if ' and ' in modes else ' gives'} other "
            f"outputs with gradients recorded than under "
            f"torch.no_grad (max |difference| {_g(diff)}; torch.is_grad_enabled() read as the "
            f"mode, or a branch on it)"
            + (f"; with gradients recorded its {' and '.join(spec)} call is the spec's"
               if spec else ""))


def _as_spec(spec, record) -> bool:
    """Does the recorded call give the spec oracle's output to float64's tolerance? False
    where the oracle cannot take the record's weights (one the port lacks) or the output has
    another shape."""
    try:
        want, _ = spec.forward(record["config"], record["weights"], record["x"],
                               training=record["training"])
        return close(np.asarray(record["out"]), want, FORWARD["float64"])
    except Exception:  # noqa: BLE001 - weights the oracle cannot take, an output of another
        return False  # shape: not the spec's


def _narrowing(adapter, spec, records) -> list[dict]:
    """Where the port's float64 calls ran, the first operation that turns a float64 value
    into a narrower float (``PortHandle.narrowing``), in an inference call, then a training
    call, of the first case and then in inference calls of each other config (a tanh gate
    narrows where a sigmoid does not): a record of its words (``state["where"]``), which a
    float64 finding of float32 precision then names."""
    calls = [r for r in records if r["dtype"] == "float64" and r["out"] is not None
             and r["label"] != "dropout"]
    if not calls or all(_as_spec(spec, r) for r in calls):
        return []  # no float64 call to explain: the traces would cost a JAX port seconds
    first = spec.cases()[0]
    tries = [(first, (False, True))] + [
        (case, (False,)) for case in spec.config_cases() if case.config != first.config]
    for case, modes in tries:
        try:  # one build a case: an inference trace changes no state
            handle, x, _ = _first_case(adapter, spec, "float64", case)
        except Exception:  # noqa: BLE001 - no build, no words: the finding stays as it was
            continue
        for training in modes:
            try:
                where = getattr(handle, "narrowing", lambda *a, **k: None)(x,
                                                                           training=training)
            except Exception:  # noqa: BLE001 - no trace, no words
                continue
            if where:
                return [_record(NARROWING, None, None, None, training, None, None, None,
                                state={"where": where})]
    return []


OUTPUT_DTYPE = "output dtype"  # the probe's record of a float64 call's narrower output
NARROW_STORAGE = "narrow storage"  # of the weights a float64 layer holds narrower


def _first_case(adapter, spec, dtype, case=None):
    """A build of the spec's first case (or ``case``) at dropout 0 in ``dtype``, inputs for it
    in that dtype (seed 0) and the config: the probe's single calls."""
    case = spec.cases()[0] if case is None else case
    config = {**case.config, "dropout": 0.0} if "dropout" in case.config else case.config
    handle = adapter.build(spec.name, dict(config), input_shapes=case.input_shapes, seed=0,
                           dtype=dtype)
    x = spec.make_inputs(case, np.random.default_rng(0))
    x = [np.asarray(v, dtype) for v in x] if isinstance(x, list) else np.asarray(x, dtype)
    return handle, x, config


def _output_dtype(adapter, spec) -> list[dict]:
    """Where a float64 layer, its weights float64, returns another dtype than float64 from an
    inference call (an output cast at the end, ``.float()``), a record of it
    (``state["dtype"]``): a float64 finding of float32 precision is then put down to that
    cast."""
    try:
        handle, x, _ = _first_case(adapter, spec, "float64")
        got = np.asarray(handle.forward(x, training=False)).dtype.name
        dtypes = {k: np.asarray(v).dtype.name for k, v in handle.get_weights().items()}
    except Exception:  # noqa: BLE001 - a refused float64 call is the other records' evidence
        return []
    narrow = {k: d for k, d in dtypes.items() if d != "float64"}
    if narrow and len(narrow) == len(dtypes) and len(set(narrow.values())) == 1:
        narrow = {"all its weights": next(iter(narrow.values()))}  # one wording, both layers
    if narrow:  # a layer held narrower: its storage, not a cast of its output
        return [_record(NARROW_STORAGE, None, None, None, False, None, None, None,
                        state={"weights": narrow})]
    return [] if got == "float64" else [_record(OUTPUT_DTYPE, None, None, None, False, None,
                                                None, None, state={"dtype": got})]


def _plain(adapter, spec, records) -> list[dict]:
    """Where the port keeps tensors as plain attributes, which ``Module.to()`` does not cast
    (``diagnose.plain_state``), a record of their words (``state["plain"]``): a float64 call
    that computes partly in float32, or meets float32, is put down to them."""
    from portspec.diagnose import plain_words

    words = plain_words(adapter, spec)
    return [_record(PLAIN_STATE, None, None, None, False, None, None, None,
                    state={"plain": words})] if words else []


def _staged(adapter, spec) -> list[dict]:
    """The staged probe's records (``portspec.localise``), read only where no variant fits."""
    from portspec import localise

    return (localise.probe_fm if spec.prefix == "FM" else localise.probe_gff)(adapter, spec)


def _float32_call(adapter, spec, records) -> list[dict]:
    """Where every call the probe made raised in float64, one float32 call of the first case
    tells a port that refuses float64 from one whose every call raises: a record of what it
    did (``state["float32"]``: "ran" or "raised"), its output not kept (a float32 output is
    no evidence for the float64 search)."""
    calls = [r for r in records if r["x"] is not None]
    if not calls or any(r["out"] is not None for r in calls) or any(
            r["dtype"] != "float64" for r in calls):
        return []
    try:
        handle, x, config = _first_case(adapter, spec, "float32")
        _, error = _call(handle, x, False)
    except Exception:  # noqa: BLE001 - refused before the call: no evidence either way
        return []
    return [_record("float32 call", config, None, None, False, None, error, "float32",
                    state={"float32": "raised" if error else "ran"})]


def _swappable(spec) -> list[tuple[str, str]]:
    """Pairs of the layer's integer config parameters whose values differ in its first case."""
    config = spec.cases()[0].config
    ints = [n for n, _ in spec.config_params if type(config.get(n)) is int]
    return [(a, b) for a, b in itertools.combinations(ints, 2) if config[a] != config[b]]


def swap_config(config: dict, pair) -> dict:
    """``config`` with the values of the two parameters ``pair`` exchanged."""
    a, b = pair
    if a not in config or b not in config:
        return dict(config)
    return {**config, a: config[b], b: config[a]}


class _Swapped:
    """An adapter that builds with two config parameters swapped; the rest is the port's."""

    def __init__(self, adapter, pair):
        self._adapter, self._pair = adapter, tuple(pair)

    def __getattr__(self, name):
        return getattr(self._adapter, name)

    def build(self, layer, config, **kwargs):
        handle = self._adapter.build(layer, swap_config(config, self._pair), **kwargs)
        if isinstance(getattr(handle, "shapes", None), dict):  # a port's handle (ports.base):
            # its canonical shapes are those of the config the port then computes, the spec's
            table = LAYERS[layer].weight_table(config, kwargs["input_shapes"])
            handle.shapes = {w.name: tuple(w.shape) for w in table}
            handle.config = dict(config)
        return handle


def _layout(adapter, spec) -> list[dict]:
    """Kernels the port reads back with the canonical shape transposed: (out, in) layouts."""
    case = spec.cases()[0]
    try:
        handle = adapter.build(spec.name, dict(case.config), input_shapes=case.input_shapes,
                               seed=0, dtype="float64")
        held = {k: np.shape(v) for k, v in handle.get_weights().items()}
    except Exception:  # noqa: BLE001 - the other records say what fails
        return []
    table = {w.name: w.shape for w in spec.weight_table(case.config, case.input_shapes)}
    flipped = sorted(k for k, shape in held.items() if k in table and len(shape) == 2
                     and shape != table[k] and shape == table[k][::-1])
    if not flipped:
        return []
    said = ", ".join(f"{k} as {held[k]}, the spec's {table[k]} transposed" for k in flipped)
    return [_record("layout", case.config, None, None, False, None, None, None,
                    state={"transposed": said})]


ALIASES = "aliases"  # the label of the record of weights the port holds as one


def _aliases(adapter, spec) -> list[dict]:
    """Canonical weights the port holds in one of its own (tied weights; a concat naming one
    weight twice): random canonical weights written, then read back. A weight that reads back
    another's value (as it is or transposed), or parts that read back another part's, makes a
    record: {name: (what it reads back, the port's weights holding it)}."""
    case = spec.cases()[0]
    try:
        handle = adapter.build(spec.name, dict(case.config), input_shapes=case.input_shapes,
                               seed=0, dtype="float64")
        have = handle.get_weights()
        written = {k: np.asarray(v, np.float64) for k, v in spec.random_weights(
            case.config, case.input_shapes, np.random.default_rng(43)).items() if k in have}
        handle.set_weights(written)
        read = {k: np.asarray(v, np.float64) for k, v in handle.get_weights().items()}
    except Exception:  # noqa: BLE001 - the other records say what fails
        return []
    held = getattr(handle, "held", {})

    def same(a, b):
        return np.shape(a) == np.shape(b) and np.allclose(a, b, rtol=1e-6, atol=1e-12)

    said = {}
    for name, value in written.items():
        got = read.get(name)
        if got is None or same(got, value):
            continue
        def paths(n):
            entry = held.get(n)
            return [p for p, _ in entry.pieces] if entry is not None else []

        hit = next(((o, t) for o, v in written.items() if o != name
                    for t, w in ((False, v), (True, v.T)) if same(got, w)), None)
        if hit is not None:
            o, t = hit
            said[name] = (f"{name} and {o} are one weight", f"{name} reads back {o}'s value"
                          + (", transposed" if t else ""), sorted(set(paths(name) + paths(o))))
        elif len(paths(name)) > 1 and got.ndim:
            entry = held[name]
            k, axis = len(entry.pieces), entry.axis % got.ndim
            parts = np.array_split(value, k, axis=axis)
            if all(same(b, parts[-1]) for b in np.array_split(got, k, axis=axis)):
                said[name] = (f"the {k} parts of {name} (its concat along axis {axis}) are one "
                              "weight", "each part reads back the last part's value",
                              sorted(set(paths(name))))
    if not said:
        return []
    return [_record(ALIASES, case.config, None, None, False, None, None, None, state=said)]


def aliased(state: dict) -> str:
    """The words of an aliases record: which weights are one of the port's."""
    texts = []
    for which, shows, paths in state.values():
        where = f" of the port ({', '.join(repr(p) for p in paths)})" if paths else ""
        texts.append(f"{which}{where}: written apart, {shows}")
    return ("; ".join(texts) + " (tied weights, or a concat naming one weight twice): each "
            "write overwrites the other, and the layer computes with one tensor where the "
            "spec has independent ones, its parameter count short by the shared ones")


def _probe_fm(adapter, spec):
    records = []
    rng = np.random.default_rng(31)
    cases = {c.label: c for c in spec.cases()}
    base = cases["expand"]
    one = Case(base.config, ((1, *base.input_shapes[0][1:]),), "batch 1")
    for case in (base, cases["square"], one):
        config = {**case.config, "dropout": 0.0}
        handle = None
        try:
            handle, dtype, refused = _build(adapter, spec, case, config)
            if refused:
                records.append(_record(f"{case.label} float64 build", config, None, None, False,
                                       None, refused, "float64"))
            w = _set(handle, spec.random_weights(config, case.input_shapes, rng))
        except Exception as exc:  # noqa: BLE001
            records.append(_refused(case.label, config, exc, handle))
            continue
        x = spec.make_inputs(case, rng)
        modes = (True,) if case.label == "batch 1" else (False, True)
        for training in modes:
            _restore(handle, w)
            out, error = _call(handle, x, training)
            state = None
            if error is None:  # an inference call's too: the spec leaves them unchanged
                now = handle.get_weights()
                state = {k: _arr(now[k]) for k in (MEAN, VAR) if k in now}
            records.append(_record(case.label, config, x, w, training, out, error, dtype, state))
        if case.label == "expand" and VAR in w:  # epsilon alone sets the scale here
            zero = {VAR: np.zeros_like(w[VAR])}
            try:
                _restore(handle, w)
                handle.set_weights(zero)
                zero = {k: _arr(v) for k, v in handle.get_weights().items()}
                out, error = _call(handle, x, False)
            except Exception as exc:  # noqa: BLE001
                out, error = None, _describe(exc)
            records.append(_record("moving variance 0", config, x, zero, False, out, error,
                                   dtype))
    # the dropout probe: BatchNorm outputs beta = 1, every hidden unit is 1, the second Dense
    # copies hidden unit c to channel c plus 1; x = 3/8 everywhere, so that the residual's
    # share shows (a dropout after the residual add drops it)
    config = DROP_CASE.config
    try:
        handle, dtype, _ = _build(adapter, spec, DROP_CASE, config)
        w = _set(handle, _dropout_weights(config))
        x = np.full(DROP_CASE.input_shapes[0], DROP_X)
        for training in (True, False):
            out, error = _call(handle, x, training)
            records.append(_record("dropout", config, x, w, training, out, error, dtype))
        config = {**config, "dropout": DROP_P2}
        handle, dtype, _ = _build(adapter, spec, DROP_CASE, config)
        w = _set(handle, _dropout_weights(config))
        out, error = _call(handle, x, True)
        records.append(_record("dropout", config, x, w, True, out, error, dtype))
    except Exception as exc:  # noqa: BLE001
        records.append(_record("dropout", config, None, None, True, None, _describe(exc), None))
    return records


def _dropout_weights(config):
    """BatchNorm gives beta = 1, every hidden unit is 1, output c = hidden unit c + 1: the
    branch is m2 s (m1 s + 1) with the keep decisions m1, m2 and the kept units' scale s."""
    n, length, h = config["n_series"], config["input_size"], config["ff_dim"]
    k2 = np.zeros((h, n))
    k2[np.arange(n), np.arange(n)] = 1.0
    return {"norm.gamma": np.zeros(length * n), "norm.beta": np.ones(length * n),
            "norm.moving_mean": np.zeros(length * n), "norm.moving_variance": np.ones(length * n),
            "dense1.kernel": np.zeros((n, h)), "dense1.bias": np.ones(h), "dense2.kernel": k2,
            "dense2.bias": np.ones(n)}


def _probe_gff(adapter, spec):
    records = []
    rng = np.random.default_rng(32)
    # the config cases are rank 3; a softmax at rank 2 as well tells an axis that depends on
    # the rank (torch's implicit one) from a fixed wrong axis
    first = spec.cases()[0]
    rank2 = [Case({**first.config, "activation": "softmax"}, first.input_shapes, "softmax rank2")]
    for case in spec.cases()[:1] + spec.config_cases() + rank2:
        handle = None
        try:
            handle, dtype, refused = _build(adapter, spec, case, case.config)
            if refused:
                records.append(_record(f"{case.label} float64 build", case.config, None, None,
                                       False, None, refused, "float64"))
            w = _set(handle, spec.random_weights(case.config, case.input_shapes, rng))
        except Exception as exc:  # noqa: BLE001
            records.append(_refused(case.label, case.config, exc, handle))
            continue
        x = spec.make_inputs(case, rng)
        out, error = _call(handle, x, False)
        records.append(_record(case.label, case.config, x, w, False, out, error, dtype))
    return records


def probe_result(adapter, spec):
    """The probe as a pseudo-result ``probe:<Layer>`` (what the worker sends)."""
    from portspec.suite.runner import Result

    start = time.perf_counter()
    try:
        records = probe(adapter, spec)
        status, message = "passed", ""
    except Exception as exc:  # noqa: BLE001 - the root-cause stage then names no cause
        records, status, message = [], "failed", f"raised {_describe(exc)}"
    return Result(f"{PROBE}{spec.name}", adapter.name, status, message,
                  seconds=round(time.perf_counter() - start, 4),
                  details={"records": [_jsonable(r) for r in records]})


def _jsonable(value):
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return {"__array__": value.astype(np.float64).tolist()}
    if isinstance(value, np.generic):
        return value.item()
    return value


def _from_json(value):
    if isinstance(value, dict):
        if set(value) == {"__array__"}:
            return np.asarray(value["__array__"], dtype=np.float64)
        return {k: _from_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_from_json(v) for v in value]
    return value


# -- 2. the search (parent side) -------------------------------------------------------------


@dataclass
class Finding:
    """What a port's layer computes: the choices that differ from the spec, with evidence."""

    layer: str
    diff: dict = field(default_factory=dict)  # choice -> value, fitted constants included
    spec_error: float = 0.0  # max |port - spec oracle| over the records
    variant_error: float = 0.0  # max |port - variant| over the records
    precision: str | None = None  # "float32" when only the float32 tolerance is met
    raised: str | None = None  # a call the port refuses (batch of one, float64)
    fits: bool = True
    also: list = field(default_factory=list)  # other diffs the evidence cannot tell apart
    note: str = ""  # why nothing could be fitted
    evidence: str = ""  # what shows the diff when no call could run
    absent: tuple = ()  # canonical weights the port does not hold
    # (name, shape): normalisation weights the port holds at a shape of its own (a LayerNorm's
    # (L, N) scale), which its clauses leave at its own values (adapter.set_held_weights)
    own: tuple = ()
    stored: bool = False  # the precision is the moving statistics' storage alone
    # met at the float32 tolerance, yet by a float64 variant to within CLOSE: not float32
    close: bool = False
    swap: tuple = ()  # two config parameters the port is built with exchanged
    swap_refusal: str = ""  # the probe's first refused call, which the swap made run
    misshaped: str = ""  # what the port does to the output's shape, where it is not the spec's
    wrong_shapes: tuple = ()  # the output shapes of the probe's calls that were wrong
    # where no variant fits: the staged probe's (statement, scope) pairs (portspec.localise)
    located: tuple = ()
    # the words for tensors a PyTorch port does not register (diagnose.plain_state): where
    # the finding is a precision or a refused float64 call, their effect
    plain: str = ""
    cast: str | None = None  # the dtype a float64 call returns, where it is not float64
    narrowed: str | None = None  # where a float64 call turns a value float32 (NARROWING)
    held: dict = field(default_factory=dict)  # weights a float64 layer holds narrower
    # where the port's output follows autograd's mode (``GRAD_MODE``): words leading the line,
    # the rest of it then what the no_grad calls compute
    grad_mode: str = ""
    stuck: tuple = ()  # submodules the layer's switch to inference leaves training (STUCK)
    narrowed32: dict = field(default_factory=dict)  # a float32 call computed narrower
    input_changed: bool = False  # a call changes its input tensor in place (INPUT_CHANGED)
    input_holds_output: bool = False  # ... in both modes, the caller's tensor holding the output

    @property
    def says(self) -> bool:
        """Whether it says what the port's layer does otherwise than the spec: a variant, a
        precision, a refusal, a config swap or an output shape (else the layer computes as the
        spec, or nothing fits)."""
        return bool(self.diff or self.precision or self.raised or self.swap or self.misshaped)

    def summary(self) -> dict:
        """The finding as plain data (the JSON report's ``details.variant`` of a failure)."""
        return {"layer": self.layer, "fits": self.fits, "diff": {
            k: list(v) if isinstance(v, tuple) else v for k, v in self.diff.items()},
            "precision": self.precision, "narrowed": self.narrowed, "raised": self.raised,
            "swap": list(self.swap),
            "misshaped": self.misshaped, "located": [text for text, _ in self.located],
            "grad_mode": self.grad_mode,
            "spec_error": self.spec_error, "variant_error": self.variant_error}

    def _where(self) -> str:
        """``; `` and where a float64 call turns a value float32 (``narrowed``), for the
        evidence in brackets; '' where that is not the finding's precision."""
        if not (self.precision and self.narrowed and not self.stored):
            return ""
        return f"; {self.narrowed.replace('[', '(').replace(']', ')')}"

    def line(self) -> str:
        if not self.grad_mode:
            return self._line()
        rest = self._line().removeprefix(f"{self.layer}: ")
        return f"{self.layer}: {self.grad_mode}; under torch.no_grad, {rest}"

    def _line(self) -> str:
        space = variants.SPACES.get(self.layer)  # None: a layer no variant describes
        if self.located and not self.says and self.evidence:
            return (f"{self.layer}: " + "; ".join(text for text, _ in self.located)
                    + f" [{self.evidence}]")
        if self.located and not self.says:
            return (f"{self.layer}: " + "; ".join(text for text, _ in self.located)
                    + (" [no variant of the oracle reproduces the port; " if not self.fits else
                       " [the search's calls match the spec oracle; ")
                    + "the staged probe reads each part back through weights that isolate it "
                    f"(portspec.localise), max error vs the spec oracle {_g(self.spec_error)}]")
        if not self.fits:
            why = self.note or (
                f"the calls without dropout match the spec oracle (max error "
                f"{_g(self.spec_error)}); the dropout probe's outputs take neither its values "
                "nor a variant's" if self.spec_error <= CLOSE else
                f"max error vs the spec oracle {_g(self.spec_error)}")
            return f"{self.layer}: no variant of the oracle reproduces the port ({why})"
        if self.plain and not self.diff and (self.precision or self.raised):
            # the plain attributes are the cause: Module.to() left them float32, so a float64
            # layer computes partly in float32 or refuses to mix them; the evidence follows
            said = [self.raised.replace("[", "(").replace("]", ")")] if self.raised else []
            if self.precision:
                what = ("moving statistics stored" if self.stored else
                        "float64 calls computed partly")
                said.append(f"{what} in {self.precision}, max error vs the spec oracle "
                            f"{_g(self.spec_error)}")
            return f"{self.layer}: {self.plain} [{'; '.join(said)}]"
        if self.cast and self.precision == self.cast and not (self.diff or self.raised):
            # the float32 precision is the output's: a float64 call returns float32
            return (f"{self.layer}: {output_cast(self.cast)} [max error vs the spec oracle "
                    f"{_g(self.spec_error)}, of {self.cast} rounding]")
        parts = [self.misshaped] if self.misshaped else []
        if self.swap:  # worded as FM-CONFIG words it (one root cause)
            from portspec.suite.areas.errors import config_swap

            parts.append(config_swap(*self.swap, "").removesuffix(" []"))
        if self.diff:  # what the layer computes leads; a refused call of the same design after
            text = variants.describe(space, self.diff)
            if self.input_changed and self.diff.get("residual") == "normalised":
                text = f"{IN_PLACE_NORMALISED} ({text})"
            if self.stuck and self.diff.get("training_flag") == "always":
                text = text.replace(variants.ALWAYS_HOW, (
                    f".eval() leaves the submodules {', '.join(self.stuck)} in training mode: a "
                    "train() override that does not pass the mode on (super().train(mode))"))
            if self.also:
                text += " (the evidence cannot tell this from: " + "; ".join(
                    variants.describe(space, d) for d in self.also) + ")"
            parts.append(text)
        if self.raised:
            parts.append(self.raised)
        # weights beyond the moving statistics held narrower: those, not the statistics' storage
        # alone (a param_dtype left at float32 holds every weight so)
        wider_held = bool(self.held) and not set(self.held) <= {MEAN, VAR}
        if self.precision and self.stored and not wider_held:
            parts.append(f"moving statistics stored in {self.precision} (a float64 layer "
                         f"rounds the statistics it is given and those it updates to "
                         f"{self.precision}; its arithmetic is float64)")
        elif self.precision and self.close and not wider_held:
            parts.append("float64 arithmetic a little off the oracle's (below float32 "
                         "rounding, so not float32: the framework's own approximation of a "
                         "function such as erf or tanh)")
        elif self.precision and wider_held:
            names = ", ".join(sorted(self.held))
            dtypes = "/".join(sorted(set(self.held.values())))
            parts.append(f"a float64 call computed partly in {self.precision}: the float64 "
                         f"layer holds {names} in {dtypes} (a sublayer or weight built without "
                         f"the layer's dtype), and what they touch is computed in {dtypes}")
        elif self.precision and self.narrowed:  # the place is evidence: in the brackets
            parts.append(f"a float64 call computed partly in {self.precision}: a value is "
                         f"converted to {self.precision} inside the call (errors of "
                         f"{self.precision} size at float64)")
        elif self.precision:
            parts.append(f"a float64 call computed partly in {self.precision} (errors of "
                         f"{self.precision} size at float64)")
        spec = (f"max error vs the spec oracle {_g(self.spec_error)}"
                if self.spec_error != float("inf") else
                "the spec oracle cannot take the weights as the port reads them back")
        evidence = (f" [{spec}, vs this variant {_g(self.variant_error)}{self._where()}]"
                    if (self.diff or self.precision) else "")
        areas = variants.AREAS[self.layer]
        if self.diff and all(areas.get(k) == "dropout" for k in self.diff) and (
                self.spec_error <= CLOSE):  # the calls without dropout say nothing of it
            evidence = (f" [the calls without dropout match the spec oracle (max error "
                        f"{_g(self.spec_error)}); the dropout probe's outputs take this "
                        "variant's values, not the spec's]")
        fixed = variants.fixed_rate(self.diff or {})
        if fixed is not None:
            evidence = (f" [the dropout probe's training calls configured with dropout "
                        f"{DROP_P:g} and {DROP_P2:g} both drop {fixed:g} of the units; the "
                        "calls configured without dropout drop too (max error vs the spec "
                        f"oracle {_g(self.spec_error)})]")
        if self.swap:
            a, b = self.swap
            evidence = (f" [calls of the probe are refused as the spec's config is given "
                        f"({quote(self.swap_refusal)}); with {a} and {b} exchanged before the "
                        "adapter builds, every call runs"
                        + (f", and max error vs the spec oracle {_g(self.spec_error)}, vs this "
                           f"variant {_g(self.variant_error)}]" if self.diff else
                           f" and matches the spec oracle (max error {_g(self.spec_error)})]"))
        if self.evidence:
            evidence = f" [{self.evidence}]"
        return f"{self.layer}: " + "; ".join(parts) + evidence


def _g(v: float) -> str:
    return "nan" if v != v else f"{v:.3g}"


def oracle_records(spec) -> list[dict]:
    """The records the spec oracle itself would give (for tests of the search)."""
    from portspec.adapter import Adapter

    class _Oracle(Adapter):
        name, layers = "oracle", (spec.name,)

        def build(self, layer, config, *, input_shapes, seed, dtype=None):
            return VariantHandle(spec, config, input_shapes, seed, dtype, {})

    from portspec.localise import STAGE

    # but the input-dropout record, which draws masks: read by its levels (_input_site)
    return [r for r in probe(_Oracle(), spec) if r["label"] != STAGE + INPUT_DROP]


def _own_shapes(spec, records) -> tuple:
    """(name, shape) of the normalisation weights the records hold at another shape than the
    spec's: a port's LayerNorm over (L, N) holds its scale (L, N) where the spec's is flat.
    Each axis is named "L" or "N" where it is the record's input_size or n_series (the probe's
    configs differ from the clauses'), else its length; a record whose two are equal cannot
    tell them apart and names none, and a weight whose axes read differently in two records
    is left out."""
    own, mixed = {}, set()
    for r in records:
        table = spec.weight_table(r["config"], [np.shape(v) for v in _as_list(r["x"])])
        length, n = r["config"].get("input_size"), r["config"].get("n_series")
        if length is not None and length == n:
            continue
        sizes = {length: "L", n: "N"}
        for t in table:
            value = r["weights"].get(t.name)
            if t.name.startswith("norm.") and value is not None and np.shape(value) != t.shape:
                shape = tuple(sizes.get(d, d) for d in np.shape(value))
                if own.setdefault(t.name, shape) != shape:
                    mixed.add(t.name)
    return tuple(sorted((k, v) for k, v in own.items() if k not in mixed))


def _fill(spec, record):
    """The record's weights with the canonical ones the port lacks at their initial values."""
    table = spec.weight_table(record["config"], [np.shape(v) for v in _as_list(record["x"])])
    w = {t.name: t.initial_value(np.random.default_rng(0)) for t in table}
    return {**w, **record["weights"]}


def _as_list(x):
    return list(x) if isinstance(x, list) else [x]


class _Mismatch(Exception):  # noqa: N818 - a variant that does not reproduce a record
    pass


# The fitted constants and losses of one search, by the choices they were computed for: the
# search evaluates a candidate again at the float32 tolerance and as the base of larger ones,
# and the least-squares momentum and epsilon do not depend on the tolerance; the beam scores
# every candidate anew at each size. Remembered, a FeatureMixing search outside the variant
# space runs 47% fewer forwards (35.6k of 67.6k), at no cost in memory. Per thread
# (``_search_all`` may search on several at once); none outside a search.
_LOCAL = threading.local()


def _choice_key(value):
    if isinstance(value, np.ndarray):
        return ("array", value.shape, value.tobytes())
    return repr(value)


def _memo(kind, choices, fit, *args):
    """``fit(*args)``, remembered within a search by ``kind`` and ``choices``."""
    cache = getattr(_LOCAL, "fits", None)
    if cache is None:
        return fit(*args)
    key = (kind, tuple(sorted((k, _choice_key(v)) for k, v in choices.items())))
    if key not in cache:
        cache[key] = fit(*args)
    return cache[key]


def _predict(spec, space, record, choices, masks=None):
    x = record["x"]
    return space.forward(record["config"], record["weights"], x, training=record["training"],
                         masks=masks, ops=variants.FAST, **choices)


def _momentum(spec, space, records, choices, keys=(MEAN, VAR)):
    """Least-squares share of the old moving statistics ``keys`` kept, or None when nothing
    moved."""
    num = den = 0.0
    for r in records:
        if not r["state"] or r["out"] is None or r["label"] == "dropout":
            continue
        try:
            # the probe's calls with statistics configure no dropout: none is drawn
            _, stat = _predict(spec, space, r, {**choices, "momentum": 0.0, "dropout_rate": 0.0})
        except (KeyError, ValueError):
            return None
        for k, got in r["state"].items():
            if k not in stat or k not in keys:
                continue
            d_old = np.ravel(r["weights"][k]) - np.ravel(stat[k])
            d_new = np.ravel(got) - np.ravel(stat[k])
            # where the variant is undefined (an unbiased variance of one sample) or the port
            # gives NaN, the element says nothing of the momentum
            ok = np.isfinite(d_old) & np.isfinite(d_new)
            num += float(d_old[ok] @ d_new[ok])
            den += float(d_old[ok] @ d_old[ok])
    return num / den if den > 0 else None


def _violation(got, want, tol, nan_exact=False):
    """(max |error|, max ratio to tol*(1+|want|)); where the variant is undefined (NaN, as
    an unbiased variance of one sample) any value fits; a NaN of the port counts as NaN.
    With ``nan_exact`` (a variant whose NaNs are its computation's, ``NAN_EXACT``), the port
    must give NaN exactly where the variant does: else a variant NaN nearly everywhere would
    fit any port."""
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    if nan_exact and not np.array_equal(np.isnan(got), np.isnan(want)):
        return float("nan"), float("inf")
    defined = np.isfinite(want)
    err = np.abs(got - want)[defined]
    if np.isnan(err).any():
        return float("nan"), float("inf")
    ratio = err / (tol * (1.0 + np.abs(want[defined])))
    return float(err.max(initial=0.0)), float(ratio.max(initial=0.0))


# choices whose NaNs are what they compute (a square root of a negative batch mean), not an
# undefined value: the port's NaNs must fall where theirs do (_violation)
NAN_EXACT = {"batch_stats"}


def _errors(spec, space, records, choices, tol, stop=True, states=True):
    """(largest ratio to the tolerance, largest abs error) of the variant over the records;
    with ``stop``, returns at the first record the variant does not reproduce; without
    ``states``, over the outputs alone."""
    worst, worst_err = 0.0, 0.0
    for r in records:
        if r["out"] is None:
            continue
        if r["label"] == "dropout":
            if not _dropout_fits(spec, space, r, choices, tol):
                return float("inf"), float("inf")
            continue
        if r["config"].get("dropout", 0.0) and variants.drops_in_inference(choices):
            continue
        # a rate fixed in the port drops in training whatever the config says: the output of
        # such a call is drawn at random (the dropout probe judges it), its statistics are not
        dropped = r["training"] and variants.fixed_rate(choices) is not None
        try:
            out, state = _predict(spec, space, r, {**choices, "dropout_rate": 0.0}
                                  if dropped else choices)
        except (KeyError, ValueError, TypeError):
            return float("inf"), float("inf")
        pairs = [] if dropped else [(r["out"], out)]
        for k, got in (r["state"] or {}).items() if states else ():
            pairs.append((got, state.get(k, r["weights"].get(k))))
        for got, want in pairs:
            if want is None or np.shape(got) != np.shape(want):
                return float("inf"), float("inf")
            err, ratio = _violation(got, want, tol * _conditioning(space, r, choices, tol),
                                    nan_exact=bool(NAN_EXACT & set(choices)))
            worst = max(worst, ratio)
            worst_err = err if err != err else max(worst_err, err)
            if stop and worst > 1.0:
                return worst, worst_err
    return worst, worst_err


def _conditioning(space, record, choices, tol) -> float:
    """How much more than its float32 tolerance a record may differ at float32: with a zero
    variance (a batch of one, a moving variance 0) the normalisation divides the rounding of
    x - mean by sqrt(epsilon), 1/sqrt(epsilon) times more than for unit-variance features; the
    float32 tolerance is sized for the spec's epsilon. 1 at float64 and for the other records."""
    if tol <= FORWARD["float64"] or record["label"] not in ("batch 1", "moving variance 0"):
        return 1.0
    eps = choices.get("eps", space.defaults.get("eps"))
    spec_eps = space.defaults.get("eps")
    if not isinstance(eps, float) or not spec_eps or eps >= spec_eps:
        return 1.0
    return float(np.sqrt(spec_eps / eps))


# the axis a dropout mask drawn without it is broadcast along (variants: mask_axis)
MASK_AXES = {"batch": 0, "time": 1, "channel": 2}


def _dropout_fits(spec, space, r, choices, tol):
    """Does every element of the dropout probe take a value the variant allows, at the
    variant's rates (6 sd) and with its independence between sites?"""
    if choices.get("position") == "after" or (
            choices.get("norm", "batch-feature") != "none"
            and variants.keeps_no_statistics(choices.get("norm", "batch-feature"))):
        return True  # the probe's elementwise reading does not hold; other records decide
    shape_h = (*r["x"].shape[:-1], r["config"]["ff_dim"])
    levels = {}
    try:
        for m1, m2 in itertools.product((0, 1), repeat=2):
            masks = {"dropout1": np.full(shape_h, bool(m1)), "dropout2": np.full(r["x"].shape,
                                                                                  bool(m2))}
            levels[(m1, m2)] = _predict(spec, space, r, choices, masks)[0]
    except (KeyError, ValueError, TypeError):
        return False
    out = r["out"]
    match = {k: np.abs(out - v) <= 1e-6 * (1 + np.abs(v)) for k, v in levels.items()}
    if not np.logical_or.reduce(list(match.values())).all():
        return False
    c = {**variants.FM_DEFAULTS, **choices}
    rate = {site: variants.drop_rate(c, r["config"]["dropout"], site)
            for site in ("dropout1", "dropout2")}
    active = r["training"] or variants.drops_in_inference(c)
    m2_dropped = match[(0, 0)] | match[(1, 0)]
    m2_kept = match[(0, 1)] | match[(1, 1)]
    m1_dropped = match[(0, 1)]
    m1_kept = match[(1, 1)]
    if (m2_dropped & m2_kept).any() or (m1_dropped & m1_kept).any():
        # a value two decisions give alike (a port without the second Dense's bias: every
        # dropped unit is 0, whichever site dropped it): the elements told apart would be a
        # biased sample of one site's decisions, so the rates are read off all the elements
        return _dropout_levels_at_rates(out, levels, match, c, rate, active)
    for dropped, kept, site in ((m2_dropped, m2_kept, "dropout2"), (m1_dropped, m1_kept,
                                                                    "dropout1")):
        sure = dropped ^ kept
        if site == "dropout1":
            sure &= m2_kept & ~m2_dropped
        n = int(sure.sum())
        if n < 100:
            continue
        want = rate[site] if (active and site in c["sites"]) else 0.0
        frac = float(dropped[sure].sum()) / n
        if not _near_rate(frac, want, n, out.shape, c["mask_axis"]):
            return False
    decided = m2_dropped ^ m2_kept  # site 2's decision, element by element
    if active and "dropout2" in c["sites"] and decided.all():
        for axis, name in ((0, "batch"), (1, "time"), (2, "channel")):
            m = np.moveaxis(m2_kept, axis, 0)
            half = m.shape[0] // 2
            if half * m[0].size < 100:
                continue
            agree = float(np.mean(m[0: 2 * half: 2] == m[1: 2 * half: 2]))
            if (agree == 1.0) != (c["mask_axis"] == name):
                return False
    both = (m2_kept & ~m2_dropped) & (m1_dropped ^ m1_kept)
    if active and both.sum() >= 100 and {"dropout1", "dropout2"} <= set(c["sites"]):
        # under a shared mask a kept site-2 unit never has its site-1 unit dropped
        share = float(m1_dropped[both].mean())
        if c["shared_mask"] != (share == 0.0):
            return False
    return True


def _near_rate(frac: float, want: float, n: int, shape, mask_axis) -> bool:
    """Is ``frac``, a share of ``n`` elements, within 6 sd of the probability ``want``? The
    decisions drawn are fewer where one mask is broadcast along an axis (``mask_axis``)."""
    axis = MASK_AXES.get(mask_axis)
    independent = n / (shape[axis] if axis is not None else 1)  # decisions drawn
    return abs(frac - want) <= 6 * np.sqrt(max(want * (1 - want), 1e-4) / independent) + 1e-9


def _dropout_levels_at_rates(out, levels, match, c, rate, active) -> bool:
    """The dropout probe's outputs against the variant where its levels do not tell the two
    sites' decisions apart: the share of elements at the all-kept level, whose probability
    at each element is that of every pair of decisions giving the same value there (6 sd)."""
    p = {site: rate[site] if (active and site in c["sites"]) else 0.0
         for site in ("dropout1", "dropout2")}
    kept = levels[(1, 1)]
    want = np.zeros(out.shape)
    for (m1, m2), v in levels.items():
        q = ((1 - p["dropout1"]) if m1 else p["dropout1"]) * (
            (1 - p["dropout2"]) if m2 else p["dropout2"])
        want += q * (np.abs(v - kept) <= 1e-6 * (1 + np.abs(kept)))
    return _near_rate(float(match[(1, 1)].mean()), float(want.mean()), out.size, out.shape,
                      c["mask_axis"])


def _eps_losses(spec, space, records, choices, log_eps) -> np.ndarray:
    """The least-squares loss of each epsilon ``10 ** log_eps``, all in one forward per record:
    epsilon enters only ``sqrt(var + eps)``, after the statistics, so it is passed as a
    (K, 1, 1, 1) array and the output gains a leading axis of K (the branch after a
    normalisation before it runs K times over; one after it, once)."""
    log_eps = np.asarray(log_eps, np.float64)
    records = [r for r in records if r["out"] is not None and r["label"] != "dropout"]
    try:
        eps, total = 10.0 ** log_eps.reshape(-1, 1, 1, 1), np.zeros(len(log_eps))
        for r in records:
            out, _ = _predict(spec, space, r, {**choices, "eps": eps})
            want = np.asarray(r["out"])
            err = np.broadcast_to((np.asarray(out) - want) ** 2, (len(eps), *want.shape))
            total += err.reshape(len(eps), -1).mean(axis=1)
        return total
    except (KeyError, ValueError, TypeError):  # each epsilon alone: the one that raises is inf
        pass

    def loss(value):
        total = 0.0
        for r in records:
            try:
                out, _ = _predict(spec, space, r, {**choices, "eps": 10.0**value})
            except (KeyError, ValueError, TypeError):
                return float("inf")
            total += float(np.mean((out - r["out"]) ** 2))
        return total

    return np.array([loss(v) for v in log_eps])


# the epsilon fit: a log-spaced grid over 1e-12..1, then rounds of POINTS points across the
# two grid steps around the best; each round narrows the bracket 16-fold, 1 decade -> 1e-6
EPS_GRID, POINTS, ROUNDS = np.linspace(-12, 0, 25), 33, 5
MACHINE64 = float(np.finfo(np.float64).eps)  # tried apart: a port's finfo(x.dtype).eps


def _outputs_of(space, records, choices) -> dict:
    """The part of ``choices`` the deterministic records' outputs depend on
    (``variants.output_choices``): the key of a fit to those outputs alone."""
    rates = [(r["config"] or {}).get("dropout", 0.0) for r in records
             if r["out"] is not None and r["label"] != "dropout"]
    return variants.output_choices(space, choices, rates)


def _fit_eps(spec, space, records, choices):
    """Least-squares epsilon (a log-spaced grid, narrowed in rounds), then the roundest value
    (1-3 significant digits) that fits as well: real ports write 1e-5, not 1.0000003e-5."""

    def bracket(points, losses=None):
        losses = _eps_losses(spec, space, records, choices, points) if losses is None else losses
        i = int(np.argmin(losses))
        return points[max(i - 1, 0)], points[min(i + 1, len(points) - 1)]

    # the grid and the spec's epsilon 2 % either side, in one pass: where the grid's best is
    # the spec's own epsilon and neither side does better, the loss has its minimum within
    # 2 % of it, which _evaluate reads as no epsilon of the port's own (the rounds would
    # only find it again: most candidates of a search are of this kind)
    default = float(space.defaults["eps"])
    near = np.log10([default * 0.98, default * 1.02, MACHINE64])
    losses = _eps_losses(spec, space, records, choices, np.concatenate([EPS_GRID, near]))
    grid, sides, machine = losses[:len(EPS_GRID)], losses[len(EPS_GRID):-1], losses[-1]
    if machine < min(grid) * 1e-6 or (machine == 0 and min(grid) > 0):
        # float64's machine epsilon, below the grid, fits where nothing on it does: the
        # probe's float64 calls add the input dtype's own epsilon
        return variants.MACHINE
    at = int(np.argmin(grid))
    if (np.isfinite(grid[at]) and abs(EPS_GRID[at] - np.log10(default)) < 1e-9
            and np.all(sides >= grid[at])):
        return default
    lo, hi = bracket(EPS_GRID, grid)
    for _ in range(ROUNDS):
        lo, hi = bracket(np.linspace(lo, hi, POINTS))
    best = float(10.0 ** ((lo + hi) / 2))
    candidates = [float(f"{best:.{d}g}") for d in (1, 2, 3)] + [best]  # roundest first
    losses = _eps_losses(spec, space, records, choices, np.log10(candidates))
    floor = min(losses.tolist())
    if not np.isfinite(floor):
        return best
    return next(v for v, value in zip(candidates, losses, strict=True)
                if value <= floor * 1.0001 + 1e-30)


def _evaluate(spec, space, records, choices, tol):
    """(diff from the spec with fitted constants, ratio, error) of one candidate."""
    choices = dict(choices)
    for key, bounds in FITTED_CLIPS.items():  # first: the momentum's fit computes with it
        if choices.get(key) == "fit":
            choices[key] = next((v for v in bounds if _errors(
                spec, space, records, {**choices, key: v}, tol, states=False)[0] <= 1.0), None)
            if choices[key] is None:
                return None
    if choices.get("dropout_rate") == "fixed":
        choices["dropout_rate"] = _fit_rate(spec, space, records, choices, tol)
        if choices["dropout_rate"] is None:
            return None
    if space is variants.FM_SPACE and choices.get("update") != "never":
        base = {k: v for k, v in choices.items() if k not in ("eps", "var_momentum")}
        moved = variants.state_choices(space, base)  # a fit to the statistics: one per part
        if choices.get("var_momentum") == "fit":  # the mean's and the variance's apart
            a, b = (_memo(("momentum", k), moved, _momentum, spec, space, records,
                          {**base, "var_momentum": 0.0}, (k,)) for k in (MEAN, VAR))
            if a is None or b is None or abs(b - a) < 1e-6:
                return None  # one momentum for both: the candidate without this choice
            choices["var_momentum"] = b
        else:  # a mixture's variance is not linear in the momentum: the mean's says it
            keys = (MEAN,) if choices.get("var_update") == "mixture" else (MEAN, VAR)
            a = _memo("momentum", moved, _momentum, spec, space, records, base, keys)
        if a is not None and abs(a - 1.0) < 1e-9:
            return None  # nothing moves: the "never updated" candidate says it
        a = 0.0 if a is not None and abs(a) < 1e-9 else a  # the batch's taken as they are
        if a is not None and abs(a - LAYERS[spec.name].momentum) > 1e-6:
            choices["momentum"] = a
    if choices.get("eps") == "fit":  # a fit to the outputs: one per output_choices
        choices["eps"] = _memo("eps", _outputs_of(space, records, choices), _fit_eps, spec,
                               space, records, choices)
        if choices["eps"] != variants.MACHINE and abs(
                choices["eps"] / space.defaults["eps"] - 1) < 0.02:
            return None
    ratio, err = _errors(spec, space, records, choices, tol)
    return choices, ratio, err


# a clip fitted among the round bounds ports write, the tightest first that reproduces every
# output (a clip that never bites is the spec: the candidate without it fits first)
FITTED_CLIPS = {"clip": variants.CLIPS, "norm_clip": variants.CLIPS,
                "gate_clip": variants.GATE_CLIPS[::-1]}


def _fit_rate(spec, space, records, choices, tol) -> float | None:
    """The one dropout rate, whatever the config's, that every training call of the dropout
    probe takes, levels and frequencies (``_dropout_fits``); None where none does. The
    candidates, roundest first, are read from the first such call: its share of outputs equal
    to the input (the branch dropped) and its smallest rise over the input (one kept unit's
    scale 1/(1-q), the first site's unit dropped). Needs calls at two configured rates: at one,
    a rate fixed in the port cannot be told from the config's read otherwise."""
    drops = [r for r in records if r["label"] == "dropout" and r["training"]]
    if len({r["config"]["dropout"] for r in drops}) < 2:
        return None
    rise = np.ravel(drops[0]["out"] - drops[0]["x"])
    share = float(np.mean(np.abs(rise) <= 1e-9))
    up = rise[rise > 1e-9]
    raw = [share] + ([1.0 - 1.0 / float(up.min())] if up.size else [])
    candidates = [round(q, d) for d in (1, 2) for q in raw] + [round(q, 3) for q in raw[1:]]
    for q in dict.fromkeys(candidates):
        if 0.0 < q < 1.0 and all(_dropout_fits(spec, space, r, {**choices, "dropout_rate": q},
                                               tol) for r in drops):
            return q
    return None


def _singles(space, alone=True):
    """Each single change of ``space``; with ``alone`` False, only those that may join
    another (``variants.ALONE``: not a kernel's memory read in another order, which with a
    second change coincides with permutations of the kernel's rows)."""
    return [{k: v} for k, values in space.alternatives.items() for v in values
            if alone or (k, v) not in variants.ALONE]


def search(spec, records):
    """The Finding for a port's records: spec, single deviations, then pairs; with the config
    swap the probe found the port built with (``probe``), if any."""
    from portspec.localise import STAGE, localise

    if spec.name not in variants.SPACES:
        return Finding(spec.name, fits=False, note=f"portspec.variants has no variant space for "
                       f"{spec.name}; its clauses' own diagnoses are its root causes")
    alias = next((r for r in records if r["label"] == ALIASES), None)
    if alias is not None:  # before any variant: the probe's weights are not the ones written
        return Finding(spec.name, fits=False, located=((aliased(alias["state"]), "weights"),),
                       evidence="random weights written with set_weights and read back with "
                       "get_weights")
    swapped = next((r for r in records if r["label"] == "config swap"), None)
    plain = next((r["state"]["plain"] for r in records if r["label"] == PLAIN_STATE), "")
    cast = next((r["state"]["dtype"] for r in records if r["label"] == OUTPUT_DTYPE), None)
    narrowed = next((r["state"]["where"] for r in records if r["label"] == NARROWING), None)
    held = next((r["state"]["weights"] for r in records if r["label"] == NARROW_STORAGE), {})
    _LOCAL.fits = {}
    try:
        found = _search(spec, [r for r in records if r["label"] not in (
            "config swap", ALIASES, PLAIN_STATE, OUTPUT_DTYPE, NARROWING, NARROW_STORAGE,
            GRAD_MODE, STUCK, NARROWED32, INPUT_CHANGED)
            and not r["label"].startswith(STAGE)])
    finally:
        _LOCAL.fits = None
    stuck = next((r["state"]["paths"] for r in records if r["label"] == STUCK), ())
    low = next((r["state"] for r in records if r["label"] == NARROWED32), {})
    found = replace(found, plain=plain, cast=cast, narrowed=narrowed, held=dict(held),
                    grad_mode=grad_mode_words(records), stuck=tuple(stuck),
                    narrowed32=dict(low),
                    input_changed=any(r["label"] == INPUT_CHANGED for r in records),
                    input_holds_output=any(r["label"] == INPUT_CHANGED and r["state"]["output"]
                                           for r in records))
    found = _input_site(found, records)
    if not found.says:  # outside the variant space (or the GFF probe's training calls,
        # which the search has not): read part by part
        staged = [r for r in records if r["label"].startswith(STAGE) and r["out"] is not None]
        for r in staged:
            r["weights"] = _fill(spec, r)
        calls = [r for r in records if r["x"] is not None and r["out"] is not None
                 and not r["label"].startswith(STAGE) and r["label"] != "dropout"]
        found = replace(found, located=tuple(localise(spec, staged + [
            r for r in records if r["label"] == "dropout"], calls)))
    if swapped is None or not found.fits:
        return found
    return replace(found, swap=tuple(swapped["state"]["swap"]), swap_refusal=swapped["error"])


INPUT_DROP = "dropout-input"  # the staged record that shows a dropout on dense1's input


def site_levels(sites, p: float) -> dict[float, float]:
    """The values of the input-dropout record's branch (beta 1 and gamma 0, the first Dense
    the identity with bias 1, the second the identity with bias 0: the branch is
    [m2 s] [m1 s] relu([m0 s] 1 + 1), each bracket there where its site is) and the
    probability of each, for the dropout ``sites`` at rate ``p``; s = 1/(1 - p)."""
    s, levels = 1.0 / (1.0 - p), {}
    for m0, m1, m2 in itertools.product((0, 1), repeat=3):
        prob = 1.0
        for site, m in (("input", m0), ("dropout1", m1), ("dropout2", m2)):
            if site in sites:
                prob *= (1 - p) if m else p
            elif not m:
                prob = 0.0
        if prob == 0.0:
            continue
        z = (m0 * s if "input" in sites else 1.0) + 1.0
        value = z * (m1 * s if "dropout1" in sites else 1.0) * (
            m2 * s if "dropout2" in sites else 1.0)
        key = round(value, 9)
        levels[key] = levels.get(key, 0.0) + prob
    return levels


def at_rates(y, levels) -> bool:
    """Does ``y`` take each value of ``levels`` (value -> probability) at its rate (6 sd)?"""
    y = np.ravel(y)
    return all(abs(float(np.mean(np.abs(y - v) <= 1e-9)) - q)
               <= 6 * np.sqrt(max(q * (1 - q), 1e-4) / y.size) for v, q in levels.items())


def _at_levels(y, levels) -> bool:
    """Does ``y`` take exactly the values of ``levels``, each at its rate (``at_rates``)?"""
    y = np.ravel(y)
    if not np.all(np.any([np.abs(y - v) <= 1e-9 for v in levels], axis=0)):
        return False
    return at_rates(y, levels)


def _input_site(found: Finding, records) -> Finding:
    """The finding with a dropout on the first Dense's input added to its sites where the
    staged probe's input-dropout record shows one and the sites found alone do not fit it:
    the dropout probe, whose first Dense's kernel is 0, cannot see that site."""
    from portspec.localise import STAGE

    if found.layer != "FeatureMixing" or not found.fits or found.raised or found.misshaped:
        return found
    sites = tuple(found.diff.get("sites", variants.FM_DEFAULTS["sites"]))
    if "input" in sites:
        return found
    r = next((r for r in records if r["label"] == STAGE + INPUT_DROP and r["out"] is not None),
             None)
    if r is None:
        return found
    p, y = r["config"]["dropout"], np.asarray(r["out"]) - DROP_X
    if _at_levels(y, site_levels(sites, p)) or not _at_levels(
            y, site_levels(("input", *sites), p)):
        return found
    return replace(found, diff={**found.diff, "sites": ("input", *sites)})


def _search(spec, records):
    space = variants.SPACES[spec.name]
    usable = [r for r in records if r["out"] is not None]
    seen = [(tuple(np.shape(_as_list(r["x"])[0])), tuple(np.shape(r["out"])), r["label"])
            for r in usable]
    from portspec.suite.areas.structure import misshaped  # worded as FM/GFF-SHAPE words it

    said = misshaped(seen)
    if said:  # no variant computes another shape: the shape is the cause to fix first
        wrong = tuple(sorted({str(got) for want, got, _ in seen if got != want}))
        return Finding(spec.name, misshaped=said, wrong_shapes=wrong)
    raised = _raised(records)
    layout = next((r["state"]["transposed"] for r in records if r["label"] == "layout"), None)
    if not usable and layout:  # no call could run: the layout read back is the evidence
        return Finding(spec.name, {"transpose": True}, evidence=f"the port holds {layout}")
    if not usable:
        refused = next((r for r in records if r["error"]), None)
        first = refused and refused["error"]
        if refused and not raised:  # every build or weight setting refused, the same way
            from portspec.suite.areas.structure import split_refusal, unheld  # worded as
            # FM/GFF-WEIGHTS word it

            raised = unheld(spec, first) or split_refusal(first) or _refusal(spec, refused)
        return Finding(spec.name, raised=raised, fits=bool(raised),
                       note=f"no call of the probe ran ({(first or 'no records')[:160]})")
    # the canonical weights the port does not hold: a choice that leaves exactly those unused
    # is part of every candidate (filled in at their initial values, they cannot show)
    absent = set().union(*(set(_fill(spec, r)) - set(r["weights"]) for r in usable))
    forced = variants.required(spec.name, absent)
    own = _own_shapes(spec, usable)
    for r in usable:
        r["weights"] = _fill(spec, r)
    # the evidence quoted: max |error| over the deterministic records (the dropout probe is
    # judged by its levels and rates, not by an error)
    numeric = [r for r in usable if r["label"] != "dropout"]
    _, spec_err = _errors(spec, space, numeric, {}, FORWARD["float64"], stop=False)
    f64, f32 = (FORWARD["float64"], None), (FORWARD["float32"], "float32")
    singles = [{}] + _singles(space)
    pairs = [{**a, **b} for a, b in itertools.combinations(_singles(space, alone=False), 2)
             if not set(a) & set(b)]
    if forced:
        singles, pairs = ([{**forced, **c} for c in pool if not set(c) & set(forced)]
                          for pool in (singles, pairs))
    # Cheapest first; each candidate is evaluated once per tolerance and its fit kept by the
    # number of choices it changes (a fitted momentum adds one): the spec; one change; float32
    # precision alone; two changes; one change at float32; two changes and the momentum.
    evaluated: dict = {}

    def fits(level, pool, size):
        tol = level[0]
        found = []
        for cand in pool:
            key = (tol, repr(sorted(cand.items())))
            if key not in evaluated:
                evaluated[key] = _evaluate(spec, space, usable, cand, tol)
            got = evaluated[key]
            if got is not None and got[1] <= 1.0 and len(got[0]) == size + len(forced):
                found.append(got[0])
        return found

    def triples():
        """Three changes, searched from the BEAM pairs closest to the port (least squares
        over the deterministic records): a LayerNorm with its own epsilon after the residual
        is three choices of one design."""
        scored = sorted((_memo("loss", _outputs_of(space, usable, got[0]), _loss, spec, space,
                               usable, got[0]), i)
                        for i, (key, got) in enumerate(evaluated.items())
                        if got is not None and key[0] == f64[0])
        chosen = [list(evaluated.values())[i][0] for _, i in scored[:BEAM]]
        seen, out = set(), []
        for base in chosen:
            for extra in _singles(space, alone=False):
                if set(extra) & set(base):
                    continue
                # the momentum is fitted anew; the base's fitted epsilon is kept, and fitted
                # anew with another change of the normalisation (where epsilon is added, the
                # variance it is added to)
                cand = {**{k: v for k, v in base.items() if k != "momentum"}, **extra}
                if "var_momentum" in cand:
                    cand["var_momentum"] = "fit"
                if "eps" in base and variants.AREAS[spec.name].get(
                        next(iter(extra))) == "normalisation":
                    cand["eps"] = "fit"
                key = repr(sorted(cand.items()))
                if key not in seen:
                    seen.add(key)
                    out.append(cand)
        return out

    # Past three, each level grows the BEAM candidates closest to the port by one more change:
    # a framework's normalisation at its own defaults put after the residual (torch's
    # BatchNorm2d(1) there: one statistic, epsilon, momentum, unbiased update, position) is
    # five choices of one design. Every record must still be reproduced at float64.
    # At float32 (a layer that computes or stores part of a float64 call in float32, as
    # nnx.BatchNorm's statistics and Keras's moments on jax are), up to two changes: the
    # framework's BatchNorm left at its own momentum and epsilon.
    plan = ((f64, singles, 0), (f64, singles, 1), (f32, [dict(forced)], 0), (f64, singles, 2),
            (f64, pairs, 2), (f32, singles, 1), (f64, pairs, 3), (f64, triples, 3),
            (f32, singles, 2), (f32, pairs, 2), (f64, triples, 4), (f64, triples, 5))
    for level, pool, size in plan:
        found = fits(level, pool() if callable(pool) else pool, size)
        if found:
            diff = found[0]
            err = _errors(spec, space, numeric, diff, level[0], stop=False)[1]
            held = sorted(absent)
            evidence = (f"the port holds no {', '.join(held)}" if forced
                        and spec_err <= level[0] * 10 else "")
            # float32 statistics: every output at float64, every state a float32 value
            stored = bool(level[1]) and _errors(
                spec, space, usable, diff, f64[0], states=False)[0] <= 1.0 and all(
                np.array_equal(np.float32(v), v) for r in usable
                for v in (r["state"] or {}).values())
            # float32 arithmetic anywhere in the call errs by its unit roundoff, 6e-8 relative,
            # or more: a port the float64 variant reproduces to CLOSE is float64 arithmetic a
            # little off the oracle's (Keras's float64 gelu on TensorFlow: 9e-9), not float32
            close = bool(level[1]) and not stored and _errors(
                spec, space, numeric, diff, CLOSE, stop=False)[0] <= 1.0
            return Finding(spec.name, diff, spec_err, err, level[1], raised, also=found[1:4],
                           evidence=evidence, absent=tuple(held), stored=stored, close=close,
                           own=own)
    return Finding(spec.name, spec_error=spec_err, raised=raised, fits=False)


BEAM = 12
CLOSE = 1e-8  # a sixth of float32's unit roundoff, relative (as the tolerances are)


def _loss(spec, space, records, choices) -> float:
    """Mean squared difference of the variant from the port over the deterministic records."""
    total = 0.0
    for r in records:
        if r["out"] is None or r["label"] == "dropout":
            continue
        try:
            out, _ = _predict(spec, space, r, choices)
        except (KeyError, ValueError, TypeError):
            return float("inf")
        err = float(np.mean((out - r["out"]) ** 2))
        total += err if np.isfinite(err) else float("inf")
    return total


PLAIN_STATE = "plain state"  # the probe's record of tensors kept as plain attributes


def output_cast(dtype: str) -> str:
    """One wording of a float64 layer that returns ``dtype`` (FM/GFF-DTYPE words it alike:
    one root cause)."""
    return (f"the output is cast to {dtype} (a float64 call returns {dtype}: a .float() or "
            f"astype({dtype}) at the end of the layer), where the spec returns the dtype it "
            "computes in")

# A float64 call refused because two dtypes met inside the layer, in PyTorch's words ("mat1
# and mat2 must have the same dtype, but got Float and Double", "... but got: float != double",
# "expected scalar type Double but found Float") and JAX's/XLA's ("float32 and float64").
DTYPE_CLASH = re.compile(r"\b(Float and Double|Double and Float|float != double|double != "
                         r"float)\b|expected scalar type "
                         r"(Double but found Float|Float but found Double)|float32 and float64|"
                         r"float64 and float32", re.IGNORECASE)


def _raised(records) -> str | None:
    """A call the port refuses that the spec allows, from the records' errors."""
    others_ran = any(r["out"] is not None and r["training"] and r["label"] != "batch 1"
                     for r in records)
    from portspec.ports.base import REBOUND

    rebound = next((r["error"] for r in records if r["error"] and REBOUND in r["error"]), None)
    if rebound:  # the state rebound by one call: every later write meets it, whatever the case
        head, words = rebound.split(REBOUND, 1)
        words = words.split(": it is no longer")[0]
        return (f"a call rebinds the port's {words}: after it the layer's state is no longer "
                f"an nnx.Variable [{head}{REBOUND}{words.split(' (')[0]}]")
    for r in records:
        if r["error"] and r["label"] == "batch 1" and r["training"] and others_ran:
            from portspec.diagnose import BATCH_OF_ONE

            said = quote(r["error"]).replace("[", "(").replace("]", ")")
            return f"{BATCH_OF_ONE} [{said}]"  # the evidence in brackets, as the report merges
        if r["error"] and r["label"].endswith("float64 build"):
            return f"a float64 layer cannot be built ({quote(r['error'])})"
    raised = [r for r in records if r["error"] and r.get("dtype") == "float64"]
    if not raised:
        return None
    r, said = raised[0], f"({quote(raised[0]['error'])})"
    if DTYPE_CLASH.search(r["error"]):  # the framework's own words: two dtypes met
        said += (": float32 meets float64 inside the layer, where the port casts an input or "
                 "a weight to float32 (.float(), dtype=float32) or holds one in float32")
    ran = [o for o in records if o["out"] is not None and o.get("dtype") == "float64"]
    float32 = next(((o["state"] or {}).get("float32") for o in records
                    if o["label"] == "float32 call"), None)
    if float32 == "raised":  # float32 as well: not a matter of the dtype
        return f"every call of the layer raises, in float32 as in float64 {said}"
    if r["x"] is None or not ran:  # every float64 call the probe made raises
        return f"a float64 call raises {said}"
    # some float64 calls run: what tells the refused one apart is its inputs or its config
    shapes = sorted({_shapes(o["x"]) for o in ran})
    if _shapes(r["x"]) not in shapes:
        return (f"a call on inputs {_shapes(r['x'])} raises {said}, where {', '.join(shapes)} "
                f"run{_concat_axis(r)}")
    config = {k: v for k, v in r["config"].items()
              if all(o["config"].get(k) != v for o in ran)}
    what = config_text(config) or f"the {r['label']} case"
    return f"a call with {what} raises {said}, where others run"


def _concat_axis(record) -> str:
    """Where two inputs concatenated along another axis than the last give the shape the
    refusal quotes (a matmul of (rows x features), or the whole shape), that concatenation,
    as words; else ''. At rank 2 axis 1 is the last, so such a port runs there."""
    x = record["x"]
    if not (isinstance(x, list) and len(x) == 2 and np.ndim(x[0]) > 2):
        return ""
    fit = []
    for axis in range(np.ndim(x[0]) - 1):
        shape = list(np.shape(x[0]))
        shape[axis] *= 2
        rows, cols = int(np.prod(shape[:-1])), shape[-1]
        quoted = (f"{rows}x{cols}", f"({rows}, {cols})", str(tuple(shape)), str(shape))
        if any(q in record["error"] for q in quoted):
            fit.append(str(axis))
    if not fit:
        return ""
    return (f": the inputs are concatenated along axis {' or '.join(fit)} (the quoted shape "
            "fits either), not the last (feature) axis" if len(fit) > 1 else
            f": the inputs are concatenated along axis {fit[0]}, not the last (feature) axis"
            ) + ", which is the same axis only at rank 2"


def _refusal(spec, record) -> str:
    """A refusal before any call, as words: the build, where the error names a parameter of
    the spec's config the constructor does not take, with what maps it; or the weights."""
    error = record["error"]
    if re.search(r"weight map|\.weights maps no", error):  # the adapter's map (ports.base)
        return f"the adapter's weight map does not fit the port's weights ({error[:320]})"
    if (record["state"] or {}).get("stage") != "build":
        return f"the spec's canonical weights are refused ({error[:320]})"
    where = (record["state"] or {}).get("where")
    if where and where[2] != "construct":  # raised in the port's layer, not in its adapter
        said = f"building the port's layer raises ({error[:320]})"
    else:
        said = f"the adapter cannot build the layer ({error[:320]})"
    if where:
        from portspec.ports.narrowing import source

        said += f" at the port's {os.path.basename(where[0])}:{where[1]}{source(*where[:2])}"
    names = [n for n, _ in spec.config_params]
    named = re.search(r"unexpected keyword argument '(\w+)'|required (?:keyword-only |"
                      r"positional )?arguments?: '(\w+)'", error)
    if named and named.group(1) in names:
        said += (f"; the constructor takes no parameter {named.group(1)!r}: the adapter's "
                 "config_names maps each of the spec's config names to the port's")
    elif named and named.group(2):
        said += (f"; the constructor requires {named.group(2)!r}, which the spec's config "
                 f"({', '.join(names)}) does not give under that name: config_names maps "
                 "them, extra_args gives a fixed one")
    return said


def _shapes(x) -> str:
    """The shape of a call's inputs as words: ``(3, 5, 6)``, or ``(3, 5, 6) and (3, 5, 6)``."""
    shapes = [tuple(np.shape(v)) for v in (x if isinstance(x, (list, tuple)) else [x])]
    return " and ".join(str(s) for s in shapes)


def distinguishable(spec, records, choices) -> bool:
    """Does the variant with ``choices`` differ from the spec on some record?"""
    space = variants.SPACES[spec.name]
    usable = [dict(r) for r in records if r["out"] is not None]
    for r in usable:
        r["weights"] = _fill(spec, r)
        r["out"], r["state"] = _predict(spec, space, r, {}, _ones_masks(r))
    ratio, _ = _errors(spec, space, usable, choices, FORWARD["float64"])
    return ratio > 1.0


def _ones_masks(r):
    if r["label"] != "dropout":
        return None
    rng = np.random.default_rng(0)
    shape_h = (*r["x"].shape[:-1], r["config"]["ff_dim"])
    p = r["config"]["dropout"]
    return {"dropout1": rng.random(shape_h) >= p, "dropout2": rng.random(r["x"].shape) >= p}


# -- a NumPy implementation of a variant (for attribution) ------------------------------------


_DRAW = object()  # VariantHandle._compute: draw the dropout masks


class VariantHandle:
    """A layer that computes a variant in NumPy; the Handle protocol of portspec.adapter."""

    def __init__(self, spec, config, input_shapes, seed, dtype, choices, precision=None,
                 absent=(), validate=False, own=()):
        self.spec, self.choices, self.precision = spec, dict(choices), precision
        self.validate = validate  # calls checked as the spec's layer checks them
        self.config = spec.validate_config(config)
        self.input_shapes = input_shapes
        from portspec.suite.checks import numpy_dtype

        self.dtype = numpy_dtype(dtype or "float32")
        # mixed precision, as the spec's layers: float32 weights under a low-precision compute
        self.wdtype = numpy_dtype("float32" if dtype in ("bfloat16", "float16") else
                                  dtype or "float32")
        self.rng = np.random.default_rng(seed)
        # the spec's initial weights (seeded with 0), for the weights the variant does not
        # hold: every call reads them (a gradient's thousands), so made once, read-only
        self.initial = spec.initial_weights(self.config, input_shapes, np.random.default_rng(0))
        for value in self.initial.values():
            value.setflags(write=False)
        table = spec.weight_table(self.config, input_shapes)
        norm = self.choices.get("norm", "batch-feature")
        keep = {t.name for t in table}
        if variants.keeps_no_statistics(norm):
            keep -= {MEAN, VAR}
        affine = self.choices.get("affine", True)
        if norm == "none" or affine is False:
            keep -= {"norm.gamma", "norm.beta"}
        elif affine in ("scale", "offset"):
            keep -= {"norm.beta" if affine == "scale" else "norm.gamma"}
        keep -= set(absent)  # the weights the port does not hold, as it
        self.weights = {t.name: t.initial_value(self.rng).astype(self.wdtype)
                        for t in table if t.name in keep}
        if self.choices.get("width") == "one":  # the gate a Dense of one unit, as it is held
            for name in [k for k in ("gate.kernel", "gate.bias") if k in self.weights]:
                self.weights[name] = np.ascontiguousarray(self.weights[name][..., :1])
        length, n = self.config.get("input_size"), self.config.get("n_series")
        natural = {"batch-channel": (n,), "batch-time": (length,), "batch-scalar": (1,),
                   "layer-N": (n,), "layer-L": (n,), "rms-N": (n,)}.get(norm)
        # another normalisation's weights at the port's own shapes, where it holds them at one
        # (its clauses then leave them at its own values; so does the variant, at the norm's
        # initial values)
        shapes = {name: tuple({"L": length, "N": n}.get(d, d) for d in shape)
                  for name, shape in own} if norm != "batch-feature" else {}
        for name in [k for k in (MEAN, VAR, "norm.gamma", "norm.beta") if k in self.weights]:
            shape = shapes.get(name, natural)
            if shape:  # the statistics and affine weights such a layer holds
                one = name in (VAR, "norm.gamma")
                self.weights[name] = (np.ones if one else np.zeros)(shape, self.wdtype)
        if self.choices.get("transpose") in variants.HELD_TRANSPOSED:  # (out, in) kernels
            for name in [k for k in self.weights if k.endswith(".kernel")]:
                self.weights[name] = np.ascontiguousarray(self.weights[name].T)
        self.trainable = {t.name: t.trainable for t in table}
        self.table = {t.name: tuple(t.shape) for t in table}

    def _masks(self, x, training):
        c = {**variants.FM_DEFAULTS, **self.choices}
        if self.spec.multi_input or not (training or variants.drops_in_inference(c)):
            return None
        shape = np.shape(x)
        axis = MASK_AXES.get(c["mask_axis"])

        def draw(full, site):
            drawn = list(full)
            if axis is not None:
                drawn[axis] = 1  # drawn without the axis, broadcast along it
            rate = variants.drop_rate(c, self.config["dropout"], site)
            return np.broadcast_to(self.rng.random(drawn) >= rate, full)

        return {"dropout1": draw((*shape[:-1], self.config["ff_dim"]), "dropout1"),
                "dropout2": draw(shape, "dropout2"), "input": draw(shape, "input")}

    def _compute(self, inputs, training, masks=_DRAW):
        """(output, new state) of one call; ``masks`` as ``_masks`` gives them, drawn anew
        unless given."""
        w = {**self.initial, **self.weights}
        x = inputs
        if self.precision:
            w = {k: np.asarray(v, self.precision) for k, v in w.items()}
            x = [np.asarray(v, self.precision) for v in x] if isinstance(x, list) else (
                np.asarray(x, self.precision))
        space = variants.SPACES[self.spec.name]
        out, new = space.forward(self.config, w, x, training=training,
                                 masks=self._masks(_as_list(x)[0], training)
                                 if masks is _DRAW else masks, ops=variants.FAST, **self.choices)
        if self.precision:
            out = np.asarray(out, self.precision)
        return out, new

    def forward(self, inputs, *, training):
        return self._forward(inputs, training)

    def _forward(self, inputs, training, masks=_DRAW):
        if self.validate and not self.spec.multi_input:
            x = np.asarray(inputs)
            self.spec.check_call(self.config, x.shape, x.dtype.name)
        out, new = self._compute(inputs, training, masks)
        for k in self.weights:
            self.weights[k] = np.asarray(new[k], self.wdtype)
        return np.asarray(out, self.dtype)

    def forward_compiled(self, inputs, *, training):
        """The eager computation: a variant has no compiler, so its compiled call differs from
        its eager one only where the variant itself makes them differ, as the port's do: a
        variant drawn at random where the spec is not (``drawn``), or one whose output is NaN
        (a moving variance read from the mean's buffer), which no comparison passes."""
        return self.forward(inputs, training=training)

    def save_native(self, directory):
        """The weights as safetensors, the build arguments in a JSON file beside them."""
        import json
        import os

        path = os.path.join(directory, f"{self.spec.name}.safetensors")
        self.save_weights(path)
        with open(path + ".json", "w") as f:
            json.dump({"config": self.config, "input_shapes": [list(s) for s in
                                                               self.input_shapes],
                       "dtype": np.dtype(self.dtype).name}, f)
        return path

    def grad(self, inputs, cotangent, *, training):
        """Central differences of sum(output * cotangent), every evaluation with the dropout
        masks of one draw, which the call that then updates the state also uses: the
        gradient of one training call, as a port's autograd gives it (masks drawn anew for
        each evaluation would difference two different functions)."""
        saved = self.get_weights()
        cot = np.asarray(cotangent, np.float64)
        xs = [np.asarray(v, np.float64) for v in _as_list(inputs)]
        masks = self._masks(xs[0], training)

        def f(weights, x):
            self.weights = {k: np.asarray(v, np.float64) for k, v in weights.items()}
            out = np.asarray(self._compute(x, training, masks)[0], np.float64)
            return float(np.sum(out * cot))

        def central(value, shifted):
            g = np.zeros(np.shape(value))
            for i in np.ndindex(g.shape):
                step = np.zeros(g.shape)
                step[i] = 1e-6
                g[i] = (shifted(step) - shifted(-step)) / 2e-6
            return g

        pack = (lambda v: v) if isinstance(inputs, list) else (lambda v: v[0])
        grads = {k: central(v, lambda d, k=k: f({**saved, k: saved[k] + d}, pack(xs)))
                 for k, v in saved.items() if self.trainable[k]}
        gx = [central(xi, lambda d, i=i: f(saved, pack([*xs[:i], xs[i] + d, *xs[i + 1:]])))
              for i, xi in enumerate(xs)]
        self.weights = {k: v.copy() for k, v in saved.items()}
        self._forward(inputs, training, masks)
        return pack(gx), grads

    def weight_layout(self):
        """As a port of this variant declares its weights: a statistic or scale held per
        channel, step or as a scalar, or a gate of one unit, is ``held_as``, one it does not
        hold ``absent``. A kernel held transposed is mapped as the spec's, as a port that
        holds its kernels (out, in) and forgets the transform maps it."""
        from portspec.adapter import WeightLayout

        out = {}
        for name, shape in self.table.items():
            if name not in self.weights:
                out[name] = WeightLayout("absent", None, shape, "the variant holds none")
            elif self.weights[name].shape != shape and not (
                    name.endswith(".kernel")
                    and self.choices.get("transpose") in variants.HELD_TRANSPOSED):
                out[name] = WeightLayout("held_as", self.weights[name].shape, shape,
                                         "held at the variant's own shape")
            else:
                out[name] = WeightLayout("canonical", shape, shape)
        return out

    def get_weights(self):
        from portspec.adapter import Weights

        absent = {k: w.reason for k, w in self.weight_layout().items() if w.kind == "absent"}
        return Weights({k: v.copy() for k, v in self.weights.items()}, absent)

    def set_weights(self, weights):
        from portspec.adapter import MissingWeight

        missing, layout = {}, self.weight_layout()
        for name, value in weights.items():
            if name not in self.weights:
                if name not in self.table:
                    raise ValueError(f"unknown weight {name!r}")
                missing[name] = "the variant holds none"
            elif np.shape(value) != self.weights[name].shape:
                # a kernel held transposed is refused, as the port whose adapter maps it as
                # the spec's refuses it; a weight held_as its own shape is missing
                held = layout[name].kind == "held_as"
                if np.shape(value) != self.table[name] or not held:
                    raise ValueError(f"weight {name!r} has shape {self.weights[name].shape}")
                missing[name] = f"held at shape {self.weights[name].shape}"
        if missing:  # as a port's adapter says it: the clause does not apply
            raise MissingWeight(", ".join(missing), "; ".join(dict.fromkeys(missing.values())))
        for name, value in weights.items():
            self.weights[name] = np.asarray(value, self.wdtype)

    def weight_info(self):
        return {k: (v.shape, self.trainable[k]) for k, v in self.weights.items()}

    def param_counts(self):
        sizes = [(v.size, self.trainable[k]) for k, v in self.weights.items()]
        return sum(n for n, t in sizes if t), sum(n for n, t in sizes if not t)

    def get_config(self):
        return dict(self.config)

    def save_weights(self, path):
        from safetensors.numpy import save_file

        save_file({k: np.ascontiguousarray(v) for k, v in self.weights.items()}, path)

    def load_weights(self, path):
        from portspec.adapter import read_weights

        self.set_weights(read_weights(path))


def variant_adapter(spec, finding: Finding, low_precision=()):
    """An adapter of the variant ``finding`` names, computing in float64 and rounding to the
    dtype asked for (``low_precision``: the half-precision dtypes it claims, as the port)."""
    from portspec.adapter import Adapter

    class _Variant(Adapter):
        name, framework, layers = "variant", "numpy", (spec.name,)

        def build(self, layer, config, *, input_shapes, seed, dtype=None):
            if finding.swap:  # built as the port is: the two parameters exchanged
                config = swap_config(config, finding.swap)
            return VariantHandle(spec, config, input_shapes, seed, dtype, finding.diff,
                                 finding.precision, finding.absent, validate=bool(finding.swap),
                                 own=finding.own)

        def load_native(self, layer, path):
            import json

            with open(path + ".json") as f:
                meta = json.load(f)
            handle = self.build(layer, meta["config"], seed=1, dtype=meta["dtype"],
                                input_shapes=[tuple(s) for s in meta["input_shapes"]])
            handle.load_weights(path)
            return handle

    adapter = _Variant()
    adapter.low_precision = tuple(low_precision)
    return adapter


_NUMBER = re.compile(r"-?\d+(?:\.\d+)?(?:e[-+]?\d+)?", re.I)


_NAN = re.compile(r"\bnan\b")


def _nan(value) -> bool:
    return isinstance(value, float) and value != value


def same_failure(a: str, b: str, loose: bool = False, words: bool = False) -> bool:
    """Do two failure messages say the same thing: equal words, numbers within 5 % (or both
    rounding-sized)? ``loose`` (outcomes drawn at random, or rounding): numbers within 10x,
    and every finding of ``a`` ("; "-separated) among those of ``b``. ``words``: the numbers
    are not compared (draws of a random call, a central difference through them)."""
    if loose and "; " in a + b:
        return all(any(same_failure(x, y, loose, words) for y in b.split("; "))
                   for x in a.split("; "))
    if "raised " in a or "raised " in b:  # the same exception type, whatever its words
        def kind(m):
            return m.rsplit("raised ", 1)[-1].split(":")[0] if "raised " in m else None

        return kind(a) == kind(b)
    if _NUMBER.sub("#", a) != _NUMBER.sub("#", b):
        return False
    if words:
        return True
    for x, y in zip(_NUMBER.findall(a), _NUMBER.findall(b), strict=True):
        x, y = abs(float(x)), abs(float(y))
        if x == y or (x < 1e-4 and y < 1e-4):
            continue
        factor = 10.0 if loose else 1.05
        if not (y / factor <= x <= y * factor):
            return False
    return True


_ITEMS: dict = {}
# FM-DROPOUT-SITES' measured rate of one site ("site 1 (after the ReLU) drops 0.255, p = 0.3")
_DROP_RATE = re.compile(r"site \d \([^)]*\) drops [\d.e-]+, p = [\d.e-]+$")
# choices whose clause evidence is drawn at random: the variant fails alike, not identically
# (so does a rate fixed in the port, a float dropout_rate: it drops where the config has none)
RANDOM = {"dropout_inference", "mask_axis", "shared_mask", "residual_dropout"}


def drawn(choices: dict) -> bool:
    """Does a variant draw at random where the spec does not (``RANDOM``, a fixed rate)?"""
    return bool(RANDOM & set(choices)) or variants.fixed_rate(choices) is not None


def _same_error(message: str, raised: str) -> bool:
    """Is ``message`` (``Type: text``) the error quoted in the finding ``raised``? The names
    it quotes may differ: a clause that sets the weights in another order meets the same
    refusal at another weight."""
    head = message.split(":")[0]
    words = _QUOTED.sub("'#'", " ".join(message.split(":", 1)[-1].split()[:6]))
    return (f"({head}:" in raised or f"[{head}:" in raised) and words in _QUOTED.sub("'#'", raised)


_QUOTED = re.compile(r"'[\w.\-/]*'")  # a quoted name, not an apostrophe's span


def explains(spec, finding: Finding, result, exchange: list | None = None) -> bool:
    """Does the failing clause of ``result`` fail the same way on the found variant?
    ``exchange``: the folders of the writers' exports the port's portability clause read."""
    from portspec.suite.checks import work_items

    if finding.misshaped:  # any output of a wrong shape, or an error quoting one
        return bool(re.search(r"shape (\([\d, ]*\)), expected (?!\1)\(", result.message)) or any(
            shape in result.message for shape in finding.wrong_shapes)
    if finding.swap and "raised " in result.message and _same_error(
            _NUMBER.sub("#", result.message.rsplit("raised ", 1)[1]),
            f"({_NUMBER.sub('#', finding.swap_refusal)})"):
        return True  # refused as the probe's call was, which the config swap made run
    if finding.raised and "raised " in result.message:
        # the clause failed on the very refusal the probe met: same exception, same words
        said = result.message.rsplit("raised ", 1)[1]
        if _same_error(said, finding.raised):
            return True
        if not (finding.diff or finding.precision or finding.swap):
            return False
    if finding.precision and result.diagnosis and "not computed in float64" in result.diagnosis:
        return True  # FM-GRAD's own check of step sizes showed the forward's precision
    if not _ITEMS:
        _ITEMS.update({c.id: (s, c, fn) for s, c, fn in work_items(None)})
    items = _ITEMS
    if result.clause not in items:
        return False
    # the half-precision dtypes the port's message speaks of, which the variant then claims
    low = tuple(d for d in LOW_PRECISION if re.search(rf"\b{d}\b", result.message))
    again = _rerun(variant_adapter(spec, finding, low), result, items[result.clause], exchange)
    if again.status != "failed":
        return False
    mine = result.message.replace(result.impl, again.impl)  # the pairs name the reader
    if _nan(finding.spec_error) and _NAN.search(mine) and _NAN.search(again.message):
        # the variant fits a port whose outputs are NaN where the spec's are finite: a clause
        # the variant fails with NaNs of its own fails on them, whatever it measures through
        # them (a central difference of a NaN sum is NaN at every weight, where the port's
        # autodiff masks some of them)
        return True
    # outputs drawn at random (dropout in inference) agree in size only, like rounding
    random = drawn(finding.diff)
    loose = bool(finding.precision) or random
    if same_failure(mine, again.message, loose=loose, words=random):
        return True
    if _OFF_LEVELS.match(mine) and same_failure(_OFF_LEVELS.sub(r"\1#\2", mine),
                                                _OFF_LEVELS.sub(r"\1#\2", again.message)):
        # FM-DROPOUT-SITES' branch values off the spec's levels: where the branch passes
        # through a normalisation after it (post-norm), each is drawn (its masks); the
        # levels it was read against, and the words, must agree
        return True
    if random:  # a drop rate measured on masks broadcast along an axis (fewer independent
        # decisions) falls outside its bounds by chance: the other findings decide
        kept = "; ".join(p for p in mine.split("; ") if not _DROP_RATE.match(p))
        if kept and kept != mine and same_failure(kept, again.message, loose=True, words=True):
            return True
    # A finding about a half-precision call agrees in size only: the variant rounds a float64
    # result where the port computes in that dtype. The others must agree as they are.
    ours, theirs = mine.split("; "), again.message.split("; ")
    return bool(low) and len(ours) == len(theirs) and all(
        same_failure(a, b, loose=loose or any(d in a for d in low))
        for a, b in zip(ours, theirs, strict=True))


LOW_PRECISION = ("bfloat16", "float16")
# FM-DROPOUT-SITES' message for values off the levels (portspec.suite.areas.dropout)
_OFF_LEVELS = re.compile(r"^(branch values \[)[^\]]*(\] are none of )")


def _rerun(adapter, result, item, exchange: list | None):
    """``run_clause`` of the variant. A portability clause, where the writers' exports are at
    hand (the folders ``exchange``), reads those and the variant's own export made under the
    port's name, as the port read them: the same writers in the same order. Without them it
    exports every built-in importable in this process (13.6 s of the first such re-run of a
    ports verify: the frameworks' imports and the exports)."""
    from portspec.suite.areas.portability import EXCHANGE, export
    from portspec.suite.runner import run_clause

    spec, clause, _ = item
    if clause.family != "portable" or not exchange:
        return run_clause(adapter, *item)
    adapter.name = result.impl
    with tempfile.TemporaryDirectory(prefix="portspec-variant-") as tmp:
        for path in (p for folder in exchange for p in Path(folder).glob("*.safetensors")):
            if not path.name.startswith(f"{result.impl}."):
                os.symlink(path, Path(tmp) / path.name)
        try:
            export(adapter, spec, Path(tmp))
        except Exception:  # noqa: BLE001 - the port's pairs lack its own export alike
            pass
        with mock.patch.dict(os.environ, {EXCHANGE: tmp}):
            return run_clause(adapter, *item)


def attach(results, exchange: list | None = None):
    """Results without the probe pseudo-results, each failing clause with its ``cause``.
    ``exchange``: the folders of the writers' portable-weights exports the ports read (the
    built-ins', as ``verify`` and ``matrix`` hand them out), for the portability clauses'
    re-runs (``explains``)."""
    probes = {(r.impl, r.clause[len(PROBE):]): r for r in results if r.clause.startswith(PROBE)}
    out = [r for r in results if not r.clause.startswith(PROBE)]
    prefixes = {spec.prefix: spec for spec in LAYERS.values()}
    # a root cause only for a layer with a failing clause: a conforming one needs no search
    failing = {(r.impl, r.clause.split("-")[0]) for r in out if r.status == "failed"}
    keys = [k for k in probes if (k[0], LAYERS[k[1]].prefix) in failing]
    searches = [(layer, probes[impl, layer].details.get("records", [])) for impl, layer in keys]
    findings = {(impl, LAYERS[layer].prefix): found for (impl, layer), found
                in zip(keys, _search_all(searches), strict=True)}
    from portspec import localise
    from portspec.diagnose import IN_PLACE
    from portspec.suite.areas.batchnorm import GRADIENT_AT_ZERO_VARIANCE

    for i, r in enumerate(out):
        if r.status != "failed":
            continue
        prefix = r.clause.split("-")[0]
        finding = findings.get((r.impl, prefix))
        if finding is None:  # no probe ran: a checked diagnosis is still a root cause
            if r.diagnosis and _checked(prefixes[prefix], r):
                out[i] = replace(r, cause=f"{prefixes[prefix].name}: {r.diagnosis}")
            continue
        details = {**r.details, "variant": finding.summary()}
        cause = (_cause(prefixes[prefix], finding, r, exchange)
                 if finding.fits and finding.says else None)
        if cause is not None and _only_close(cause) and r.diagnosis and _checked(
                prefixes[prefix], r):
            # "a little off" names no mistake; a diagnosis the clause checked does
            cause = None
        if cause is not None:
            out[i] = replace(r, cause=cause.line(), details={**details,
                                                             "variant": cause.summary()})
        elif (r.diagnosis == IN_PLACE and finding.fits and not finding.diff
              and finding.input_holds_output):
            # every call's output the spec's, the caller's tensor holding it: the refused
            # backward is the residual added into the input
            out[i] = replace(r, cause=f"{finding.layer}: {IN_PLACE_RESIDUAL}", details=details)
        elif r.diagnosis == IN_PLACE and ((finding.located and any(
                localise.IN_PLACE_INPUT in text for text, _ in finding.located)) or (
                finding.fits and finding.input_changed
                and finding.diff.get("residual") == "normalised")):
            # the input changed in place: the refused backward is that change, not another
            out[i] = replace(r, cause=finding.line(), details=details)
        elif finding.located and r.diagnosis == GRADIENT_AT_ZERO_VARIANCE and any(
                _rooted(text) for text, _ in finding.located):
            # a square root of the variance the staged probe found: its derivative at 0
            out[i] = replace(r, cause=finding.line(), details=details)
        elif (finding.located and (r.diagnosis or "").startswith(_NORM_BACKWARD)
              and any(scope == "training" and "normalis" in text
                      for text, scope in finding.located)
              and localise.explains(prefixes[prefix], finding.located, r.clause, r.message)):
            # a training normalisation the staged probe found reading other statistics than
            # the batch's (its moving ones, say) carries no gradient through them either: the
            # input's wrong gradient there is that reading, not a backward of its own
            out[i] = replace(r, cause=finding.line(), details=details)
        elif r.diagnosis and _checked(prefixes[prefix], r):
            # no variant of the computation fails it; its own checked diagnosis is the cause
            out[i] = replace(r, cause=f"{prefixes[prefix].name}: {r.diagnosis}", details=details)
        elif finding.located and not r.message.startswith("raised ") and localise.explains(
                prefixes[prefix], finding.located, r.clause, r.message):
            # no variant: the staged probe's reading of the part that differs is the cause (of
            # what the clause measured: a clause that raised measured nothing)
            out[i] = replace(r, cause=finding.line(), details=details)
        elif _compiled_only(finding, r):
            out[i] = replace(r, cause=f"{finding.layer}: {COMPILED_ONLY} [every eager call of "
                             f"the probe matches the spec oracle (max error "
                             f"{_g(finding.spec_error)}); {r.message[:160]}]", details=details)
        else:
            # a located cause is the layer's cause above, whose calls this clause is not
            why = "" if finding.fits or finding.located else f" ({finding.line()})"
            out[i] = replace(r, cause=UNEXPLAINED + why, details=details)
    out = _close_superseded(out, findings)
    for post_pass in (_bigger_module, _dropped_input, _step_after_gradient, _held_shapes,
                      _until_trained, _grad_mode_calls, _seeded, _constant_seed, _frozen_norm,
                      _kept_batch, _random_inference, _rounded_by_its_buffer,
                      _one_constant_seed, _dead_branch, _scaled_activation,
                      _flag_folded, _float32_narrowed, _raised_alone, _export_cause,
                      _swap_placed, _random_in_training, _held_epsilon):
        out = post_pass(out, findings)
    return out


def _swap_placed(results, findings):
    """Two weights exchanged (``variants.MAP_SWAPS``) placed by the initial-weights clause,
    which reads the weights as built through the weight map: where it passes, the map reads
    each weight where the layer initialises it (gamma 1, beta 0; moving mean 0, variance 1),
    so the exchange is in the layer's call; where it fails on those weights, the map is the
    place. Where it did not run, both stay named."""
    initial = {(r.impl, r.clause.split("-")[0]): r for r in results if r.clause.endswith("-INIT")}
    placed = {
        "affine": ("gamma and beta", "gamma 1 and beta 0", "it scales by 0 and offsets by 1"),
        "stats": ("the moving mean and the moving variance", "moving mean 0 and moving "
                  "variance 1", "inference subtracts the moving variance and divides by the "
                  "root of the moving mean"),
    }
    out = []
    for r in results:
        init = initial.get((r.impl, r.clause.split("-")[0]))
        for pair, (names, built, does) in placed.items():
            said = f"{names} exchanged {variants.SWAP_WHERE}"
            if r.status != "failed" or said not in (r.cause or "") or init is None:
                continue
            a, b = variants.MAP_SWAPS[pair]
            if init.status == "passed":
                where = (f"{names} exchanged in the layer's call (each used where the other "
                         f"belongs; the weight map is right: read through it, the layer as "
                         f"built holds {built}, as the spec's, and as built {does})")
            elif init.status == "failed" and a in init.message and b in init.message:
                where = (f"{names} exchanged in the weight map (each mapped to the other's "
                         f"weight: read through it, the layer as built holds them at each "
                         f"other's initial values)")
            else:
                continue
            r = replace(r, cause=r.cause.replace(said, where))
        out.append(r)
    return out


def _export_cause(results, findings):
    """A failed export of a layer's portable weights (the pseudo-clause ``export:<Layer>``)
    is the writing half of the portability clause: it gets the cause that clause's failure
    has, where one is named (the same weight map refusing both, say)."""
    portable = {(r.impl, r.clause.split("-")[0]): r.cause for r in results
                if r.clause.endswith("-PORTABLE") and r.status == "failed" and r.cause
                and not r.cause.startswith(UNEXPLAINED)}
    out = []
    for r in results:
        layer = r.clause.partition("export:")[2]
        if r.status == "failed" and layer in LAYERS and not r.cause:
            cause = portable.get((r.impl, LAYERS[layer].prefix))
            r = replace(r, cause=cause) if cause else r
        out.append(r)
    return out


def _only_close(finding) -> bool:
    """Does the finding say only that float64 arithmetic is a little off the oracle's
    (``Finding.close``), no choice, refusal or storage?"""
    return bool(finding.precision and finding.close and not (
        finding.diff or finding.raised or finding.swap or finding.misshaped or finding.stored
        or finding.held or finding.narrowed))


def _close_superseded(results, findings):
    """Where the search found only float64 arithmetic a little off the oracle's and a clause
    of the layer checked a diagnosis of its own (the one such cause), the other failures put
    down to that arithmetic point to the diagnosis: it says what is off."""
    layers = {spec.prefix: spec.name for spec in LAYERS.values()}
    checked: dict = {}
    for r in results:
        key = (r.impl, r.clause.split("-")[0])
        found = findings.get(key)
        if (r.status == "failed" and found is not None and _only_close(found) and r.diagnosis
                and r.cause == f"{layers[key[1]]}: {r.diagnosis}"):
            checked.setdefault(key, set()).add(r.cause)
    out = []
    for r in results:
        key = (r.impl, r.clause.split("-")[0])
        causes = checked.get(key, set())
        if len(causes) == 1 and r.status == "failed" and r.cause == findings[key].line():
            r = replace(r, cause=next(iter(causes)))
        out.append(r)
    return out


def _seeded(results, findings):
    """Where FM-BN-UPDATE finds the first training call copying the batch statistics and the
    later ones updating as the spec (``batchnorm.SEEDED``, checked) or as a cumulative average
    (``batchnorm.CUMULATIVE``, checked), the search's momentum 0
    (its calls each the first of a fresh build) and the counter or flag it keeps
    (``diagnose.COUNTER``) are that design: they point to it."""
    from portspec.diagnose import COUNTER
    from portspec.suite.areas.batchnorm import CUMULATIVE, SEEDED

    head = (SEEDED.split("{")[0], CUMULATIVE.split("{")[0])
    layers = {spec.prefix: spec.name for spec in LAYERS.values()}
    seeded = {(r.impl, r.clause.split("-")[0]): f"{layers[r.clause.split('-')[0]]}: "
              f"{r.diagnosis}"
              for r in results if r.status == "failed" and (r.diagnosis or "").startswith(head)
              and r.details.get("checked")}
    out = []
    for r in results:
        key = (r.impl, r.clause.split("-")[0])
        found = findings.get(key)
        first = (found is not None and set(found.diff) == {"momentum"}
                 and found.diff["momentum"] == 0.0 and r.cause == found.line())
        if key in seeded and r.status == "failed" and (
                first or (r.diagnosis or "").startswith((COUNTER, *head))):
            r = replace(r, cause=seeded[key])
        out.append(r)
    return out


def _rounded_by_its_buffer(results, findings):
    """A momentum rounded to float32 (``diagnose.MOMENTUM_ROUNDED``, FM-BN-UPDATE) where the
    weight table finds the momentum held as state (``structure.HYPERPARAMETER``: a buffer
    takes the weights' dtype, float32 by default) is that design: it points to it."""
    from portspec.diagnose import MOMENTUM_ROUNDED
    from portspec.suite.areas.structure import HYPERPARAMETER

    held, rounded = HYPERPARAMETER.split("{")[0], MOMENTUM_ROUNDED.split("(")[0]
    return _refile(results, findings,
                   lambda r: r.status == "failed" and held in (r.cause or "")
                   and ", the momentum" in r.cause,
                   lambda r, found: r.status == "failed" and rounded in (r.cause or ""))


def _refile(results, findings, owns, moves):
    """Each result ``moves(result, finding)`` picks takes the cause of the (last) result of
    the same implementation and layer that ``owns(result)`` picks, ``finding`` that layer's
    (None where it has none): the post-passes that put one cause's other symptoms under it."""
    owner = {(r.impl, r.clause.split("-")[0]): r.cause for r in results if owns(r)}
    out = []
    for r in results:
        key = (r.impl, r.clause.split("-")[0])
        if owner.get(key) and moves(r, findings.get(key)):
            r = replace(r, cause=owner[key])
        out.append(r)
    return out


FROZEN_NORM = (
    "the normalisation is frozen: gamma and beta are held non-trainable, and a training call "
    "normalises with the moving statistics and leaves them, as inference does (Keras's "
    "BatchNormalization with trainable=False runs in inference mode whatever the training "
    "argument; in PyTorch, a BatchNorm kept in eval() with requires_grad_(False)); the spec's "
    "normalisation trains"
)


_RAISED = re.compile(r"raised ([A-Za-z_][\w.]*): (.+)")


def _raised_alone(results, findings):
    """A failure nothing explains whose clause met an exception (``raised Type: text``): its
    cause is that error, quoted, where the spec's layer runs: what a reader acts on first,
    not "unexplained". The text goes in brackets, so that one exception type of a layer met
    by several clauses is one cause."""
    layers = {spec.prefix: spec.name for spec in LAYERS.values()}
    out = []
    for r in results:
        said = _RAISED.search(r.message) if r.status == "failed" else None
        if said and (r.cause or "").startswith(UNEXPLAINED):
            text = said[2].split("; ")[0].strip()[:160].replace("[", "(").replace("]", ")")
            built = (r.details or {}).get("raised_building")
            if built is not None:  # the build raised (suite.checks.Context.build)
                config = config_text(built)
                at = (r.details or {}).get("at")
                at = f" at the port's {os.path.basename(at[0])}:{at[1]}" if at else ""
                r = replace(r, cause=f"{layers[r.clause.split('-')[0]]}: building the layer "
                            f"with {config} raises {said[1]}{at}, where the spec's layer "
                            f"builds: the port's own error [{text}]")
            else:
                r = replace(r, cause=f"{layers[r.clause.split('-')[0]]}: a call raises "
                            f"{said[1]}, which no reading of the spec's computation explains: "
                            f"the port's own error, where the spec's layer runs [{text}]")
        out.append(r)
    return out


def _random_inference(results, findings):
    """FM-SHAPE's repeated inference call, found random (``numerics.random_failure``) or
    changing the state the next call reads (``structure.STATEFUL``), is the cause that says
    so where one does: the found variant dropping in inference
    (``variants.drops_in_inference``) or updating the moving statistics in inference
    (``update`` "always"), or another clause's checked diagnosis of dropout in inference
    (``dropout.ACTIVE_IN_INFERENCE``)."""
    from portspec.suite.areas.dropout import ACTIVE_IN_INFERENCE
    from portspec.suite.areas.numerics import RANDOM
    from portspec.suite.areas.structure import STATEFUL

    active, moving = {}, {}
    for r in results:
        key = (r.impl, r.clause.split("-")[0])
        found = findings.get(key)
        if found is not None and found.fits and found.says:
            if variants.drops_in_inference(found.diff):
                active[key] = found.line()
            if found.diff.get("update") == "always" or found.diff.get(
                    "training_flag") == "always":
                moving[key] = found.line()
        if r.status == "failed" and ACTIVE_IN_INFERENCE in (r.cause or ""):
            active.setdefault(key, r.cause)
    out = []
    for r in results:
        key = (r.impl, r.clause.split("-")[0])
        if r.status == "failed" and "two inference calls" in r.message and key in active and (
                r.diagnosis or "").startswith(RANDOM):
            r = replace(r, cause=active[key])
        elif r.status == "failed" and r.diagnosis == STATEFUL and key in moving:
            r = replace(r, cause=moving[key])
        out.append(r)
    return out


def _random_in_training(results, findings):
    """Where a clause found a training call random at dropout 0.0 (``numerics.random_failure``,
    checked: two calls from the same weights, input and state differ), the failures the staged
    probe located in a part's training calls alone are that cause: each probe call is a fresh
    draw of the randomness, which no reading of one part reproduces."""
    from portspec.suite.areas.numerics import RANDOM

    random = {(r.impl, r.clause.split("-")[0]): r.diagnosis for r in results
              if r.status == "failed" and (r.diagnosis or "").startswith(f"{RANDOM} at dropout 0.0")
              and "training=True" in r.message and r.cause}
    out = []
    for diagnosis in dict.fromkeys(random.values()):
        out = _located_to_checked(out or results, findings, diagnosis, lambda r, found: all(
            " in training" in text and "inference" not in text for text, _ in found.located))
    return out or results


# the part of the backward FM-GRAD names where only the input's gradient is off
_NORM_BACKWARD = "the backward through the normalisation to its input is wrong"


def _held_epsilon(results, findings):
    """Where the weight table finds the epsilon held in a float32 tensor attribute and checks
    that the port's float64 output is the spec's with that rounded epsilon
    (``structure.COMPUTES_WITH``), the layer's other failures that nothing else explains, or
    that are put down to its plain tensor attributes, are that cause."""
    from portspec.suite.areas.structure import COMPUTES_WITH

    mark = COMPUTES_WITH.split("{")[0]
    return _refile(results, findings,
                   lambda r: r.status == "failed" and mark in (r.cause or ""),
                   lambda r, found: r.status == "failed" and (
                       (r.cause or "").startswith(UNEXPLAINED)
                       or "as plain tensor attributes, not registered" in (r.cause or "")))


def _kept_batch(results, findings):
    """Where FM-INFERENCE finds, checked, that inference after a training call normalises
    with that call's batch statistics (``numerics.KEPT_BATCH``), a failure the staged probe's
    reading of the normalisation was put down to, whose message is about the output after a
    step (FM-PORTABLE's trained readers), is that finding too: the probe's own training and
    inference calls are the same order, read as batch statistics in inference."""
    from portspec.suite.areas.numerics import KEPT_BATCH

    return _located_to_checked(results, findings, KEPT_BATCH, lambda r, found: (
        not found.fits and "after the step" in r.message))


def _frozen_norm(results, findings):
    """Where the search finds a training call normalising with the moving statistics and
    never updating them, and the weight-table clause finds gamma and beta held non-trainable
    (checked), the two are one design, a frozen normalisation: its clauses, and a gradient
    clause that gets no gradient for gamma and beta, point to one cause."""
    frozen = {(o.impl, o.clause.split("-")[0]) for o in results
              if o.status == "failed" and re.search(r"norm\.gamma: [^;]*trainable=False", o.message)
              and re.search(r"norm\.beta: [^;]*trainable=False", o.message)}
    out = []
    for r in results:
        key = (r.impl, r.clause.split("-")[0])
        found = findings.get(key)
        frozen_here = (key in frozen and found is not None
                       and found.diff.get("train_stats") == "moving"
                       and found.diff.get("update") == "never")
        if frozen_here and r.status == "failed" and (
                r.cause == found.line()
                or "gamma and beta are held non-trainable (a frozen" in (r.cause or "")
                or re.match(r"no gradient returned for trainable \['norm\.beta', "
                            r"'norm\.gamma'\]$", r.message)):
            said = found.line().split(": ", 1)[1].replace("[", "(").replace("]", ")")
            r = replace(r, cause=f"{found.layer}: {FROZEN_NORM} [{said}]")
        out.append(r)
    return out


def _constant_seed(results, findings):
    """Where the initial-weights clause finds weights set to a constant (``[name: every value
    equal]``) and the determinism clause finds exactly those weights the same under every
    seed, the constant is why: no seed changes a constant, and nothing is drawn from a fixed
    seed. The determinism failure points to the constant's cause."""
    constant = {}
    for r in results:
        if r.status == "failed" and r.clause.endswith("-INIT") and r.cause:
            names = re.findall(r"([\w.]+): every value equal", r.cause)
            if names:
                constant[(r.impl, r.clause.split("-")[0])] = (r.cause, set(names))
    out = []
    for r in results:
        key = (r.impl, r.clause.split("-")[0])
        same = re.match(r"seeds \d+ and \d+ give the same \[([^\]]*)\]", r.message)
        if (key in constant and r.status == "failed" and r.clause.endswith("-DETERMINISM")
                and same and set(re.findall(r"'([\w.]+)'", same[1])) <= constant[key][1]):
            r = replace(r, cause=constant[key][0])
        out.append(r)
    return out


def _scaled_activation(results, findings):
    """Where GFF-ACTIVATIONS finds one activation computing act(c z) while the others are the
    spec's (``numerics.ACTIVATION_SCALED``, checked), the staged probe's reading of the gate's
    pre-activation as c times the spec's (read through the spec's default activation, the
    sigmoid) is that activation's: the failures put down to it point to it."""
    from portspec.suite.areas.numerics import ACTIVATION_SCALED

    head = ACTIVATION_SCALED.split("{")[0]
    scaled = {}
    for r in results:
        m = re.search(r"computes \w+\(([-\d.e]+) z\)", r.cause or "")
        if r.status == "failed" and head in (r.cause or "") and m:
            scaled[(r.impl, r.clause.split("-")[0])] = (r.cause, float(m[1]))
    out = []
    for r in results:
        key = (r.impl, r.clause.split("-")[0])
        found = findings.get(key)
        m = re.search(r"the gate's pre-activation is ([-\d.e]+) times the spec's", r.cause or "")
        if (key in scaled and r.status == "failed" and found is not None
                and r.cause == found.line() and m and abs(float(m[1]) - scaled[key][1]) < 1e-3):
            r = replace(r, cause=scaled[key][0])
        out.append(r)
    return out


def _dead_branch(results, findings):
    """A layer that, as built, returns its input unchanged because a weight outside the table
    zeroes its branch (``structure.IDENTITY``, checked: with that weight at 1 the port's
    inference output is the spec's): its other failures of what the layer computes (a variant
    fitted to a branch that is always 0, dropout masks that show nothing) are that weight's."""
    from portspec.suite.areas.structure import IDENTITY

    head = IDENTITY.split(":")[0]
    dead = {(r.impl, r.clause.split("-")[0]): r.cause for r in results
            if r.status == "failed" and head in (r.cause or "")}
    prefixes = {spec.prefix: spec for spec in LAYERS.values()}
    out = []
    for r in results:
        key = (r.impl, r.clause.split("-")[0])
        if key in dead and r.status == "failed" and r.cause != dead[key] and prefixes[
                key[1]].clause(r.clause.split("-", 1)[1]).family not in CHECKED_BEYOND_THE_OUTPUT:
            r = replace(r, cause=dead[key])
        if key in dead and r.cause == dead[key] and "variant" in r.details:
            # the variants fitted to a branch that is always 0 are not the cause: not evidence
            r = replace(r, details={k: v for k, v in r.details.items() if k != "variant"})
        out.append(r)
    return out


def _one_constant_seed(results, findings):
    """Masks that no seed of the layer changes (``determinism.MASKS_FIXED``) and that every
    training call repeats (``dropout.KEY_REUSED``), both checked, are one design: a constant
    seed drawn from anew in every call (``determinism.SEED_CONSTANT_EVERY_CALL``)."""
    from portspec.suite.areas.determinism import MASKS_FIXED, SEED_CONSTANT_EVERY_CALL
    from portspec.suite.areas.dropout import KEY_REUSED

    layers = {spec.prefix: spec.name for spec in LAYERS.values()}
    said: dict = {}
    for r in results:
        key = (r.impl, r.clause.split("-")[0])
        for part, text in (("fixed", MASKS_FIXED), ("reused", KEY_REUSED)):
            if r.status == "failed" and r.cause == f"{layers.get(key[1])}: {text}":
                said.setdefault(key, set()).add(part)
    out = []
    for r in results:
        key = (r.impl, r.clause.split("-")[0])
        if said.get(key) == {"fixed", "reused"} and r.status == "failed" and r.cause in (
                f"{layers[key[1]]}: {MASKS_FIXED}", f"{layers[key[1]]}: {KEY_REUSED}"):
            r = replace(r, cause=f"{layers[key[1]]}: {SEED_CONSTANT_EVERY_CALL}")
        out.append(r)
    return out


def _grad_mode_calls(results, findings):
    """Where the probe found a layer's output following autograd's grad mode (``GRAD_MODE``),
    the failures of its calls made with gradients recorded (the gradient clause's, checked:
    ``gradients.RECORDED``; an inference gradient call moving the moving statistics) are that
    cause, which the search's no_grad calls show otherwise."""
    from portspec.suite.areas.gradients import RECORDED

    out = []
    for r in results:
        found = findings.get((r.impl, r.clause.split("-")[0]))
        if (found is not None and found.grad_mode and r.status == "failed"
                and ((r.diagnosis or "").startswith(RECORDED)
                     or re.search(r"changed in an inference gradient call", r.message))):
            r = replace(r, cause=found.line())
        out.append(r)
    return out


_CASES_DIFFER = re.compile(r"the calls of the cases (.*?) differ from the spec oracle")


def _located_to_checked(results, findings, diagnosis, also):
    """Failures the staged probe's located reading of the layer was put down to, where a
    clause of the same implementation and layer found ``diagnosis`` (checked, its cause set)
    and ``also(result, finding)`` holds: that clause's cause. The probe reads one part at a
    time, each call on a fresh build; a checked diagnosis that needs an order of calls (a
    training call before an inference one) says what those readings were."""
    checked = {(r.impl, r.clause.split("-")[0]): r.cause for r in results
               if r.status == "failed" and r.diagnosis == diagnosis and r.cause}
    out = []
    for r in results:
        key = (r.impl, r.clause.split("-")[0])
        found = findings.get(key)
        if (key in checked and r.status == "failed" and found is not None and found.located
                and r.cause == found.line() and also(r, found)):
            r = replace(r, cause=checked[key])
        out.append(r)
    return out


def _until_trained(results, findings):
    """Where a layer's inference clause finds inference using batch statistics until the
    layer's first training call (checked: the same call after one training call is the
    spec's), the failures the staged probe put down to its inference calls alone differing
    from the spec (each probe call runs on a fresh, untrained build) are that cause."""
    from portspec.suite.areas.numerics import UNTIL_TRAINED

    def inference_alone(r, found):
        said = [_CASES_DIFFER.search(text) for text, _ in found.located]
        return not found.says and bool(said) and all(
            m and all(c.strip().endswith("(inference)")
                      for c in m[1].replace(" and ", ", ").split(", ")) for m in said)

    return _located_to_checked(results, findings, UNTIL_TRAINED, inference_alone)


def _float32_narrowed(results, findings):
    """Where every float64 call of the probe is the spec's and a float32 call errs past
    float32's tolerance (``NARROWED32``), the failures nothing else explains, and FM/GFF-COMPILE's
    compiled-only reading (which assumes the eager computation the spec's), are that float32
    call computing partly in a narrower float."""
    out = []
    for r in results:
        key = (r.impl, r.clause.split("-")[0])
        found = findings.get(key)
        low = found.narrowed32 if found is not None else {}
        if (r.status == "failed" and low and not found.says and r.cause
                and (r.cause.startswith(UNEXPLAINED) or COMPILED_ONLY in r.cause)):
            where = low["where"] or "the place is not traced here"
            r = replace(r, cause=(
                f"{found.layer}: a float32 call computed partly in float16 or bfloat16 (an "
                "autocast region the layer opens itself, torch.autocast or a .half()/"
                f".bfloat16() cast; float64 calls are exact, which autocast leaves alone): "
                f"{where} [every float64 call of the probe matches the spec oracle (max error "
                f"{_g(found.spec_error)}); a float32 inference call errs by {_g(low['error'])} "
                "relative, of bfloat16/float16 size]"))
        out.append(r)
    return out


def _flag_folded(results, findings):
    """Where the search found the layer training in every call (``training_flag`` "always"),
    or computing inference in every call ("ignored"), the inference or training clauses whose
    own checked reading is the flag ignored that way (``numerics.FLAG_IGNORED``: the same
    computation in both modes) are that one cause, not a second one."""
    from portspec.suite.areas.numerics import FLAG_IGNORED

    same = {"always": FLAG_IGNORED[True], "ignored": FLAG_IGNORED[False]}
    out = []
    for r in results:
        found = findings.get((r.impl, r.clause.split("-")[0]))
        flag = found.diff.get("training_flag") if found is not None and found.fits else None
        if (r.status == "failed" and flag in same and r.diagnosis == same[flag]
                and r.cause == f"{found.layer}: {r.diagnosis}"):
            r = replace(r, cause=found.line())
        out.append(r)
    return out


# the weights of one shape the port holds at another, one or several named together
_HELD_SHAPE = re.compile(r"((?:\w+\.\w+, )*\w+\.\w+) \([\d, ]*\) for the spec's \(")
_SHAPE_ERROR = re.compile(r"raised \w+: .*(shape|broadcast|mat1 and mat2|size of tensor|"
                          r"dimension|dot_general)", re.IGNORECASE)


def _held_shapes(results, findings):
    """Where the layer's weight-table or count clause finds weights the port holds at other
    shapes than the spec's (``the port holds dense2.kernel (16, 6) for the spec's (16, 5)``,
    checked), the spec's weights refused at those shapes (the map's "'dense2.kernel' maps to
    ... of shape") and calls no variant explains that raise a shape error are that same
    design: they point to it, one root cause."""
    held = {}
    for r in results:
        if r.status == "failed" and r.cause and ": the port holds " in r.cause:
            names = [n for group in _HELD_SHAPE.findall(r.cause) for n in group.split(", ")]
            if names:
                held.setdefault((r.impl, r.clause.split("-")[0]), (r.cause, names))
    out = []
    for r in results:
        key = (r.impl, r.clause.split("-")[0])
        found = findings.get(key)
        if key in held and r.status == "failed" and r.cause != held[key][0]:
            cause, names = held[key]
            line = found.line() if found is not None else ""
            refused = r.cause == line and any(f"'{n}' maps to" in line for n in names)
            unexplained = (r.cause or "").startswith(UNEXPLAINED) and bool(
                _SHAPE_ERROR.search(r.message) or any(f"'{n}' maps to" in r.message
                                                      for n in names))
            if refused or unexplained:
                r = replace(r, cause=cause)
        out.append(r)
    return out


def _dropped_input(results, findings):
    """Where FM-RESIDUAL shows the layer's input dropped out before the residual
    (``structure.INPUT_DROPPED``, checked), the dropout probe's values that no variant
    reproduces are that dropout's: the clauses put down to the probe's dropout statement
    alone are put down to it."""
    from portspec.suite.areas.structure import INPUT_DROPPED

    return _refile(results, findings,
                   lambda r: r.status == "failed" and INPUT_DROPPED in (r.cause or ""),
                   lambda r, found: found is not None and found.located and not found.fits
                   and r.cause == found.line()
                   and all(scope == "dropout" for _, scope in found.located))


def _rooted(text: str) -> bool:
    """Whether a staged-probe statement has the normalisation divide by a square root of the
    variance alone (sqrt(var) + epsilon, the standard deviation), whose derivative at a batch
    variance of 0 is infinite: it accounts for non-finite batch-of-one gradients."""
    text = text.replace("sqrt(var + epsilon)", "").replace("sqrt(the moving var + epsilon)", "")
    return "sqrt(var)" in text or "standard deviation" in text


COMPILED_ONLY = ("the compiled call computes otherwise than the eager one, which is the spec's: "
                 "a path the port takes only under the compiler (a branch on tracing or "
                 "compiling, a compiled-only kernel or option)")


def _compiled_only(finding: Finding, result) -> bool:
    """Compiled and eager differ (FM/GFF-COMPILE's comparison) where the probe found the eager
    computation the spec's: no variant, no refusal, no precision or shape of its own."""
    return (finding.fits and not finding.says and result.clause.endswith("-COMPILE")
            and result.message.startswith("compiled vs eager"))


def _step_after_gradient(results, findings):
    """Where a layer's gradient clause has a cause and the probe finds the layer's forward the
    spec's (no variant, no refusal), its portability failures in which every failing pair read
    the writer's inference output right and differs only after the training step come from
    that gradient: they point to its cause."""
    from portspec.suite.areas.batchnorm import UPDATED_TWICE

    grads = {(r.impl, r.clause.split("-")[0]): r.cause for r in results
             if r.status == "failed" and r.clause.endswith("-GRAD") and r.cause
             and not r.cause.startswith(UNEXPLAINED)}
    # the moving statistics a gradient call updates twice: the step's statistics differ
    twice = {(r.impl, r.clause.split("-")[0]): r.cause for r in results
             if r.status == "failed" and r.clause.endswith("-BN-UPDATE")
             and r.diagnosis == UPDATED_TWICE and r.cause}
    out = []
    for r in results:
        key = (r.impl, r.clause.split("-")[0])
        found = findings.get(key)
        pairs = r.details.get("pairs", {}) if r.clause.endswith("-PORTABLE") else {}
        failed = [v for k, v in pairs.items() if v != "ok"
                  and k not in r.details.get("not_judged", ())]
        unexplained = (failed and (r.cause or "").startswith(UNEXPLAINED) and found is not None
                       and found.fits and not found.says)
        if (unexplained and key in grads
                and all(" after the step differs by " in v for v in failed)):
            r = replace(r, cause=grads[key])
        elif unexplained and key in twice and all(
                re.search(r"\.moving_\w+ after the step differs by ", v) for v in failed):
            r = replace(r, cause=twice[key])
        out.append(r)
    return out


def _bigger_module(results, findings):
    """Where no variant of a layer reproduces a port whose module holds weights outside the
    layer's table (FM-WEIGHTS' checked finding, ``structure.BIGGER``), or one canonical weight
    as several of which the map names one (``structure.JOINED``: the others are neither set
    nor saved), that is the likelier cause of the failures nothing else explains: they point
    to it."""
    from portspec.suite.areas.structure import BIGGER, JOINED

    # the staged probe's reading too: it reads the block's computation as the layer's
    return _refile(results, findings,
                   lambda r: r.status == "failed" and (BIGGER in (r.cause or "")
                                                       or JOINED in (r.cause or "")),
                   lambda r, found: found is not None and not found.fits and (
                       (r.cause or "").startswith(UNEXPLAINED)
                       or (found.located and r.cause == found.line())))


def _search_records(layer: str, records: list) -> Finding:
    """``search`` of one probe's records (as JSON); a search that raises is a finding that
    fits nothing, and the verdicts stand without a root cause."""
    spec = LAYERS[layer]
    try:
        return search(spec, _from_json(records))
    except Exception as exc:  # noqa: BLE001 - see above
        return Finding(spec.name, fits=False, note=f"the search raised {_describe(exc)}")


def _search_all(searches: list) -> list[Finding]:
    """``_search_records`` of each (layer, records), in order. Several run on the CPUs at
    once (``schedule.jobs()`` lanes), each in a process of its own, ``python -m
    portspec.rootcause`` (the search is NumPy on small arrays, held by the GIL: up to some
    10 s for a port outside the variant space, whose search runs every level of its plan).
    A process started by ``multiprocessing`` (the test suite's measures, one port per CPU
    already) runs them in turn, and so does this process for a search whose process fails."""
    import multiprocessing
    import pickle
    import subprocess
    import sys

    from portspec.schedule import jobs, parallel

    lanes = min(jobs(), len(searches))
    if lanes < 2 or multiprocessing.parent_process() is not None:
        return [_search_records(*s) for s in searches]

    def apart(layer, records):
        done = subprocess.run([sys.executable, "-m", "portspec.rootcause"], check=False,
                              input=pickle.dumps((layer, records)), capture_output=True)
        if done.returncode != 0:
            return _search_records(layer, records)
        return pickle.loads(done.stdout)  # noqa: S301 - written by our own child just now

    return parallel([lambda s=s: apart(*s) for s in searches], lanes)


# What a finding says of its arithmetic's precision rather than of its choices: a part of its
# own where the finding is split, or the normalisation's (``independent``).
PRECISION_FIELDS = {"precision": None, "stored": False, "close": False, "held": {},
                    "narrowed": None, "cast": None, "plain": "", "narrowed32": {}}


def _forced(finding: Finding) -> dict:
    """The choices the weights the port lacks force (``variants.required``), or {}."""
    return variants.required(finding.layer, set(finding.absent)) if finding.absent else {}


def independent(finding: Finding) -> list[Finding]:
    """The finding as one finding per part of the layer it changes (``variants.parts``):
    independent mistakes, each its own root cause. One part: the finding itself.

    What the normalisation alone explains goes with its part, or is a part of its own where
    the normalisation computes as the spec's: a training batch of one refused (what
    torch.nn.BatchNorm does; the batch statistics are all it lacks) and moving statistics
    stored in float32 (nnx.BatchNorm's). A float64 call computed partly in float32 elsewhere
    (Keras's moments on JAX, a cast in the port) is a part of its own: the clauses it fails
    alone are its, the others the choices'. Any other refusal (a float64 call, a build) may be
    any part's, and float64 arithmetic a little off the oracle's (``close``) is a function's
    own approximation (Keras's tanh in its gelu), of the choice that computes it: the finding
    stays whole."""
    from portspec.diagnose import BATCH_OF_ONE

    if finding.swap or finding.close or (
            finding.raised and not finding.raised.startswith(BATCH_OF_ONE)):
        return [finding]
    split = variants.parts(finding.layer, finding.diff)
    # the choice the weights a port's map declares absent force (a Dense without a bias) is
    # the port's declared design, and any other choice of its part another mistake
    forced = _forced(finding)
    split = [piece for d in split for piece in (
        (forced, {k: v for k, v in d.items() if k not in forced})
        if forced and len(d) > len(forced) and all(
            k in d and d[k] == v for k, v in forced.items()) else (d,))]
    areas = variants.AREAS.get(finding.layer, {})
    norm = next((i for i, d in enumerate(split)
                 if any(areas.get(k) == "normalisation" for k in d)), None)
    if (finding.raised or finding.stored) and norm is None:
        split, norm = [*split, {}], len(split)
    apart = bool(finding.precision) and not finding.stored  # the precision's own part
    if apart:
        split = [*split, {}]
    if len(split) < 2:
        return [finding]
    evidence = (f"max error vs the spec oracle {_g(finding.spec_error)}, vs the variant with "
                f"all {len(split)} independent differences {_g(finding.variant_error)}")
    precise = len(split) - 1 if apart else norm  # the piece that keeps the precision

    def piece(i, d):
        kept = {} if i == precise else PRECISION_FIELDS
        absent = tuple(a for a in finding.absent if any(
            a in unused for c, unused in variants.UNUSED.get(finding.layer, [])
            if c.items() <= d.items()))
        said = evidence + finding._where() if i == precise else evidence
        if absent:  # as the search says it; the figures where the part is more than that
            held = f"the port holds no {', '.join(sorted(absent))}"
            said = held if variants.required(finding.layer, set(absent)) == d else (
                f"{held}; {said}")
        return replace(finding, diff=d, also=[], evidence=said, **kept, absent=absent,
                       raised=finding.raised if i == norm else None)

    return [piece(i, d) for i, d in enumerate(split)]


def _cause(spec, finding: Finding, result, exchange=None) -> Finding | None:
    """The finding that explains the failing ``result``: of independent differences, the one
    that fails it alone the same way; the whole finding where it takes several; None where
    the finding does not explain it."""
    pieces = independent(finding)
    if len(pieces) > 1:
        # each piece judged on a port that lacks what this one lacks (the clause ran without
        # those weights); what the weights' absence alone explains is its own
        forced = _forced(finding)
        alone = []
        for p in sorted(pieces, key=lambda p: bool(forced) and p.diff != forced):
            if explains(spec, replace(p, diff={**forced, **p.diff}, absent=finding.absent),
                        result, exchange):
                if forced and p.diff == forced:
                    return p
                alone.append(p)
        if len(alone) == 1:
            return alone[0]
    return finding if explains(spec, finding, result, exchange) else None


# Clauses that judge what the layer holds or how it is built, not what it computes: the
# variants cannot explain them, and their diagnoses are hypotheses each clause tests against its
# own evidence (the initial weights' distribution, the counts' arithmetic, a config value lost
# in a round trip). Such a diagnosis is the failure's root cause.
CHECKED_BEYOND_THE_OUTPUT = {
    "init", "param-counts", "weight-table", "config-roundtrip", "save-native", "weights-roundtrip",
}


def _checked(spec, result) -> bool:
    """Has the failing clause tested its own diagnosis (ClauseFailure(checked=True)), or is it
    a clause of how the layer is built, whose diagnoses all are?"""
    family = spec.clause(result.clause.split("-", 1)[1]).family
    return bool(result.details.get("checked")) or family in CHECKED_BEYOND_THE_OUTPUT


def root_causes(results) -> list[tuple[str, str, list[str]]]:
    """(implementation, root-cause line, clauses it explains): implementations in order of
    first appearance, each one's causes the one explaining most clauses first (ties in order
    of first appearance); the unexplained failures of each implementation last."""
    groups: dict[tuple[str, str], list[str]] = {}
    for r in results:
        if r.status == "failed" and getattr(r, "cause", None):
            groups.setdefault((r.impl, r.cause), []).append(r.clause)
    named = [(i, c, ids) for (i, c), ids in groups.items() if not c.startswith(UNEXPLAINED)]
    first = {}
    for i, _, _ in named:
        first.setdefault(i, len(first))
    named.sort(key=lambda cause: (first[cause[0]], -len(cause[2])))  # stable: ties keep order
    rest = [(i, c, ids) for (i, c), ids in groups.items() if c.startswith(UNEXPLAINED)]
    return named + rest


def probe_wanted(impl: str, task: str, wanted) -> bool:
    """Is ``task`` the probe of a layer one of whose clauses ``wanted`` asks of ``impl``?"""
    if not task.startswith(PROBE):
        return False
    prefix = LAYERS[task[len(PROBE):]].prefix + "-"
    return any(i == impl and c.startswith(prefix) for i, c in wanted)


if __name__ == "__main__":  # one search for _search_all: (layer, records) in, a Finding out
    import pickle
    import sys

    from portspec.rootcause import _search_records as _search_here

    _layer, _records = pickle.load(sys.stdin.buffer)  # noqa: S301 - from our own parent
    sys.stdout.buffer.write(pickle.dumps(_search_here(_layer, _records)))
