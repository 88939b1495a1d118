"""Flax NNX ports as they are written: variables that are no weights."""

from __future__ import annotations

from pathlib import Path

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
