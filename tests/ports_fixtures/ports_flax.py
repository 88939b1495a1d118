"""Flax NNX ports written with spec.ports.FlaxPortAdapter, over the reference modules.

``good-flax`` wraps impls/jax as a stranger would wrap their own module; ``flax-batchnorm-
defaults`` replaces its BatchNorm with ``nnx.BatchNorm`` left at its defaults (momentum 0.99
in the Keras sense, epsilon 1e-5, float32 statistics), the mistake a Flax port invites.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from portspec.impls.jax import layers as ref
from portspec.ports import FlaxPortAdapter, identity

PATHS = {
    "norm.gamma": "norm.scale",
    "norm.beta": "norm.bias",
    "norm.moving_mean": "norm.mean",
    "norm.moving_variance": "norm.var",
    "dense1.kernel": "dense1.kernel",
    "dense1.bias": "dense1.bias",
    "dense2.kernel": "dense2.kernel",
    "dense2.bias": "dense2.bias",
}


class GoodFlax(FlaxPortAdapter):
    name = "good-flax"
    layers = ("FeatureMixing", "GatedFeatureFusion")
    low_precision = ("bfloat16", "float16")
    weights = {
        "FeatureMixing": {k: (p, identity) for k, p in PATHS.items()},
        "GatedFeatureFusion": {
            "gate.kernel": ("gate.kernel", identity),
            "gate.bias": ("gate.bias", identity),
        },
    }
    fm = ref.FeatureMixing

    def construct(self, layer, config, *, input_shapes, dtype, rngs):
        kwargs = {"precision": jax.lax.Precision.HIGHEST}
        if dtype is not None:
            low = dtype in self.low_precision
            kwargs.update(dtype=jnp.dtype(dtype), param_dtype=jnp.float32 if low else dtype)
        if layer == "FeatureMixing":
            return self.fm.from_config(config, rngs=rngs, **kwargs)
        return ref.GatedFeatureFusion.from_config(config, input_shapes[0][-1], rngs=rngs, **kwargs)

    def config_of(self, layer, module):
        return module.get_config()


class _DefaultBatchNorm(ref.FeatureMixing):
    def __init__(self, *args, rngs, **kwargs):
        super().__init__(*args, rngs=rngs, **kwargs)
        self.norm = nnx.BatchNorm(self.input_size * self.n_series, rngs=rngs)


class FlaxBatchNormDefaults(GoodFlax):
    name = "flax-batchnorm-defaults"
    layers = ("FeatureMixing",)
    fm = _DefaultBatchNorm


ADAPTERS = [GoodFlax(), FlaxBatchNormDefaults()]
