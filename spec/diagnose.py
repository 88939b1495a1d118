"""Diagnoses: what the evidence of one failed clause points to.

A failing comparison says *that* an implementation differs; a diagnosis says *why*, by fitting
the clause's own evidence to the porting mistakes the spec knows of (``LayerSpec.alternatives``;
``Fitted`` estimates an unknown constant such as the BatchNorm epsilon). Each is a hypothesis
named only when the evidence supports it: a fitted value must reproduce more than the one call
it was fitted to, a refusal is explained by re-running (a batch of two, a float32 call), never
by a framework's wording. What a port computes instead, once for all its clauses, is the
root-cause stage's (``portspec.rootcause``), which fits the oracle's variants to every record of
the port together.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import replace

import numpy as np

from portspec.layers import Case
from portspec.report import quote
from portspec.tolerances import FORWARD, close, max_violation


class Fitted:
    """An alternative oracle with one unknown positive constant, estimated from the evidence.

    ``oracle(config, weights, inputs, training, value)`` gives the output for a value of the
    constant; ``describe(value)`` the diagnosis. The constant is fitted in log space over
    [lo, hi] (a grid, then golden-section refinement) and reported when the fitted oracle
    reproduces the observed output and the value differs from the spec's by more than 10%.

    ``fast``, of the same signature, is the same computation in NumPy's own arithmetic (sums
    in BLAS's and NumPy's order, within 1e-14 of the oracle's: ``portspec.variants.FAST``); the
    fit's some 200 evaluations use it where given, and the fitted value is then judged by
    ``oracle``. A loss that differs by rounding moves the fitted value by as little.
    """

    def __init__(self, oracle, describe, spec_value: float, lo: float = 1e-12, hi: float = 1.0,
                 fast=None):
        self.oracle, self.describe = oracle, describe
        self.spec_value, self.lo, self.hi = spec_value, lo, hi
        self.fast = fast or oracle

    def __call__(self, config, weights, inputs, *, training):
        raise ValueError("a fitted alternative needs the observed output")

    def fit(self, config, weights, inputs, actual, *, training) -> float | None:
        actual = np.asarray(actual, dtype=np.float64)
        if not np.all(np.isfinite(actual)):
            return None

        def loss(log_v):
            out = self.fast(config, weights, inputs, training, 10.0**log_v)
            return float(np.mean((np.asarray(out, np.float64) - actual) ** 2))

        a, b = np.log10(self.lo), np.log10(self.hi)
        grid = np.linspace(a, b, int(8 * (b - a)) + 1)
        losses = [loss(v) for v in grid]
        i = int(np.argmin(losses))
        lo, hi = grid[max(i - 1, 0)], grid[min(i + 1, len(grid) - 1)]
        ratio = (np.sqrt(5) - 1) / 2
        for _ in range(60):  # golden section on the bracket around the best grid point
            c, d = hi - ratio * (hi - lo), lo + ratio * (hi - lo)
            if loss(c) < loss(d):
                hi = d
            else:
                lo = c
        return float(10.0 ** ((lo + hi) / 2))

    def explain(self, config, weights, inputs, actual, *, training, tol) -> str | None:
        value = self.fit(config, weights, inputs, actual, training=training)
        if value is None or abs(value / self.spec_value - 1.0) < 0.1:
            return None
        expected = self.oracle(config, weights, inputs, training, value)
        return self.describe(value) if close(actual, expected, tol) else None


def _hits(spec, config, weights, inputs, actual, *, training, tol, expected) -> list[str]:
    """The alternatives that reproduce ``actual`` and differ from the spec's ``expected``."""
    hits = []
    for name, alternative in spec.alternatives():
        try:
            if isinstance(alternative, Fitted):
                hit = alternative.explain(
                    config, weights, inputs, actual, training=training, tol=tol
                )
                if hit:
                    hits.append(hit)
                continue
            alt = alternative(config, weights, inputs, training=training)
        except Exception:  # an alternative that does not apply to this case
            continue
        if alt is None or np.shape(alt) != np.shape(actual) or not close(actual, alt, tol):
            continue
        if expected is None or not close(alt, expected, tol):  # else the case cannot tell
            hits.append(name)
    return hits


