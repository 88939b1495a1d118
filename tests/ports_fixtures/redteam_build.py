"""Flax NNX GatedFeatureFusion ports, each with one mistake in how the layer is built, for the
root causes of tests/test_rootcause_redteam_build.py:

- ``lecun-init``: the gate's ``nnx.Linear`` keeps Flax's default kernel initialiser (LeCun
  normal truncated at 2 sd, variance 1/fan_in) instead of Glorot-uniform;
- ``no-bias-mapped``: the gate has no bias (``use_bias=False``) while the weight map, copied
  from the spec's table, still names ``gate.bias``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from portspec.layers import LAYERS
from portspec.ports import FlaxPortAdapter, flax_names

GFF_SPEC = LAYERS["GatedFeatureFusion"]
ACTIVATIONS = {"sigmoid": jax.nn.sigmoid, "tanh": jnp.tanh, "relu": jax.nn.relu,
               "softmax": lambda z: jax.nn.softmax(z, axis=-1)}


class GatedFeatureFusion(nnx.Module):
    """``g = activation(Linear(concat([a, b])))``, ``g * a + (1 - g) * b``; the mistake in the
    class attributes ``kernel_init`` and ``use_bias``."""

    kernel_init = staticmethod(nnx.initializers.glorot_uniform())
    use_bias = True

    def __init__(self, features, activation="sigmoid", *, dtype=None, param_dtype=jnp.float32,
                 rngs):
        self.activation = GFF_SPEC.validate_config({"activation": activation})["activation"]
        self.gate = nnx.Linear(2 * features, features, use_bias=self.use_bias, dtype=dtype,
                               param_dtype=param_dtype, kernel_init=self.kernel_init,
                               bias_init=nnx.initializers.zeros_init(), rngs=rngs)

    def get_config(self):
        return {"activation": self.activation}

    def __call__(self, inputs):
        a, b = inputs
        g = ACTIVATIONS[self.activation](self.gate(jnp.concatenate([a, b], axis=-1)))
        return g * a + (1 - g) * b


class LeCunGate(GatedFeatureFusion):
    kernel_init = staticmethod(nnx.initializers.lecun_normal())


class NoBiasGate(GatedFeatureFusion):
    use_bias = False


class _Port(FlaxPortAdapter):
    layers = ("GatedFeatureFusion",)
    gff = GatedFeatureFusion
    weights = {"GatedFeatureFusion": {n: flax_names(n) for n in ("gate.kernel", "gate.bias")}}

    def construct(self, layer, config, *, input_shapes, dtype, rngs):
        kwargs = {} if dtype is None else {"dtype": jnp.dtype(dtype), "param_dtype": dtype}
        return self.gff(input_shapes[0][-1], **config, **kwargs, rngs=rngs)

    def config_of(self, layer, module):
        return module.get_config()


class LeCunInit(_Port):
    name = "lecun-init"
    gff = LeCunGate


class NoBiasMapped(_Port):
    name = "no-bias-mapped"
    gff = NoBiasGate
