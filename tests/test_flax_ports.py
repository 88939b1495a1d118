"""Flax NNX ports as they are written: variables that are no weights."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from portspec import registry
from portspec.layers import LAYERS

pytest.importorskip("flax")

FIXTURE = Path(__file__).parent / "ports_fixtures" / "single_mistakes_flax.py"


def test_a_flax_port_holding_a_typed_key_in_a_variable_lists_only_its_weights():
    """A port that keeps a jax.random.key in a plain nnx.Variable (its own dropout key, say):
    the key is no weight, and reading the weights does not try to make it an array."""
    import jax
    from flax import nnx

    port = next(a for a in registry.load_file(str(FIXTURE)) if a.name == "conforming")
    case = LAYERS["FeatureMixing"].cases()[0]
    handle = port.build("FeatureMixing", case.config, input_shapes=case.input_shapes, seed=0)
    names = sorted(handle.get_weights())
    handle.obj.fixed_key = nnx.Variable(jax.random.key(0))
    assert sorted(handle.get_weights()) == sorted(handle.weight_info()) == names


def test_float32_moving_statistics_and_a_dropout_mistake_are_two_root_causes():
    """nnx.BatchNorm keeps its moving statistics in float32 whatever the layer's dtype; a port
    that also passes the rate as the keep probability (nnx.Dropout(1 - p)) makes two mistakes
    in two parts: each is its own root cause, with the clauses it fails alone."""
    from flax import nnx

    from portspec import rootcause
    from portspec.impls.jax import layers as ref
    from portspec.impls.jax.adapter import FlaxAdapter
    from portspec.isolation import items_for

    class Port(ref.FeatureMixing):
        def __init__(self, *args, rngs, **kwargs):
            super().__init__(*args, rngs=rngs, **kwargs)
            flat = self.input_size * self.n_series
            self.norm = nnx.BatchNorm(flat, momentum=0.01, epsilon=1e-3, use_fast_variance=False,
                                      param_dtype=self.param_dtype, rngs=rngs)
            self.dropout1 = nnx.Dropout(1.0 - self.dropout, rngs=rngs)
            self.dropout2 = nnx.Dropout(1.0 - self.dropout, rngs=rngs)

    class Adapter(FlaxAdapter):
        name = "float32-stats-rate-as-keep"
        layers = ("FeatureMixing",)
        classes = {**FlaxAdapter.classes, "FeatureMixing": Port}

    port = Adapter()
    clauses = ("FM-BN-UPDATE", "FM-DTYPE", "FM-DROPOUT-ONE", "FM-DROPOUT-SITES")
    results = rootcause.attach([run() for _, run in items_for(port, tasks=[
        (port.name, c) for c in clauses])])
    cause = {r.clause: r.cause for r in results if r.status == "failed"}
    assert set(cause) == set(clauses), cause
    stored, rate = cause["FM-BN-UPDATE"], cause["FM-DROPOUT-ONE"]
    assert stored != rate, cause
    assert "moving statistics stored in float32" in stored and "keep probability" not in stored
    assert "the rate used as the keep probability" in rate and "float32" not in rate, rate
    assert cause["FM-DTYPE"] == stored and cause["FM-DROPOUT-SITES"] == rate, cause
    assert "all 2 independent differences" in stored


def test_weights_held_in_bfloat16_are_read_and_named():
    """A port that passes its compute dtype as param_dtype holds its weights in bfloat16, an
    ml_dtypes type NumPy does not class as floating: the handle still reads them (before, they
    were dropped, and FM-DTYPE blamed the weight map), and FM-DTYPE names them."""
    from portspec import rootcause
    from portspec.impls.jax import layers as ref
    from portspec.impls.jax.adapter import FlaxAdapter
    from portspec.isolation import items_for
    from portspec.ports.base import floating

    assert floating("bfloat16") and floating(np.float16) and not floating(np.int32)

    class Port(ref.FeatureMixing):
        def __init__(self, *args, dtype=None, param_dtype=None, rngs, **kwargs):
            super().__init__(*args, dtype=dtype, param_dtype=dtype or param_dtype, rngs=rngs,
                             **kwargs)

    class Adapter(FlaxAdapter):
        name = "param-dtype-the-compute-dtype"
        layers = ("FeatureMixing",)
        low_precision = ("bfloat16",)
        classes = {**FlaxAdapter.classes, "FeatureMixing": Port}

    port = Adapter()
    case = LAYERS["FeatureMixing"].cases()[0]
    handle = port.build("FeatureMixing", case.config, input_shapes=case.input_shapes, seed=0,
                        dtype="bfloat16")
    table = LAYERS["FeatureMixing"].weight_table(case.config, case.input_shapes)
    assert sorted(handle.get_weights()) == sorted(w.name for w in table)
    results = rootcause.attach([run() for _, run in items_for(port, tasks=[
        (port.name, "FM-DTYPE")])])
    (dtype,) = results
    assert dtype.status == "failed" and "weight map" not in dtype.message, dtype.message
    assert "holds dense1.bias, dense1.kernel" in dtype.cause and "in bfloat16" in dtype.cause


def test_a_constant_initialiser_is_not_called_a_seed_ignored():
    """A kernel initialised to zeros gives the same values at every seed: FM-DETERMINISM says
    it is a constant, not that the seed is ignored (a seed no draw reads)."""
    from portspec.verify import verify

    results = verify([str(FIXTURE)], tasks=[("dense2-kernel-initialised-to-zeros",
                                             "FM-DETERMINISM")], isolate=False)
    (found,) = [r for r in results if r.clause == "FM-DETERMINISM"]
    assert found.status == "failed"
    assert "every value of each is 0, whatever the seed (a constant initialiser" in \
        found.message, found.message
    assert "the seed is ignored" not in found.message