def explain_output(spec, config, weights, inputs, actual, *, training, tol) -> str | None:
    """Name the known mistakes whose alternative oracle reproduces ``actual``.

    A float64 comparison that fails but holds within 10x the float32 tolerance is a precision
    finding (a float64 layer computing partly in float32). Otherwise, when no alternative fits
    at ``tol`` and ``tol`` is finer than float32, they are tried at the float32 tolerance: such
    a layer can have a real mistake as well.
    """
    coarse = FORWARD["float32"]
    try:
        expected = spec.forward(config, weights, inputs, training=training)[0]
    except Exception:  # the oracle needs dropout masks here
        expected = None
    if tol < coarse and expected is not None and not close(actual, expected, tol):
        err, ratio = max_violation(actual, expected, coarse)
        if ratio <= 10.0:
            return (
                f"the output agrees with the spec only to float32 precision (max error "
                f"{err:.2g}): part of the float64 computation runs in float32"
            )
    kw = {"training": training, "expected": expected}
    hits = _hits(spec, config, weights, inputs, actual, tol=tol, **kw)
    suffix = ""
    if not hits and tol < coarse:
        hits = _hits(spec, config, weights, inputs, actual, tol=coarse, **kw)
        suffix = " (to float32 precision)"
    if not hits:
        return None
    # One call shows which statistics a mode used, not whether the flag is ignored or
    # inverted (that is the other mode's output): the clauses that re-run the port say which
    # (numerics.training_flag); here the claim is left out.
    hits = [h.replace(" (training flag ignored)", "") for h in hits]
    return "output matches the spec with " + " / ".join(hits) + suffix


def fit_momentum(old, batch_stat, new) -> float | None:
    """Least-squares share of the old value in ``new = a*old + (1-a)*batch_stat``."""
    d_old = np.ravel(old) - np.ravel(batch_stat)
    d_new = np.ravel(new) - np.ravel(batch_stat)
    denom = float(d_old @ d_old)
    if denom == 0.0:
        return None
    return float(d_old @ d_new) / denom


def bn_update(momentum, old_mean, old_var, flat, new_mean, new_var, tol) -> str | None:
    """Explain a wrong moving-statistics update: momentum sense, unbiased variance, no update,
    float32 arithmetic in a float64 layer."""
    n = flat.shape[0]
    mean = flat.mean(axis=0)
    biased = flat.var(axis=0)
    if np.array_equal(new_mean, old_mean) and np.array_equal(new_var, old_var):
        return "the moving statistics did not change in a training call"
    findings = []
    a = fit_momentum(old_mean, mean, new_mean)
    coarse = max(tol, FORWARD["float32"])
    if a is not None and not close(new_mean, a * old_mean + (1 - a) * mean, coarse):
        a = None  # no share of the old value reproduces the update: not a momentum finding
    if a is not None and abs(a - momentum) > 1e-3:
        if abs(a - (1 - momentum)) < 1e-3:
            findings.append(
                f"the moving mean keeps {a:.4g} of its old value, 1 - {momentum}: the momentum "
                f"is read in the PyTorch sense (the share of the new value) instead of the "
                f"Keras one (the share of the old value), or left at the Keras/Flax default"
            )
        else:
            findings.append(f"the moving mean keeps {a:.4g} of its old value, not {momentum}")
    rounded = _rounded_momentum(momentum, old_mean, old_var, flat, new_mean, new_var, tol)
    if rounded is not None:
        findings.append(rounded)
    a_mean = a if a is not None else momentum
    if n > 1:
        unbiased = biased * n / (n - 1)
        if close(new_var, a_mean * old_var + (1 - a_mean) * unbiased, coarse) and not close(
            new_var, a_mean * old_var + (1 - a_mean) * biased, coarse
        ):
            findings.append(
                f"the moving variance was updated with the unbiased batch variance "
                f"(off by n/(n-1) = {n}/{n - 1})"
            )
    if not findings and tol < FORWARD["float32"]:
        want_mean = momentum * old_mean + (1 - momentum) * mean
        want_var = momentum * old_var + (1 - momentum) * biased
        if close(new_mean, want_mean, coarse) and close(new_var, want_var, coarse):
            findings.append(
                "the update is right to float32 precision only: the statistics of a float64 "
                "layer are computed or stored in float32"
            )
    return "; ".join(findings) or None


