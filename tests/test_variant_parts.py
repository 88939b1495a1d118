"""The root-cause search fits epsilon to a candidate's outputs and the momentum to its moving
statistics once per part of the candidate those depend on (``variants.output_choices`` and
``variants.state_choices``): a choice left out of a part must change nothing of it, bit for
bit, whatever other choice it is joined with."""

from __future__ import annotations

import numpy as np
import pytest

from portspec import variants
from portspec.layers import feature_mixing as fm

# each fitted choice at a value a fit could give
FITTED = {"eps": 0.1, "var_momentum": 0.7, "clip": 1.5, "norm_clip": 1.5, "dropout_rate": 0.25}


def _values(choice):
    return [FITTED.get(choice, v) if v in ("fit", "fixed") else v
            for v in variants.FM_SPACE.alternatives[choice]]


def _singles():
    return [{}] + [{k: v} for k in variants.FM_SPACE.alternatives for v in _values(k)]


def _calls(dropout=0.0):
    """(config, weights, x, training): inference and training, at batch 5 and batch 1. The
    kernels are not square: a transposed one raises on its shape, as in a port's calls."""
    rng = np.random.default_rng(7)
    config = {"n_series": 4, "input_size": 3, "dropout": dropout, "ff_dim": 6}
    weights = fm.SPEC.random_weights(config, None, rng)
    out = []
    for batch in (5, 1):
        x = rng.normal(0.5, 2.0, (batch, 3, 4))
        out += [(config, weights, x, training) for training in (False, True)]
    return out


def _run(choices, calls, masks=None):
    try:
        return [variants.fm_forward(c, w, x, training=t, masks=masks, **choices)
                for c, w, x, t in calls]
    except (KeyError, ValueError, TypeError) as exc:
        return type(exc).__name__


def _same(a, b, part) -> bool:
    if isinstance(a, str) or isinstance(b, str):
        return a == b
    if part == "output":
        return all(np.array_equal(x[0], y[0], equal_nan=True) for x, y in zip(a, b, strict=True))
    return all(x[1].keys() == y[1].keys() and all(
        np.array_equal(x[1][k], y[1][k], equal_nan=True) for k in x[1])
        for x, y in zip(a, b, strict=True))


def _left_out(part, choices, calls):
    """The choices of ``choices`` the part leaves out."""
    if part == "output":
        kept = variants.output_choices(variants.FM_SPACE, choices,
                                       [c["dropout"] for c, *_ in calls])
    else:
        kept = variants.state_choices(variants.FM_SPACE, choices)
    return {k: v for k, v in choices.items() if k not in kept}


def _violations(part, dropout=0.0):
    """Each (other choices, choice left out) whose presence changes the part."""
    calls, bad = _calls(dropout), []
    for base in _singles():
        for extra in _singles():
            if set(extra) & set(base) or not extra:
                continue
            cand = {**base, **extra}
            if part == "state":  # the momentum's fit runs every call without dropout
                cand = {**cand, "dropout_rate": 0.0}
            gone = _left_out(part, cand, calls)
            if not set(extra) <= set(gone):
                continue
            if not _same(_run(cand, calls), _run({k: v for k, v in cand.items()
                                                  if k not in gone}, calls), part):
                bad.append((base, extra))
    return bad


@pytest.mark.parametrize("part", ["output", "state"])
def test_a_choice_left_out_of_a_part_changes_nothing_of_it(part):
    assert _violations(part) == []


def test_the_dropouts_choices_count_where_a_call_drops():
    """At a configured rate above 0 the dropout's choices change the output, and stay in it."""
    calls = _calls(dropout=0.5)
    kept = variants.output_choices(variants.FM_SPACE, {"dropout_scale": "none"},
                                   [c["dropout"] for c, *_ in calls])
    assert kept == {"dropout_scale": "none"}
    masks = {"dropout1": np.ones((5, 3, 6), bool), "dropout2": np.ones((5, 3, 4), bool)}
    one = [c for c in calls if c[2].shape[0] == 5]
    assert not _same(_run({"dropout_scale": "none"}, one, masks), _run({}, one, masks),
                     "output")


@pytest.mark.parametrize("choice, value, part", [
    ("norm", "layer-LN", "output"), ("flatten", "F", "output"), ("position", "after", "state"),
    ("update_ddof", 1, "state"), ("momentum", 0.5, "state"), ("eps", 0.1, "output")])
def test_the_comparison_sees_a_choice_that_changes_the_part(choice, value, part):
    """The check above can fail: these choices change the part they are kept in."""
    calls = _calls()
    assert not _same(_run({choice: value}, calls), _run({}, calls), part)
    kept = (variants.state_choices(variants.FM_SPACE, {choice: value}) if part == "state"
            else variants.output_choices(variants.FM_SPACE, {choice: value}, [0.0]))
    assert kept == {choice: value}


def test_a_gff_candidate_is_one_part():
    gff = variants.SPACES["GatedFeatureFusion"]
    assert variants.output_choices(gff, {"bias": False}, [0.0]) == {"bias": False}
    assert variants.state_choices(gff, {"bias": False}) == {"bias": False}
