"""Shapes, the residual path, the weight table and parameter counts."""

from __future__ import annotations

import numpy as np

from portspec.clauses import ClauseFailure
from portspec.layers import Case
from portspec.suite.checks import check


@check("shape")
def shape(ctx):
    rng = np.random.default_rng(0)
    for case in ctx.spec.cases():
        for variant in _shape_variants(ctx.spec, case):
            handle = ctx.build(variant)
            x = ctx.inputs(variant, rng)
            for training in (False, True):
                out = handle.forward(x, training=training)
                want = variant.input_shapes[0]
                if tuple(np.shape(out)) != tuple(want):
                    raise ClauseFailure(
                        f"{variant.label} training={training}: output shape {np.shape(out)}, "
                        f"expected {want}"
                    )


def _shape_variants(spec, case):
    """The case at batch 1 and 3 and, for a multi-input layer, at ranks 2, 3 and 4."""
    first = case.input_shapes[0]
    features = first[1:] if not spec.multi_input else first[-1:]
    if spec.multi_input:
        shapes = [(1, *features), (3, *features), (2, 3, *features), (2, 2, 3, *features)]
    else:
        shapes = [(1, *features), (3, *features)]
    n = len(case.input_shapes)
    return [Case(case.config, (s,) * n, f"{case.label} shape {s}") for s in shapes]


@check("residual")
def residual(ctx):
    rng = np.random.default_rng(1)
    case = ctx.spec.cases()[0]
    handle = ctx.build(case)
    weights = ctx.spec.random_weights(case.config, case.input_shapes, rng)
    weights = {k: (np.zeros_like(v) if k.startswith("dense2.") else v) for k, v in weights.items()}
    x = ctx.inputs(case, rng)
    for training in (False, True):
        handle.set_weights(weights)
        out = handle.forward(x, training=training)
        if not np.array_equal(out, x):
            err = float(np.max(np.abs(np.asarray(out, np.float64) - x)))
            raise ClauseFailure(
                f"training={training}: with the second Dense zeroed the output differs from the "
                f"input by up to {err:.3g}",
                diagnosis=_residual_diagnosis(out, x),
            )


def _residual_diagnosis(out, x):
    if np.allclose(out, 0):
        return "the output is zero when the branch is: no residual connection"
    return "the residual adds something other than the raw input (the normalised input?)"


@check("weight-table")
def weight_table(ctx):
    for case in ctx.spec.cases():
        handle = ctx.build(case)
        want = {
            w.name: (tuple(w.shape), w.trainable)
            for w in ctx.spec.weight_table(case.config, case.input_shapes)
        }
        got = {k: (tuple(s), bool(t)) for k, (s, t) in handle.weight_info().items()}
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
            raise ClauseFailure(
                f"{case.label}: " + "; ".join(problems),
                diagnosis=(
                    f"{', '.join(transposed)} in (out, in) layout: the adapter must "
                    "transpose to the canonical (in, out)"
                )
                if transposed
                else None,
            )


@check("param-counts")
def param_counts(ctx):
    for case in ctx.spec.cases():
        got = tuple(ctx.build(case).param_counts())
        want = ctx.spec.param_counts(case.config, case.input_shapes)
        if got != tuple(want):
            raise ClauseFailure(f"{case.label}: (trainable, non-trainable) = {got}, spec {want}",
                                details={"counts": list(got), "spec": list(want)})