MOMENTUM_ROUNDED = (
    "the momentum is rounded to float32 ({said}) before the update: it keeps {keep:.10g} of "
    "the old moving statistics and takes {take:.10g} of the batch's, where a float64 layer "
    "keeps {m:g} and takes {rest:g} (a float32 scalar tensor or buffer holding the momentum, "
    "or a momentum cast to float32)"
)


def _rounded_momentum(momentum, old_mean, old_var, flat, new_mean, new_var, tol) -> str | None:
    """``MOMENTUM_ROUNDED``, where the update keeps float32's nearest to the share kept,
    ``momentum``, or to the share taken, ``1 - momentum`` (a PyTorch-sense momentum held in
    float32), the other share one minus it in float64 or in float32, and the exact shares do
    not reproduce it (float32's rounding of a share is ~1e-9 of it; the float64 update's error
    ~1e-16). As words, or None."""
    f32 = np.float32
    m, rest = float(momentum), 1.0 - float(momentum)
    shares = []
    for said, kept in ((f"float32({m:g})", f32(m)), (f"1 - float32({rest:g})", None)):
        if kept is None:  # the share of the batch held in float32
            take = f32(rest)
            shares += [(said, 1.0 - float(take), float(take)), (said, float(f32(1) - take),
                                                                  float(take))]
        else:
            shares += [(said, float(kept), 1.0 - float(kept)),
                       (said, float(kept), float(f32(1) - kept))]
    for said, keep, take in shares:
        if (keep, take) != (m, rest) and update_fits(old_mean, old_var, flat, new_mean, new_var,
                                                     keep, take, tol):
            return MOMENTUM_ROUNDED.format(said=said, keep=keep, take=take, m=m, rest=rest)
    return None


def update_fits(old_mean, old_var, flat, new_mean, new_var, keep, take, tol) -> bool:
    """Do the moving statistics ``new_*`` keep ``keep`` of the old and take ``take`` of the
    batch ``flat``'s (its variance biased or unbiased), to ``tol``?"""
    if not close(new_mean, keep * old_mean + take * flat.mean(axis=0), tol):
        return False
    return any(close(new_var, keep * old_var + take * flat.var(axis=0, ddof=d), tol)
               for d in (0, 1) if flat.shape[0] > d)


def fit_candidates(candidates, actual, tol) -> str | None:
    """``candidates``: (label, expected array) pairs; return the labels that fit ``actual``."""
    hits = [label for label, expected in candidates if close(actual, expected, tol)]
    return " / ".join(hits) if hits else None


# One wording, whatever shows it (FM-BN-BATCH1's re-run here, the root-cause probe's refused
# call of one where its larger training calls run): one root cause.
BATCH_OF_ONE = ("the port refuses a training batch of one while larger batches run (as "
                "torch.nn.BatchNorm does); the spec requires it: the batch variance is 0 and the "
                "output is beta")


def _foreign_compute(adapter, spec, case, dtype) -> str | None:
    """The handle's words for sublayers computing in another dtype than the layer's under
    ``dtype`` compute (``PortHandle.foreign_compute``: Keras's dtype policies), or None."""
    try:
        handle = adapter.build(spec.name, dict(case.config), input_shapes=case.input_shapes,
                               seed=0, dtype=dtype)
        return getattr(handle, "foreign_compute", lambda: None)()
    except Exception:  # noqa: BLE001 - no build, no reading
        return None


def _runs(adapter, spec, case, dtype, training) -> bool:
    """Does a layer of ``case`` build and run one call in ``dtype``?"""
    try:
        handle = adapter.build(spec.name, dict(case.config), input_shapes=case.input_shapes,
                               seed=0, dtype=dtype)
        x = spec.make_inputs(case, np.random.default_rng(0))
        cast = [np.asarray(v, dtype) for v in x] if isinstance(x, list) else np.asarray(x, dtype)
        handle.forward(cast, training=training)
    except Exception:  # noqa: BLE001 - whatever the framework raises, in whatever words
        return False
    return True


# PyTorch's autograd refuses a backward pass through a tensor modified in place after it was
# saved, or an in-place change of a leaf that requires grad (torch/csrc/autograd: "one of the
# variables needed for gradient computation has been modified by an inplace operation"; "a leaf
# Variable that requires grad is being used in an in-place operation").
IN_PLACE_ERROR = re.compile(r"modified by an inplace operation|leaf Variable that requires grad "
                            r"is being used in an in-place operation")
