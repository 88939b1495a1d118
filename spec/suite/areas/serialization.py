"""Config, native and canonical-weight round trips."""

from __future__ import annotations

import os
import tempfile

import numpy as np

from portspec.clauses import ClauseFailure
from portspec.layers import Case
from portspec.suite.checks import cast, check


def _primed(ctx, case, rng, **build):
    """A layer whose weights (moving statistics included) are far from their initial values."""
    handle = ctx.build(case, **build)
    weights = cast(ctx.spec.random_weights(case.config, case.input_shapes, rng), "float32")
    handle.set_weights(dict(weights))
    return handle, dict(weights)


@check("config-roundtrip")
def config_roundtrip(ctx):
    for case in ctx.spec.config_cases():
        config = case.config
        want = ctx.spec.validate_config(config)
        got = ctx.build(case, config=config).get_config()
        if got != want:
            raise ClauseFailure(f"get_config() returned {got}, built from {want}")
        again = ctx.build(case, config=got)
        if again.get_config() != want:
            raise ClauseFailure(f"a layer built from {got} reports {again.get_config()}")
        if again.weight_info() != ctx.build(case, config=config).weight_info():
            raise ClauseFailure(f"a layer rebuilt from {got} has another weight table")


@check("save-native")
def save_native(ctx):
    # Every config value the layer distinguishes (config_cases: each activation, each dropout
    # rate), not the default alone: a get_config that leaves a non-default value out saves a
    # layer that loads as the default one.
    rng = np.random.default_rng(3)
    for case in ctx.spec.config_cases():
        handle, _ = _primed(ctx, case, rng)
        x = ctx.inputs(case, rng)
        before = handle.forward(x, training=False)
        with tempfile.TemporaryDirectory() as tmp:
            path = handle.save_native(tmp)
            loaded = ctx.adapter.load_native(ctx.spec.name, path)
        what = f"{case.label or case.config}: native save/load"
        _same_weights(handle.get_weights(), loaded.get_weights(), what)
        if not np.array_equal(loaded.forward(x, training=False), before):
            raise ClauseFailure(
                f"{what}: the loaded layer's inference output differs from the saved one's",
                diagnosis=_config_diagnosis(loaded, handle),
            )
        if loaded.get_config() != handle.get_config():
            raise ClauseFailure(
                f"{what}: the loaded config {loaded.get_config()} != {handle.get_config()}"
            )


def _config_diagnosis(loaded, saved) -> str | None:
    """Name the parameters whose value the save lost, when the loaded layer reports them."""
    try:
        got, want = loaded.get_config(), saved.get_config()
    except Exception:  # the port cannot report its config: nothing to go on
        return None
    lost = sorted(k for k in want if got.get(k) != want[k])
    if not lost:
        return None
    return "the native format does not keep " + ", ".join(
        f"{k}={want[k]!r} (loaded as {got.get(k)!r})" for k in lost
    )


@check("weights-roundtrip")
def weights_roundtrip(ctx):
    rng = np.random.default_rng(4)
    for case in ctx.spec.cases():
        handle, weights = _primed(ctx, case, rng)
        _same_weights(weights, handle.get_weights(), f"{case.label}: set_weights/get_weights")
        x = ctx.inputs(case, rng)
        before = handle.forward(x, training=False)
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "weights.safetensors")
            handle.save_weights(path)
            fresh = ctx.build(Case(case.config, case.input_shapes), seed=99)
            fresh.load_weights(path)
        _same_weights(weights, fresh.get_weights(), f"{case.label}: safetensors round trip")
        if not np.array_equal(fresh.forward(x, training=False), before):
            raise ClauseFailure(f"{case.label}: outputs differ after a safetensors round trip")


def _same_weights(want: dict, got: dict, what: str):
    missing = sorted(set(want) - set(got))
    if missing:
        raise ClauseFailure(f"{what}: weights {missing} missing")
    for name in want:
        a, b = np.asarray(want[name]), np.asarray(got[name])
        if a.shape != b.shape:
            diagnosis = "stored in the transposed layout" if a.shape == b.shape[::-1] else None
            raise ClauseFailure(
                f"{what}: {name} has shape {b.shape}, expected {a.shape}", diagnosis=diagnosis
            )
        if not np.array_equal(a.astype(np.float64), b.astype(np.float64)):
            raise ClauseFailure(
                f"{what}: {name} differs by up to {np.max(np.abs(a - b.astype(a.dtype))):.3g}"
            )