IN_PLACE = ("an in-place operation autograd refuses: the port changes in place a tensor the "
            "backward pass needs, or its input (x += ..., add_, an inplace=True activation on a "
            "saved tensor); the forward alone runs, the gradient raises. The out-of-place form "
            "(x = x + ...) computes the same")


# PyTorch refuses to record a tensor made under torch.inference_mode() for the backward pass
# (c10/core/InferenceMode, torch/csrc/autograd: "Inference tensors cannot be saved for
# backward"; "Inplace update to inference tensor outside InferenceMode").
INFERENCE_MODE_ERROR = re.compile(r"Inference tensors cannot be saved for backward|Inplace "
                                  r"update to inference tensor outside InferenceMode")
INFERENCE_MODE = ("part of the call runs under torch.inference_mode(): tensors made there "
                  "cannot join autograd afterwards, so a gradient call raises where the "
                  "forward alone runs; torch.no_grad() computes the same and lets a later "
                  "backward through")


# FM/GFF-DTYPE's words for a low-precision call the port refused: the dtype, the exception,
# its text
LOW_REFUSED = re.compile(r"^(bfloat16|float16) training=\w+(?:, [^:;]*)?: raised (\w+): ([^;]*)")

# Keras's serialization refusing a layer whose get_config returned None (keras/src/saving).
GET_CONFIG_ERROR = re.compile(r"get_config\(\)` method of .* should return a dict\. It "
                              r"returned: None")


def explain_refusal(result, clause, adapter, spec):
    """A failed Result whose port raised, explained by evidence rather than by its framework's
    wording: a batch of one refused where a batch of two runs; a float64 call refused where
    the same call in float32 runs. Both re-run the port, so the diagnosis is marked checked."""
    low = LOW_REFUSED.match(result.message)
    if (result.status == "failed" and not result.diagnosis and clause.family == "dtype" and low
            and re.search(rf"\b{low[1]}\b", low[3])):
        case = spec.cases()[0]
        config = {**case.config, "dropout": 0.0} if "dropout" in case.config else case.config
        if _runs(adapter, spec, Case(config, case.input_shapes, case.label), "float32", False):
            foreign = _foreign_compute(adapter, spec, case, low[1])
            if foreign:
                return replace(result, details={**result.details, "checked": True},
                               diagnosis=f"{foreign} ({low[2]}: {quote(low[3])})")
            return replace(result, details={**result.details, "checked": True}, diagnosis=(
                f"a {low[1]} call raises where the same call in float32 runs, and the port's "
                f"error names {low[1]} ({low[2]}: {quote(low[3])}): the port refuses "
                "low-precision floats (a dtype check that accepts float32 and float64 alone, "
                "or a part fixed to them), where the spec computes in the floating dtype it "
                "is given"))
    if result.status != "failed" or result.diagnosis or not result.message.startswith("raised"):
        return result
    if IN_PLACE_ERROR.search(result.message):  # autograd's own check of its saved tensors
        return replace(result, details={**result.details, "checked": True}, diagnosis=IN_PLACE)
    if GET_CONFIG_ERROR.search(result.message):  # Keras's own words for a None config
        from portspec.suite.areas.serialization import GET_CONFIG_NONE

        return replace(result, details={**result.details, "checked": True},
                       diagnosis=GET_CONFIG_NONE)
    if INFERENCE_MODE_ERROR.search(result.message):  # autograd's own refusal, in its words
        return replace(result, details={**result.details, "checked": True},
                       diagnosis=INFERENCE_MODE)
    case = spec.cases()[0]
    config = {**case.config, "dropout": 0.0} if "dropout" in case.config else case.config
    if clause.family == "bn-batch1":
        # the refusal is the call's: a batch of one fails on its own, a batch of two runs (a
        # clause that raised setting weights, say, would fail both or neither)
        one, two = (Case(config, ((n, *case.input_shapes[0][1:]),), f"batch {n}")
                    for n in (1, 2))
        if _runs(adapter, spec, two, "float64", True) and not _runs(
                adapter, spec, one, "float64", True):
            return replace(result, details={**result.details, "checked": True},
                           diagnosis=BATCH_OF_ONE)
    elif clause.family in FLOAT64_FAMILIES:
        base = Case(config, case.input_shapes, case.label)
        if _runs(adapter, spec, base, "float32", False) and not _runs(
            adapter, spec, base, "float64", False
        ):
            return replace(result, details={**result.details, "checked": True}, diagnosis=(
                "a float64 call raises where the same call in float32 runs: the port computes "
                "in a fixed dtype (its sublayers ignore the layer's dtype)"))
    return result


COUNTER = "one non-trainable scalar more than the spec"


def explain_counts(message: str) -> str | None:
    """What wrong (trainable, non-trainable) counts point to, from the param-counts message."""
    m = re.search(r"\((\d+), (\d+)\), spec \((\d+), (\d+)\)", message)
    if not m:
        return None
    got_t, got_n, want_t, want_n = map(int, m.groups())
    if got_t == want_t and got_n == want_n + 1:
        return (
            f"{COUNTER}: a bookkeeping counter held as state "
            "(torch BatchNorm's num_batches_tracked)"
        )
    if want_n and got_n == 0 and got_t == want_t + want_n:
        return "the moving statistics are counted as trainable weights"
    if want_n and got_n == 0:
        return "no non-trainable weights: the moving statistics are not held as weights"
    if want_n and got_t == want_t - want_n and got_n == 2 * want_n:
        # gamma and beta (L*N each, as many as the two moving statistics) moved over
        return ("BatchNorm's gamma and beta are held non-trainable (a frozen normalisation: "
                "Keras's trainable=False, PyTorch's requires_grad_(False))")
    if want_n and got_t == want_t - want_n and got_n == want_n:
        return ("BatchNorm's gamma and beta are not counted at all (the seed's estimate counts "
                "the two Dense layers alone)")
    return None


# Checks that build float64 layers and compare at the float64 tolerance or exactly.
FLOAT64_FAMILIES = {
    "inference": "",
    "training": "",
    "bn-update": "",
    "bn-batch1": "",
    "bn-epsilon": "",
    "dropout-inference": "",
    "gate-order": "",
    "activations": "",
    "convex": "; an output at an edge of [a, b] can round past it",
    "gradients": "; central differences of step 1e-6 fall below float32 resolution, so they "
    "cannot be compared with the gradients",
}
_STORAGE: dict = {}


def float64_storage(adapter, spec) -> str | None:
    """What a float64 build of the port holds in a narrower dtype, if anything."""
    key = (adapter.name, spec.name)
    if key not in _STORAGE:
        case = spec.cases()[0]
        handle = adapter.build(
            spec.name, case.config, input_shapes=case.input_shapes, seed=0, dtype="float64"
        )
        narrow = {
            k: np.asarray(v).dtype.name
            for k, v in handle.get_weights().items()
            if np.asarray(v).dtype != np.float64
        }
        # every narrow weight held by a tensor PyTorch does not register: Module.to() left it
        plain = set(getattr(handle, "plain_paths", list)())
        _PLAIN_HELD[key] = bool(narrow) and bool(plain) and all(
            k in handle.held and all(p in plain for p, _ in handle.held[k].pieces)
            for k in narrow)
        which = "all its weights" if len(narrow) == len(handle.get_weights()) else sorted(narrow)
        dtypes = "/".join(sorted(set(narrow.values())))
        _STORAGE[key] = (
            f"a float64 {spec.name} of this port holds {which} in {dtypes}: its float64 "
            f"results carry {dtypes} rounding ({spec.prefix}-DTYPE)"
            if narrow
            else None
        )
    return _STORAGE[key]


def storage_cause(adapter, spec, then: str | None = None) -> str | None:
    """``float64_storage``'s words, followed by ``then`` (what a float64 call shows); where
    every weight held narrower is a tensor PyTorch does not register, those tensors are the
    cause (``Module.to()`` left them as they were), worded as every other clause they fail
    words them (``plain_words``), with the storage as its evidence."""
    said = "; ".join(filter(None, [float64_storage(adapter, spec), then]))
    plain = _plain_cause(adapter, spec)
    if plain:
        return f"{plain} [{said.replace('[', '(').replace(']', ')')}]"
    return said or None


def _plain_cause(adapter, spec) -> str | None:
    """``plain_words`` where every weight a float64 build holds narrower is a tensor PyTorch
    does not register (``float64_storage`` reads that), else None."""
    if float64_storage(adapter, spec) and _PLAIN_HELD.get((adapter.name, spec.name)):
        return plain_words(adapter, spec)
    return None


_DEFAULT: dict = {}
_PLAIN_HELD: dict = {}  # (port, layer): float64_storage's narrow weights all plain tensors


def _default_build(adapter, spec) -> dict:
    """What one build of the layer's first case at the framework's default dtype says, read
    once per port and layer: ``plain``, ``plain_state``'s words for the tensors a PyTorch
    port does not register; ``mixed``, ``default_storage``'s words; ``error``, the exception
    where the build raised."""
    key = (adapter.name, spec.name)
    if key not in _DEFAULT:
        case = spec.cases()[0]
        read = _DEFAULT[key] = {"plain": None, "mixed": None, "error": None}
        try:
            handle = adapter.build(spec.name, case.config, input_shapes=case.input_shapes,
                                   seed=0)
        except Exception as exc:  # noqa: BLE001 - a port that cannot build shows that elsewhere
            read["error"] = exc
            return read
        try:
            read["plain"] = getattr(handle, "plain_words", lambda: None)()
        except Exception:  # noqa: BLE001 - no words: the failure stays as it was
            pass
        try:
            held = {k: np.asarray(v).dtype.name for k, v in handle.get_weights().items()}
            read["mixed"] = _mixed(spec, held)
        except Exception as exc:  # noqa: BLE001 - its weights unread: default_storage raises
            read["error"] = exc
    return _DEFAULT[key]


def _mixed(spec, held: dict) -> str | None:
    counts = Counter(held.values())
    common = counts.most_common(1)[0][0] if counts else None
    odd = sorted(k for k, d in held.items() if d != common)
    if not (odd and common):
        return None
    dtypes = sorted({held[k] for k in odd})
    why = ("a weight made from a NumPy array, torch.from_numpy(np.zeros(n)), keeps NumPy's "
           "float64" if dtypes == ["float64"] else
           f"a dtype given where they are made, dtype={dtypes[0]}: they hold and update "
           f"{dtypes[0]}'s precision, where the spec's are {common}")
    return (f"a {spec.name} of this port built at the default dtype holds {', '.join(odd)} in "
            f"{'/'.join(dtypes)} where its other weights are {common} ({why}; Module.to() "
            "casts them only when the layer is cast): a call at the default dtype meets both")


def default_storage(adapter, spec) -> str | None:
    """Where a build at the framework's default dtype holds some weights in another float
    dtype than the rest (float64 moving statistics among float32 weights: ``torch.from_numpy``
    or ``np.zeros`` keep NumPy's float64), words naming them; None where they agree. Raises
    as the build did."""
    read = _default_build(adapter, spec)
    if read["error"] is not None:
        raise read["error"]
    return read["mixed"]


def explain_mixed_storage(result, clause, adapter, spec):
    """A dtype clash inside a call at the default dtype, or its output promoted to the dtype
    of some of its weights, where the default build holds its weights in two dtypes
    (``default_storage``): that, with the failure as its evidence."""
    from portspec.rootcause import DTYPE_CLASH

    promoted = re.search(r": dtype (\w+), expected (\w+)", result.message)
    if result.diagnosis or not (DTYPE_CLASH.search(result.message) or promoted):
        return result
    try:
        words = default_storage(adapter, spec)
    except Exception:  # noqa: BLE001 - a port that cannot build shows that elsewhere
        return result
    if not words or (promoted and f" in {promoted[1]} where" not in words):
        return result
    said = result.message[:160].replace("[", "(").replace("]", ")")
    return replace(result, diagnosis=f"{words} [{said}]",
                   details={**result.details, "checked": True})


def plain_state(paths, containers=(), weights=()) -> str:
    """One wording, whatever clause shows it (the parameter counts, the native save, a float64
    call), so that the report reads one root cause: tensors a PyTorch port computes with that
    are not registered, as plain attributes of its modules or inside modules kept in plain
    lists, tuples or dicts (``containers``, their paths); ``weights``, the plain attributes
    that hold a weight the spec trains (an nn.Parameter, not a buffer, is what they lack)."""
    held = [p for p in paths if not any(p.startswith(c + ".") for c in containers)]
    trained = [p for p in held if p in weights]
    held = [p for p in held if p not in weights]
    said = []
    if containers:
        inside = [p for p in paths if p not in held]
        said.append(f"the port keeps modules in {', '.join(containers)}, a plain Python "
                    "container that PyTorch does not register (nn.ModuleList or nn.ModuleDict "
                    f"does), so their weights {', '.join(inside)} are not the module's "
                    "parameters")
    if trained:
        said.append(f"the port keeps {', '.join(trained)}, a trainable weight of the spec's, "
                    "as a plain tensor attribute, not an nn.Parameter (requires_grad=True does "
                    "not make one): parameters(), and so an optimiser, never sees it")
    if held:
        said.append(f"the port keeps {', '.join(held)} as plain tensor attributes, not "
                    "registered buffers (register_buffer)")
    return ("; ".join(said) + ": state_dict(), and so a native save, leaves them out, "
            "the framework counts them as no weights, and Module.to() neither moves nor casts "
            "them (a float64 layer meets them in float32)")


def plain_words(adapter, spec) -> str | None:
    """``plain_state``'s words for a freshly built layer of the port (PyTorch handles only:
    ``plain_words``); None for every other, where it registers every tensor, or where it
    cannot build."""
    return _default_build(adapter, spec)["plain"]


def explain_plain(result, clause, adapter, spec):
    """A failure of the parameter counts, the native save, the weight table's trainable flags
    or the portable training step (``parameters()`` does not see a module kept in a plain
    list, so no optimiser steps its weights) or a float64 call that meets
    float32, where the port keeps tensors PyTorch does not register: that, with the failure's
    own words as its evidence (checked: the tensors are read off the built module)."""
    from portspec.rootcause import DTYPE_CLASH

    # parameters() leaves them out: not trainable, and an optimiser's step leaves them
    untracked = ((clause.family == "weight-table" and "trainable=False" in result.message)
                 or (clause.family == "portable" and "after the step" in result.message))
    if clause.family not in ("param-counts", "save-native") and not untracked and not (
            DTYPE_CLASH.search(result.message)):
        return result
    words = plain_words(adapter, spec)
    if not words:
        return result
    said = result.message[:160].replace("[", "(").replace("]", ")")
    return replace(result, diagnosis=f"{words} [{said}]",
                   details={**result.details, "checked": True})


def explain_result(result, clause, adapter, spec):
    """Diagnoses that need the failed Result and the implementation together: what a raised
    exception says, what wrong parameter counts say, and float64 layers held in float32,
    which make every float64 comparison fail by rounding alone (and mislead their checks)."""
    if result.status != "failed":
        return result
    result = explain_refusal(result, clause, adapter, spec)
    result = explain_plain(result, clause, adapter, spec)
    result = explain_mixed_storage(result, clause, adapter, spec)
    from_message = {"param-counts": explain_counts}
    if clause.family in from_message and not result.diagnosis:
        result = replace(result, diagnosis=from_message[clause.family](result.message))
    why = FLOAT64_FAMILIES.get(clause.family)
    if why is None:
        return result
    try:
        storage = float64_storage(adapter, spec)
    except Exception:  # a port that cannot build float64 fails the dtype clause instead
        return result
    err = result.details.get("max_abs_error")
    # float32 storage explains errors of float32 rounding size only (|error| <= ~1e-4 for the
    # suite's O(1)-O(10) values); an error of 3.45 is a mistake, whatever the storage
    rounding_sized = err is not None and err < 1e-4
    no_size = err is None and not result.message.startswith("raised")
    unsized = no_size and why and result.diagnosis is None
    # a clause that re-ran the port has tested more than the storage dtype says
    if storage and not result.details.get("checked") and (rounding_sized or unsized):
        # the unregistered tensors, read off the built module, are checked evidence
        checked = bool(_plain_cause(adapter, spec))
        result = replace(result, diagnosis=storage_cause(adapter, spec, why.lstrip(": ;")),
                         details={**result.details, "checked": True} if checked
                         else result.details)
    return result
